// Float64 references for the shape ops: each output element found by its multi-index, one element at a time,
// written for obviousness (no strides). Values are plain arrays of numbers in row-major order.

export type Shape = readonly number[];

export function sizeOf(shape: Shape): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The multi-index of row-major position `flat` in `shape`. */
export function unravel(flat: number, shape: Shape): number[] {
  const index = new Array<number>(shape.length).fill(0);
  for (let d = shape.length - 1; d >= 0; d--) {
    index[d] = flat % shape[d]!;
    flat = Math.floor(flat / shape[d]!);
  }
  return index;
}

/** The row-major position of `index` in `shape`. */
export function ravel(index: readonly number[], shape: Shape): number {
  return index.reduce((flat, i, d) => flat * shape[d]! + i, 0);
}

/** Every element of `shape` from value(index). */
function build(shape: Shape, value: (index: number[]) => number): number[] {
  return Array.from({ length: sizeOf(shape) }, (_, flat) => value(unravel(flat, shape)));
}

/** y[i] = x[i permuted back]: y.shape[k] = shape[dims[k]]. */
export function permute(x: ArrayLike<number>, shape: Shape, dims: readonly number[]): { y: number[]; shape: number[] } {
  const out = dims.map((d) => shape[d]!);
  return {
    shape: out,
    y: build(out, (i) => {
      const source = new Array<number>(shape.length);
      dims.forEach((d, k) => (source[d] = i[k]!));
      return x[ravel(source, shape)]!;
    }),
  };
}

/** The positions along a dim picked by a slice: indices[k] of the source for output position k. */
export function along(x: ArrayLike<number>, shape: Shape, dim: number, indices: readonly number[]): { y: number[]; shape: number[] } {
  const out = shape.map((s, d) => (d === dim ? indices.length : s));
  return {
    shape: out,
    y: build(out, (i) => {
      const source = [...i];
      source[dim] = indices[i[dim]!]!;
      return x[ravel(source, shape)]!;
    }),
  };
}

/** Elements reversed along each of dims. */
export function flip(x: ArrayLike<number>, shape: Shape, dims: readonly number[]): number[] {
  return build(shape, (i) => x[ravel(i.map((k, d) => (dims.includes(d) ? shape[d]! - 1 - k : k)), shape)]!);
}

/** The parts joined along dim. */
export function concat(parts: readonly { x: ArrayLike<number>; shape: Shape }[], dim: number): { y: number[]; shape: number[] } {
  const out = parts[0]!.shape.map((s, d) => (d === dim ? parts.reduce((sum, p) => sum + p.shape[dim]!, 0) : s));
  return {
    shape: out,
    y: build(out, (i) => {
      let k = i[dim]!;
      for (const part of parts) {
        if (k < part.shape[dim]!) {
          const source = [...i];
          source[dim] = k;
          return part.x[ravel(source, part.shape)]!;
        }
        k -= part.shape[dim]!;
      }
      throw new RangeError('concat reference: position beyond the parts');
    }),
  };
}

/** torch.gather: y[i] = x[i with i[dim] = index[i]], of index's shape. */
export function gather(x: ArrayLike<number>, shape: Shape, dim: number, index: ArrayLike<number>, indexShape: Shape): number[] {
  return build(indexShape, (i) => {
    const source = [...i];
    source[dim] = index[ravel(i, indexShape)]!;
    return x[ravel(source, shape)]!;
  });
}

/** torch.scatter_add: x with src[i] added at i with i[dim] = index[i], in increasing row-major i. */
export function scatterAdd(
  x: ArrayLike<number>,
  shape: Shape,
  dim: number,
  index: ArrayLike<number>,
  indexShape: Shape,
  src: ArrayLike<number>,
  srcShape: Shape,
): number[] {
  const y = Array.from(x);
  for (let flat = 0; flat < sizeOf(indexShape); flat++) {
    const i = unravel(flat, indexShape);
    const target = [...i];
    target[dim] = index[flat]!;
    y[ravel(target, shape)]! += src[ravel(i, srcShape)]!;
  }
  return y;
}
