// Reductions over chosen axes (sum, mean, max, min, amax, amin, argmax, argmin, var, std, logsumexp) and softmax /
// logSoftmax, with their backwards; also Tensor methods (x.sum(1, { keepDim: true })) by declaration merging.
//
// `dim` is a number, a list of numbers, or undefined/null for every axis; negative dims count from the end.
// keepDim (default false) keeps each reduced axis with size 1. A set of consecutive axes is one native call over
// the view [outer, reduce, inner]; a set with gaps is reduced one consecutive run at a time (last run first, so
// the earlier axes keep their positions): exact for sum, amax, amin, and for mean and logsumexp up to rounding.
// var and std over axes with gaps are composed from the tensor math ops. Ties in max/min/argmax/argmin: the first index (torch CPU's rule);
// a NaN is the extreme, and the first NaN's index is returned.
import { alias, record } from './autograd.js';
import { rangeError, shapeText, typeError } from './errors.js';
import { native, type AxisReduceOp, type NativeTensor } from './native.js';
import { div, mul, sqrt, sub } from './pointwise.js';
import { handleOf, Tensor } from './tensor.js';

export type Dim = number | readonly number[] | null | undefined;

export interface ReduceOptions {
  /** Keep each reduced axis with size 1 (default false). */
  keepDim?: boolean;
}

export interface VarianceOptions extends ReduceOptions {
  /** The divisor is (number of elements reduced − correction); default 1 (Bessel's correction), as in torch. */
  correction?: number;
}

export interface ValuesAndIndices {
  values: Tensor;
  /** Positions along `dim`, an int32 tensor. */
  indices: Tensor;
}

const wrap = (handle: NativeTensor): Tensor => new Tensor(handle);
const product = (values: readonly number[]): number => values.reduce((a, b) => a * b, 1);

interface AxisView {
  outer: number;
  reduce: number;
  inner: number;
}

function checkTensor(value: unknown, where: string): Tensor {
  handleOf(value, where);
  return value as Tensor;
}

function checkOptions<T extends object>(options: unknown, where: string, keys: readonly string[]): T {
  if (options === undefined) return {} as T;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(`${where}: options`, `an object with ${keys.join(', ')}`, options);
  }
  for (const key of Object.keys(options)) {
    if (!keys.includes(key)) throw typeError(`${where}: options.${key}`, `one of ${keys.join(', ')}`, key);
  }
  return options as T;
}

function keepDimOf(options: ReduceOptions, where: string): boolean {
  const { keepDim = false } = options;
  if (typeof keepDim !== 'boolean') throw typeError(`${where}: options.keepDim`, 'a boolean', keepDim);
  return keepDim;
}

/** One axis, as a non-negative index. */
function normalizeDim(where: string, rank: number, d: unknown): number {
  if (typeof d !== 'number' || !Number.isInteger(d)) throw typeError(`${where}: dim`, 'an integer', d);
  if (d < -rank || d >= rank) throw rangeError(`${where}: dim`, `an integer in [${-rank}, ${rank - 1}]`, String(d));
  return d < 0 ? d + rank : d;
}

/** The reduced axes, sorted, without repeats; undefined/null: every axis. */
function normalizeDims(where: string, shape: readonly number[], dim: Dim): number[] {
  const rank = shape.length;
  // An empty list reduces every axis too, as in torch.
  if (dim === undefined || dim === null || (Array.isArray(dim) && dim.length === 0)) return shape.map((_, i) => i);
  if (typeof dim === 'number') return [normalizeDim(where, rank, dim)];
  if (!Array.isArray(dim)) throw typeError(`${where}: dim`, 'an integer, a list of integers or undefined', dim);
  const dims = dim.map((d) => normalizeDim(where, rank, d));
  if (new Set(dims).size !== dims.length) throw rangeError(`${where}: dim`, 'each axis at most once', `[${dim.join(', ')}]`);
  return dims.sort((a, b) => a - b);
}

/** Sorted axes split into runs of consecutive axes. */
function runsOf(dims: readonly number[]): number[][] {
  const runs: number[][] = [];
  for (const d of dims) {
    const last = runs[runs.length - 1];
    if (last && last[last.length - 1] === d - 1) last.push(d);
    else runs.push([d]);
  }
  return runs;
}

function viewOf(shape: readonly number[], run: readonly number[]): AxisView {
  const first = run[0] ?? 0;
  const last = run[run.length - 1] ?? -1;
  return { outer: product(shape.slice(0, first)), reduce: product(shape.slice(first, last + 1)), inner: product(shape.slice(last + 1)) };
}

function reducedShape(shape: readonly number[], dims: readonly number[], keepDim: boolean): number[] {
  if (keepDim) return shape.map((s, i) => (dims.includes(i) ? 1 : s));
  return shape.filter((_, i) => !dims.includes(i));
}

/** The shape of a result whose every axis was reduced without keepDim: [1], as sum() has always returned. */
const asResultShape = (shape: number[]): number[] => (shape.length === 0 ? [1] : shape);

function refuseEmpty(where: string, x: Tensor, view: AxisView): void {
  if (view.reduce === 0) throw rangeError(`${where}: x`, 'a non-empty reduced dimension (the reduction has no identity)', shapeText(x.shape));
}

type Backward = (dy: Tensor, x: Tensor, y: Tensor, view: AxisView) => Tensor;

/** One native reduction of the consecutive axes `run`, keeping them with size 1, recorded with its backward. */
function reduceRun(where: string, x: Tensor, run: readonly number[], op: AxisReduceOp, scalar: number, backward: Backward): Tensor {
  const view = viewOf(x.shape, run);
  const kept = reducedShape(x.shape, run, true);
  const flat = wrap(native.axisReduce(op, handleOf(x, where), view.outer, view.reduce, view.inner, scalar));
  const y = alias(flat, kept);
  flat.dispose();
  return record(y, where, [x], (dy) => [backward(dy, x, y, view)], [x, y]);
}

function broadcastBack(where: string, dy: Tensor, x: Tensor, view: AxisView, alpha: number): Tensor {
  const dx = wrap(native.axisReduceBackward('broadcast', handleOf(dy, where), null, null, view.outer, view.reduce, view.inner, alpha));
  const shaped = alias(dx, x.shape);
  dx.dispose();
  return shaped;
}

function nativeBack(where: string, op: 'extremum' | 'logsumexp' | 'var' | 'std' | 'argmax' | 'argmin', dy: Tensor, x: Tensor, y: Tensor | null, view: AxisView, scalar: number): Tensor {
  const dx = wrap(
    native.axisReduceBackward(op, handleOf(dy, where), handleOf(x, where), y ? handleOf(y, where) : null, view.outer, view.reduce, view.inner, scalar),
  );
  const shaped = alias(dx, x.shape);
  dx.dispose();
  return shaped;
}

/** Reduces `dims` run by run (last first), then gives the result its final shape. */
function reduceDims(where: string, x: Tensor, dims: readonly number[], keepDim: boolean, step: (t: Tensor, run: number[]) => Tensor): Tensor {
  // Intermediates are not disposed here: the recorded graph holds them for the backward.
  let t = x;
  for (const run of runsOf(dims).reverse()) t = step(t, run);
  const shape = asResultShape(reducedShape(x.shape, dims, keepDim));
  if (t === x) return alias(x, shape);
  const y = record(alias(t, shape), where, [t], (dy) => [alias(dy, t.shape)], []);
  return y;
}

// ---------------------------------------------------------------------------------------------------------------
// The reductions.

/** Sum over `dim` (every axis when undefined: shape [1]). The sum of an empty axis is 0. */
export function sum(x: Tensor, dim?: Dim, options?: ReduceOptions): Tensor {
  const where = 'sum';
  checkTensor(x, `${where}: x`);
  const keepDim = keepDimOf(checkOptions<ReduceOptions>(options, where, ['keepDim']), where);
  const dims = normalizeDims(where, x.shape, dim);
  if ((dim === undefined || dim === null) && !keepDim) return sumAll(x);
  return reduceDims(where, x, dims, keepDim, (t, run) =>
    reduceRun(where, t, run, 'sum', 0, (dy, input, _y, view) => broadcastBack(where, dy, input, view, 1)),
  );
}

/** The no-dim sum: shape [1], one pass over x. */
function sumAll(x: Tensor): Tensor {
  const where = 'sum';
  const y = wrap(native.sumAll(handleOf(x, where)));
  return record(y, 'sum', [x], (dy) => [broadcastBack(where, dy, x, { outer: 1, reduce: x.size, inner: 1 }, 1)]);
}

/** Mean over `dim` (every axis when undefined). Mean of no elements: a RangeError without dim, NaN (0/0) with one. */
export function mean(x: Tensor, dim?: Dim, options?: ReduceOptions): Tensor {
  const where = 'mean';
  checkTensor(x, `${where}: x`);
  const keepDim = keepDimOf(checkOptions<ReduceOptions>(options, where, ['keepDim']), where);
  const dims = normalizeDims(where, x.shape, dim);
  if ((dim === undefined || dim === null) && !keepDim) {
    if (x.size === 0) throw rangeError('mean: x', 'at least one element', shapeText(x.shape));
    const total = sumAll(x);
    const y = wrap(native.scale(handleOf(total, where), 1 / x.size));
    const n = x.size;
    const result = record(y, 'mean', [total], (dy) => [wrap(native.scale(handleOf(dy, where), 1 / n))]);
    return result;
  }
  return reduceDims(where, x, dims, keepDim, (t, run) =>
    reduceRun(where, t, run, 'mean', 0, (dy, input, _y, view) => broadcastBack(where, dy, input, view, 1 / view.reduce)),
  );
}

function extremum(where: string, op: 'max' | 'min', x: Tensor, dim: Dim, options: ReduceOptions | undefined): Tensor {
  checkTensor(x, `${where}: x`);
  const keepDim = keepDimOf(checkOptions<ReduceOptions>(options, where, ['keepDim']), where);
  const dims = normalizeDims(where, x.shape, dim);
  return reduceDims(where, x, dims, keepDim, (t, run) => {
    refuseEmpty(where, x, viewOf(t.shape, run));
    return reduceRun(where, t, run, op, 0, (dy, input, y, view) => nativeBack(where, 'extremum', dy, input, y, view, 0));
  });
}

/** Largest value over `dim` (a list allowed); the gradient is shared evenly by tied maxima (torch's amax). */
export function amax(x: Tensor, dim?: Dim, options?: ReduceOptions): Tensor {
  return extremum('amax', 'max', x, dim, options);
}

/** Smallest value over `dim`; the gradient is shared evenly by tied minima. */
export function amin(x: Tensor, dim?: Dim, options?: ReduceOptions): Tensor {
  return extremum('amin', 'min', x, dim, options);
}

function valuesAndIndices(where: string, largest: boolean, x: Tensor, dim: number, options: ReduceOptions | undefined): ValuesAndIndices {
  checkTensor(x, `${where}: x`);
  const keepDim = keepDimOf(checkOptions<ReduceOptions>(options, where, ['keepDim']), where);
  const d = normalizeDim(where, x.rank, dim);
  const view = viewOf(x.shape, [d]);
  refuseEmpty(where, x, view);
  const shape = reducedShape(x.shape, [d], keepDim);
  const r = native.axisArgReduce(handleOf(x, where), { largest, outer: view.outer, reduce: view.reduce, inner: view.inner, shape });
  const values = wrap(r.values);
  const indices = wrap(r.indices);
  const op = largest ? 'argmax' : 'argmin';
  record(values, where, [x], (dy) => [nativeBack(where, op, dy, x, null, view, 0)], [x]);
  return { values, indices };
}

/**
 * Without `dim`: the largest element, shape [1] (the gradient shared evenly by ties). With a single `dim`:
 * { values, indices } along it, like torch.max(x, dim); the gradient goes to the returned index.
 */
export function max(x: Tensor): Tensor;
export function max(x: Tensor, dim: number, options?: ReduceOptions): ValuesAndIndices;
export function max(x: Tensor, dim?: number, options?: ReduceOptions): Tensor | ValuesAndIndices {
  if (dim === undefined) return extremum('max', 'max', x, undefined, undefined);
  return valuesAndIndices('max', true, x, dim, options);
}

/** min(x) or min(x, dim) -> { values, indices }, as max. */
export function min(x: Tensor): Tensor;
export function min(x: Tensor, dim: number, options?: ReduceOptions): ValuesAndIndices;
export function min(x: Tensor, dim?: number, options?: ReduceOptions): Tensor | ValuesAndIndices {
  if (dim === undefined) return extremum('min', 'min', x, undefined, undefined);
  return valuesAndIndices('min', false, x, dim, options);
}

function argIndex(where: string, largest: boolean, x: Tensor, dim: number | null | undefined, options: ReduceOptions | undefined): Tensor {
  checkTensor(x, `${where}: x`);
  const keepDim = keepDimOf(checkOptions<ReduceOptions>(options, where, ['keepDim']), where);
  if (dim === undefined || dim === null) {
    // The index into the flattened tensor, as torch.argmax(x).
    const view = { outer: 1, reduce: x.size, inner: 1 };
    refuseEmpty(where, x, view);
    const r = native.axisArgReduce(handleOf(x, where), {
      largest,
      outer: 1,
      reduce: x.size,
      inner: 1,
      shape: keepDim ? x.shape.map(() => 1) : [1],
    });
    wrap(r.values).dispose();
    return wrap(r.indices);
  }
  return valuesAndIndices(where, largest, x, dim, options).indices;
}

/** Index (int32) of the largest value along `dim` (of the flattened tensor without dim); first index on ties. Not differentiable. */
export function argmax(x: Tensor, dim?: number | null, options?: ReduceOptions): Tensor {
  return argIndex('argmax', true, x, dim, options);
}

/** Index of the smallest value along `dim`; first index on ties. Not differentiable. */
export function argmin(x: Tensor, dim?: number | null, options?: ReduceOptions): Tensor {
  return argIndex('argmin', false, x, dim, options);
}

function correctionOf(options: VarianceOptions, where: string): number {
  const { correction = 1 } = options;
  if (typeof correction !== 'number' || !Number.isFinite(correction) || correction < 0) {
    throw typeError(`${where}: options.correction`, 'a finite non-negative number', correction);
  }
  return correction;
}

function variance(where: string, standardDeviation: boolean, x: Tensor, dim: Dim, options: VarianceOptions | undefined): Tensor {
  checkTensor(x, `${where}: x`);
  const checked = checkOptions<VarianceOptions>(options, where, ['keepDim', 'correction']);
  const keepDim = keepDimOf(checked, where);
  const correction = correctionOf(checked, where);
  const dims = normalizeDims(where, x.shape, dim);
  if (runsOf(dims).length > 1) return varianceWithGaps(standardDeviation, x, dims, keepDim, correction);
  return reduceDims(where, x, dims, keepDim, (t, run) => {
    const view = viewOf(t.shape, run);
    const kept = reducedShape(t.shape, run, true);
    const op = standardDeviation ? 'std' : 'var';
    const flat = wrap(native.axisReduce(op, handleOf(t, where), view.outer, view.reduce, view.inner, correction));
    const y = alias(flat, kept);
    flat.dispose();
    if (standardDeviation) return record(y, where, [t], (dy) => [nativeBack(where, 'std', dy, t, y, view, correction)], [t, y]);
    return record(y, where, [t], (dy) => [nativeBack(where, 'var', dy, t, null, view, correction)], [t]);
  });
}

/**
 * var/std over axes with gaps, composed from differentiable ops: sum((x − mean)²) / (n − correction), the mean
 * broadcast back (the single-run kernels do the same in double).
 */
function varianceWithGaps(standardDeviation: boolean, x: Tensor, dims: readonly number[], keepDim: boolean, correction: number): Tensor {
  const count = dims.reduce((n, d) => n * x.shape[d]!, 1);
  const centered = sub(x, mean(x, dims, { keepDim: true }));
  const squares = sum(mul(centered, centered), dims, { keepDim });
  const variance = div(squares, Math.max(count - correction, 0));
  return standardDeviation ? sqrt(variance) : variance;
}

/** Variance over `dim` with divisor (n − correction), correction 1 by default (torch's default). */
export function variance_(x: Tensor, dim?: Dim, options?: VarianceOptions): Tensor {
  return variance('var', false, x, dim, options);
}

/** Standard deviation: sqrt(var(x, dim, options)). */
export function std(x: Tensor, dim?: Dim, options?: VarianceOptions): Tensor {
  return variance('std', true, x, dim, options);
}

/** log(sum(exp(x))) over `dim`, computed as m + log(sum(exp(x − m))) with m the max (no overflow). */
export function logsumexp(x: Tensor, dim?: Dim, options?: ReduceOptions): Tensor {
  const where = 'logsumexp';
  checkTensor(x, `${where}: x`);
  const keepDim = keepDimOf(checkOptions<ReduceOptions>(options, where, ['keepDim']), where);
  const dims = normalizeDims(where, x.shape, dim);
  return reduceDims(where, x, dims, keepDim, (t, run) =>
    reduceRun(where, t, run, 'logsumexp', 0, (dy, input, _y, view) => nativeBack(where, 'logsumexp', dy, input, null, view, 0)),
  );
}

function softmaxAlong(where: string, log: boolean, x: Tensor, dim: number): Tensor {
  checkTensor(x, `${where}: x`);
  if (dim === undefined) throw typeError(`${where}: dim`, 'an integer (the axis to normalize along)', dim);
  const d = normalizeDim(where, x.rank, dim);
  const view = viewOf(x.shape, [d]);
  const y = wrap(native.softmax(handleOf(x, where), view.outer, view.reduce, view.inner, log));
  return record(
    y,
    where,
    [x],
    (dy) => [wrap(native.softmaxBackward(handleOf(dy, where), handleOf(y, where), view.outer, view.reduce, view.inner, log))],
    [y],
  );
}

/** exp(x) / sum(exp(x)) along `dim`, computed with the max subtracted (no overflow). */
export function softmax(x: Tensor, dim: number): Tensor {
  return softmaxAlong('softmax', false, x, dim);
}

/** log(softmax(x, dim)), computed as x − m − log(sum(exp(x − m))). */
export function logSoftmax(x: Tensor, dim: number): Tensor {
  return softmaxAlong('logSoftmax', true, x, dim);
}

export { variance_ as var };

// ---------------------------------------------------------------------------------------------------------------
// Tensor methods.

declare module './tensor.js' {
  interface Tensor {
    sum(dim?: Dim, options?: ReduceOptions): Tensor;
    mean(dim?: Dim, options?: ReduceOptions): Tensor;
    max(): Tensor;
    max(dim: number, options?: ReduceOptions): ValuesAndIndices;
    min(): Tensor;
    min(dim: number, options?: ReduceOptions): ValuesAndIndices;
    amax(dim?: Dim, options?: ReduceOptions): Tensor;
    amin(dim?: Dim, options?: ReduceOptions): Tensor;
    argmax(dim?: number | null, options?: ReduceOptions): Tensor;
    argmin(dim?: number | null, options?: ReduceOptions): Tensor;
    var(dim?: Dim, options?: VarianceOptions): Tensor;
    std(dim?: Dim, options?: VarianceOptions): Tensor;
    logsumexp(dim?: Dim, options?: ReduceOptions): Tensor;
    softmax(dim: number): Tensor;
    logSoftmax(dim: number): Tensor;
  }
}

Tensor.prototype.sum = function (this: Tensor, dim?: Dim, options?: ReduceOptions) {
  return sum(this, dim, options);
};
Tensor.prototype.mean = function (this: Tensor, dim?: Dim, options?: ReduceOptions) {
  return mean(this, dim, options);
};
Tensor.prototype.max = function (this: Tensor, dim?: number, options?: ReduceOptions) {
  return dim === undefined ? max(this) : max(this, dim, options);
} as Tensor['max'];
Tensor.prototype.min = function (this: Tensor, dim?: number, options?: ReduceOptions) {
  return dim === undefined ? min(this) : min(this, dim, options);
} as Tensor['min'];
Tensor.prototype.amax = function (this: Tensor, dim?: Dim, options?: ReduceOptions) {
  return amax(this, dim, options);
};
Tensor.prototype.amin = function (this: Tensor, dim?: Dim, options?: ReduceOptions) {
  return amin(this, dim, options);
};
Tensor.prototype.argmax = function (this: Tensor, dim?: number | null, options?: ReduceOptions) {
  return argmax(this, dim, options);
};
Tensor.prototype.argmin = function (this: Tensor, dim?: number | null, options?: ReduceOptions) {
  return argmin(this, dim, options);
};
Tensor.prototype.var = function (this: Tensor, dim?: Dim, options?: VarianceOptions) {
  return variance_(this, dim, options);
};
Tensor.prototype.std = function (this: Tensor, dim?: Dim, options?: VarianceOptions) {
  return std(this, dim, options);
};
Tensor.prototype.logsumexp = function (this: Tensor, dim?: Dim, options?: ReduceOptions) {
  return logsumexp(this, dim, options);
};
Tensor.prototype.softmax = function (this: Tensor, dim: number) {
  return softmax(this, dim);
};
Tensor.prototype.logSoftmax = function (this: Tensor, dim: number) {
  return logSoftmax(this, dim);
};
