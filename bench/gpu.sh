#!/usr/bin/env bash
# bench/gpu.sh [OUT_DIR]: every GPU check in one command on a device machine (nvcc, cmake, python3 + torch 2.x,
# compute-sanitizer; no Node.js, no network), well under 8 minutes:
#   setup      node from .device/node.xz, node_modules from .device/node_modules.tar.xz (bench/pack-device.sh)
#   build      the development build for this GPU (CMAKE_CUDA_ARCHITECTURES=native, with the native kernel tests and the
#              benchmark harness); on failure the carried prebuilt addon
#   tsc        the TypeScript build (the library, then the weightnorm-cli tools package that runs the benchmark)
#   kernel     build/weightnorm_backend_ops_test --filter weightnorm (every weight-norm kernel against the float64
#              reference, bitwise determinism, routes); gemm and ops: the same runner's gemm and ops groups
#   vitest     the test suite (its CUDA cases run when a GPU is usable)
#   bench-cuda the full benchmark on cuda with the PyTorch peer: weight norm (float32 and bfloat16), and the
#              side-by-side suites: GEMM FP32/TF32/bf16 vs cuBLAS, weight-normalized Linear vs plain, MNIST CNN step
#              (the JSON/Markdown are rewritten after each suite, so a timeout keeps what was measured)
#   memcheck   the weight-norm groups under compute-sanitizer --tool memcheck
#   racecheck  the weight-norm groups under compute-sanitizer --tool racecheck
#   bench-cpu  the quick weight-norm benchmark on the CPU, if time is left
# Each step logs to OUT/<step>.log and records its exit status in OUT/<step>.status; the summary comes last.
# Without a GPU the GPU steps are reported as SKIP with the reason and the script still exits 0 when the rest pass.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT_DIR=${1:-${OUT:-bench/gpu-out}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
BUDGET_S=${GPU_SH_BUDGET_S:-450} # total wall time; the device allows 8 minutes per command
START_S=$(date +%s)
STEPS=()
declare -A RESULT

now() { date +%s; }
remaining() { echo $((START_S + BUDGET_S - $(now))); }

record() { # record STEP STATUS REASON
  STEPS+=("$1")
  RESULT[$1]="$2${3:+ ($3)}"
  echo "$2${3:+ ($3)}" >"$OUT_DIR/$1.status"
  echo "== $1: $2${3:+ ($3)}"
}

# step NAME CAP_SECONDS COMMAND...: runs COMMAND with a timeout of min(CAP, time left minus a reserve for the
# summary), logging to OUT/NAME.log. Returns the command's status.
step() {
  local name=$1 cap=$2
  shift 2
  local left=$(($(remaining) - 15))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    record "$name" SKIP "out of time"
    return 99
  fi
  local shown="$*"
  echo "== $name (timeout ${limit}s): ${shown%%$'\n'*}"
  local t0=$(now)
  timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  local took=$(($(now) - t0))
  if [ $rc -eq 0 ]; then
    record "$name" PASS "${took}s"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    record "$name" FAIL "timed out after ${limit}s"
  else
    record "$name" FAIL "exit $rc after ${took}s; see $name.log"
  fi
  tail -n 5 "$OUT_DIR/$name.log" | sed 's/^/   | /'
  return $rc
}

# --- setup: node and node_modules from the carried archives ---------------------------------------------------
setup() {
  set -e
  if ! command -v node >/dev/null; then
    [ -f .device/node.xz ] || { echo "no node on PATH and no .device/node.xz (run bench/pack-device.sh here first)"; exit 1; }
    mkdir -p .device/bin
    xz -dc .device/node.xz >.device/bin/node
    chmod +x .device/bin/node
  fi
  if [ ! -d node_modules ]; then
    [ -f .device/node_modules.tar.xz ] || { echo "no node_modules and no .device/node_modules.tar.xz"; exit 1; }
    tar -xJf .device/node_modules.tar.xz
  fi
  if [ -f .device/prebuilt.tar.xz ] && [ ! -d .device/prebuilt ]; then
    tar -C .device -xJf .device/prebuilt.tar.xz
  fi
  if [ -f .device/nodedir.tar.xz ] && [ ! -f .device/nodedir/include/node/node_api.h ]; then
    mkdir -p .device/nodedir
    tar -xJf .device/nodedir.tar.xz -C .device/nodedir
  fi
  node --version
  nvidia-smi || true
  nvcc --version || true
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' || true
}
export PATH="$ROOT/.device/bin:$ROOT/node_modules/.bin:$PATH"
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
# cmake-js takes Node's headers from a local nodedir instead of downloading them.
[ -d "$ROOT/.device/nodedir" ] || [ -f "$ROOT/.device/nodedir.tar.xz" ] && export npm_config_nodedir="$ROOT/.device/nodedir"
step setup 60 bash -c "$(declare -f setup); setup"

HAVE_GPU=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then HAVE_GPU=1; fi
GPU_REASON="no NVIDIA GPU visible (nvidia-smi -L failed or missing)"
export HAVE_GPU

# --- build ---------------------------------------------------------------------------------------------------
build() {
  # With a GPU: kernels for exactly this GPU. Without one there is nothing to run them on: a CPU-only build keeps
  # the CPU-side steps quick.
  if [ "$HAVE_GPU" = 1 ]; then
    flags=(--CDCMAKE_CUDA_ARCHITECTURES=native --CDWEIGHTNORM_DEVELOPER_TOOLS=ON)
    cmake_flags=(-DCMAKE_CUDA_ARCHITECTURES=native -DWEIGHTNORM_DEVELOPER_TOOLS=ON)
  else
    flags=(--CDWEIGHTNORM_CPU_ONLY=ON --CDWEIGHTNORM_DEVELOPER_TOOLS=ON)
    cmake_flags=(-DWEIGHTNORM_CPU_ONLY=ON -DWEIGHTNORM_DEVELOPER_TOOLS=ON)
  fi
  # A carried build/ belongs to another machine's paths (CMakeCache); build fresh.
  rm -rf build
  cmake-js compile --log-level warn "${flags[@]}" && return 0
  echo "cmake-js compile failed; trying plain cmake with the N-API headers from node_modules"
  rm -rf build
  napi_inc=$(node -p "require('node-api-headers').include_dir")
  generator=$(command -v ninja >/dev/null && echo Ninja || echo "Unix Makefiles")
  cmake -S . -B build -G "$generator" -DCMAKE_BUILD_TYPE=Release -DCMAKE_JS_VERSION=fallback \
    -DCMAKE_JS_INC="$napi_inc" "${cmake_flags[@]}" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/build/Release" &&
    cmake --build build -j "$(nproc)"
}
if [ "${GPU_SH_PREBUILT:-0}" = 1 ]; then
  # Short device budgets: skip the device build and use the carried addon and test binaries (real sm_90 code).
  record build SKIP "GPU_SH_PREBUILT=1: using the carried prebuilt addon"
else
  step build 200 bash -c "$(declare -f build); build" || true
fi
if [ ! -f build/Release/weightnorm.node ] || [ "${GPU_SH_PREBUILT:-0}" = 1 ]; then
  if [ -f .device/prebuilt/weightnorm.node ]; then
    mkdir -p build/Release
    cp .device/prebuilt/weightnorm.node build/Release/
    [ -f .device/prebuilt/weightnorm_backend_ops_test ] && cp .device/prebuilt/weightnorm_backend_ops_test build/
    record build-fallback PASS "using the carried prebuilt addon (sm_80/86/89/90 + sm_90 PTX)"
  else
    record build-fallback FAIL "no carried prebuilt addon"
  fi
fi
step tsc 60 node node_modules/typescript/bin/tsc -b weightnorm-cli
node --input-type=module -e "const {native}=await import('./dist/native.js'); console.log(JSON.stringify(native.backend()))" \
  >"$OUT_DIR/backend.json" 2>&1 || true
echo "backend: $(cat "$OUT_DIR/backend.json")"

# --- native kernel test, test suite, benchmark, sanitizers (the sanitizers last: the slowest, and a timeout there
# should not cost the benchmark) ------------------------------------------------------------------------------
BENCH_DIR="$OUT_DIR/results"
NATIVE=build/weightnorm_backend_ops_test
for t in kernel gemm ops; do
  group=$([ "$t" = kernel ] && echo weightnorm || echo "$t")
  if [ -x $NATIVE ]; then
    step "$t" 90 $NATIVE --filter "$group/"
  else
    record "$t" FAIL "$NATIVE missing"
  fi
done
# The tensor-core path this GPU gets (on sm_90: whether the wgmma kernel passed its self-check), in its own process.
node --input-type=module -e "const {native}=await import('./dist/native.js'); console.log(native.tensorCoreStatus())" \
  >"$OUT_DIR/tensor-cores.txt" 2>&1 || true
echo "tensor cores: $(cat "$OUT_DIR/tensor-cores.txt")"
if [ $HAVE_GPU -eq 1 ] && command -v compute-sanitizer >/dev/null && [ -x $NATIVE ]; then
  step memcheck 75 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 1 $NATIVE --filter weightnorm/
else
  record memcheck SKIP "$([ $HAVE_GPU -eq 1 ] && echo "compute-sanitizer or the kernel test missing" || echo "$GPU_REASON")"
fi
if [ $HAVE_GPU -eq 1 ]; then
  step bench-cuda 150 node weightnorm-cli/dist/cli.js bench --device cuda --out "$BENCH_DIR"
else
  record bench-cuda SKIP "$GPU_REASON"
fi
step vitest 120 vitest run # node_modules/.bin on PATH (the device has node but no npm/npx)
if [ $HAVE_GPU -eq 1 ] && command -v compute-sanitizer >/dev/null; then
  [ -x $NATIVE ] && step racecheck 75 compute-sanitizer --tool racecheck --error-exitcode 1 $NATIVE --filter weightnorm/
  [ -x $NATIVE ] && step memcheck-gemm 60 compute-sanitizer --tool memcheck --error-exitcode 1 $NATIVE --filter gemm/cuda
  [ -x $NATIVE ] && step memcheck-ops 60 compute-sanitizer --tool memcheck --error-exitcode 1 $NATIVE --filter ops/
  [ -x $NATIVE ] && step memcheck-shape 30 compute-sanitizer --tool memcheck --error-exitcode 1 $NATIVE --filter shape/
fi
if [ "$(remaining)" -gt 75 ]; then
  step bench-cpu 90 node weightnorm-cli/dist/cli.js bench --device cpu --quick --suites weightnorm --out "$BENCH_DIR"
else
  record bench-cpu SKIP "out of time"
fi

# --- summary -------------------------------------------------------------------------------------------------
{
  echo
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  echo "==== gpu.sh summary ($(($(now) - START_S)) s; ${gpu_name:-no GPU})"
  echo "  tensor cores: $(head -c 300 "$OUT_DIR/tensor-cores.txt" 2>/dev/null)"
  for s in "${STEPS[@]}"; do printf '  %-15s %s\n' "$s" "${RESULT[$s]}"; done
  if ls "$BENCH_DIR"/*.json >/dev/null 2>&1; then
    node --input-type=module -e '
      import { readFileSync, readdirSync } from "node:fs";
      const dir = process.argv[1];
      const x = (v) => (v === null || v === undefined ? " n/a" : v.toFixed(2));
      const na = (m) => (m && "unavailable" in m ? `n/a (${String(m.unavailable).slice(0, 70)})` : null);
      for (const file of readdirSync(dir).filter((f) => f.endsWith(".json"))) {
        const r = JSON.parse(readFileSync(`${dir}/${file}`, "utf8"));
        const peer = r.peer.torch ? `torch ${r.peer.torch}` : "no torch peer";
        if (r.cases.length) console.log(`  ${r.machine}: ${r.deviceName}, ${peer}; %roof fwd/bwd fused | fused× fwd/bwd | vs torch fwd/bwd | bf16 %roof fwd/bwd`);
        else console.log(`  ${r.machine}: ${r.deviceName}, ${peer}`);
        for (const c of r.cases) {
          const [f, b] = c.rows;
          const bf = (c.bf16?.rows ?? []).map((row) => (row.ours ? row.ours.roofPct.toFixed(0) : "n/a")).join("/");
          console.log(`    ${c.case.name.padEnd(27)} copy ${c.copy.gbps.toFixed(0).padStart(5)} GB/s  ` +
            `${f.fused.roofPct.toFixed(0).padStart(3)}%/${b.fused.roofPct.toFixed(0).padStart(3)}%  ` +
            `${x(f.fusedSpeedup)}/${x(b.fusedSpeedup)}  ${x(f.vsTorchFused)}/${x(b.vsTorchFused)}  ${bf}` +
            `${c.route ? `  [${c.route}]` : ""}${c.check.pass ? "" : "  CHECK FAILED"}`);
        }
        for (const t of r.targets) console.log(`    ${t.met ? "met    " : "NOT MET"} ${t.name}`);
        if ((r.gemm ?? []).length) console.log("    GEMM: case precision | ours TFLOP/s (backend) | torch TFLOP/s | ours/torch");
        for (const g of r.gemm ?? []) {
          const ours = na(g.ours) ?? `${g.ours.tflops.toFixed(2)} (${g.ours.backend})`;
          const torch = na(g.torch) ?? g.torch.tflops.toFixed(2);
          const check = g.check && !g.check.pass ? "  CHECK FAILED" : "";
          console.log(`      ${g.case.name.padEnd(17)} ${g.precision.padEnd(4)} | ${ours} | ${torch} | ` +
            `${g.ratio === null ? "n/a" : (100 * g.ratio).toFixed(0) + "%"}${check}`);
        }
        if ((r.linear ?? []).length) console.log("    WN Linear: case | plain ms | WN ms | WN/plain | torch WN/plain");
        for (const l of r.linear ?? []) {
          const msOf = (m) => na(m) ?? m.ms.toFixed(3);
          console.log(`      ${l.case.name.padEnd(22)} | ${msOf(l.plain)} | ${msOf(l.wn)} | ${x(l.ratio)} | ${x(l.torchRatio)}` +
            `${"pass" in l.check && !l.check.pass ? "  CHECK FAILED" : ""}`);
        }
        if ((r.mnist ?? []).length) console.log("    MNIST CNN step: batch norm | ours ms | torch ms | torch/ours");
        for (const m of r.mnist ?? []) {
          const msOf = (v) => na(v) ?? v.ms.toFixed(2);
          console.log(`      b${String(m.batch).padEnd(4)} ${m.norm.padEnd(5)} | ${msOf(m.ours)} | ${msOf(m.torch)} | ${x(m.vsTorch)}` +
            `${"pass" in m.check && !m.check.pass ? "  CHECK FAILED" : ""}`);
        }
        for (const t of r.suiteGoals ?? []) console.log(`    ${t.status.toUpperCase().padEnd(11)} ${t.name}: ${t.detail}`);
      }' "$BENCH_DIR" 2>&1 || true
  fi
} | tee "$OUT_DIR/summary.txt"

for s in "${STEPS[@]}"; do
  case "${RESULT[$s]}" in FAIL*) exit 1 ;; esac
done
exit 0
