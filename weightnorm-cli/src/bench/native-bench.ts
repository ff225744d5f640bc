// The addon's benchmark harness (binding/bench.cc, typed in ts/native.ts): the bfloat16 weight-norm ops and the
// GEMM, timed, or run once for their outputs (the check before timing). A kernel that is not implemented on a
// backend throws; callers report that as "unavailable".
import { type BenchmarkOutputs, type GemmBenchmarkSpec, native, type NativeBinding, type NativeTensor } from 'weightnorm/native';

export type GemmPrecision = GemmBenchmarkSpec['precision'];
export type GemmSpec = GemmBenchmarkSpec;
export type BenchOutputs = BenchmarkOutputs;

/** The addon's benchmark entry points, as ts/native.ts types them (present in the development build only). */
export interface BenchmarkHarness {
  times: NonNullable<NativeBinding['benchmarkTimes']>;
  outputs: NonNullable<NativeBinding['benchmarkOutputs']>;
}

/**
 * binding/bench.cc's benchmarkTimes() and benchmarkOutputs(). They are compiled only into the development build of
 * the addon (a user's install leaves the harness out), so a missing one says how to get it.
 */
export function benchmarkHarness(): BenchmarkHarness {
  const { benchmarkTimes, benchmarkOutputs } = native;
  if (!benchmarkTimes || !benchmarkOutputs) {
    throw new Error(
      'the benchmarks need the development build of the addon (with its benchmark harness), and this one is the ' +
        "install build: run `npm run bench` (or `npm run build`, then `weightnorm bench`) in a checkout of weightnorm",
    );
  }
  return { times: benchmarkTimes.bind(native), outputs: benchmarkOutputs.bind(native) };
}

/** Per-run milliseconds of one GEMM (sets: [[a, b]], float32; converted to bfloat16 natively for 'bf16'). */
export function timeGemm(spec: GemmSpec, sets: NativeTensor[][], warmup: number, repeats: number): number[] {
  return Array.from(benchmarkHarness().times({ op: 'gemm', gemm: spec, sets }, warmup, repeats));
}

/** One GEMM on sets[0], its output as a float32 tensor, and the backend that computed it. */
export function gemmOutputs(spec: GemmSpec, set: NativeTensor[]): BenchOutputs {
  return benchmarkHarness().outputs({ op: 'gemm', gemm: spec, sets: [set] });
}

/** Per-run milliseconds of the bfloat16 weight norm (sets as for the float32 op; converted natively). */
export function timeWeightNormBf16(op: 'forward' | 'backward', sets: NativeTensor[][], dim: number | null, eps: number, warmup: number, repeats: number): number[] {
  return Array.from(benchmarkHarness().times({ op: `${op}-bf16`, sets, dim, eps }, warmup, repeats));
}

/** One bfloat16 weight-norm run on `set`: w and norm (forward) or dv and dg (backward), widened to float32. */
export function weightNormBf16Outputs(op: 'forward' | 'backward', set: NativeTensor[], dim: number | null, eps: number): BenchOutputs {
  return benchmarkHarness().outputs({ op: `${op}-bf16`, sets: [set], dim, eps });
}
