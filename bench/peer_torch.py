#!/usr/bin/env python3
"""PyTorch peer for the weightnorm benchmark (ts/bench/peer.ts spawns it).

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout (stderr is for tracebacks).
  {"cmd": "hello", "device": "cpu"|"cuda", "threads": N}
      -> {"ok": true, "torch": "...", "python": "...", "device_name": "..."} or {"ok": false, "error": "..."}
  {"cmd": "check", "shape": [...], "dim": d|null, "dir": "/tmp/..."}
      reads v.bin, g.bin, dw.bin (raw little-endian float32) and writes <variant>_<name>.bin for the fused and
      composite variants (w, norm, dv, dg) -> {"ok": true, "variants": ["fused", "composite"], "calls": {...}}
  {"cmd": "prepare", "shape": [...], "dim": d|null, "sets": K, "seed": S}
      allocates K rotated input sets -> {"ok": true, "fused_na": "why torch has no fused kernel" | null, "calls": {...}}
  {"cmd": "round", "warmup": W, "repeats": R}
      -> {"ok": true, "times": {"copy": [ms...], "fused_forward": [...], "fused_backward": [...],
          "composite_forward": [...], "composite_backward": [...]}}  (fused_* absent where fused_na)
  {"cmd": "release"}, {"cmd": "quit"}
Per-run times: CUDA events on the GPU, time.perf_counter on the CPU. Input sets rotate (run i uses set i % K)
exactly as the native benchmark does, so both sides see the same cache behaviour. The bench alternates rounds of
ours and torch's, so background load on a shared machine hits both alike.
"""
import json
import platform
import statistics
import struct
import sys
import time

try:
    import torch
except Exception as error:  # torch missing or broken: the bench reports "peer not installed"
    torch = None
    IMPORT_ERROR = f"{type(error).__name__}: {error}"

DEVICE = "cpu"


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def channel_shape(shape, dim):
    """g / norm shape as torch wants it: the channel count at dim, 1 elsewhere (keepdim layout)."""
    if dim is None:
        return [1] * len(shape)
    out = [1] * len(shape)
    out[dim] = shape[dim]
    return out


def fused_available(shape, dim):
    # torch fuses only dim 0 and the last dim (WeightNorm.cpp: can_use_fused); anything else is composite inside.
    if dim is None:
        return "dim null (one norm for the whole tensor) has no fused torch kernel"
    if dim == 0 or dim == len(shape) - 1:
        return None
    return f"torch fuses only dim 0 or the last dim, not dim {dim}"


def composite_norm(v, dim):
    """||v|| over every axis except dim, keepdim; the whole tensor for dim null."""
    if dim is None:
        return v.norm()
    others = [axis for axis in range(v.dim()) if axis != dim]
    return torch.linalg.vector_norm(v, 2, dim=others, keepdim=True)


def composite_expression(dim):
    if dim is None:
        return "v * (g / v.norm())"
    return f"v * (g / torch.linalg.vector_norm(v, 2, dim=<all but {dim}>, keepdim=True))"


def read_f32(path, shape):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    return torch.frombuffer(data, dtype=torch.float32).reshape(shape).clone()


def write_f32(path, tensor):
    flat = tensor.detach().to("cpu", torch.float32).contiguous().reshape(-1)
    try:
        data = flat.numpy().tobytes()
    except Exception:  # torch built without numpy: slower but dependency-free
        data = struct.pack(f"<{flat.numel()}f", *flat.tolist())
    with open(path, "wb") as f:
        f.write(data)


def check(request):
    shape, dim, folder = request["shape"], request["dim"], request["dir"]
    cshape = channel_shape(shape, dim)
    v = read_f32(f"{folder}/v.bin", shape).to(DEVICE)
    g = read_f32(f"{folder}/g.bin", cshape).to(DEVICE)
    dw = read_f32(f"{folder}/dw.bin", shape).to(DEVICE)
    variants, calls = [], {}
    if fused_available(shape, dim) is None:
        w, norm = torch._weight_norm_interface(v, g, dim)
        dv, dg = torch.ops.aten._weight_norm_interface_backward(dw, v, g, norm, dim)
        for name, t in (("w", w), ("norm", norm), ("dv", dv), ("dg", dg)):
            write_f32(f"{folder}/fused_{name}.bin", t)
        variants.append("fused")
        calls["fused"] = f"torch._weight_norm_interface(v, g, {dim}) + aten._weight_norm_interface_backward"
    va = v.clone().requires_grad_(True)
    ga = g.clone().requires_grad_(True)
    norm = composite_norm(va, dim)
    w = va * (ga / norm)
    dv, dg = torch.autograd.grad(w, (va, ga), dw)
    for name, t in (("w", w), ("norm", norm), ("dv", dv), ("dg", dg)):
        write_f32(f"{folder}/composite_{name}.bin", t)
    variants.append("composite")
    calls["composite"] = composite_expression(dim) + " with autograd"
    return {"ok": True, "variants": variants, "calls": calls}


def run_times(fn, count, first, warmup, repeats):
    """Per-run milliseconds of fn(i % count) for i = first + warmup ... (after `warmup` untimed runs)."""
    for i in range(first, first + warmup):
        fn(i % count)
    first += warmup
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        events = []
        for i in range(first, first + repeats):
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            fn(i % count)
            stop.record()
            events.append((start, stop))
        torch.cuda.synchronize()
        return [start.elapsed_time(stop) for start, stop in events]
    times = []
    for i in range(first, first + repeats):
        start = time.perf_counter()
        fn(i % count)
        times.append((time.perf_counter() - start) * 1e3)
    return times


class Case:
    """One case's rotated input sets, kept between rounds so that rounds can alternate with the native ones."""

    def __init__(self, shape, dim, count, seed):
        self.shape, self.dim, self.count = shape, dim, count
        cshape = channel_shape(shape, dim)
        # One random tensor cloned into every set: the values do not matter for timing, the addresses do.
        gen = torch.Generator(device="cpu").manual_seed(seed)
        pattern = torch.randn(shape, generator=gen).to(DEVICE)
        g_pattern = (torch.rand(cshape, generator=gen) + 0.5).to(DEVICE)
        self.vs = [pattern.clone() for _ in range(count)]
        self.gs = [g_pattern.clone() for _ in range(count)]
        # dw of set i is v of set i+1: a distinct buffer in each run without allocating another K tensors.
        self.dws = [self.vs[(i + 1) % count] for i in range(count)]
        self.outs = [torch.empty_like(pattern) for _ in range(count)]
        self.fused_na = fused_available(shape, dim)
        self.norms = None
        if self.fused_na is None:
            with torch.no_grad():
                self.norms = [torch._weight_norm_interface(self.vs[i], self.gs[i], dim)[1] for i in range(count)]
        # Composite: leaves sharing each set's memory, and one prebuilt graph per set for the timed backward.
        self.leaves = [(self.vs[i].detach().requires_grad_(True), self.gs[i].detach().requires_grad_(True))
                       for i in range(count)]
        self.graphs = [self.composite(i) for i in range(count)]
        self.next_run = 0  # keeps rotating across rounds

    def composite(self, i):
        v, g = self.leaves[i]
        return v * (g / composite_norm(v, self.dim))

    def calls(self):
        dim = self.dim
        calls = {
            "copy": "out.copy_(v)",
            "composite_forward": composite_expression(dim) + " (requires_grad)",
            "composite_backward": "torch.autograd.grad(w, (v, g), dw, retain_graph=True)",
        }
        if self.fused_na is None:
            calls["fused_forward"] = f"torch._weight_norm(v, g, {dim})"
            calls["fused_backward"] = f"torch.ops.aten._weight_norm_interface_backward(dw, v, g, norms, {dim})"
        return calls

    def round(self, warmup, repeats):
        count, dim = self.count, self.dim
        variants = [("copy", lambda i: self.outs[i].copy_(self.vs[i]), True)]
        if self.fused_na is None:
            variants += [
                ("fused_forward", lambda i: torch._weight_norm(self.vs[i], self.gs[i], dim), True),
                ("fused_backward", lambda i: torch.ops.aten._weight_norm_interface_backward(
                    self.dws[i], self.vs[i], self.gs[i], self.norms[i], dim), True),
            ]
        variants += [
            # The composite forward builds the autograd graph, as in training.
            ("composite_forward", self.composite, False),
            ("composite_backward", lambda i: torch.autograd.grad(
                self.graphs[i], self.leaves[i], self.dws[i].detach(), retain_graph=True), False),
        ]
        times = {}
        for name, fn, no_grad in variants:
            # Hold each run's outputs until its set comes round again: the allocator must then rotate K output
            # buffers, as the native benchmark does, instead of handing back the block just freed (still in cache).
            kept = [None] * count

            def run(i, fn=fn, kept=kept):
                kept[i] = fn(i)

            with torch.set_grad_enabled(not no_grad):
                times[name] = run_times(run, count, self.next_run, warmup, repeats)
            self.next_run += warmup + repeats
            del kept
        return times


CASE = None


def prepare(request):
    global CASE
    CASE = None
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    CASE = Case(request["shape"], request["dim"], request["sets"], request.get("seed", 1))
    return {"ok": True, "fused_na": CASE.fused_na, "calls": CASE.calls()}


def timing_round(request):
    return {"ok": True, "times": CASE.round(request["warmup"], request["repeats"])}


def release(request):
    global CASE
    CASE = None
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return {"ok": True}


def hello(request):
    global DEVICE
    if torch is None:
        return {"ok": False, "error": f"torch not importable ({IMPORT_ERROR})"}
    DEVICE = request["device"]
    if DEVICE == "cuda":
        if not torch.cuda.is_available():
            return {"ok": False, "error": f"torch {torch.__version__} sees no usable CUDA device"}
        name = torch.cuda.get_device_name(0)
    else:
        name = platform.processor() or platform.machine()
    torch.set_num_threads(int(request["threads"]))
    return {"ok": True, "torch": torch.__version__, "python": platform.python_version(), "device_name": name,
            "threads": torch.get_num_threads(), "executable": sys.executable}


def main():
    handlers = {"hello": hello, "check": check, "prepare": prepare, "round": timing_round, "release": release}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request["cmd"] == "quit":
            break
        try:
            reply(handlers[request["cmd"]](request))
        except Exception as error:  # answer with the error so the bench records it and goes on
            reply({"ok": False, "error": f"{type(error).__name__}: {error}"})


if __name__ == "__main__":
    main()
