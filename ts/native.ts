// The typed contract of the raw N-API binding (binding/addon.cc), and its loader. The public API validates
// arguments first and only then calls down here. Outside ts/, only the tools package (weightnorm-cli: the
// benchmarks) imports it, as 'weightnorm/native': it is not part of the library's stable API.
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import './openmp-env.js'; // sets OMP_WAIT_POLICY (unless the user did) before libgomp loads with the addon

export type Device = 'cpu' | 'cuda';
export type DType = 'float32' | 'bfloat16' | 'int32' | 'bool';
/** Host data of a tensor: Float32Array for float32 and bfloat16 (widened), Int32Array for int32, Uint8Array (0/1) for bool. */
export type TensorArray = Float32Array | Int32Array | Uint8Array;

/**
 * A native tensor handle. dispose() frees its memory and its native side at once: afterwards `disposed` is true,
 * `device` null, dispose() does nothing, and everything else (shape, dtype, the methods, any op given it) throws that
 * it was disposed. A handle never disposed is freed when the garbage collector finds it.
 */
export interface NativeTensor {
  readonly shape: number[];
  readonly device: Device | null; // null once disposed
  readonly disposed: boolean;
  readonly dtype: DType;
  /** Widened to float32 for a bfloat16 tensor; Int32Array for int32; Uint8Array for bool. */
  toArray(): TensorArray;
  data(): Promise<TensorArray>;
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
  cpu: {
    /** The thread count the CPU kernels use now. */
    threads: number;
    /**
     * Who chose it: 'setNumThreads', 'OMP_NUM_THREADS' (read when the library loads), or 'automatic': the cores left
     * after other processes' recent use of them (see setNumThreads).
     */
    threadSource: 'setNumThreads' | 'OMP_NUM_THREADS' | 'automatic';
    /** Cores this process may run on (its CPU affinity): the automatic choice's ceiling. */
    cores: number;
    /**
     * Once measured (the first parallel region or automatic count starts the sampler): cores' worth of CPU time other
     * processes used on those cores lately. The automatic count and the adaptive wait policy follow it.
     */
    otherBusyCores?: number;
    /**
     * How the kernels' threads wait between parallel regions: 'adaptive' (spin briefly while no other process uses
     * the cores, else sleep at once), 'passive' or 'active' (WEIGHTNORM_OMP_WAIT_POLICY or OMP_WAIT_POLICY).
     */
    waitPolicy: 'adaptive' | 'passive' | 'active';
    gemm: string;
    /**
     * The kernels OpenBLAS chose when it loaded (its openblas_get_corename, e.g. 'Cooperlake', 'Haswell'): from the
     * CPU, or from OPENBLAS_CORETYPE when that is set. Absent when OpenBLAS is not loaded.
     */
    blasCore?: string;
  };
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

/** gemm's options: op(a) is [m, k] (a stored [k, m] when transposeA), op(b) is [k, n] (b stored [n, k] when
 *  transposeB); both flags default to false, the epilogue to none. */
export interface GemmOptions {
  m: number;
  n: number;
  k: number;
  transposeA?: boolean;
  transposeB?: boolean;
  epilogue?: GemmEpilogue;
}

// Enum-like arguments: the native side rejects any other string with a TypeError naming the function, the parameter,
// the accepted values and what came.
export type BinaryOp = 'add' | 'multiply';
export type ActivationKind = 'relu' | 'tanh';
export type ChannelOpKind = 'biasAdd' | 'scale';
export type ChannelReduceOp = 'sum' | 'dot';
export type OptimizerKind = 'sgd' | 'adam' | 'adamax';
export type AxisReduceOp = 'sum' | 'mean' | 'max' | 'min' | 'logsumexp' | 'var' | 'std';
export type AxisReduceBackwardOp = 'broadcast' | 'extremum' | 'argmax' | 'argmin' | 'logsumexp' | 'var' | 'std';
export type PointwiseBinaryOp =
  | 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'minimum' | 'maximum'
  | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge' | 'logicalAnd' | 'logicalOr';
export type PointwiseUnaryOp =
  | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'abs' | 'sign' | 'clamp' | 'sigmoid' | 'tanh' | 'relu' | 'leakyRelu'
  | 'elu' | 'softplus' | 'gelu' | 'geluTanh' | 'silu' | 'logicalNot';

/** Also write ‖param‖ per channel of param's [outer, channels, inner] view into `norm` (the weight-norm state). */
export interface OptimizerNormOutput {
  norm: NativeTensor;
  outer: number;
  channels: number;
  inner: number;
  eps: number;
}

interface OptimizerStepCommon {
  param: NativeTensor;
  grad: NativeTensor;
  /** The parameter's own update count, from 1. */
  step: number;
  lr: number;
  weightDecay: number;
  normOutput?: OptimizerNormOutput | null;
}

export interface SgdStepOptions extends OptimizerStepCommon {
  momentum: number;
  dampening: number;
  nesterov: boolean;
  /** Required when momentum != 0. */
  momentumBuffer?: NativeTensor | null;
}

interface AdamFamilyStepOptions extends OptimizerStepCommon {
  beta1: number;
  beta2: number;
  eps: number;
  expAvg: NativeTensor;
}

export interface AdamStepOptions extends AdamFamilyStepOptions {
  expAvgSq: NativeTensor;
}

export interface AdamaxStepOptions extends AdamFamilyStepOptions {
  /** The exponentially weighted infinity norm. */
  expInf: NativeTensor;
}

/**
 * A multi-tensor optimizer step (optimizerSteps): one group's hyperparameters, and per parameter (same index in
 * every array) its tensor, gradient, own step count, state tensors and norm output.
 */
interface OptimizerStepsCommon {
  params: NativeTensor[];
  grads: NativeTensor[];
  steps: number[];
  normOutputs: (OptimizerNormOutput | null)[];
  lr: number;
  weightDecay: number;
}

export interface SgdStepsOptions extends OptimizerStepsCommon {
  momentum: number;
  dampening: number;
  nesterov: boolean;
  /** Entries may be null when momentum is 0. */
  momentumBuffers: (NativeTensor | null)[];
}

interface AdamFamilyStepsOptions extends OptimizerStepsCommon {
  beta1: number;
  beta2: number;
  eps: number;
  expAvgs: NativeTensor[];
}

export interface AdamStepsOptions extends AdamFamilyStepsOptions {
  expAvgSqs: NativeTensor[];
}

export interface AdamaxStepsOptions extends AdamFamilyStepsOptions {
  expInfs: NativeTensor[];
}

export interface Conv2dBackwardOptions {
  stride: number;
  padding: number;
  wantDx: boolean;
  wantDw: boolean;
  wantDbias: boolean;
}

/** A convolution's per-axis settings, [height, width] each (a 1-D convolution has height 1). */
export interface ConvGeometryOptions {
  stride: number[];
  padding: number[];
  dilation: number[];
  groups: number;
}

export interface ConvOptions extends ConvGeometryOptions {
  /** Weight norm over dim 0: y = channelScale ⊙ conv(x, v) + bias, and rawOut (allocated like y) gets conv(x, v). */
  channelScale?: NativeTensor;
  rawOut?: NativeTensor;
}

export interface ConvBackwardOptions extends ConvGeometryOptions {
  wantDx: boolean;
  wantDw: boolean;
  wantDbias: boolean;
  /** Weight norm over dim 0: dw becomes dv = dwScale ⊙ (dy ⋆ x) − dwSubtractCoefficient ⊙ dwSubtractMatrix. */
  dwScale?: NativeTensor;
  dwSubtractCoefficient?: NativeTensor;
  dwSubtractMatrix?: NativeTensor;
}

export interface ConvTransposeOptions extends ConvGeometryOptions {
  /** [height, width] of the output. */
  outputSize: number[];
}

export interface ConvTransposeBackwardOptions extends ConvGeometryOptions {
  wantDx: boolean;
  wantDw: boolean;
  wantDbias: boolean;
}

/** Pads of the last two axes (a 1-D pad: top = bottom = 0 on a height-1 view). */
export interface PadNativeOptions {
  top: number;
  bottom: number;
  left: number;
  right: number;
  mode: 'constant' | 'reflect' | 'replicate';
  value: number;
}

export interface BatchNormInferenceBackwardOptions {
  outer: number;
  channels: number;
  inner: number;
  eps: number;
  wantDx: boolean;
  wantDgamma: boolean;
  wantDbeta: boolean;
}

/** The weight-normalized Linear's backward: its weight-norm eps, and which gradients to compute and return. */
export interface WeightNormLinearBackwardOptions {
  eps: number;
  wantDx: boolean;
  wantDv: boolean;
  wantDg: boolean;
  wantDbias: boolean;
}

/** Elements of a tensor's flat storage walked as an array of `shape` (strides and offset in elements, as torch's as_strided). */
export interface StridedWalk {
  shape: number[];
  strides: number[];
  offset: number;
}

// Losses (binding/loss.cc; the maths in include/weightnorm/loss.h).
export type PointwiseLossKind = 'mse' | 'l1' | 'huber' | 'smoothL1' | 'bce' | 'bceWithLogits';
export type LossReductionKind = 'none' | 'sum' | 'mean';

/** Per-element factors, each broadcast by repetition over the input (its element count divides the input's). */
export interface PointwiseLossFactors {
  /** Huber's delta or smooth L1's beta (ignored by the others). */
  parameter: number;
  weight?: NativeTensor | null;
  /** bceWithLogits only. */
  posWeight?: NativeTensor | null;
}

/** The [outer, classes, inner] view of an [N, C, d1, ...] input, one label per (outer, inner) position. */
export interface ClassLossOptions {
  outer: number;
  classes: number;
  inner: number;
  ignoreIndex: number;
  labelSmoothing: number;
  classWeight?: NativeTensor | null;
  /** true: the input is logits (cross-entropy, softmax saved); false: log-probabilities (NLL). */
  fromLogits: boolean;
}

export type GemmBenchmarkPrecision = 'fp32' | 'tf32' | 'bf16';

export interface GemmBenchmarkSpec {
  m: number;
  n: number;
  k: number;
  transposeA: boolean;
  transposeB: boolean;
  precision: GemmBenchmarkPrecision;
}

/** Input sets (read only): run i uses sets[i % sets.length]. */
export type BenchmarkSets = ReadonlyArray<readonly NativeTensor[]>;
/**
 * What the benchmark entry points run. Run i uses sets[i % sets.length] (rotating buffers keeps the inputs out of
 * cache). Sets: copy [x]; forward [v, g]; backward [dw, v, g, norm]; gemm [a, b]. All float32: the bfloat16
 * weight-norm ops and the bf16 GEMM convert their per-element inputs natively before timing.
 */
export type BenchmarkRequest =
  | { op: 'copy'; sets: BenchmarkSets }
  | { op: 'forward' | 'backward'; fused: boolean; sets: BenchmarkSets; dim: number | null; eps: number }
  | { op: 'forward-bf16' | 'backward-bf16'; sets: BenchmarkSets; dim: number | null; eps: number }
  | { op: 'gemm'; gemm: GemmBenchmarkSpec; sets: BenchmarkSets };

/** One run's outputs on sets[0], for the check before timing. */
export interface BenchmarkOutputs {
  /** float32 (bfloat16 outputs widened exactly): w, dv or the GEMM's product. */
  out: NativeTensor;
  /** norm (forward) or dg (backward); null for the GEMM. */
  perChannel: NativeTensor | null;
  /** The GEMM implementation that ran (cpu: openblas | blocked; cuda: simt | the tensor-core kernel); '' otherwise. */
  backend: string;
}

export interface NativeBinding {
  NativeTensor: abstract new (...args: never[]) => NativeTensor;
  /** data: a Float32Array for float32 and bfloat16, an Int32Array for int32, a Uint8Array of 0s and 1s for bool. */
  fromArray(data: Float32Array | Int32Array | Uint8Array, shape: number[], device: Device, dtype?: DType): NativeTensor;
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
  /** The address of a CUDA tensor's memory, after the library stream has finished (for NCCL, ts/distributed.ts). */
  cudaAddress(tensor: NativeTensor): bigint;
  releaseCachedMemory(): void;
  setCpuCacheLimit(bytes: number): void;
  // Training-stack ops (binding/nn.cc).
  binary(op: BinaryOp, a: NativeTensor, b: NativeTensor): NativeTensor;
  scale(x: NativeTensor, alpha: number): NativeTensor;
  axpby(y: NativeTensor, alpha: number, x: NativeTensor, beta: number): void;
  /** Whether no other live handle (view or alias) shares x's storage: changing x in place then changes nothing else. */
  ownsStorageAlone(x: NativeTensor): boolean;
  full(shape: number[], value: number, device: Device): NativeTensor;
  reshape(x: NativeTensor, shape: number[]): NativeTensor;
  activation(kind: ActivationKind, x: NativeTensor, negativeSlope: number): NativeTensor;
  activationBackward(kind: ActivationKind, dy: NativeTensor, saved: NativeTensor, negativeSlope: number): NativeTensor;
  dropout(x: NativeTensor, p: number, seed: number): { y: NativeTensor; mask: NativeTensor };
  gaussianNoise(x: NativeTensor, std: number, seed: number): NativeTensor;
  channelOp(op: ChannelOpKind, x: NativeTensor, perChannel: NativeTensor, outer: number, channels: number, inner: number): NativeTensor;
  sumAll(x: NativeTensor): NativeTensor;
  channelReduce(op: ChannelReduceOp, a: NativeTensor, b: NativeTensor | null, outer: number, channels: number, inner: number): NativeTensor;
  softmaxCrossEntropy(logits: NativeTensor, labels: NativeTensor): { loss: NativeTensor; probs: NativeTensor };
  softmaxCrossEntropyBackward(probs: NativeTensor, labels: NativeTensor, dloss: NativeTensor): NativeTensor;
  /** loss: each element's weighted loss (input's shape); reduced [1]: their sum or mean. */
  pointwiseLoss(
    kind: PointwiseLossKind,
    input: NativeTensor,
    target: NativeTensor,
    options: PointwiseLossFactors & { reduction: LossReductionKind },
  ): { loss: NativeTensor; reduced: NativeTensor };
  /** dloss is [1] (scaled by options.scale: 1/count for the mean) or one value per element. */
  pointwiseLossBackward(
    kind: PointwiseLossKind,
    dloss: NativeTensor,
    input: NativeTensor,
    target: NativeTensor,
    options: PointwiseLossFactors & { scale: number },
  ): NativeTensor;
  /**
   * positionLoss [outer·inner] ('none' only); reduced [1] (sum, or mean over the weights; not for 'none');
   * weightTotal [1] ('mean' only); saved: the softmax (logits only). The others are null.
   */
  classLoss(
    input: NativeTensor,
    labels: NativeTensor,
    options: ClassLossOptions & { reduction: LossReductionKind },
  ): { positionLoss: NativeTensor | null; reduced: NativeTensor | null; weightTotal: NativeTensor | null; saved: NativeTensor | null };
  /**
   * dloss is [1] or one value per position; weightTotal divides it (the mean) when given. Returns `shape` (the
   * input's; default [outer, classes, inner]).
   */
  classLossBackward(
    saved: NativeTensor | null,
    labels: NativeTensor,
    dloss: NativeTensor,
    weightTotal: NativeTensor | null,
    options: ClassLossOptions,
    shape?: number[],
  ): NativeTensor;
  /** out [m, n] = op(a)·op(b) through options.epilogue; unknown fields in options or epilogue are TypeErrors. */
  gemm(a: NativeTensor, b: NativeTensor, options: GemmOptions): NativeTensor;
  conv2d(x: NativeTensor, w: NativeTensor, bias: NativeTensor | null, stride: number, padding: number): NativeTensor;
  conv2dBackward(dy: NativeTensor, x: NativeTensor, w: NativeTensor, options: Conv2dBackwardOptions): { dx?: NativeTensor; dw?: NativeTensor; dbias?: NativeTensor };
  conv(x: NativeTensor, w: NativeTensor, bias: NativeTensor | null, options: ConvOptions): NativeTensor;
  convBackward(dy: NativeTensor, x: NativeTensor, w: NativeTensor, options: ConvBackwardOptions): { dx?: NativeTensor; dw?: NativeTensor; dbias?: NativeTensor };
  convTranspose(x: NativeTensor, w: NativeTensor, bias: NativeTensor | null, options: ConvTransposeOptions): NativeTensor;
  convTransposeBackward(dy: NativeTensor, x: NativeTensor, w: NativeTensor, options: ConvTransposeBackwardOptions): { dx?: NativeTensor; dw?: NativeTensor; dbias?: NativeTensor };
  pad(x: NativeTensor, options: PadNativeOptions): NativeTensor;
  padBackward(dy: NativeTensor, inputShape: number[], options: PadNativeOptions): NativeTensor;
  upsampleNearest(x: NativeTensor, scaleHeight: number, scaleWidth: number): NativeTensor;
  upsampleNearestBackward(dy: NativeTensor, inputShape: number[], scaleHeight: number, scaleWidth: number): NativeTensor;
  /** relu: pool relu(x) (the ReLU fused into the pass); false when omitted. */
  maxPool2d(x: NativeTensor, kernel: number, stride: number, relu?: boolean): NativeTensor;
  /** relu: x is the fused ReLU's input and the result its gradient. */
  maxPool2dBackward(dy: NativeTensor, x: NativeTensor, kernel: number, stride: number, relu?: boolean): NativeTensor;
  globalAvgPool(x: NativeTensor): NativeTensor;
  globalAvgPoolBackward(dy: NativeTensor, inputShape: number[]): NativeTensor;
  batchNorm(x: NativeTensor, gamma: NativeTensor, beta: NativeTensor, outer: number, channels: number, inner: number, eps: number): { y: NativeTensor; mean: NativeTensor; var: NativeTensor; invstd: NativeTensor };
  batchNormBackward(dy: NativeTensor, x: NativeTensor, mean: NativeTensor, invstd: NativeTensor, gamma: NativeTensor, outer: number, channels: number, inner: number): { dx: NativeTensor; dgamma: NativeTensor; dbeta: NativeTensor };
  batchNormInference(x: NativeTensor, runningMean: NativeTensor, runningVar: NativeTensor, gamma: NativeTensor, beta: NativeTensor, outer: number, channels: number, inner: number, eps: number): NativeTensor;
  batchNormInferenceBackward(dy: NativeTensor, x: NativeTensor, runningMean: NativeTensor, runningVar: NativeTensor, gamma: NativeTensor, options: BatchNormInferenceBackwardOptions): { dx?: NativeTensor; dgamma?: NativeTensor; dbeta?: NativeTensor };
  meanOnlyBatchNorm(x: NativeTensor, bias: NativeTensor, runningMean: NativeTensor | null, outer: number, channels: number, inner: number): { y: NativeTensor; mean: NativeTensor };
  meanOnlyBatchNormBackward(dy: NativeTensor, outer: number, channels: number, inner: number): { dx: NativeTensor; dbias: NativeTensor };
  weightNormScale(g: NativeTensor, norm: NativeTensor): NativeTensor;
  weightNormCoefficients(dot: NativeTensor, g: NativeTensor, norm: NativeTensor, eps: number): { dg: NativeTensor; c1: NativeTensor; c2: NativeTensor };
  /**
   * The weight-normalized Linear (dim 0) forward: y = (x·vᵀ) ⊙ g/norm + bias; with keepForBackward y carries
   * t = x·vᵀ for weightNormLinearBackward (freed with y).
   */
  weightNormLinear(x: NativeTensor, v: NativeTensor, g: NativeTensor, norm: NativeTensor, bias: NativeTensor | null, keepForBackward: boolean): NativeTensor;
  /** Its backward in one call (y: the forward's output, which carries t); only the gradients asked for (wantDx, ...) are returned. */
  weightNormLinearBackward(dy: NativeTensor, x: NativeTensor, v: NativeTensor, g: NativeTensor, norm: NativeTensor, y: NativeTensor, options: WeightNormLinearBackwardOptions): { dx?: NativeTensor; dv?: NativeTensor; dg?: NativeTensor; dbias?: NativeTensor };
  // Tensor math with broadcasting (binding/pointwise.cc): operands share one dtype (ts/pointwise.ts promotes).
  pointwiseBinary(op: PointwiseBinaryOp, a: NativeTensor, b: NativeTensor, alpha: number): NativeTensor;
  /** The gradient of operand 0 (a) or 1 (b) at every output element, before sumTo. */
  pointwiseBinaryBackward(op: PointwiseBinaryOp, operand: 0 | 1, dy: NativeTensor, a: NativeTensor, b: NativeTensor, alpha: number): NativeTensor;
  where(condition: NativeTensor, a: NativeTensor, b: NativeTensor): NativeTensor;
  /** x summed over the dimensions broadcasting stretched or added to reach x's shape from `shape`. */
  sumTo(x: NativeTensor, shape: number[]): NativeTensor;
  /** first/second: clamp's min/max (NaN: none), leakyRelu's slope, elu's alpha, softplus's beta/threshold. */
  pointwiseUnary(op: PointwiseUnaryOp, x: NativeTensor, first: number, second: number): NativeTensor;
  pointwiseUnaryBackward(op: PointwiseUnaryOp, dy: NativeTensor, x: NativeTensor, y: NativeTensor, first: number, second: number): NativeTensor;
  /** One in-place optimizer update of options.param (and its state tensors). */
  // Axis reductions over the view [outer, reduce, inner] (ts/reduce.ts); reductions return [outer * inner].
  axisReduce(op: AxisReduceOp, x: NativeTensor, outer: number, reduce: number, inner: number, correction: number): NativeTensor;
  /** values (float32) and indices (int32), both created with `shape` (outer * inner elements). */
  /** values and indices of `shape` (outer·inner elements); unknown option fields are TypeErrors. */
  axisArgReduce(x: NativeTensor, options: { largest: boolean; outer: number; reduce: number; inner: number; shape: number[] }): { values: NativeTensor; indices: NativeTensor };
  softmax(x: NativeTensor, outer: number, reduce: number, inner: number, log: boolean): NativeTensor;
  softmaxBackward(dy: NativeTensor, y: NativeTensor, outer: number, reduce: number, inner: number, log: boolean): NativeTensor;
  axisReduceBackward(op: AxisReduceBackwardOp, dy: NativeTensor, x: NativeTensor | null, y: NativeTensor | null, outer: number, reduce: number, inner: number, scalar: number): NativeTensor;
  optimizerStep(kind: 'sgd', options: SgdStepOptions): void;
  optimizerStep(kind: 'adam', options: AdamStepOptions): void;
  optimizerStep(kind: 'adamax', options: AdamaxStepOptions): void;
  /** The same update for every parameter of a group in one call (same bits as optimizerStep on each). */
  optimizerSteps(kind: 'sgd', options: SgdStepsOptions): void;
  optimizerSteps(kind: 'adam', options: AdamStepsOptions): void;
  optimizerSteps(kind: 'adamax', options: AdamaxStepsOptions): void;
  // Shape ops (binding/shape.cc). Views and copies take any dtype; indices are int32; indexAdd and scatterAdd float32.
  /** A new handle on x's storage with another shape of the same element count (keeps x's dtype). */
  view(x: NativeTensor, shape: number[]): NativeTensor;
  /** A new contiguous tensor of walk.shape: element i is x.flat[walk.offset + Σ i[d]·walk.strides[d]]. */
  stridedCopy(x: NativeTensor, walk: StridedWalk): NativeTensor;
  /** In place: out.flat[walk.offset + Σ i[d]·walk.strides[d]] = x[i] for every i of walk.shape (no element twice). */
  stridedCopyInto(out: NativeTensor, walk: StridedWalk, x: NativeTensor): void;
  /** The tensors joined along dim (in [0, rank)); same dtype, device and sizes outside dim. */
  concat(tensors: NativeTensor[], dim: number): NativeTensor;
  /** x's slices index[j] along dim (index 1-D int32, values in [0, x.shape[dim])). */
  indexSelect(x: NativeTensor, dim: number, index: NativeTensor): NativeTensor;
  /** x with src's slice j added to slice index[j] along dim (a new tensor). */
  indexAdd(x: NativeTensor, dim: number, index: NativeTensor, src: NativeTensor): NativeTensor;
  /** torch.gather: out[i] = x[i with i[dim] = index[i]], of index's shape. */
  gather(x: NativeTensor, dim: number, index: NativeTensor): NativeTensor;
  /** torch.scatter_add, out of place: x with src[i] added at i with i[dim] = index[i]. */
  scatterAdd(x: NativeTensor, dim: number, index: NativeTensor, src: NativeTensor): NativeTensor;
  /** Times `request` natively with preallocated outputs, after `warmup` untimed runs: milliseconds per run. */
  benchmarkTimes?(request: BenchmarkRequest, warmup: number, repeats: number): Float64Array;
  /** Runs `request` once on sets[0] and returns its outputs (the copy op has none to check). */
  benchmarkOutputs?(request: Exclude<BenchmarkRequest, { op: 'copy' }>): BenchmarkOutputs;
  // Recurrent layers (binding/rnn.cc): a whole layer over all steps, forward and backward through time in one call.
  rnnForward(cell: RnnCell, x: NativeTensor, h0: NativeTensor, c0: NativeTensor | null, weights: RnnWeights): RnnForwardResult;
  /** dwIh and dwHh are the gradients of the effective weights (w = scale ⊙ v for a weight-normalized matrix). */
  rnnBackward(cell: RnnCell, dy: NativeTensor, x: NativeTensor, h0: NativeTensor, c0: NativeTensor | null, weights: RnnWeights, y: NativeTensor, savedGates: NativeTensor, savedState: NativeTensor, options: RnnBackwardOptions): RnnGradients;
  /** indices hold integers in [0, numEmbeddings) as float32 (checked by ts/). */
  embedding(indices: NativeTensor, weight: NativeTensor): NativeTensor;
  embeddingBackward(dout: NativeTensor, indices: NativeTensor, numEmbeddings: number, paddingIdx: number): NativeTensor;
  /** out's rows [outRow, outRow + rows) = x's rows [xRow, xRow + rows), in place (a row: everything after axis 0). */
  copyRows(out: NativeTensor, outRow: number, x: NativeTensor, xRow: number, rows: number): void;
  /** x [a, b, ...] -> [b, a, ...] (batch-first sequences to time-major and back). */
  swapLeadingAxes(x: NativeTensor): NativeTensor;
}

export type RnnCell = 'lstm' | 'gru';

/**
 * A layer's matrices [gates·H, in] and biases [gates·H]. With scaleIh / scaleHh ([gates·H], g/‖v‖ per gate row) the
 * matrix is a weight-normalized v: the kernels apply the scale in the GEMM epilogue and never form w.
 */
export interface RnnWeights {
  wIh: NativeTensor;
  wHh: NativeTensor;
  scaleIh: NativeTensor | null;
  scaleHh: NativeTensor | null;
  bIh: NativeTensor | null;
  bHh: NativeTensor | null;
}

/** y: [steps (+1 for an LSTM: c_T), batch, hidden]; saved for the backward: the activated gates and per-step state. */
export interface RnnForwardResult {
  y: NativeTensor;
  savedGates: NativeTensor;
  savedState: NativeTensor;
}

export interface RnnBackwardOptions {
  wantDx: boolean;
  wantDh0: boolean;
  wantDc0: boolean;
  wantDwIh: boolean;
  wantDwHh: boolean;
  wantDbIh: boolean;
  wantDbHh: boolean;
}

export interface RnnGradients {
  dx?: NativeTensor;
  dh0?: NativeTensor;
  dc0?: NativeTensor;
  dwIh?: NativeTensor;
  dwHh?: NativeTensor;
  dbIh?: NativeTensor;
  dbHh?: NativeTensor;
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
