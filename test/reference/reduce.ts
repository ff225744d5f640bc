// float64 references of the axis reductions and softmax: the view [outer, reduce, inner] of a row-major tensor,
// written plainly (two passes where the definition has them), for test/reduce.test.ts.

export interface View {
  outer: number;
  reduce: number;
  inner: number;
}

/** The view of reducing the consecutive axes [first, last] of `shape`. */
export function viewOf(shape: readonly number[], first: number, last: number): View {
  const product = (values: readonly number[]) => values.reduce((a, b) => a * b, 1);
  return { outer: product(shape.slice(0, first)), reduce: product(shape.slice(first, last + 1)), inner: product(shape.slice(last + 1)) };
}

/** out[o * inner + i] = f(the reduce values of output (o, i)). */
export function reduceView(x: ArrayLike<number>, v: View, f: (values: number[]) => number): Float64Array {
  const out = new Float64Array(v.outer * v.inner);
  for (let o = 0; o < v.outer; o++) {
    for (let i = 0; i < v.inner; i++) {
      const values: number[] = [];
      for (let r = 0; r < v.reduce; r++) values.push(x[(o * v.reduce + r) * v.inner + i]!);
      out[o * v.inner + i] = f(values);
    }
  }
  return out;
}

/** The same layout as x: out[(o, r, i)] = f(values of (o, i))[r]. */
export function mapView(x: ArrayLike<number>, v: View, f: (values: number[]) => number[]): Float64Array {
  const out = new Float64Array(v.outer * v.reduce * v.inner);
  for (let o = 0; o < v.outer; o++) {
    for (let i = 0; i < v.inner; i++) {
      const values: number[] = [];
      for (let r = 0; r < v.reduce; r++) values.push(x[(o * v.reduce + r) * v.inner + i]!);
      f(values).forEach((y, r) => (out[(o * v.reduce + r) * v.inner + i] = y));
    }
  }
  return out;
}

export const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0);
export const mean = (values: number[]): number => sum(values) / values.length;
export const variance = (values: number[], correction: number): number => {
  const m = mean(values);
  return sum(values.map((x) => (x - m) ** 2)) / Math.max(values.length - correction, 0);
};
export const logsumexp = (values: number[]): number => {
  const m = Math.max(...values);
  if (!Number.isFinite(m)) return m;
  return m + Math.log(sum(values.map((x) => Math.exp(x - m))));
};
export const softmax = (values: number[]): number[] => {
  const m = Math.max(...values);
  const e = values.map((x) => Math.exp(x - m));
  const s = sum(e);
  return e.map((x) => x / s);
};
export const logSoftmax = (values: number[]): number[] => {
  const l = logsumexp(values);
  return values.map((x) => x - l);
};
/** Index of the first maximum (largest) or minimum. */
export const argExtreme = (values: number[], largest: boolean): number => {
  let best = 0;
  for (let r = 1; r < values.length; r++) if (largest ? values[r]! > values[best]! : values[r]! < values[best]!) best = r;
  return best;
};

/** Sums per channel of the layout [outer, channels, inner] (PyTorch's x.sum([0, 2])): the reduction behind
 *  batch-norm statistics and bias gradients. */
export function channelSums(x: ArrayLike<number>, outer: number, channels: number, inner: number): Float64Array {
  const sums = new Float64Array(channels);
  for (let e = 0; e < outer * channels * inner; e++) {
    const c = Math.floor(e / inner) % channels;
    sums[c] = sums[c]! + x[e]!;
  }
  return sums;
}
