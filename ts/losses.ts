// Loss functions (nn.functional), as torch.nn.functional defines them: names, defaults, the `reduction` argument,
// PyTorch's [N, C, d1, ...] layout for the class losses. Each runs one fused native pass (cpu/loss.cc,
// cuda/loss.cu) that also reduces in a fixed order, and records its backward right below its forward. Gradients
// flow to the input (predictions, logits, log-probabilities) only: targets, labels and weights are constants.
import { alias, record } from './autograd.js';
import { rangeError, shapeText, typeError } from './errors.js';
import { native, type NativeTensor } from './native.js';
import { handleOf, Tensor } from './tensor.js';

/** How the per-element losses are combined: their mean (default), their sum, or none (one loss per element). */
export type Reduction = 'mean' | 'sum' | 'none';

export interface LossOptions {
  reduction?: Reduction;
}

/** Class indices: one per example (and position, for [N, C, d1, ...] inputs). */
export type Labels = Tensor | Int32Array | readonly number[];

const wrap = (handle: NativeTensor): Tensor => new Tensor(handle);
const REDUCTIONS: readonly Reduction[] = ['mean', 'sum', 'none'];

function checkTensor(where: string, value: unknown): Tensor {
  handleOf(value, where);
  const t = value as Tensor;
  if (t.dtype !== 'float32') throw typeError(where, 'a float32 tensor (convert with t.cast(\'float32\'))', t);
  return t;
}

function checkOptions<T extends object>(where: string, options: unknown, keys: readonly string[]): T {
  if (options === undefined) return {} as T;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(`${where}: options`, `an object with keys ${keys.join(', ')}`, options);
  }
  for (const key of Object.keys(options)) {
    if (!keys.includes(key)) throw typeError(`${where}: options`, `only the keys ${keys.join(', ')}`, key);
  }
  return options as T;
}

function checkReduction(where: string, reduction: unknown): Reduction {
  const value = reduction ?? 'mean';
  if (!REDUCTIONS.includes(value as Reduction)) throw typeError(`${where}: options.reduction`, "'mean', 'sum' or 'none'", value);
  return value as Reduction;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** An optional factor broadcast over the input: its shape must be a suffix of the input's (e.g. [C] for [N, C]). */
function checkFactor(where: string, value: unknown, input: Tensor): Tensor | null {
  if (value === undefined || value === null) return null;
  const t = checkTensor(where, value);
  if (t.device !== input.device) throw typeError(where, `a tensor on '${input.device}' like the input`, t);
  const trimmed = t.shape.slice(t.shape.findIndex((d) => d !== 1) < 0 ? t.shape.length : t.shape.findIndex((d) => d !== 1));
  const suffix = input.shape.slice(input.shape.length - trimmed.length);
  if (trimmed.length > input.rank || !sameShape(trimmed, suffix) || t.size === 0) {
    throw rangeError(where, `a shape that broadcasts over the input ${shapeText(input.shape)} (a suffix of it, e.g. [${input.shape.at(-1) ?? 1}])`, shapeText(t.shape));
  }
  return t;
}

// ---------------------------------------------------------------------------------------------------------------
// Pointwise losses: (input, target) of the same shape.

type PointwiseKind = 'mse' | 'l1' | 'huber' | 'smoothL1' | 'bce' | 'bceWithLogits';

function pointwiseLoss(
  where: string,
  kind: PointwiseKind,
  input: Tensor,
  target: Tensor,
  reduction: Reduction,
  parameter = 1,
  weight: Tensor | null = null,
  posWeight: Tensor | null = null,
): Tensor {
  checkTensor(`${where}: input`, input);
  checkTensor(`${where}: target`, target);
  if (target.device !== input.device) throw typeError(`${where}: target`, `a tensor on '${input.device}' like the input`, target);
  if (!sameShape(input.shape, target.shape)) throw rangeError(`${where}: target`, `the input's shape ${shapeText(input.shape)}`, shapeText(target.shape));
  const factors = { parameter, weight: weight ? handleOf(weight, where) : null, posWeight: posWeight ? handleOf(posWeight, where) : null };
  const { loss, reduced } = native.pointwiseLoss(kind, handleOf(input, where), handleOf(target, where), { ...factors, reduction });
  const output = reduction === 'none' ? loss : reduced;
  (reduction === 'none' ? reduced : loss).dispose();
  const scale = reduction === 'mean' ? 1 / input.size : 1;
  return record(
    wrap(output),
    where,
    [input],
    (dy) => [wrap(native.pointwiseLossBackward(kind, handleOf(dy, where), handleOf(input, where), handleOf(target, where), { ...factors, scale }))],
    [input, target, weight, posWeight],
  );
}

/** Mean squared error (x − y)², as torch.nn.functional.mse_loss. */
export function mseLoss(input: Tensor, target: Tensor, options?: LossOptions): Tensor {
  const where = 'mseLoss';
  const { reduction } = checkOptions<LossOptions>(where, options, ['reduction']);
  return pointwiseLoss(where, 'mse', input, target, checkReduction(where, reduction));
}

/** Mean absolute error |x − y|, as torch.nn.functional.l1_loss (gradient sign(x − y), 0 where equal). */
export function l1Loss(input: Tensor, target: Tensor, options?: LossOptions): Tensor {
  const where = 'l1Loss';
  const { reduction } = checkOptions<LossOptions>(where, options, ['reduction']);
  return pointwiseLoss(where, 'l1', input, target, checkReduction(where, reduction));
}

function checkPositive(where: string, value: unknown, fallback: number, allowZero: boolean): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
    throw typeError(where, allowZero ? 'a finite number >= 0' : 'a finite number > 0', v);
  }
  return v;
}

export interface HuberLossOptions extends LossOptions {
  /** Where the loss turns from quadratic to linear (default 1, > 0). */
  delta?: number;
}

/** Huber loss: ½d² for |d| < delta, else delta·(|d| − ½delta), d = x − y (torch.nn.functional.huber_loss). */
export function huberLoss(input: Tensor, target: Tensor, options?: HuberLossOptions): Tensor {
  const where = 'huberLoss';
  const { reduction, delta } = checkOptions<HuberLossOptions>(where, options, ['reduction', 'delta']);
  return pointwiseLoss(where, 'huber', input, target, checkReduction(where, reduction), checkPositive(`${where}: options.delta`, delta, 1, false));
}

export interface SmoothL1LossOptions extends LossOptions {
  /** Where the loss turns from quadratic to linear (default 1, >= 0; 0 is the L1 loss). */
  beta?: number;
}

/** Smooth L1: ½d²/beta for |d| < beta, else |d| − ½beta (torch.nn.functional.smooth_l1_loss). */
export function smoothL1Loss(input: Tensor, target: Tensor, options?: SmoothL1LossOptions): Tensor {
  const where = 'smoothL1Loss';
  const { reduction, beta } = checkOptions<SmoothL1LossOptions>(where, options, ['reduction', 'beta']);
  return pointwiseLoss(where, 'smoothL1', input, target, checkReduction(where, reduction), checkPositive(`${where}: options.beta`, beta, 1, true));
}

export interface BinaryCrossEntropyOptions extends LossOptions {
  /** Multiplies each element's loss; its shape is a suffix of the input's (e.g. [C] for [N, C]). */
  weight?: Tensor | null;
}

/**
 * Binary cross-entropy of probabilities x in [0, 1] against targets y in [0, 1]:
 * −(y·log x + (1 − y)·log(1 − x)), each log clamped at −100 as PyTorch does (x = 0 or 1 stays finite).
 * Prefer binaryCrossEntropyWithLogits, which is stable for any logit.
 */
export function binaryCrossEntropy(input: Tensor, target: Tensor, options?: BinaryCrossEntropyOptions): Tensor {
  const where = 'binaryCrossEntropy';
  const { reduction, weight } = checkOptions<BinaryCrossEntropyOptions>(where, options, ['reduction', 'weight']);
  checkTensor(`${where}: input`, input);
  return pointwiseLoss(where, 'bce', input, target, checkReduction(where, reduction), 1, checkFactor(`${where}: options.weight`, weight, input));
}

export interface BinaryCrossEntropyWithLogitsOptions extends BinaryCrossEntropyOptions {
  /** The weight of the positive term per class (broadcast like weight, usually [C]): > 1 raises recall. */
  posWeight?: Tensor | null;
}

/**
 * Binary cross-entropy on logits, computed stably as max(x, 0) − x·y + log1p(e^−|x|) (finite for logits of any
 * size, e.g. ±1e4); with posWeight p: (1 − y)·x + (1 + (p − 1)·y)·log(1 + e^−x).
 */
export function binaryCrossEntropyWithLogits(input: Tensor, target: Tensor, options?: BinaryCrossEntropyWithLogitsOptions): Tensor {
  const where = 'binaryCrossEntropyWithLogits';
  const { reduction, weight, posWeight } = checkOptions<BinaryCrossEntropyWithLogitsOptions>(where, options, ['reduction', 'weight', 'posWeight']);
  checkTensor(`${where}: input`, input);
  return pointwiseLoss(
    where,
    'bceWithLogits',
    input,
    target,
    checkReduction(where, reduction),
    1,
    checkFactor(`${where}: options.weight`, weight, input),
    checkFactor(`${where}: options.posWeight`, posWeight, input),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Class losses: input [N, C] or [N, C, d1, ...] (class axis 1), labels [N] or [N, d1, ...].

export interface NllLossOptions extends LossOptions {
  /** Positions with this label add nothing (and the mean is over the others). Default -100, as in PyTorch. */
  ignoreIndex?: number;
  /** A weight per class, shape [C]: the mean is then Σ w_y·loss / Σ w_y over non-ignored positions. */
  weight?: Tensor | null;
}

export interface CrossEntropyOptions extends NllLossOptions {
  /** ε in [0, 1]: the target is (1 − ε)·onehot + ε/C (default 0). */
  labelSmoothing?: number;
}

/** The labels as a float tensor of class indices on `device`, after checking every value on the host. */
function labelTensor(where: string, labels: unknown, expectedShape: readonly number[], classes: number, ignoreIndex: number, device: Tensor['device']): Tensor {
  const count = expectedShape.reduce((a, b) => a * b, 1);
  let values: ArrayLike<number>;
  if (labels instanceof Tensor) {
    handleOf(labels, where, 'any'); // float32 or int32 class indices (bool is refused below as non-numeric)
    if (labels.dtype === 'bool' || labels.dtype === 'bfloat16') throw typeError(where, 'an int32 or float32 tensor of class indices', labels);
    if (!sameShape(labels.shape, expectedShape) && !(labels.rank === 1 && labels.size === count && expectedShape.length === 1)) {
      throw rangeError(where, `shape ${shapeText(expectedShape)} (one label per position of the input)`, shapeText(labels.shape));
    }
    values = labels.toArray();
  } else if (labels instanceof Int32Array || Array.isArray(labels)) {
    values = labels as ArrayLike<number>;
  } else {
    throw typeError(where, 'a Tensor, an Int32Array or an array of class indices', labels);
  }
  if (values.length !== count) {
    throw rangeError(where, `${count} labels (one per position of the input, ${shapeText(expectedShape)})`, `${values.length}`);
  }
  for (let i = 0; i < values.length; i++) {
    const label = values[i]!;
    if (label === ignoreIndex) continue;
    if (!Number.isInteger(label) || label < 0 || label >= classes) {
      throw rangeError(where, `class indices in [0, ${classes - 1}]`, `${String(label)} at position ${i} (ignoreIndex is ${ignoreIndex})`);
    }
  }
  if (labels instanceof Tensor && labels.dtype === 'float32' && labels.device === device) return alias(labels, [count]);
  return wrap(native.fromArray(Float32Array.from(values), [count], device));
}

function classLoss(where: string, input: Tensor, labels: Labels, options: CrossEntropyOptions, fromLogits: boolean): Tensor {
  checkTensor(`${where}: ${fromLogits ? 'logits' : 'logProbs'}`, input);
  if (input.rank < 2) {
    throw rangeError(`${where}: ${fromLogits ? 'logits' : 'logProbs'}`, '[N, C] or [N, C, d1, ...] (classes on axis 1)', shapeText(input.shape));
  }
  const [outer, classes, ...rest] = input.shape as [number, number, ...number[]];
  if (classes === 0) throw rangeError(`${where}: ${fromLogits ? 'logits' : 'logProbs'}`, 'at least one class (axis 1)', shapeText(input.shape));
  const inner = rest.reduce((a, b) => a * b, 1);
  const reduction = checkReduction(where, options.reduction);
  const ignoreIndex = options.ignoreIndex ?? -100;
  if (!Number.isSafeInteger(ignoreIndex)) throw typeError(`${where}: options.ignoreIndex`, 'an integer', ignoreIndex);
  const labelSmoothing = options.labelSmoothing ?? 0;
  if (typeof labelSmoothing !== 'number' || !(labelSmoothing >= 0 && labelSmoothing <= 1)) {
    throw typeError(`${where}: options.labelSmoothing`, 'a number in [0, 1]', labelSmoothing);
  }
  let classWeight: Tensor | null = null;
  if (options.weight !== undefined && options.weight !== null) {
    classWeight = checkTensor(`${where}: options.weight`, options.weight);
    if (classWeight.device !== input.device) throw typeError(`${where}: options.weight`, `a tensor on '${input.device}' like the input`, classWeight);
    if (!sameShape(classWeight.shape, [classes])) throw rangeError(`${where}: options.weight`, `shape [${classes}] (one weight per class)`, shapeText(classWeight.shape));
  }
  const labelShape = [outer, ...rest];
  const labelsOnDevice = labelTensor(`${where}: labels`, labels, labelShape, classes, ignoreIndex, input.device);
  const nativeOptions = {
    outer,
    classes,
    inner,
    ignoreIndex,
    labelSmoothing,
    classWeight: classWeight ? handleOf(classWeight, where) : null,
    fromLogits,
  };
  // Only what is kept comes back: the per-position losses ('none') or the reduced loss, the weight total for the
  // mean's backward, the softmax for cross-entropy's.
  const { positionLoss, reduced, weightTotal, saved } = native.classLoss(handleOf(input, where), handleOf(labelsOnDevice, where), { ...nativeOptions, reduction });
  let output: Tensor;
  if (reduction === 'none') {
    output = wrap(native.reshape(positionLoss!, labelShape));
    positionLoss!.dispose();
  } else {
    output = wrap(reduced!);
  }
  const savedTensor = saved ? wrap(saved) : null;
  const totalTensor = weightTotal ? wrap(weightTotal) : null;
  return record(
    output,
    where,
    [input],
    (dy) => {
      const dinput = native.classLossBackward(
        savedTensor ? handleOf(savedTensor, where) : null,
        handleOf(labelsOnDevice, where),
        handleOf(dy, where),
        totalTensor ? handleOf(totalTensor, where) : null,
        nativeOptions,
        [...input.shape],
      );
      return [wrap(dinput)];
    },
    // NLL's backward reads only the labels; cross-entropy's reads the softmax it computed (no in-place risk).
    [classWeight],
  );
}

/**
 * Softmax cross-entropy of logits [N, C] (or [N, C, d1, ...], e.g. [N, C, T] for sequences) against class indices
 * [N] (or [N, d1, ...]), as torch.nn.functional.cross_entropy: `reduction`, `ignoreIndex` (default -100; the mean
 * is over the other positions), `weight` per class, `labelSmoothing`. Default: the mean, shape [1].
 */
export function crossEntropy(logits: Tensor, labels: Labels, options?: CrossEntropyOptions): Tensor {
  const where = 'crossEntropy';
  const checked = checkOptions<CrossEntropyOptions>(where, options, ['reduction', 'ignoreIndex', 'weight', 'labelSmoothing']);
  return classLoss(where, logits, labels, checked, true);
}

/** Negative log-likelihood of log-probabilities [N, C, ...] (e.g. from a log-softmax), as torch.nn.functional.nll_loss. */
export function nllLoss(logProbs: Tensor, labels: Labels, options?: NllLossOptions): Tensor {
  const where = 'nllLoss';
  const checked = checkOptions<NllLossOptions>(where, options, ['reduction', 'ignoreIndex', 'weight']);
  return classLoss(where, logProbs, labels, checked, false);
}
