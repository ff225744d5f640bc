#!/usr/bin/env python3
"""PyTorch peer for the weightnorm benchmark (src/bench/peer.ts spawns it).

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
  {"cmd": "task", "kind": "gemm" | "linear" | "mnist" | "training" | "lstm" | "vocoder", ...}  (the side-by-side suites; see Task below)
      prepares one task's tensors -> {"ok": true, "variants": [...], "unavailable": {variant: why}, "calls": {...}}
  {"cmd": "task_round", "warmup": W, "repeats": R}
      -> {"ok": true, "times": {variant: [ms...]}, "errors": {variant: why}}  (a variant that fails is dropped)
  {"cmd": "mnist_check", "dir": "/tmp/...", "batch": B, "wn": bool, "params": [[name, shape], ...]}
      loads our CNN's parameters and batch (x.bin, labels.bin, <name>.bin), runs one forward and backward and writes
      loss.bin and grad_<name>.bin in our parameter layout -> {"ok": true, "weight_norm": "the torch API used"}
  {"cmd": "training_check", "dir": "/tmp/...", "network": "cnn" | "mlp", "batch": B, "wn": bool, "params": [...]}
      the same for the training suite's networks (training_network) -> {"ok": true, "weight_norm": "..."}
  {"cmd": "vocoder_check", "dir": "/tmp/...", "channels": C, "frames": T, "params": [[name, shape], ...]}
      loads our folded HiFi-GAN generator's weights (<name>.bin, torch's plain names) and mel.bin [1, 80, T], writes
      the waveform y.bin -> {"ok": true}
  "prepare" takes "bf16": true to also time torch's bfloat16 weight norm (bf16_forward, bf16_backward).
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

    def __init__(self, shape, dim, count, seed, bf16=False):
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
        self.out = torch.empty_like(pattern)  # the copy's one output block, as the native benchmark has
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
        # bfloat16 weight norm: v, g (and dw) in bfloat16, the fused kernel only (torch fuses dim 0 and the last dim).
        self.bf16_na = "not requested" if not bf16 else self.fused_na
        if self.bf16_na is None:
            try:
                self.v16 = [v.to(torch.bfloat16) for v in self.vs]
                self.g16 = [g.to(torch.bfloat16) for g in self.gs]
                self.dw16 = [self.v16[(i + 1) % count] for i in range(count)]
                with torch.no_grad():
                    self.norms16 = [torch._weight_norm_interface(self.v16[i], self.g16[i], dim)[1] for i in range(count)]
                    torch.ops.aten._weight_norm_interface_backward(self.dw16[0], self.v16[0], self.g16[0], self.norms16[0], dim)
            except Exception as error:  # e.g. a torch without a bfloat16 weight-norm kernel on this device
                self.bf16_na = f"torch bfloat16 weight norm on {DEVICE}: {type(error).__name__}: {error}"
                self.v16 = self.g16 = self.dw16 = self.norms16 = None

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
        if self.bf16_na is None:
            calls["bf16_forward"] = f"torch._weight_norm(v, g, {dim}) with v, g bfloat16"
            calls["bf16_backward"] = (f"torch.ops.aten._weight_norm_interface_backward(dw, v, g, norms, {dim}) with dw, v, g "
                                      f"bfloat16, norms as _weight_norm_interface returns them ({self.norms16[0].dtype})")
        return calls

    def round(self, warmup, repeats):
        count, dim = self.count, self.dim
        variants = [("copy", lambda i: self.out.copy_(self.vs[i]), True)]
        if self.fused_na is None:
            variants += [
                ("fused_forward", lambda i: torch._weight_norm(self.vs[i], self.gs[i], dim), True),
                ("fused_backward", lambda i: torch.ops.aten._weight_norm_interface_backward(
                    self.dws[i], self.vs[i], self.gs[i], self.norms[i], dim), True),
            ]
        if self.bf16_na is None:
            variants += [
                ("bf16_forward", lambda i: torch._weight_norm(self.v16[i], self.g16[i], dim), True),
                ("bf16_backward", lambda i: torch.ops.aten._weight_norm_interface_backward(
                    self.dw16[i], self.v16[i], self.g16[i], self.norms16[i], dim), True),
            ]
        variants += [
            # The composite forward builds the autograd graph, as in training.
            ("composite_forward", self.composite, False),
            ("composite_backward", lambda i: torch.autograd.grad(
                self.graphs[i], self.leaves[i], self.dws[i].detach(), retain_graph=True), False),
        ]
        times = {}
        for name, fn, no_grad in variants:
            # Each run's result is dropped at once, so the allocator hands the next run the block just freed: one
            # output block per case, as in training and as the native benchmark writes (binding/bench.cc).
            with torch.set_grad_enabled(not no_grad):
                times[name] = run_times(fn, count, self.next_run, warmup, repeats)
            self.next_run += warmup + repeats
        return times


def synchronize():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def wall_times(step, warmup, repeats):
    """Per-step wall-clock milliseconds of step() followed by a device synchronize, after `warmup` untimed steps:
    the same measure as ours for the layer and training steps (JS-driven, so host overhead counts on both sides)."""
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def has_fp32_precision(backend):
    """Whether this torch has the fp32_precision setting (2.9+); older ones assert on unknown attributes."""
    try:
        getattr(backend, "fp32_precision")
        return True
    except Exception:
        return False


def set_tf32(enabled):
    """cuBLAS float32 matmuls on the tensor cores (TF32) or in full float32: torch >= 2.9's fp32_precision setting
    where it exists (the old allow_tf32 is deprecated there), else allow_tf32."""
    matmul = torch.backends.cuda.matmul
    if has_fp32_precision(matmul):
        matmul.fp32_precision = "tf32" if enabled else "ieee"
    else:
        matmul.allow_tf32 = enabled


def full_float32_convolutions():
    """cuDNN convolutions in full float32 (torch's default lets them use TF32): ours are float32, so the MNIST step
    compares the same arithmetic."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and has_fp32_precision(conv):
        conv.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False


def weight_norm_module(module, name="weight"):
    """Weight norm on module.<name> (dim 0) with torch's current API (parametrizations, torch >= 2.1) or the old hook."""
    parametrizations = getattr(torch.nn.utils, "parametrizations", None)
    if parametrizations is not None and hasattr(parametrizations, "weight_norm"):
        return parametrizations.weight_norm(module, name=name, dim=0), "torch.nn.utils.parametrizations.weight_norm"
    return torch.nn.utils.weight_norm(module, name=name, dim=0), "torch.nn.utils.weight_norm"


def set_weight_norm_parameters(module, g, v):
    """Writes our g [out] and v into a weight-normalized torch module (either API)."""
    with torch.no_grad():
        if hasattr(module, "parametrizations"):
            original0 = module.parametrizations.weight.original0
            original0.copy_(g.reshape(original0.shape))
            module.parametrizations.weight.original1.copy_(v)
        else:
            module.weight_g.copy_(g.reshape(module.weight_g.shape))
            module.weight_v.copy_(v)


def weight_norm_gradients(module):
    """(dg, dv) of a weight-normalized torch module (either API)."""
    if hasattr(module, "parametrizations"):
        p = module.parametrizations.weight
        return p.original0.grad, p.original1.grad
    return module.weight_g.grad, module.weight_v.grad


def mnist_cnn(wn):
    """The CLI's `train --model cnn`: conv 1->16 3x3 pad 1, ReLU, maxpool 2, conv 16->32 3x3 pad 1, ReLU, maxpool 2,
    flatten, linear 1568 -> 10 (src/commands/common.ts buildModel); weight norm (dim 0) on every conv and linear."""
    nn = torch.nn
    layers = [nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 7 * 7, 10)]
    api = None
    if wn:
        for i in (0, 3, 7):
            layers[i], api = weight_norm_module(layers[i])
    return nn.Sequential(*layers).to(DEVICE), api


def training_network(network, wn):
    """The training suite's networks (src/bench/training.ts TRAINING_NETWORKS), with the weighted layers' indices in
    the Sequential (our parameter names are "<index>.weight" / "<index>.g", "<index>.v", "<index>.bias"):
    cnn: conv 1->32 3x3 pad 1, ReLU, maxpool 2, conv 32->64 3x3 pad 1, ReLU, maxpool 2, flatten, linear 3136->128,
    ReLU, linear 128->10; mlp: the demo's (`npm run demo`, compare --model mlp) 784->256->256->10 with ReLU.
    wn: weight norm (dim 0) on every conv and linear."""
    nn = torch.nn
    if network == "cnn":
        layers = [nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                  nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)]
        weighted = (0, 3, 7, 9)
    elif network == "mlp":
        layers = [nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)]
        weighted = (0, 2, 4)
    else:
        raise ValueError(f"unknown training network {network!r}")
    api = None
    if wn:
        for i in weighted:
            layers[i], api = weight_norm_module(layers[i])
    return nn.Sequential(*layers).to(DEVICE), api, weighted


# HiFi-GAN V1 (Kong et al., 2020): upsampling rates and kernels, and the multi-receptive-field fusion's ResBlock1
# kernels and dilations; upsample_initial_channel is the width parameter (512 in V1).
HIFIGAN_V1 = {"upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
              "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]]}
HIFIGAN_SLOPE = 0.1


def hifigan_generator(channels, wrap=lambda conv: conv, config=HIFIGAN_V1):
    """HiFi-GAN's generator with the reference implementation's module names (conv_pre, ups.<i>,
    resblocks.<i*3+j>.convs1.<k>, conv_post), so its state dict lines up with the pretrained checkpoints'. `wrap`
    puts weight norm on a conv (identity: plain convs). Shared by the vocoder benchmark and
    scripts/make_hifigan_fixtures.py; examples/hifigan/generator.mjs is the same network with weightnorm."""
    nn, F = torch.nn, torch.nn.functional

    class ResBlock1(nn.Module):
        def __init__(self, width, kernel, dilations):
            super().__init__()
            self.convs1 = nn.ModuleList(wrap(nn.Conv1d(width, width, kernel, dilation=d, padding=d * (kernel - 1) // 2))
                                        for d in dilations)
            self.convs2 = nn.ModuleList(wrap(nn.Conv1d(width, width, kernel, padding=(kernel - 1) // 2))
                                        for _ in dilations)

        def forward(self, x):
            for dilated, plain in zip(self.convs1, self.convs2):
                x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, HIFIGAN_SLOPE)), HIFIGAN_SLOPE))
            return x

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            rates, kernels = config["upsample_rates"], config["upsample_kernel_sizes"]
            self.kernel_count = len(config["resblock_kernel_sizes"])
            self.conv_pre = wrap(nn.Conv1d(80, channels, 7, padding=3))
            self.ups = nn.ModuleList(
                wrap(nn.ConvTranspose1d(channels >> i, channels >> (i + 1), k, stride=u, padding=(k - u) // 2))
                for i, (u, k) in enumerate(zip(rates, kernels)))
            self.resblocks = nn.ModuleList(
                ResBlock1(channels >> (i + 1), k, d) for i in range(len(rates))
                for k, d in zip(config["resblock_kernel_sizes"], config["resblock_dilation_sizes"]))
            self.conv_post = wrap(nn.Conv1d(channels >> len(rates), 1, 7, padding=3))

        def forward(self, mel):
            x = self.conv_pre(mel)
            for i, up in enumerate(self.ups):
                x = up(F.leaky_relu(x, HIFIGAN_SLOPE))
                blocks = self.resblocks[i * self.kernel_count:(i + 1) * self.kernel_count]
                x = sum(block(x) for block in blocks) / self.kernel_count
            # The reference implementation's last LeakyReLU has torch's default slope 0.01, not 0.1.
            return torch.tanh(self.conv_post(F.leaky_relu(x)))

    return Generator()


class Task:
    """One side-by-side measurement: variants (name -> step function) timed in rounds.

    gemm:   {"m", "n", "k", "transpose_a", "transpose_b", "precisions": [...]}: torch.mm on views that carry the
            transposes (cuBLAS gets them as flags), per precision: fp32 (allow_tf32 False), tf32 (True), bf16.
    linear: {"batch", "in", "out"}: nn.Linear plain and weight-normalized; a step is zero_grad, y = layer(x),
            y.sum().backward(), with x requiring its gradient (dx, dW, db: the three products of a hidden layer).
    mnist:  {"batch"}: the CLI's CNN plain and weight-normalized; a step is trainStep's: forward, loss.item(),
            zero_grad, backward, Adam step (lr 3e-3), the labels copied from the host as ours are.
    lstm:   {"steps", "batch", "input", "hidden"}: torch.nn.LSTM plain and with weight norm on weight_ih_l0 and
            weight_hh_l0; a step is zero_grad, lstm(x)[0].sum().backward(), Adam step (lr 1e-3).
    vocoder: {"task": "inference" | "training", "channels", "frames"}: HiFi-GAN's generator (hifigan_generator);
            inference (variant folded): plain convs in eval mode under torch.inference_mode(); training (plain, wn):
            zero_grad, F.l1_loss(model(mel), target).backward(), with and without weight norm on every conv.
    """

    def __init__(self, request):
        self.kind = request["kind"]
        self.steps, self.unavailable, self.calls, self.tf32 = {}, {}, {}, {}
        gen = torch.Generator(device="cpu").manual_seed(int(request.get("seed", 1)))
        getattr(self, f"prepare_{self.kind}")(request, gen)

    def prepare_gemm(self, request, gen):
        m, n, k = request["m"], request["n"], request["k"]
        a_shape = [k, m] if request["transpose_a"] else [m, k]
        b_shape = [n, k] if request["transpose_b"] else [k, n]
        a32 = torch.randn(a_shape, generator=gen).to(DEVICE)
        b32 = torch.randn(b_shape, generator=gen).to(DEVICE)
        view = lambda a, b: (a.t() if request["transpose_a"] else a, b.t() if request["transpose_b"] else b)
        expression = f"torch.mm({'a.t()' if request['transpose_a'] else 'a'}, {'b.t()' if request['transpose_b'] else 'b'})"
        for precision in request["precisions"]:
            try:
                if precision == "tf32" and DEVICE != "cuda":
                    raise RuntimeError("TF32 is a CUDA tensor-core mode")
                dtype = torch.bfloat16 if precision == "bf16" else torch.float32
                a, b = view(a32.to(dtype), b32.to(dtype))
                self.tf32[precision] = precision == "tf32"
                set_tf32(self.tf32[precision])
                out = torch.mm(a, b)  # a first run: an unsupported dtype fails here, not in the timing
                synchronize()
                del out
                self.steps[precision] = lambda a=a, b=b: torch.mm(a, b)
                self.calls[precision] = expression + f", {dtype}" + (
                    ", TF32 on (matmul fp32_precision 'tf32' / allow_tf32 True)" if precision == "tf32" else
                    ", TF32 off (matmul fp32_precision 'ieee' / allow_tf32 False)" if dtype == torch.float32 else "")
            except Exception as error:
                self.unavailable[precision] = f"{type(error).__name__}: {error}"
            finally:
                set_tf32(False)

    def prepare_linear(self, request, gen):
        batch, n_in, n_out = request["batch"], request["in"], request["out"]
        torch.manual_seed(int(request.get("seed", 1)))
        x = torch.randn([batch, n_in], generator=gen).to(DEVICE).requires_grad_(True)
        plain = torch.nn.Linear(n_in, n_out).to(DEVICE)
        wn, api = weight_norm_module(torch.nn.Linear(n_in, n_out).to(DEVICE))
        for name, layer in (("plain", plain), ("wn", wn)):
            def step(layer=layer):
                x.grad = None
                layer.zero_grad(set_to_none=True)
                layer(x).sum().backward()
            self.steps[name] = step
        self.calls["plain"] = "torch.nn.Linear; zero_grad(set_to_none); layer(x).sum().backward()"
        self.calls["wn"] = f"{api}(torch.nn.Linear, dim=0); same step"

    def add_train_steps(self, request, build, x, labels, lr):
        """Variants plain and wn: trainStep's step (forward, cross-entropy, loss.item(), zero_grad, backward, Adam
        at `lr`) on build(wn) -> (model, weight-norm API or None); returns the API used."""
        api = None
        for name, wn in (("plain", False), ("wn", True)):
            torch.manual_seed(int(request.get("seed", 1)))
            model, used = build(wn)
            api = used or api
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)

            def step(model=model, optimizer=optimizer):
                loss = torch.nn.functional.cross_entropy(model(x), labels.to(DEVICE))
                loss.item()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            self.steps[name] = step
        return api

    def prepare_mnist(self, request, gen):
        batch = request["batch"]
        x = torch.rand([batch, 1, 28, 28], generator=gen).to(DEVICE)
        labels = torch.randint(0, 10, [batch], generator=gen)
        api = self.add_train_steps(request, mnist_cnn, x, labels, 3e-3)
        self.calls["plain"] = ("the CNN in eager mode (float32 throughout: cuDNN TF32 off), F.cross_entropy, loss.item(), "
                               "zero_grad, backward, Adam(lr=3e-3).step()")
        self.calls["wn"] = f"same with {api} on both convs and the linear"

    def prepare_training(self, request, gen):
        network, batch = request["network"], request["batch"]
        x = torch.rand([batch, 1, 28, 28] if network == "cnn" else [batch, 784], generator=gen).to(DEVICE)
        labels = torch.randint(0, 10, [batch], generator=gen)
        api = self.add_train_steps(request, lambda wn: training_network(network, wn)[:2], x, labels, 1e-3)
        self.calls["plain"] = (f"training_network('{network}') in eager mode, F.cross_entropy, loss.item(), "
                               "zero_grad(set_to_none), backward, Adam(lr=1e-3).step()")
        self.calls["wn"] = f"same with {api} (dim=0) on every conv and linear"

    def prepare_lstm(self, request, gen):
        steps, batch, n_in, hidden = request["steps"], request["batch"], request["input"], request["hidden"]
        x = torch.randn([steps, batch, n_in], generator=gen).to(DEVICE)
        api = None
        for name, wn in (("plain", False), ("wn", True)):
            torch.manual_seed(int(request.get("seed", 1)))
            model = torch.nn.LSTM(n_in, hidden).to(DEVICE)
            if wn:
                for matrix in ("weight_ih_l0", "weight_hh_l0"):
                    model, api = weight_norm_module(model, matrix)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

            def step(model=model, optimizer=optimizer):
                optimizer.zero_grad(set_to_none=True)
                model(x)[0].sum().backward()
                optimizer.step()
            self.steps[name] = step
        self.calls["plain"] = "torch.nn.LSTM (eager); zero_grad, lstm(x)[0].sum().backward(), Adam(lr=1e-3).step()"
        self.calls["wn"] = f"same with {api} on weight_ih_l0 and weight_hh_l0 (dim 0)"

    def prepare_vocoder(self, request, gen):
        channels, frames = request["channels"], request["frames"]
        mel = torch.randn([1, 80, frames], generator=gen).to(DEVICE)
        if request["task"] == "inference":
            torch.manual_seed(int(request.get("seed", 1)))
            model = hifigan_generator(channels).to(DEVICE).eval()

            def infer():
                with torch.inference_mode():
                    model(mel)
            self.steps["folded"] = infer
            self.calls["folded"] = ("hifigan_generator with plain convs (weight norm folded), eval(), "
                                    "torch.inference_mode()")
            return
        hop = 1
        for rate in HIFIGAN_V1["upsample_rates"]:
            hop *= rate
        target = (0.3 * torch.randn([1, 1, frames * hop], generator=gen)).to(DEVICE)
        apis = set()

        def with_weight_norm(conv):
            module, api = weight_norm_module(conv)
            apis.add(api)
            return module
        for name, wn in (("plain", False), ("wn", True)):
            torch.manual_seed(int(request.get("seed", 1)))
            model = hifigan_generator(channels, with_weight_norm if wn else (lambda conv: conv)).to(DEVICE)

            def step(model=model):
                model.zero_grad(set_to_none=True)
                torch.nn.functional.l1_loss(model(mel), target).backward()
            self.steps[name] = step
        self.calls["plain"] = "hifigan_generator, zero_grad(set_to_none), F.l1_loss(model(mel), target).backward()"
        self.calls["wn"] = f"same with {', '.join(sorted(apis))} (dim=0) on every conv"

    def round(self, warmup, repeats):
        times, errors = {}, {}
        for name, step in list(self.steps.items()):
            try:
                if self.kind == "gemm":
                    set_tf32(self.tf32[name])
                    times[name] = run_times(lambda i: step(), 1, 0, warmup, repeats)
                else:
                    times[name] = wall_times(step, warmup, repeats)
            except Exception as error:  # drop the variant, keep the others
                errors[name] = f"{type(error).__name__}: {error}"
                del self.steps[name]
            finally:
                set_tf32(False)
        return times, errors


TASK = None


def task(request):
    global TASK, CASE
    TASK = CASE = None
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    TASK = Task(request)
    return {"ok": True, "variants": list(TASK.steps), "unavailable": TASK.unavailable, "calls": TASK.calls}


def task_round(request):
    times, errors = TASK.round(request["warmup"], request["repeats"])
    return {"ok": True, "times": times, "errors": errors}


def mnist_check(request):
    """One forward and backward of the CNN with our parameters and batch; loss and gradients in our layout."""
    model, api = mnist_cnn(request["wn"])
    return check_network(request, model, api, (0, 3, 7), [request["batch"], 1, 28, 28])


def training_check(request):
    """mnist_check for the training suite's networks."""
    model, api, weighted = training_network(request["network"], request["wn"])
    shape = [request["batch"], 1, 28, 28] if request["network"] == "cnn" else [request["batch"], 784]
    return check_network(request, model, api, weighted, shape)


def check_network(request, model, api, weighted, x_shape):
    """Loads our parameters into `model` (its layers `weighted` carry weight and bias, or g, v and bias with weight
    norm) and our batch, runs one forward and backward and writes loss.bin and grad_<name>.bin in our layout."""
    folder, wn = request["dir"], request["wn"]
    params = {name: read_f32(f"{folder}/{name}.bin", shape).to(DEVICE) for name, shape in request["params"]}
    with torch.no_grad():
        for index in weighted:
            layer = model[index]
            if wn:
                set_weight_norm_parameters(layer, params[f"{index}.g"], params[f"{index}.v"])
            else:
                layer.weight.copy_(params[f"{index}.weight"])
            layer.bias.copy_(params[f"{index}.bias"])
    x = read_f32(f"{folder}/x.bin", x_shape).to(DEVICE)
    labels = read_f32(f"{folder}/labels.bin", [x_shape[0]]).to(torch.int64).to(DEVICE)
    loss = torch.nn.functional.cross_entropy(model(x), labels)
    loss.backward()
    write_f32(f"{folder}/loss.bin", loss.reshape(1))
    for index in weighted:
        layer = model[index]
        grads = {"bias": layer.bias.grad}
        if wn:
            grads["g"], grads["v"] = weight_norm_gradients(layer)
        else:
            grads["weight"] = layer.weight.grad
        for name, grad in grads.items():
            write_f32(f"{folder}/grad_{index}.{name}.bin", grad)
    return {"ok": True, "weight_norm": api}


def vocoder_check(request):
    """torch's HiFi-GAN generator (plain convs) on our folded weights and mel; the waveform in y.bin."""
    folder = request["dir"]
    model = hifigan_generator(request["channels"]).to(DEVICE).eval()
    state = {name: read_f32(f"{folder}/{name}.bin", shape).to(DEVICE) for name, shape in request["params"]}
    model.load_state_dict(state)
    mel = read_f32(f"{folder}/mel.bin", [1, 80, request["frames"]]).to(DEVICE)
    with torch.inference_mode():
        write_f32(f"{folder}/y.bin", model(mel))
    return {"ok": True}


CASE = None


def prepare(request):
    global CASE
    CASE = None
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    CASE = Case(request["shape"], request["dim"], request["sets"], request.get("seed", 1), request.get("bf16", False))
    return {"ok": True, "fused_na": CASE.fused_na, "bf16_na": CASE.bf16_na, "calls": CASE.calls()}


def timing_round(request):
    return {"ok": True, "times": CASE.round(request["warmup"], request["repeats"])}


def release(request):
    global CASE, TASK
    CASE = TASK = None
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
        set_tf32(False)
        full_float32_convolutions()
    else:
        name = platform.processor() or platform.machine()
    torch.set_num_threads(int(request["threads"]))
    return {"ok": True, "torch": torch.__version__, "python": platform.python_version(), "device_name": name,
            "threads": torch.get_num_threads(), "executable": sys.executable, "blas": loaded_openblas_core()}


def loaded_openblas_core():
    """The kernels of the OpenBLAS this process loaded (torch's matrix products), or why that is unknown."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line and "/" in line}
    except OSError as error:
        return f"unknown ({error})"
    if not paths:
        return "no OpenBLAS loaded"
    import ctypes
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
            library.openblas_get_corename.restype = ctypes.c_char_p
            return f"OpenBLAS kernels for {library.openblas_get_corename().decode()} ({path})"
        except (OSError, AttributeError):
            continue
    return f"unknown (no openblas_get_corename in {', '.join(sorted(paths))})"


def main():
    handlers = {"hello": hello, "check": check, "prepare": prepare, "round": timing_round, "release": release,
                "task": task, "task_round": task_round, "mnist_check": mnist_check,
                "training_check": training_check, "vocoder_check": vocoder_check}
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
