// The typed contract of binding/bench.cc's benchmark() beyond the float32 weight-norm ops that ts/native.ts
// declares: the bfloat16 weight-norm overloads and the GEMM, timed, or run once for their outputs (the check
// before timing). A kernel that is not implemented on a backend throws; callers report that as "unavailable".
import { native, type NativeBinding, type NativeTensor } from 'weightnorm/native';

export type GemmPrecision = 'fp32' | 'tf32' | 'bf16';

export interface GemmSpec {
  m: number;
  n: number;
  k: number;
  transposeA: boolean;
  transposeB: boolean;
  precision: GemmPrecision;
}

export interface BenchOutputs {
  /** float32 (bfloat16 outputs widened exactly). */
  out: NativeTensor;
  /** norm (forward) or dg (backward); null for the GEMM. */
  perChannel: NativeTensor | null;
  /** The GEMM implementation that ran (cpu: openblas | blocked; cuda: simt | the tensor-core kernel); '' otherwise. */
  backend: string;
}

type Op = 'forward-bf16' | 'backward-bf16' | 'gemm';

interface ExtendedBenchmark {
  (op: Op, variant: GemmSpec | boolean, sets: NativeTensor[][], dim: number | null, eps: number, warmup: number, repeats: number): Float64Array;
  (op: Op, variant: GemmSpec | boolean, sets: NativeTensor[][], dim: number | null, eps: number, warmup: number, repeats: 0): BenchOutputs;
}

/**
 * binding/bench.cc's benchmark(). It is compiled only into the development build of the addon (a user's install
 * leaves the harness out), so a missing one says how to get it.
 */
export function benchmarkHarness(): NonNullable<NativeBinding['benchmark']> {
  if (!native.benchmark) {
    throw new Error(
      'the benchmarks need the development build of the addon (with its benchmark harness), and this one is the ' +
        "install build: run `npm run bench` (or `npm run build`, then `weightnorm bench`) in a checkout of weightnorm",
    );
  }
  return native.benchmark;
}

function benchmark(op: Op, variant: GemmSpec | boolean, sets: NativeTensor[][], dim: number | null, eps: number, warmup: number, repeats: number): Float64Array | BenchOutputs {
  return (benchmarkHarness() as unknown as ExtendedBenchmark)(op, variant, sets, dim, eps, warmup, repeats);
}

/** Per-run milliseconds of one GEMM (sets: [[a, b]], float32; converted to bfloat16 natively for 'bf16'). */
export function timeGemm(spec: GemmSpec, sets: NativeTensor[][], warmup: number, repeats: number): number[] {
  return Array.from(benchmark('gemm', spec, sets, null, 0, warmup, repeats) as Float64Array);
}

/** One GEMM on sets[0], its output as a float32 tensor, and the backend that computed it. */
export function gemmOutputs(spec: GemmSpec, set: NativeTensor[]): BenchOutputs {
  return benchmark('gemm', spec, [set], null, 0, 0, 0) as BenchOutputs;
}

/** Per-run milliseconds of the bfloat16 weight norm (sets as for the float32 op; converted natively). */
export function timeWeightNormBf16(op: 'forward' | 'backward', sets: NativeTensor[][], dim: number | null, eps: number, warmup: number, repeats: number): number[] {
  return Array.from(benchmark(`${op}-bf16`, true, sets, dim, eps, warmup, repeats) as Float64Array);
}

/** One bfloat16 weight-norm run on `set`: w and norm (forward) or dv and dg (backward), widened to float32. */
export function weightNormBf16Outputs(op: 'forward' | 'backward', set: NativeTensor[], dim: number | null, eps: number): BenchOutputs {
  return benchmark(`${op}-bf16`, true, [set], dim, eps, 0, 0) as BenchOutputs;
}
