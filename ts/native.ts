// The typed contract of the raw N-API binding (binding/addon.cc), and its loader. The public API validates
// arguments first and only then calls down here. Outside ts/, only the tools package (weightnorm-cli: the
// benchmarks) imports it, as 'weightnorm/native': it is not part of the library's stable API.
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export type Device = 'cpu' | 'cuda';
export type DType = 'float32' | 'bfloat16';

export interface NativeTensor {
  readonly shape: number[];
  readonly device: Device | null; // null once disposed
  readonly disposed: boolean;
  readonly dtype: DType;
  /** Widened to float32 for a bfloat16 tensor. */
  toArray(): Float32Array;
  data(): Promise<Float32Array>;
  to(device: Device): NativeTensor;
  dispose(): void;
}

export interface CudaDeviceInfo {
  name: string;
  computeCapability: string;
  multiprocessors: number;
  totalBytes: number;
  count: number;
}

export interface NativeBackend {
  /**
   * gemm: which CPU GEMM runs, from where or why, e.g. 'OpenBLAS (<its config>; loaded at run time from <path>; 1
   * thread per tile)' or 'blocked (hand-written): OpenBLAS not found (<why, per candidate>)'.
   */
  cpu: { threads: number; gemm: string };
  /**
   * gemm (CUDA builds): 'simt' (float32), or with setMatmulPrecision('high') 'tf32-mma' (mma.sync) or 'tf32-wgmma'
   * (Hopper, after its self-check passed).
   */
  cuda: { compiled: boolean; usable: boolean; reason?: string; gemm?: string; device?: CudaDeviceInfo };
}

export interface DeviceMemory {
  /** Live tensors and the bytes they asked for. */
  tensors: number;
  bytes: number;
  /** The caching allocator (CPU, and CUDA where compiled): bytes held by live blocks (rounded sizes) and freed blocks kept for reuse. */
  allocatorBytes?: number;
  cachedBytes?: number;
  /** CPU only: the most the cache keeps (setCpuCacheLimit). */
  cacheLimitBytes?: number;
}

/** GEMM epilogue (cpu/gemm.h): out = acc·rowScale·columnScale + rowBias + columnBias − subtractCoefficient·subtractMatrix + beta·out. */
export interface GemmEpilogue {
  rowScale?: NativeTensor | null;
  columnScale?: NativeTensor | null;
  rowBias?: NativeTensor | null;
  columnBias?: NativeTensor | null;
  subtractCoefficient?: NativeTensor | null;
  subtractMatrix?: NativeTensor | null;
  beta?: number;
  /** Accumulate into / write this tensor instead of a new one. */
  out?: NativeTensor | null;
  /** Also store the raw product (before the epilogue) here. */
  rawOut?: NativeTensor | null;
}

export interface NativeBinding {
  NativeTensor: abstract new (...args: never[]) => NativeTensor;
  fromArray(data: Float32Array, shape: number[], device: Device, dtype?: DType): NativeTensor;
  zeros(shape: number[], device: Device, dtype?: DType): NativeTensor;
  /** Uninitialized float32 memory, for outputs a kernel overwrites in full. */
  empty(shape: number[], device: Device): NativeTensor;
  randn(shape: number[], seed: number, device: Device, mean: number, std: number, dtype?: DType): NativeTensor;
  cast(t: NativeTensor, dtype: DType): NativeTensor;
  setMatmulPrecision(precision: 'highest' | 'high'): void;
  matmulPrecision(): 'highest' | 'high';
  tensorCoreStatus(): string;
  /** CUDA: the route the last fused weight-norm call took (diagnostics for tests and benchmarks); 'cpu' elsewhere. */
  weightNormRoute(): string;
  weightNorm(v: NativeTensor, g: NativeTensor, dim: number | null, eps: number, fused: boolean): {
    w: NativeTensor;
    norm: NativeTensor;
  };
  weightNormBackward(
    dw: NativeTensor,
    v: NativeTensor,
    g: NativeTensor,
    norm: NativeTensor,
    dim: number | null,
    eps: number,
    fused: boolean,
  ): { dv: NativeTensor; dg: NativeTensor };
  backend(): NativeBackend;
  memory(): { cpu: DeviceMemory; cuda: DeviceMemory };
  setNumThreads(threads: number): void;
  synchronize(): void;
  releaseCachedMemory(): void;
  setCpuCacheLimit(bytes: number): void;
  // Training-stack ops (binding/nn.cc).
  binary(op: 'add' | 'multiply', a: NativeTensor, b: NativeTensor): NativeTensor;
  scale(x: NativeTensor, alpha: number): NativeTensor;
  axpby(y: NativeTensor, alpha: number, x: NativeTensor, beta: number): void;
  full(shape: number[], value: number, device: Device): NativeTensor;
  reshape(x: NativeTensor, shape: number[]): NativeTensor;
  activation(kind: 'relu' | 'tanh', x: NativeTensor, negativeSlope: number): NativeTensor;
  activationBackward(kind: 'relu' | 'tanh', dy: NativeTensor, saved: NativeTensor, negativeSlope: number): NativeTensor;
  dropout(x: NativeTensor, p: number, seed: number): { y: NativeTensor; mask: NativeTensor };
  gaussianNoise(x: NativeTensor, std: number, seed: number): NativeTensor;
  channelOp(op: 'biasAdd' | 'scale', x: NativeTensor, perChannel: NativeTensor, outer: number, channels: number, inner: number): NativeTensor;
  sumAll(x: NativeTensor): NativeTensor;
  channelReduce(op: 'sum' | 'dot', a: NativeTensor, b: NativeTensor | null, outer: number, channels: number, inner: number): NativeTensor;
  softmaxCrossEntropy(logits: NativeTensor, labels: NativeTensor): { loss: NativeTensor; probs: NativeTensor };
  softmaxCrossEntropyBackward(probs: NativeTensor, labels: NativeTensor, dloss: NativeTensor): NativeTensor;
  gemm(a: NativeTensor, b: NativeTensor, m: number, n: number, k: number, transposeA: boolean, transposeB: boolean, epilogue: GemmEpilogue): NativeTensor;
  conv2d(x: NativeTensor, w: NativeTensor, bias: NativeTensor | null, stride: number, padding: number): NativeTensor;
  conv2dBackward(dy: NativeTensor, x: NativeTensor, w: NativeTensor, stride: number, padding: number, wantDx: boolean, wantDw: boolean, wantDbias: boolean): { dx?: NativeTensor; dw?: NativeTensor; dbias?: NativeTensor };
  maxPool2d(x: NativeTensor, kernel: number, stride: number): NativeTensor;
  maxPool2dBackward(dy: NativeTensor, x: NativeTensor, kernel: number, stride: number): NativeTensor;
  globalAvgPool(x: NativeTensor): NativeTensor;
  globalAvgPoolBackward(dy: NativeTensor, inputShape: number[]): NativeTensor;
  batchNorm(x: NativeTensor, gamma: NativeTensor, beta: NativeTensor, outer: number, channels: number, inner: number, eps: number): { y: NativeTensor; mean: NativeTensor; var: NativeTensor; invstd: NativeTensor };
  batchNormBackward(dy: NativeTensor, x: NativeTensor, mean: NativeTensor, invstd: NativeTensor, gamma: NativeTensor, outer: number, channels: number, inner: number): { dx: NativeTensor; dgamma: NativeTensor; dbeta: NativeTensor };
  batchNormInference(x: NativeTensor, runningMean: NativeTensor, runningVar: NativeTensor, gamma: NativeTensor, beta: NativeTensor, outer: number, channels: number, inner: number, eps: number): NativeTensor;
  batchNormInferenceBackward(dy: NativeTensor, x: NativeTensor, runningMean: NativeTensor, runningVar: NativeTensor, gamma: NativeTensor, outer: number, channels: number, inner: number, eps: number, wantDx: boolean, wantDgamma: boolean, wantDbeta: boolean): { dx?: NativeTensor; dgamma?: NativeTensor; dbeta?: NativeTensor };
  meanOnlyBatchNorm(x: NativeTensor, bias: NativeTensor, runningMean: NativeTensor | null, outer: number, channels: number, inner: number): { y: NativeTensor; mean: NativeTensor };
  meanOnlyBatchNormBackward(dy: NativeTensor, outer: number, channels: number, inner: number): { dx: NativeTensor; dbias: NativeTensor };
  weightNormScale(g: NativeTensor, norm: NativeTensor): NativeTensor;
  weightNormCoefficients(dot: NativeTensor, g: NativeTensor, norm: NativeTensor, eps: number): { dg: NativeTensor; c1: NativeTensor; c2: NativeTensor };
  optimizerStep(
    kind: 'sgd' | 'adam' | 'adamax',
    param: NativeTensor,
    grad: NativeTensor,
    state1: NativeTensor | null,
    state2: NativeTensor | null,
    options: Record<string, number | boolean>,
    step: number,
    norm: NativeTensor | null,
    outer: number,
    channels: number,
    inner: number,
    normEps: number,
  ): void;
  /**
   * Times kernels natively with preallocated outputs; run i uses sets[i % sets.length]. Milliseconds per run.
   * Only in the development build (npm run build in a checkout): a user's install leaves it out.
   */
  benchmark?(
    op: 'forward' | 'backward' | 'copy',
    fused: boolean,
    sets: NativeTensor[][],
    dim: number | null,
    eps: number,
    warmup: number,
    repeats: number,
  ): Float64Array;
}

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const load = require('node-gyp-build') as (root: string) => unknown;

/**
 * The addon from build/Release (a source build) or prebuilds/ (the package's prebuilt one), found by
 * node-gyp-build. Its own error ("No native build was found for platform=...") does not say what to do; the usual
 * cause is an install that skipped the build script (`--ignore-scripts`, pnpm's default) on a machine the
 * prebuilt addon does not cover.
 */
function loadAddon(): NativeBinding {
  try {
    return load(packageRoot) as NativeBinding;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (!message.startsWith('No native build was found')) throw error;
    throw new Error(
      `weightnorm: no native addon for ${process.platform}-${process.arch} in ${packageRoot}: the package carries a ` +
        'prebuilt one for linux-x64 (glibc) only, and no source build ran (was the install run with scripts ' +
        'disabled, e.g. --ignore-scripts or pnpm without allowing its build?). Build it: `npm rebuild weightnorm` ' +
        '(pnpm: add weightnorm to onlyBuiltDependencies, then `pnpm rebuild weightnorm`), which needs CMake >= 3.18 ' +
        'and a C++17 compiler with OpenMP.',
      { cause: error },
    );
  }
}

export const native = loadAddon();
