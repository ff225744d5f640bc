// Shape ops: views, copies and index ops, with their backwards, as PyTorch names and defines them.
//
// Views share the storage AND the version counter of their base (an in-place update of either is seen through
// both, so backward() refuses a graph that saved one of them before the update): reshape, view, flatten, squeeze,
// unsqueeze, contiguous (every tensor of this library is contiguous). Everything else returns a new tensor, filled by
// one strided-copy kernel family (binding/shape.cc, cpu/shape.cc, cuda/shape.cu): transpose, permute, slice, narrow,
// split, chunk, flip, expand, concat/cat, stack, clone, and the index ops indexSelect, gather and scatterAdd (int32
// indices). PyTorch returns views for transpose, permute, slice, narrow, split, chunk and expand; here they copy.
//
// Views and copies take any dtype (elements are moved by their size); the sum scatterAdd takes float32. Every op
// validates its arguments first: a wrong type is a TypeError, a dim or size out of range a RangeError naming the
// function, the parameter, what was expected and what came.
import { record } from './autograd.js';
import { rangeError, shapeText, typeError } from './errors.js';
import { native, type NativeTensor, type StridedWalk } from './native.js';
import { handleOf, Tensor } from './tensor.js';

const wrap = (handle: NativeTensor): Tensor => new Tensor(handle);

/** The native handle of any-dtype tensor `value` (copies and views move elements by their size). */
function anyHandle(value: unknown, where: string): NativeTensor {
  return handleOf(value, where, 'any');
}

function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let stride = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = stride;
    stride *= shape[d]!;
  }
  return strides;
}

/**
 * A dim of a rank-`rank` tensor, negative counting from the end, normalized to [0, rank). A rank-0 tensor takes dims
 * as if it had one dim (-1 and 0), as PyTorch does. `extra` = 1 for unsqueeze, whose dim may name the new last one.
 */
export function checkDim(where: string, dim: unknown, rank: number, extra = 0): number {
  const count = Math.max(rank, 1) + extra;
  const expected = `an integer in [${-count}, ${count})`;
  if (typeof dim !== 'number' || !Number.isInteger(dim)) throw typeError(where, expected, dim);
  if (dim < -count || dim >= count) throw rangeError(where, expected, String(dim));
  return dim < 0 ? dim + count : dim;
}

function checkInteger(where: string, value: unknown, minimum: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw typeError(where, `an integer >= ${minimum}`, value);
  if (value < minimum) throw rangeError(where, `an integer >= ${minimum}`, String(value));
  return value;
}

/** Dims given as one array or as separate numbers (x.permute([1, 0]) or x.permute(1, 0)), as PyTorch accepts both. */
function dimsArgument(where: string, first: unknown, rest: readonly unknown[]): unknown[] {
  if (Array.isArray(first)) {
    if (rest.length > 0) throw typeError(where, 'one array of integers, or integers', rest[0]);
    return [...(first as unknown[])];
  }
  return first === undefined ? [] : [first, ...rest];
}

// ---------------------------------------------------------------------------------------------------------------
// Views: a new handle on the same storage, sharing the version counter; the backward reshapes dy back.

/** @internal A view of x with `shape` (same element count), recorded as `name`. The backward reads nothing saved. */
function viewAs(x: Tensor, shape: readonly number[], name: string): Tensor {
  const y = wrap(native.view(anyHandle(x, name), [...shape]));
  y.shareVersionWith(x);
  return record(y, name, [x], (dy) => [wrap(native.view(handleOf(dy, name), [...x.shape]))], []);
}

function resolveShape(where: string, x: Tensor, shape: unknown): number[] {
  if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number')) throw typeError(`${where}: shape`, 'an array of integers', shape);
  const dims = shape as number[];
  if (dims.filter((d) => d === -1).length > 1 || dims.some((d) => !Number.isSafeInteger(d) || d < -1)) {
    throw typeError(`${where}: shape`, 'non-negative integers with at most one -1', shape);
  }
  const known = dims.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  // Next to a zero dimension a -1 could be anything: it is taken as 0 (the tensor is empty either way).
  const resolved = dims.map((d) => (d === -1 ? (known === 0 ? 0 : x.size / known) : d));
  if (resolved.reduce((a, b) => a * b, 1) !== x.size || resolved.some((d) => !Number.isInteger(d))) {
    throw rangeError(`${where}: shape`, `a shape with ${x.size} elements (from ${shapeText(x.shape)})`, shapeText(dims));
  }
  return resolved;
}

/** A view with another shape of the same element count (no copy). One dimension may be -1 (inferred). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  anyHandle(x, 'reshape: x');
  return viewAs(x, resolveShape('reshape', x, shape), 'reshape');
}

/** The same as reshape: every tensor here is contiguous, so a view never needs a copy (torch.Tensor.view). */
export function view(x: Tensor, shape: readonly number[]): Tensor {
  anyHandle(x, 'view: x');
  return viewAs(x, resolveShape('view', x, shape), 'view');
}

/**
 * torch.flatten: dims startDim..endDim (inclusive, negative from the end) merged into one, a view. The defaults
 * flatten everything to 1-D; a rank-0 tensor becomes [1]. (nn.functional.flatten and nn.Flatten keep the batch:
 * see flattenBatch.)
 */
export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  const where = 'flatten';
  anyHandle(x, `${where}: x`);
  const start = checkDim(`${where}: startDim`, startDim, x.rank);
  const end = checkDim(`${where}: endDim`, endDim, x.rank);
  if (start > end) throw rangeError(`${where}: endDim`, `a dim at or after startDim ${startDim}`, String(endDim));
  if (x.rank === 0) return viewAs(x, [1], where);
  const merged = x.shape.slice(start, end + 1).reduce((a, b) => a * b, 1);
  return viewAs(x, [...x.shape.slice(0, start), merged, ...x.shape.slice(end + 1)], where);
}

/** [batch, ...] -> [batch, rest], a view: nn.functional.flatten, which nn.Flatten uses ([n] becomes [n, 1]). */
export function flattenBatch(x: Tensor): Tensor {
  const where = 'flatten';
  anyHandle(x, `${where}: x`);
  if (x.rank < 1) throw rangeError(`${where}: x`, 'at least one dimension (the batch)', shapeText(x.shape));
  const [batch, ...rest] = x.shape as [number, ...number[]];
  return viewAs(x, [batch, batch === 0 ? 0 : rest.reduce((a, b) => a * b, 1)], where);
}

/**
 * Size-1 dims removed, a view: all of them, or those of `dim` (a number or an array; a named dim whose size is not 1
 * is kept, as in PyTorch).
 */
export function squeeze(x: Tensor, dim?: number | readonly number[]): Tensor {
  const where = 'squeeze';
  anyHandle(x, `${where}: x`);
  let drop: Set<number>;
  if (dim === undefined) {
    drop = new Set(x.shape.flatMap((d, i) => (d === 1 ? [i] : [])));
  } else {
    const dims = Array.isArray(dim) ? dim : [dim];
    drop = new Set(dims.map((d, i) => checkDim(Array.isArray(dim) ? `${where}: dim[${i}]` : `${where}: dim`, d, x.rank)));
    for (const d of drop) if (x.shape[d] !== 1) drop.delete(d);
  }
  return viewAs(x, x.shape.filter((_, i) => !drop.has(i)), where);
}

/** A size-1 dim inserted at `dim` (in [-rank - 1, rank]), a view. */
export function unsqueeze(x: Tensor, dim: number): Tensor {
  const where = 'unsqueeze';
  anyHandle(x, `${where}: x`);
  const count = x.rank + 1;
  const expected = `an integer in [${-count}, ${count})`;
  if (typeof dim !== 'number' || !Number.isInteger(dim)) throw typeError(`${where}: dim`, expected, dim);
  if (dim < -count || dim >= count) throw rangeError(`${where}: dim`, expected, String(dim));
  const at = dim < 0 ? dim + count : dim;
  return viewAs(x, [...x.shape.slice(0, at), 1, ...x.shape.slice(at)], where);
}

/** x itself as a view: every tensor of this library is contiguous already (torch.Tensor.contiguous). */
export function contiguous(x: Tensor): Tensor {
  anyHandle(x, 'contiguous: x');
  return viewAs(x, x.shape, 'contiguous');
}

// ---------------------------------------------------------------------------------------------------------------
// Copies: one strided walk over the source each.

function stridedCopy(x: Tensor, walk: StridedWalk, where: string): Tensor {
  return wrap(native.stridedCopy(anyHandle(x, where), walk));
}

/** A float32 tensor of zeros of `shape` on x's device with `part` written at `walk` (a slice's backward). */
function zerosWith(shape: readonly number[], device: Tensor['device'], walk: StridedWalk, part: Tensor, where: string): Tensor {
  const out = native.zeros([...shape], device, 'float32');
  native.stridedCopyInto(out, walk, handleOf(part, where));
  return wrap(out);
}

/** A copy with x's elements in its own memory (torch.clone); the gradient passes through. */
export function clone(x: Tensor): Tensor {
  const where = 'clone';
  anyHandle(x, `${where}: x`);
  const y = stridedCopy(x, { shape: [...x.shape], strides: contiguousStrides(x.shape), offset: 0 }, where);
  return record(y, where, [x], (dy) => [stridedCopy(dy, { shape: [...dy.shape], strides: contiguousStrides(dy.shape), offset: 0 }, where)], []);
}

/**
 * torch.expand: x repeated along its size-1 dims (and new leading dims) to `sizes`; -1 keeps a dim's size. A copy
 * here (PyTorch's is a view with stride 0); the backward sums dy over the repeated dims.
 */
export function expand(x: Tensor, sizes: readonly number[]): Tensor {
  const where = 'expand';
  anyHandle(x, `${where}: x`);
  if (!Array.isArray(sizes)) throw typeError(`${where}: sizes`, 'an array of integers', sizes);
  if (sizes.length < x.rank) throw rangeError(`${where}: sizes`, `at least ${x.rank} sizes (x is ${shapeText(x.shape)})`, `${sizes.length}`);
  const lead = sizes.length - x.rank;
  const strides = contiguousStrides(x.shape);
  const shape = sizes.map((size, i) => {
    const own = i < lead ? null : x.shape[i - lead]!;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < -1) throw typeError(`${where}: sizes[${i}]`, 'an integer >= -1', size);
    if (size === -1) {
      if (own === null) throw rangeError(`${where}: sizes[${i}]`, 'a size >= 0 for a new leading dim', '-1');
      return own;
    }
    if (own !== null && own !== 1 && own !== size) {
      throw rangeError(`${where}: sizes[${i}]`, `${own} (the size of x's dim ${i - lead}, which is not 1) or -1`, String(size));
    }
    return size;
  });
  // A repeated dim walks with stride 0; an empty result walks nothing.
  const walk = { shape, strides: shape.map((size, i) => (i < lead || x.shape[i - lead] !== size ? 0 : strides[i - lead]!)), offset: 0 };
  const y = stridedCopy(x, walk, where);
  return record(y, where, [x], (dy) => [wrap(native.sumTo(handleOf(dy, where), [...x.shape]))], []);
}

/** y.shape[i] = x.shape[dims[i]], a copy (torch.permute). */
export function permute(x: Tensor, dims: readonly number[]): Tensor;
export function permute(x: Tensor, ...dims: number[]): Tensor;
export function permute(x: Tensor, first?: unknown, ...rest: unknown[]): Tensor {
  const where = 'permute';
  anyHandle(x, `${where}: x`);
  const given = dimsArgument(`${where}: dims`, first, rest);
  if (given.length !== x.rank) throw rangeError(`${where}: dims`, `${x.rank} dims (one per dim of x ${shapeText(x.shape)})`, `${given.length}`);
  const dims = given.map((d, i) => checkDim(`${where}: dims[${i}]`, d, x.rank));
  const repeated = dims.findIndex((d, i) => dims.indexOf(d) !== i);
  if (repeated >= 0) throw rangeError(`${where}: dims[${repeated}]`, 'each dim once', `dim ${dims[repeated]} a second time`);
  return permuted(x, dims, where);
}

function permuted(x: Tensor, dims: readonly number[], where: string): Tensor {
  const strides = contiguousStrides(x.shape);
  const y = stridedCopy(x, { shape: dims.map((d) => x.shape[d]!), strides: dims.map((d) => strides[d]!), offset: 0 }, where);
  const inverse = new Array<number>(dims.length);
  dims.forEach((d, i) => (inverse[d] = i));
  return record(y, where, [x], (dy) => [permuted(dy, inverse, where)], []);
}

/** dims dim0 and dim1 swapped, a copy (torch.transpose). */
export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  const where = 'transpose';
  anyHandle(x, `${where}: x`);
  const a = checkDim(`${where}: dim0`, dim0, x.rank);
  const b = checkDim(`${where}: dim1`, dim1, x.rank);
  const dims = x.shape.map((_, i) => (i === a ? b : i === b ? a : i));
  return permuted(x, dims, where);
}

/** Python's slice bounds: negative from the end, then clamped to [0, size]. */
function sliceBound(where: string, value: unknown, size: number, fallback: number): number {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw typeError(where, 'an integer, null or undefined', value);
  const from = value < 0 ? value + size : value;
  return Math.min(Math.max(from, 0), size);
}

/** The elements start, start + step, ... < end along `dim`, a copy; its backward writes dy back into zeros. */
function sliced(x: Tensor, dim: number, start: number, length: number, step: number, where: string): Tensor {
  const strides = contiguousStrides(x.shape);
  const shape = x.shape.map((d, i) => (i === dim ? length : d));
  const walk = { shape, strides: strides.map((s, i) => (i === dim ? s * step : s)), offset: start * strides[dim]! };
  const y = stridedCopy(x, walk, where);
  return record(y, where, [x], (dy) => [zerosWith(x.shape, x.device, walk, dy, where)], []);
}

/**
 * x[start:end:step] along `dim` as Python slices it: negative start/end count from the end, bounds are clamped,
 * start ≥ end gives an empty dim; step ≥ 1. A copy (PyTorch's slicing is a view).
 */
export function slice(x: Tensor, dim: number, start?: number | null, end?: number | null, step = 1): Tensor {
  const where = 'slice';
  anyHandle(x, `${where}: x`);
  if (x.rank === 0) throw rangeError(`${where}: x`, 'at least one dimension', shapeText(x.shape));
  const d = checkDim(`${where}: dim`, dim, x.rank);
  const size = x.shape[d]!;
  const from = sliceBound(`${where}: start`, start, size, 0);
  const to = sliceBound(`${where}: end`, end, size, size);
  const by = checkInteger(`${where}: step`, step, 1);
  return sliced(x, d, from, to > from ? Math.ceil((to - from) / by) : 0, by, where);
}

/** length elements from start along dim (start may be negative: from the end), a copy (torch.narrow). */
export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  const where = 'narrow';
  anyHandle(x, `${where}: x`);
  if (x.rank === 0) throw rangeError(`${where}: x`, 'at least one dimension', shapeText(x.shape));
  const d = checkDim(`${where}: dim`, dim, x.rank);
  const size = x.shape[d]!;
  if (typeof start !== 'number' || !Number.isSafeInteger(start)) throw typeError(`${where}: start`, `an integer in [${-size}, ${size}]`, start);
  if (start < -size || start > size) throw rangeError(`${where}: start`, `an integer in [${-size}, ${size}]`, String(start));
  const from = start < 0 ? start + size : start;
  const count = checkInteger(`${where}: length`, length, 0);
  if (from + count > size) throw rangeError(`${where}: length`, `at most ${size - from} (dim ${d} of ${shapeText(x.shape)} from ${from})`, String(count));
  return sliced(x, d, from, count, 1, where);
}

/** Pieces of `sizes` along dim (each a copy). */
function pieces(x: Tensor, dim: number, sizes: readonly number[], where: string): Tensor[] {
  let start = 0;
  return sizes.map((length) => {
    const piece = sliced(x, dim, start, length, 1, where);
    start += length;
    return piece;
  });
}

/**
 * torch.split: pieces of `size` elements along dim (the last may be shorter), or of the listed sizes, which must add
 * up to x.shape[dim]. Each piece is a copy.
 */
export function split(x: Tensor, sizeOrSections: number | readonly number[], dim = 0): Tensor[] {
  const where = 'split';
  anyHandle(x, `${where}: x`);
  if (x.rank === 0) throw rangeError(`${where}: x`, 'at least one dimension', shapeText(x.shape));
  const d = checkDim(`${where}: dim`, dim, x.rank);
  const size = x.shape[d]!;
  if (Array.isArray(sizeOrSections)) {
    const sections = sizeOrSections.map((s, i) => checkInteger(`${where}: sizeOrSections[${i}]`, s, 0));
    const total = sections.reduce((a, b) => a + b, 0);
    if (total !== size) throw rangeError(`${where}: sizeOrSections`, `sizes adding up to ${size} (dim ${d} of ${shapeText(x.shape)})`, `[${sections.join(', ')}] (sum ${total})`);
    return pieces(x, d, sections, where);
  }
  const length = checkInteger(`${where}: sizeOrSections`, sizeOrSections, size === 0 ? 0 : 1);
  if (size === 0) return pieces(x, d, [0], where);
  const count = Math.ceil(size / length);
  return pieces(x, d, Array.from({ length: count }, (_, i) => Math.min(length, size - i * length)), where);
}

/** torch.chunk: at most `chunks` pieces of ceil(size / chunks) elements along dim (fewer when they run out). */
export function chunk(x: Tensor, chunks: number, dim = 0): Tensor[] {
  const where = 'chunk';
  anyHandle(x, `${where}: x`);
  if (x.rank === 0) throw rangeError(`${where}: x`, 'at least one dimension', shapeText(x.shape));
  const n = checkInteger(`${where}: chunks`, chunks, 1);
  const d = checkDim(`${where}: dim`, dim, x.rank);
  const size = x.shape[d]!;
  // As PyTorch: an empty dim gives `chunks` empty pieces.
  if (size === 0) return pieces(x, d, new Array<number>(n).fill(0), where);
  return split(x, Math.ceil(size / n), d);
}

/** The order of the elements along each of `dims` reversed, a copy (torch.flip). */
export function flip(x: Tensor, dims: number | readonly number[]): Tensor {
  const where = 'flip';
  anyHandle(x, `${where}: x`);
  const list = Array.isArray(dims) ? dims : [dims];
  const flipped = new Set(list.map((d, i) => checkDim(Array.isArray(dims) ? `${where}: dims[${i}]` : `${where}: dims`, d, x.rank)));
  if (flipped.size !== list.length) throw rangeError(`${where}: dims`, 'each dim once', `[${list.join(', ')}]`);
  return flippedCopy(x, flipped, where);
}

function flippedCopy(x: Tensor, dims: ReadonlySet<number>, where: string): Tensor {
  const strides = contiguousStrides(x.shape);
  const empty = x.size === 0;
  const walk = {
    shape: [...x.shape],
    strides: strides.map((s, i) => (dims.has(i) ? -s : s)),
    offset: empty ? 0 : x.shape.reduce((sum, size, i) => sum + (dims.has(i) ? (size - 1) * strides[i]! : 0), 0),
  };
  const y = stridedCopy(x, walk, where);
  return record(y, where, [x], (dy) => [flippedCopy(dy, dims, where)], []);
}

function checkTensorList(where: string, tensors: unknown): Tensor[] {
  if (!Array.isArray(tensors) || tensors.length === 0) throw typeError(`${where}: tensors`, 'a non-empty array of tensors', tensors);
  tensors.forEach((t, i) => anyHandle(t, `${where}: tensors[${i}]`));
  const list = tensors as Tensor[];
  const first = list[0]!;
  list.forEach((t, i) => {
    if (t.device !== first.device) throw typeError(`${where}: tensors[${i}]`, `a tensor on '${first.device}' like tensors[0]`, t);
    if (t.dtype !== first.dtype) throw typeError(`${where}: tensors[${i}]`, `a ${first.dtype} tensor like tensors[0]`, t);
  });
  return list;
}

/**
 * The tensors joined along dim, a new tensor (torch.cat). All have the same rank, dtype, device and sizes outside
 * dim. The backward hands each input its slice of dy.
 */
export function concat(tensors: readonly Tensor[], dim = 0): Tensor {
  const where = 'concat';
  const list = checkTensorList(where, tensors);
  const first = list[0]!;
  if (first.rank === 0) throw rangeError(`${where}: tensors[0]`, 'at least one dimension (stack joins scalars)', shapeText(first.shape));
  const d = checkDim(`${where}: dim`, dim, first.rank);
  list.forEach((t, i) => {
    if (t.rank !== first.rank) throw rangeError(`${where}: tensors[${i}]`, `${first.rank} dims like tensors[0] ${shapeText(first.shape)}`, shapeText(t.shape));
    const other = t.shape.findIndex((size, k) => k !== d && size !== first.shape[k]);
    if (other >= 0) {
      throw rangeError(`${where}: tensors[${i}]`, `size ${first.shape[other]} in dim ${other} like tensors[0] ${shapeText(first.shape)} (all dims but ${d} must match)`, shapeText(t.shape));
    }
  });
  const y = wrap(native.concat(list.map((t) => anyHandle(t, where)), d));
  return record(y, where, list, (dy, needs) => gradientPieces(dy, d, list.map((t) => t.shape[d]!), needs, list.map((t) => t.shape)), []);
}

/** torch.cat: the same as concat. */
export const cat = concat;

/** dy's consecutive slices of `sizes` along dim, each viewed as `shapes[i]`, where needed. */
function gradientPieces(dy: Tensor, dim: number, sizes: readonly number[], needs: readonly boolean[], shapes: readonly (readonly number[])[]): (Tensor | null)[] {
  const where = 'concat';
  const strides = contiguousStrides(dy.shape);
  let start = 0;
  return sizes.map((length, i) => {
    const offset = start * strides[dim]!;
    start += length;
    if (!needs[i]) return null;
    const shape = dy.shape.map((s, k) => (k === dim ? length : s));
    const piece = native.stridedCopy(handleOf(dy, where), { shape, strides, offset });
    if (shapeText(shape) === shapeText(shapes[i]!)) return wrap(piece);
    const reshaped = native.view(piece, [...shapes[i]!]);
    piece.dispose();
    return wrap(reshaped);
  });
}

/** The tensors (all of one shape) joined along a new dim (in [-rank - 1, rank]), a new tensor (torch.stack). */
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  const where = 'stack';
  const list = checkTensorList(where, tensors);
  const first = list[0]!;
  list.forEach((t, i) => {
    if (shapeText(t.shape) !== shapeText(first.shape)) throw rangeError(`${where}: tensors[${i}]`, `shape ${shapeText(first.shape)} like tensors[0]`, shapeText(t.shape));
  });
  const count = first.rank + 1;
  const expected = `an integer in [${-count}, ${count})`;
  if (typeof dim !== 'number' || !Number.isInteger(dim)) throw typeError(`${where}: dim`, expected, dim);
  if (dim < -count || dim >= count) throw rangeError(`${where}: dim`, expected, String(dim));
  const d = dim < 0 ? dim + count : dim;
  const shape = [...first.shape.slice(0, d), 1, ...first.shape.slice(d)];
  // Raw views with the new dim, joined; they are not tensors of the graph (the node below is).
  const views = list.map((t) => native.view(anyHandle(t, where), shape));
  let y: Tensor;
  try {
    y = wrap(native.concat(views, d));
  } finally {
    for (const v of views) v.dispose();
  }
  return record(y, where, list, (dy, needs) => gradientPieces(dy, d, list.map(() => 1), needs, list.map((t) => t.shape)), []);
}

// ---------------------------------------------------------------------------------------------------------------
// Index ops (int32 indices). Out-of-range values are refused natively before anything is written, naming the value
// and its position.

function checkIndex(where: string, index: unknown, x: Tensor): NativeTensor {
  const handle = anyHandle(index, `${where}: index`);
  const t = index as Tensor;
  if (t.dtype !== 'int32') throw typeError(`${where}: index`, "an 'int32' tensor (indices: tensor(values, shape, { dtype: 'int32' }))", t);
  if (t.device !== x.device) throw typeError(`${where}: index`, `a tensor on '${x.device}' like x`, t);
  return handle;
}

/** The slices index[j] of x along dim, in index order: y.shape[dim] = index.size (torch.index_select). */
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  const where = 'indexSelect';
  anyHandle(x, `${where}: x`);
  const d = checkDim(`${where}: dim`, dim, x.rank);
  const indices = checkIndex(where, index, x);
  if (index.rank > 1) throw rangeError(`${where}: index`, 'a 1-D tensor (or a scalar)', shapeText(index.shape));
  if (x.rank === 0) throw rangeError(`${where}: x`, 'at least one dimension', shapeText(x.shape));
  const flat = index.rank === 0 ? native.view(indices, [1]) : indices;
  let y: Tensor;
  try {
    y = wrap(native.indexSelect(anyHandle(x, where), d, flat));
  } finally {
    if (flat !== indices) flat.dispose();
  }
  return record(y, where, [x], (dy) => {
    const zeros = native.zeros([...x.shape], x.device, 'float32');
    const flatIndex = native.view(handleOf(index, where, 'any'), [index.size]);
    try {
      return [wrap(native.indexAdd(zeros, d, flatIndex, handleOf(dy, where)))];
    } finally {
      zeros.dispose();
      flatIndex.dispose();
    }
  }, [index]);
}

function checkGatherShapes(where: string, x: Tensor, d: number, index: Tensor, src: Tensor | null): void {
  if (index.rank !== x.rank) throw rangeError(`${where}: index`, `${x.rank} dims like x ${shapeText(x.shape)}`, shapeText(index.shape));
  index.shape.forEach((size, k) => {
    if (k !== d && size > x.shape[k]!) throw rangeError(`${where}: index`, `at most ${x.shape[k]} in dim ${k} (x is ${shapeText(x.shape)})`, shapeText(index.shape));
    if (src && size > src.shape[k]!) throw rangeError(`${where}: src`, `at least index's ${size} in dim ${k} (index is ${shapeText(index.shape)})`, shapeText(src.shape));
  });
}

/** torch.gather: y[i] = x[i with i[dim] replaced by index[i]], of index's shape (index.shape[k] ≤ x.shape[k] off dim). */
export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  const where = 'gather';
  anyHandle(x, `${where}: x`);
  const d = checkDim(`${where}: dim`, dim, x.rank);
  const indices = checkIndex(where, index, x);
  checkGatherShapes(where, x, d, index, null);
  const y = wrap(native.gather(anyHandle(x, where), d, indices));
  return record(y, where, [x], (dy) => {
    const zeros = native.zeros([...x.shape], x.device, 'float32');
    try {
      return [wrap(native.scatterAdd(zeros, d, handleOf(index, where, 'any'), handleOf(dy, where)))];
    } finally {
      zeros.dispose();
    }
  }, [index]);
}

/**
 * torch.scatter_add, out of place: x with src[i] added at i with i[dim] replaced by index[i] (index.shape[k] ≤
 * src.shape[k], and ≤ x.shape[k] off dim). float32. On the CPU each element's terms are added in a fixed order;
 * on CUDA with atomic adds, whose order (and last bits) may vary run to run.
 */
export function scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor): Tensor {
  const where = 'scatterAdd';
  handleOf(x, `${where}: x`);
  handleOf(src, `${where}: src`);
  if (src.device !== x.device) throw typeError(`${where}: src`, `a tensor on '${x.device}' like x`, src);
  const d = checkDim(`${where}: dim`, dim, x.rank);
  const indices = checkIndex(where, index, x);
  if (src.rank !== x.rank) throw rangeError(`${where}: src`, `${x.rank} dims like x ${shapeText(x.shape)}`, shapeText(src.shape));
  checkGatherShapes(where, x, d, index, src);
  const y = wrap(native.scatterAdd(handleOf(x, where), d, indices, handleOf(src, where)));
  return record(y, where, [x, src], (dy, needs) => {
    const dx = needs[0] ? wrap(native.view(handleOf(dy, where), [...x.shape])) : null;
    if (!needs[1]) return [dx, null];
    const picked = native.gather(handleOf(dy, where), d, handleOf(index, where, 'any'));
    if (shapeText(index.shape) === shapeText(src.shape)) return [dx, wrap(picked)];
    // src larger than index: the elements no index reaches get no gradient.
    try {
      return [dx, zerosWith(src.shape, src.device, { shape: [...index.shape], strides: contiguousStrides(src.shape), offset: 0 }, wrap(picked), where)];
    } finally {
      picked.dispose();
    }
  }, [index]);
}

// ---------------------------------------------------------------------------------------------------------------
// Tensor methods (x.reshape(...), x.slice(...)), added here so the Tensor class body stays small.

declare module './tensor.js' {
  interface Tensor {
    /** reshape(x, shape); also x.reshape(2, 3). */
    reshape(shape: readonly number[]): Tensor;
    reshape(...shape: number[]): Tensor;
    /** view(x, shape); also x.view(2, 3). */
    view(shape: readonly number[]): Tensor;
    view(...shape: number[]): Tensor;
    /** torch.flatten: dims startDim..endDim merged (default: all, to 1-D). */
    flatten(startDim?: number, endDim?: number): Tensor;
    squeeze(dim?: number | readonly number[]): Tensor;
    unsqueeze(dim: number): Tensor;
    contiguous(): Tensor;
    transpose(dim0: number, dim1: number): Tensor;
    permute(dims: readonly number[]): Tensor;
    permute(...dims: number[]): Tensor;
    slice(dim: number, start?: number | null, end?: number | null, step?: number): Tensor;
    narrow(dim: number, start: number, length: number): Tensor;
    split(sizeOrSections: number | readonly number[], dim?: number): Tensor[];
    chunk(chunks: number, dim?: number): Tensor[];
    flip(dims: number | readonly number[]): Tensor;
    gather(dim: number, index: Tensor): Tensor;
    indexSelect(dim: number, index: Tensor): Tensor;
    scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor;
    /** expand(x, sizes); also x.expand(2, -1, 3). */
    expand(sizes: readonly number[]): Tensor;
    expand(...sizes: number[]): Tensor;
  }
}

type ShapeMethod =
  | 'reshape' | 'view' | 'expand' | 'flatten' | 'squeeze' | 'unsqueeze' | 'contiguous' | 'transpose' | 'permute' | 'slice'
  | 'narrow' | 'split' | 'chunk' | 'flip' | 'gather' | 'indexSelect' | 'scatterAdd';

/** A shape given as one array or as separate numbers. */
function shapeArgument(where: string, first: unknown, rest: readonly unknown[]): number[] {
  return dimsArgument(`${where}: shape`, first, rest) as number[];
}

const methods: { [K in ShapeMethod]: Tensor[K] } = {
  reshape: function (this: Tensor, first?: unknown, ...rest: unknown[]) {
    return reshape(this, shapeArgument('reshape', first, rest));
  } as Tensor['reshape'],
  view: function (this: Tensor, first?: unknown, ...rest: unknown[]) {
    return view(this, shapeArgument('view', first, rest));
  } as Tensor['view'],
  expand: function (this: Tensor, first?: unknown, ...rest: unknown[]) {
    return expand(this, shapeArgument('expand', first, rest));
  } as Tensor['expand'],
  flatten(this: Tensor, startDim?: number, endDim?: number) {
    return flatten(this, startDim, endDim);
  },
  squeeze(this: Tensor, dim?: number | readonly number[]) {
    return squeeze(this, dim);
  },
  unsqueeze(this: Tensor, dim: number) {
    return unsqueeze(this, dim);
  },
  contiguous(this: Tensor) {
    return contiguous(this);
  },
  transpose(this: Tensor, dim0: number, dim1: number) {
    return transpose(this, dim0, dim1);
  },
  permute: function (this: Tensor, first?: unknown, ...rest: unknown[]) {
    return permute(this, dimsArgument('permute: dims', first, rest) as number[]);
  } as Tensor['permute'],
  slice(this: Tensor, dim: number, start?: number | null, end?: number | null, step?: number) {
    return slice(this, dim, start, end, step);
  },
  narrow(this: Tensor, dim: number, start: number, length: number) {
    return narrow(this, dim, start, length);
  },
  split(this: Tensor, sizeOrSections: number | readonly number[], dim?: number) {
    return split(this, sizeOrSections, dim);
  },
  chunk(this: Tensor, chunks: number, dim?: number) {
    return chunk(this, chunks, dim);
  },
  flip(this: Tensor, dims: number | readonly number[]) {
    return flip(this, dims);
  },
  gather(this: Tensor, dim: number, index: Tensor) {
    return gather(this, dim, index);
  },
  indexSelect(this: Tensor, dim: number, index: Tensor) {
    return indexSelect(this, dim, index);
  },
  scatterAdd(this: Tensor, dim: number, index: Tensor, src: Tensor) {
    return scatterAdd(this, dim, index, src);
  },
};
// Non-enumerable, like methods declared in the class body.
for (const [name, method] of Object.entries(methods)) {
  Object.defineProperty(Tensor.prototype, name, { value: method, writable: true, configurable: true, enumerable: false });
}
