// Differentiable ops: each validates its arguments, runs the native kernel, and records its backward right next to
// its forward. nn layers are built from these; users can call them directly as nn.functional.*.
import { alias, record, willRecord } from './autograd.js';
import { rangeError, typeError } from './errors.js';
import { native, type NativeTensor } from './native.js';
import { handleOf, Tensor } from './tensor.js';
import { checkWeightNormDim, checkWeightNormEps, DEFAULT_EPS, weightNormLayout } from './weightnorm-options.js';

const wrap = (handle: NativeTensor): Tensor => new Tensor(handle);
const shapeText = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

function checkTensor(value: unknown, where: string): Tensor {
  handleOf(value, where);
  return value as Tensor;
}

function checkSameDevice(where: string, reference: Tensor, others: readonly [string, Tensor | null | undefined][]): void {
  for (const [name, t] of others) {
    if (t && t.device !== reference.device) {
      throw typeError(`${where}: ${name}`, `a tensor on '${reference.device}' like the input`, t);
    }
  }
}

function checkShape(where: string, t: Tensor, expected: readonly number[]): void {
  if (t.shape.length !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
    throw rangeError(where, `shape ${shapeText(expected)}`, shapeText(t.shape));
  }
}

/** @internal [outer, channels, inner] of a [batch, channels, ...spatial] activation: statistics per channel. */
export function channelLayout(x: Tensor): [number, number, number] {
  const [batch = 1, channels = 1, ...spatial] = x.shape;
  return [batch, channels, spatial.reduce((a, b) => a * b, 1)];
}

// ---------------------------------------------------------------------------------------------------------------
// Arithmetic and reductions.

// add, mul and the other elementwise ops (broadcasting, scalars, int32/bool) live in pointwise.ts.
export {
  abs, add, clamp, div, elu, eq, exp, ge, gelu, gt, le, leakyRelu, log, logicalAnd, logicalNot, logicalOr, lt,
  maximum, minimum, mul, ne, neg, pow, relu, rsqrt, sigmoid, sign, silu, softplus, sqrt, sub, tanh, where,
} from './pointwise.js';
export type { AlphaOptions, GeluOptions, Operand } from './pointwise.js';

export function scale(x: Tensor, alpha: number): Tensor {
  const where = 'scale';
  checkTensor(x, `${where}: x`);
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw typeError(`${where}: alpha`, 'a finite number', alpha);
  const y = wrap(native.scale(handleOf(x, where), alpha));
  return record(y, 'scale', [x], (dy) => [wrap(native.scale(handleOf(dy, where), alpha))]);
}

// sum and mean (axis-aware: sum(x, dim?, { keepDim })), and the other reductions and softmax: ts/reduce.ts.
export { sum, mean, amax, amin, max, min, argmax, argmin, var, std, logsumexp, softmax, logSoftmax } from './reduce.js';
export type { Dim, ReduceOptions, VarianceOptions, ValuesAndIndices } from './reduce.js';

// Shape ops (ts/shape.ts): views (reshape, view, flatten, squeeze, unsqueeze, contiguous) and copies. flatten here
// keeps the batch ([batch, ...] -> [batch, rest], as nn.Flatten); the package's top-level flatten is torch.flatten.
export {
  reshape,
  view,
  flattenBatch as flatten,
  squeeze,
  unsqueeze,
  contiguous,
  clone,
  expand,
  transpose,
  permute,
  slice,
  narrow,
  split,
  chunk,
  flip,
  concat,
  cat,
  stack,
  indexSelect,
  gather,
  scatterAdd,
} from './shape.js';

// ---------------------------------------------------------------------------------------------------------------
// Matrix products.

/** a [m, k] · b [k, n]. */
export function matmul(a: Tensor, b: Tensor): Tensor {
  const where = 'matmul';
  checkTensor(a, `${where}: a`);
  checkTensor(b, `${where}: b`);
  checkSameDevice(where, a, [['b', b]]);
  if (a.rank !== 2 || b.rank !== 2 || a.shape[1] !== b.shape[0]) {
    throw rangeError(where, '[m, k] and [k, n]', `${shapeText(a.shape)} and ${shapeText(b.shape)}`);
  }
  const [m, k] = a.shape as [number, number];
  const n = b.shape[1]!;
  const y = wrap(native.gemm(handleOf(a, where), handleOf(b, where), { m, n, k }));
  return record(y, 'matmul', [a, b], (dy, needs) => [
    needs[0] ? wrap(native.gemm(handleOf(dy, where), handleOf(b, where), { m, n: k, k: n, transposeB: true })) : null,
    needs[1] ? wrap(native.gemm(handleOf(a, where), handleOf(dy, where), { m: k, n, k: m, transposeA: true })) : null,
  ]);
}

function checkLinear(where: string, x: Tensor, weight: Tensor, bias: Tensor | null): [number, number, number] {
  checkTensor(x, `${where}: x`);
  checkTensor(weight, `${where}: weight`);
  if (bias !== null) checkTensor(bias, `${where}: bias`);
  checkSameDevice(where, x, [['weight', weight], ['bias', bias]]);
  if (weight.rank !== 2) throw rangeError(`${where}: weight`, '[outFeatures, inFeatures]', shapeText(weight.shape));
  const [outFeatures, inFeatures] = weight.shape as [number, number];
  if (x.rank !== 2 || x.shape[1] !== inFeatures) {
    throw rangeError(`${where}: x`, `[batch, ${inFeatures}]`, shapeText(x.shape));
  }
  if (bias) checkShape(`${where}: bias`, bias, [outFeatures]);
  return [x.shape[0]!, outFeatures, inFeatures];
}

/** y = x · weightᵀ + bias, x [batch, in], weight [out, in]. The bias is added in the GEMM's epilogue. */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const where = 'linear';
  const [batch, outFeatures, inFeatures] = checkLinear(where, x, weight, bias);
  const y = wrap(
    native.gemm(handleOf(x, where), handleOf(weight, where), {
      m: batch,
      n: outFeatures,
      k: inFeatures,
      transposeB: true,
      epilogue: { columnBias: bias ? handleOf(bias, where) : null },
    }),
  );
  return record(y, 'linear', [x, weight, bias], (dy, needs) => [
    needs[0] ? wrap(native.gemm(handleOf(dy, where), handleOf(weight, where), { m: batch, n: inFeatures, k: outFeatures })) : null,
    needs[1] ? wrap(native.gemm(handleOf(dy, where), handleOf(x, where), { m: outFeatures, n: inFeatures, k: batch, transposeA: true })) : null,
    needs[2] ? wrap(native.channelReduce('sum', handleOf(dy, where), null, batch, outFeatures, 1)) : null,
  ]);
}

/** A gradient the native backward returned, or null for one not asked for. */
function wrapIfSet(handle: NativeTensor | undefined): Tensor | null {
  return handle ? wrap(handle) : null;
}

/**
 * weightNormLinear materializes w instead of keeping it implicit when the batch has more than this many rows per
 * input feature and its batch-sized buffers hold at least WEIGHT_NORM_LINEAR_MATERIALIZE_MIN_ELEMENTS floats. The
 * implicit path's extra memory traffic grows with the batch (t written and read back, dy ⊙ s written and read: about
 * 4·batch·out floats, in buffers that large batches also fault in fresh), the materializing path's with the weight
 * (w written, dw and v read and dv written by the fused weight-norm backward: about 5·out·in), so on memory it pays
 * from a batch of ~1.25× the input features. On the 2-core EPYC VM (2 threads, fwd + bwd against the plain Linear):
 * batch 8192, 1024 → 4096 implicit 1.18×, materialized 1.02×; 1024, 784 → 256 1.16× and 1.06× (another run: level);
 * 1024, 1024 → 1024 1.01× and 1.06×; 4096³ 1.10× and 1.17×; the demo MLP's 100 × 784 → 256 1.14× and 1.39×.
 */
export const WEIGHT_NORM_LINEAR_MATERIALIZE_RATIO = 1.25;
/**
 * The other condition for materializing w: batch × out floats at least this many (4 MiB). Below it the buffers stay
 * in cache and the materializing path's extra ops and tensors cost more than they save: a DQN's 64 × 4 → 64 layer
 * took 80 µs per fwd + bwd kept implicit against 123-150 µs materialized (plain 75 µs, one thread).
 */
export const WEIGHT_NORM_LINEAR_MATERIALIZE_MIN_ELEMENTS = 1 << 20;

/**
 * Weight-normalized linear layer, y = x·wᵀ + b with w = g·v/‖v‖ (dim 0). `norm` is ‖v‖ per output unit (floored
 * by eps), computed by the caller once per optimizer step (the layer caches it). Unless the batch is large (see
 * WEIGHT_NORM_LINEAR_MATERIALIZE_RATIO and _MIN_ELEMENTS) it never materializes w: with s = g/norm,
 * y = s ⊙ (x·vᵀ) + b, the scale and bias applied in the GEMM's epilogue; the GEMM also keeps t = x·vᵀ for the
 * backward, where dg = Σ_batch dy ⊙ t / norm and dv = s·(dyᵀx) − (g·dg/norm²)·v is written in the weight-gradient
 * GEMM's epilogue, so neither w nor dw exists in memory. Large batches take weightNorm() then linear() (w and dw
 * are then smaller than the batch-sized buffers the implicit path needs). Either path's results are deterministic
 * for a given shape; they differ from each other only by rounding.
 */
export function weightNormLinear(
  x: Tensor,
  v: Tensor,
  g: Tensor,
  bias: Tensor | null,
  norm: Tensor,
  eps: number = DEFAULT_EPS,
): Tensor {
  const where = 'weightNormLinear';
  const [batch, outFeatures, inFeatures] = checkLinear(where, x, v, bias);
  checkWeightNormEps(where, 'eps', eps);
  checkTensor(g, `${where}: g`);
  checkTensor(norm, `${where}: norm`);
  checkSameDevice(where, x, [['g', g], ['norm', norm]]);
  checkShape(`${where}: g`, g, [outFeatures]);
  checkShape(`${where}: norm`, norm, [outFeatures]);
  if (batch > WEIGHT_NORM_LINEAR_MATERIALIZE_RATIO * inFeatures && batch * outFeatures >= WEIGHT_NORM_LINEAR_MATERIALIZE_MIN_ELEMENTS) {
    return linear(x, weightNorm(v, g, { dim: 0, eps, norm }).w, bias);
  }
  // One native call each way (binding/nn.cc weightNormLinear, weightNormLinearBackward): for small layers the fixed
  // cost of each call and of each intermediate tensor, not the arithmetic, was weight norm's overhead per step.
  // When a backward may run, y carries its input besides the parameters, t = x·vᵀ before the scale (freed with y;
  // the backward recomputes s = g/‖v‖): no tensor of its own per layer and step. Otherwise t is never written.
  const inputs = [x, v, g, bias];
  const y = wrap(
    native.weightNormLinear(handleOf(x, where), handleOf(v, where), handleOf(g, where), handleOf(norm, where), bias ? handleOf(bias, where) : null, willRecord(inputs)),
  );
  return record(y, 'weightNormLinear', inputs, (dy, needs) => {
    const grads = native.weightNormLinearBackward(
      handleOf(dy, where),
      handleOf(x, where),
      handleOf(v, where),
      handleOf(g, where),
      handleOf(norm, where),
      handleOf(y, where),
      { eps, wantDx: needs[0]!, wantDv: needs[1]!, wantDg: needs[2]!, wantDbias: needs[3]! },
    );
    return [wrapIfSet(grads.dx), wrapIfSet(grads.dv), wrapIfSet(grads.dg), wrapIfSet(grads.dbias)];
  }, [x, v, g, bias, norm]); // norm too: the backward reads it (its coefficients and s = g/norm)
}

export interface WeightNormFunctionOptions {
  dim?: number | null;
  eps?: number;
  /** ‖v‖ per channel computed earlier (e.g. by the optimizer step); omitted: computed here by the fused kernel. */
  norm?: Tensor;
}

/**
 * w = g · v / max(‖v‖, eps) as a differentiable op (the conv layers use it; Linear uses weightNormLinear). Returns
 * w and the norm it used.
 */
export function weightNorm(v: Tensor, g: Tensor, options: WeightNormFunctionOptions = {}): { w: Tensor; norm: Tensor } {
  const where = 'weightNorm';
  checkTensor(v, `${where}: v`);
  checkTensor(g, `${where}: g`);
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(`${where}: options`, 'an object like { dim, eps, norm }', options);
  }
  const axis = checkWeightNormDim(where, 'options.dim', options.dim === undefined ? 0 : options.dim, v.rank);
  const eps = checkWeightNormEps(where, 'options.eps', options.eps === undefined ? DEFAULT_EPS : options.eps);
  checkSameDevice(where, v, [['g', g], ['options.norm', options.norm]]);
  checkShape(`${where}: g`, g, [axis === null ? 1 : v.shape[axis]!]);
  let w: Tensor;
  let norm: Tensor;
  if (options.norm) {
    norm = checkTensor(options.norm, `${where}: options.norm`);
    const [outer, channels, inner] = weightNormLayout(v.shape, axis);
    checkShape(`${where}: options.norm`, norm, [channels]);
    const s = native.weightNormScale(handleOf(g, where), handleOf(norm, where));
    w = wrap(native.channelOp('scale', handleOf(v, where), s, outer, channels, inner));
    s.dispose();
  } else {
    const result = native.weightNorm(handleOf(v, where), handleOf(g, where), axis, eps, true);
    w = wrap(result.w);
    norm = wrap(result.norm);
  }
  record(w, 'weightNorm', [v, g], (dw, needs) => {
    const { dv, dg } = native.weightNormBackward(
      handleOf(dw, where),
      handleOf(v, where),
      handleOf(g, where),
      handleOf(norm, where),
      axis,
      eps,
      true,
    );
    if (!needs[0]) dv.dispose();
    if (!needs[1]) dg.dispose();
    return [needs[0] ? wrap(dv) : null, needs[1] ? wrap(dg) : null];
  });
  return { w, norm };
}

// ---------------------------------------------------------------------------------------------------------------
// Convolution and pooling.

function checkPositiveInteger(value: unknown, where: string, minimum: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < minimum) {
    throw typeError(where, `an integer >= ${minimum}`, value);
  }
  return value;
}

// Convolutions (1-D, 2-D, transposed), padding and nearest upsampling: ts/conv.ts.
export {
  conv1d,
  conv2d,
  convTranspose1d,
  convTranspose2d,
  weightNormConv1d,
  weightNormConv2d,
  pad,
  upsample,
  interpolate,
  type AxisValue,
  type Conv1dOptions,
  type Conv2dOptions,
  type ConvTranspose1dOptions,
  type ConvTranspose2dOptions,
  type PadMode,
  type PadOptions,
  type UpsampleOptions,
} from './conv.js';

/** Max pooling with a square window (no padding); stride defaults to the window. */
export function maxPool2d(x: Tensor, kernel: number, stride: number = kernel): Tensor {
  return pool('maxPool2d', x, kernel, stride, false);
}

/**
 * maxPool2d(relu(x)) in one pass forward and one backward, recorded as one node (ReLU is monotone, so this is
 * relu(maxPool2d(x))): the ReLU's output is never stored, and its backward is folded into the pooling's. Values and
 * gradients are bitwise those of the two ops in a row.
 */
export function reluMaxPool2d(x: Tensor, kernel: number, stride: number = kernel): Tensor {
  return pool('reluMaxPool2d', x, kernel, stride, true);
}

function pool(where: string, x: Tensor, kernel: number, stride: number, relu: boolean): Tensor {
  checkTensor(x, `${where}: x`);
  checkPositiveInteger(kernel, `${where}: kernel`, 1);
  checkPositiveInteger(stride, `${where}: stride`, 1);
  if (x.rank !== 4) throw rangeError(`${where}: x`, '[batch, channels, height, width]', shapeText(x.shape));
  if (kernel > x.shape[2]! || kernel > x.shape[3]!) {
    throw rangeError(`${where}: kernel`, `at most the input's height and width ${shapeText(x.shape.slice(2))}`, String(kernel));
  }
  const y = wrap(native.maxPool2d(handleOf(x, where), kernel, stride, relu));
  return record(y, where, [x], (dy) => [
    wrap(native.maxPool2dBackward(handleOf(dy, where), handleOf(x, where), kernel, stride, relu)),
  ]);
}

/** [batch, channels, H, W] -> [batch, channels]: the mean of each plane. */
export function globalAvgPool2d(x: Tensor): Tensor {
  const where = 'globalAvgPool2d';
  checkTensor(x, `${where}: x`);
  if (x.rank !== 4) throw rangeError(`${where}: x`, '[batch, channels, height, width]', shapeText(x.shape));
  if (x.shape[2] === 0 || x.shape[3] === 0) throw rangeError(`${where}: x`, 'a height and width of at least 1', shapeText(x.shape));
  const y = wrap(native.globalAvgPool(handleOf(x, where)));
  return record(y, 'globalAvgPool2d', [x], (dy) => [wrap(native.globalAvgPoolBackward(handleOf(dy, where), [...x.shape]))]);
}

// ---------------------------------------------------------------------------------------------------------------
// Activations, regularizers, loss.

/** Inverted dropout with drop probability p; the mask comes from the counter-based generator and `seed`. */
export function dropout(x: Tensor, p: number, seed: number): Tensor {
  const where = 'dropout';
  checkTensor(x, `${where}: x`);
  if (typeof p !== 'number' || !(p >= 0 && p < 1)) throw typeError(`${where}: p`, 'a probability in [0, 1)', p);
  if (!Number.isSafeInteger(seed) || seed < 0) throw typeError(`${where}: seed`, 'a non-negative safe integer', seed);
  const { y, mask } = native.dropout(handleOf(x, where), p, seed);
  const maskTensor = wrap(mask);
  return record(wrap(y), 'dropout', [x], (dy) => [
    wrap(native.binary('multiply', handleOf(dy, where), handleOf(maskTensor, where))),
  ]);
}

/** y = x + std · n, n standard normal from the counter-based generator and `seed`. */
export function gaussianNoise(x: Tensor, std: number, seed: number): Tensor {
  const where = 'gaussianNoise';
  checkTensor(x, `${where}: x`);
  if (typeof std !== 'number' || !(std >= 0) || !Number.isFinite(std)) throw typeError(`${where}: std`, 'a finite number >= 0', std);
  if (!Number.isSafeInteger(seed) || seed < 0) throw typeError(`${where}: seed`, 'a non-negative safe integer', seed);
  const y = wrap(native.gaussianNoise(handleOf(x, where), std, seed));
  return record(y, 'gaussianNoise', [x], (dy) => [alias(dy)]);
}

// Losses live in losses.ts (one fused native pass each); nn.functional exports them from here.
export {
  binaryCrossEntropy,
  binaryCrossEntropyWithLogits,
  crossEntropy,
  huberLoss,
  l1Loss,
  mseLoss,
  nllLoss,
  smoothL1Loss,
  type BinaryCrossEntropyOptions,
  type BinaryCrossEntropyWithLogitsOptions,
  type CrossEntropyOptions,
  type HuberLossOptions,
  type Labels,
  type LossOptions,
  type NllLossOptions,
  type Reduction,
  type SmoothL1LossOptions,
} from './losses.js';
// The Gaussian KL term of a VAE's bound (composed from the tensor ops): ts/gaussian-kl.ts.
export { gaussianKl, type GaussianKlOptions } from './gaussian-kl.js';

// ---------------------------------------------------------------------------------------------------------------
// Normalization (the modules keep the running statistics; these are the batch computations).

export interface BatchStatistics {
  mean: Tensor;
  variance: Tensor;
}

/**
 * @internal One value per channel has no variance: y would be beta whatever x is, and the running variance would
 * learn 0 (torch refuses it the same way). An empty batch is allowed: its output is empty.
 */
export function checkTrainingCount(where: string, x: Tensor): void {
  const [outer, , inner] = channelLayout(x);
  if (outer * inner === 1) {
    throw rangeError(`${where}: x`, 'more than 1 value per channel in training (batch × spatial positions)', shapeText(x.shape));
  }
}

/** Training-mode batch norm over channel dim 1; returns y and the batch mean and (biased) variance. */
export function batchNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: number): { y: Tensor } & BatchStatistics {
  const where = 'batchNorm';
  checkTensor(x, `${where}: x`);
  if (typeof eps !== 'number' || !(eps > 0) || !Number.isFinite(eps)) throw typeError(`${where}: eps`, 'a positive finite number', eps);
  const [outer, channels, inner] = channelLayout(x);
  checkTrainingCount(where, x);
  checkShape(`${where}: gamma`, checkTensor(gamma, `${where}: gamma`), [channels]);
  checkShape(`${where}: beta`, checkTensor(beta, `${where}: beta`), [channels]);
  checkSameDevice(where, x, [['gamma', gamma], ['beta', beta]]);
  const r = native.batchNorm(handleOf(x, where), handleOf(gamma, where), handleOf(beta, where), outer, channels, inner, eps);
  const mean = wrap(r.mean);
  const invstd = wrap(r.invstd);
  const y = record(wrap(r.y), 'batchNorm', [x, gamma, beta], (dy, needs) => {
    const g = native.batchNormBackward(
      handleOf(dy, where),
      handleOf(x, where),
      handleOf(mean, where),
      handleOf(invstd, where),
      handleOf(gamma, where),
      outer,
      channels,
      inner,
    );
    if (!needs[0]) g.dx.dispose();
    if (!needs[1]) g.dgamma.dispose();
    if (!needs[2]) g.dbeta.dispose();
    return [needs[0] ? wrap(g.dx) : null, needs[1] ? wrap(g.dgamma) : null, needs[2] ? wrap(g.dbeta) : null];
  });
  return { y, mean, variance: wrap(r.var) };
}

/**
 * Evaluation-mode batch norm: y = gamma · (x − runningMean) / sqrt(runningVar + eps) + beta. Differentiable in x,
 * gamma and beta, as torch's is (fine-tuning with frozen statistics, saliency, adversarial inputs); the running
 * statistics are constants, and the backward uses the values they had in this forward.
 */
export function batchNormInference(x: Tensor, runningMean: Tensor, runningVar: Tensor, gamma: Tensor, beta: Tensor, eps: number): Tensor {
  const where = 'batchNormInference';
  checkTensor(x, `${where}: x`);
  if (typeof eps !== 'number' || !(eps > 0) || !Number.isFinite(eps)) throw typeError(`${where}: eps`, 'a positive finite number', eps);
  const [outer, channels, inner] = channelLayout(x);
  for (const [name, t] of [['runningMean', runningMean], ['runningVar', runningVar], ['gamma', gamma], ['beta', beta]] as const) {
    checkShape(`${where}: ${name}`, checkTensor(t, `${where}: ${name}`), [channels]);
  }
  checkSameDevice(where, x, [['runningMean', runningMean], ['runningVar', runningVar], ['gamma', gamma], ['beta', beta]]);
  const y = wrap(
    native.batchNormInference(
      handleOf(x, where),
      handleOf(runningMean, where),
      handleOf(runningVar, where),
      handleOf(gamma, where),
      handleOf(beta, where),
      outer,
      channels,
      inner,
      eps,
    ),
  );
  if (!willRecord([x, gamma, beta])) return y;
  // Copies ([channels] each): a training-mode forward updates the running statistics in place before this backward
  // may run.
  const mean = wrap(native.scale(handleOf(runningMean, where), 1));
  const variance = wrap(native.scale(handleOf(runningVar, where), 1));
  return record(y, 'batchNormInference', [x, gamma, beta], (dy, needs) => {
    const g = native.batchNormInferenceBackward(
      handleOf(dy, where),
      handleOf(x, where),
      handleOf(mean, where),
      handleOf(variance, where),
      handleOf(gamma, where),
      { outer, channels, inner, eps, wantDx: needs[0]!, wantDgamma: needs[1]!, wantDbeta: needs[2]! },
    );
    return [g.dx ? wrap(g.dx) : null, g.dgamma ? wrap(g.dgamma) : null, g.dbeta ? wrap(g.dbeta) : null];
  });
}

/**
 * Mean-only batch norm (Salimans & Kingma, 2016, §4): y = x − μ + bias with μ the batch mean per channel (training)
 * or the given running mean (evaluation). The backward centres the gradient: dx = dy − mean(dy) in training,
 * dx = dy in evaluation. Returns y and the mean used.
 */
export function meanOnlyBatchNorm(x: Tensor, bias: Tensor, runningMean: Tensor | null): { y: Tensor; mean: Tensor } {
  const where = 'meanOnlyBatchNorm';
  checkTensor(x, `${where}: x`);
  const [outer, channels, inner] = channelLayout(x);
  checkShape(`${where}: bias`, checkTensor(bias, `${where}: bias`), [channels]);
  checkSameDevice(where, x, [['bias', bias], ['runningMean', runningMean]]);
  const r = native.meanOnlyBatchNorm(
    handleOf(x, where),
    handleOf(bias, where),
    runningMean ? handleOf(runningMean, where) : null,
    outer,
    channels,
    inner,
  );
  const training = runningMean === null;
  const y = record(wrap(r.y), 'meanOnlyBatchNorm', [x, bias], (dy, needs) => {
    if (!training) {
      return [
        needs[0] ? alias(dy) : null,
        needs[1] ? wrap(native.channelReduce('sum', handleOf(dy, where), null, outer, channels, inner)) : null,
      ];
    }
    const g = native.meanOnlyBatchNormBackward(handleOf(dy, where), outer, channels, inner);
    if (!needs[0]) g.dx.dispose();
    if (!needs[1]) g.dbias.dispose();
    return [needs[0] ? wrap(g.dx) : null, needs[1] ? wrap(g.dbias) : null];
  });
  return { y, mean: wrap(r.mean) };
}
