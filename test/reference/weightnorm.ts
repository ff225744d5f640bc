// Float64 reference of weight norm (Salimans & Kingma, 2016, "Weight Normalization: A Simple Reparameterization to
// Accelerate Training of Deep Neural Networks", §2, plus the eps floor): the oracle every kernel is compared against.
// Plain loops over the [outer, channels, inner] view of v; no cleverness, so it can be checked by reading.
//
//   norm[k] = max(‖v_k‖, eps)            ‖·‖ over every axis except dim (dim null: over the whole tensor)
//   w       = v · g[k] / norm[k]
//   dg[k]   = <dw_k, v_k> / norm[k]
//   dv      = (g[k]/norm[k]) · dw − (g[k]·dg[k]/norm[k]²) · v     second term 0 where the floor is active

/** A tensor seen as [outer, channels, inner] around the axis `dim`; dim null gives a single channel. */
export interface ChannelLayout {
  outer: number;
  channels: number;
  inner: number;
}

/** The axis a (possibly negative) dim names, or null. Throws on an axis outside the rank. */
export function resolveDim(dim: number | null, rank: number): number | null {
  if (dim === null) return null;
  if (!Number.isInteger(dim) || dim < -rank || dim >= rank) throw new RangeError(`dim ${dim} for rank ${rank}`);
  return dim < 0 ? dim + rank : dim;
}

export function channelLayout(shape: readonly number[], dim: number | null): ChannelLayout {
  const axis = resolveDim(dim, shape.length);
  const product = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1);
  if (axis === null) return { outer: 1, channels: 1, inner: product(shape) };
  return { outer: product(shape.slice(0, axis)), channels: shape[axis]!, inner: product(shape.slice(axis + 1)) };
}

/** Flat (row-major) indices of channel k's elements, in order. */
export function channelIndices(layout: ChannelLayout, k: number): number[] {
  const indices = new Array<number>(layout.outer * layout.inner);
  let next = 0;
  for (let o = 0; o < layout.outer; o++) {
    for (let i = 0; i < layout.inner; i++) indices[next++] = (o * layout.channels + k) * layout.inner + i;
  }
  return indices;
}

/** Σ a[i]·b[i] over channel k. */
export function channelDot(a: ArrayLike<number>, b: ArrayLike<number>, layout: ChannelLayout, k: number): number {
  let sum = 0;
  for (let o = 0; o < layout.outer; o++) {
    for (let i = 0; i < layout.inner; i++) {
      const index = (o * layout.channels + k) * layout.inner + i;
      sum += a[index]! * b[index]!;
    }
  }
  return sum;
}

/** One channel's float64 values: its norm (floored at eps), dg, and the coefficients of dv = c1·dw − c2·v. */
export interface ChannelReference {
  norm: number;
  /** Whether the eps floor is active (‖v_k‖ ≤ eps): then c2 = 0. */
  floored: boolean;
  dg: number;
  c1: number;
  c2: number;
}

/** Channel k of weight norm (dw null: the forward's norm only; dg, c1 and c2 are then 0). */
export function weightNormChannel(
  v: ArrayLike<number>,
  g: ArrayLike<number>,
  dw: ArrayLike<number> | null,
  layout: ChannelLayout,
  k: number,
  eps: number,
): ChannelReference {
  const rawNorm = Math.sqrt(channelDot(v, v, layout, k));
  const floored = rawNorm <= eps;
  const norm = Math.max(rawNorm, eps);
  if (dw === null) return { norm, floored, dg: 0, c1: 0, c2: 0 };
  const dg = channelDot(dw, v, layout, k) / norm;
  const c1 = g[k]! / norm;
  const c2 = floored ? 0 : (g[k]! * dg) / (norm * norm);
  return { norm, floored, dg, c1, c2 };
}

/** w at one element of channel k: v·g[k]/norm[k]. */
export function normalizedWeight(vElement: number, gChannel: number, channel: ChannelReference): number {
  return (vElement * gChannel) / channel.norm;
}

/** The two terms of dv at one element of channel k: dv = term1 − term2 = c1·dw − c2·v. */
export function directionGradientTerms(dwElement: number, vElement: number, channel: ChannelReference): [number, number] {
  return [channel.c1 * dwElement, channel.c2 * vElement];
}

export interface ForwardReference {
  w: Float64Array;
  norm: Float64Array;
}

export function weightNormForward(
  v: ArrayLike<number>,
  g: ArrayLike<number>,
  shape: readonly number[],
  dim: number | null,
  eps: number,
): ForwardReference {
  const layout = channelLayout(shape, dim);
  const w = new Float64Array(v.length);
  const norm = new Float64Array(layout.channels);
  for (let k = 0; k < layout.channels; k++) {
    const channel = weightNormChannel(v, g, null, layout, k, eps);
    norm[k] = channel.norm;
    for (const index of channelIndices(layout, k)) w[index] = normalizedWeight(v[index]!, g[k]!, channel);
  }
  return { w, norm };
}

export interface BackwardReference {
  dv: Float64Array;
  dg: Float64Array;
  /** dv = c1[k]·dw − c2[k]·v per channel (c2 = 0 where the floor is active). */
  c1: Float64Array;
  c2: Float64Array;
  /** Whether the eps floor is active for channel k (‖v_k‖ ≤ eps). */
  floored: boolean[];
  /**
   * Error scales for float32 comparisons. dv: the largest |c1·dw| or |c2·v|, since the two terms cancel (a 1-element
   * channel has dv = 0 exactly). dg: the largest Σ|dw·v|/norm, since the terms of the dot product cancel too.
   */
  dvScale: number;
  dgScale: number;
}

export function weightNormBackward(
  dw: ArrayLike<number>,
  v: ArrayLike<number>,
  g: ArrayLike<number>,
  shape: readonly number[],
  dim: number | null,
  eps: number,
): BackwardReference {
  const layout = channelLayout(shape, dim);
  const dv = new Float64Array(v.length);
  const dg = new Float64Array(layout.channels);
  const c1 = new Float64Array(layout.channels);
  const c2 = new Float64Array(layout.channels);
  const floored: boolean[] = [];
  let dvScale = 0;
  let dgScale = 0;
  for (let k = 0; k < layout.channels; k++) {
    const channel = weightNormChannel(v, g, dw, layout, k, eps);
    const norm = channel.norm;
    floored.push(channel.floored);
    dg[k] = channel.dg;
    c1[k] = channel.c1;
    c2[k] = channel.c2;
    let absoluteDot = 0;
    for (const index of channelIndices(layout, k)) {
      const [term1, term2] = directionGradientTerms(dw[index]!, v[index]!, channel);
      dv[index] = term1 - term2;
      dvScale = Math.max(dvScale, Math.abs(term1), Math.abs(term2));
      absoluteDot += Math.abs(dw[index]! * v[index]!);
    }
    dgScale = Math.max(dgScale, absoluteDot / norm);
  }
  return { dv, dg, c1, c2, floored, dvScale, dgScale };
}
