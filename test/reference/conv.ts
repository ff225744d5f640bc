// Float64 references for the convolution family, written straight from the definitions (no im2col, no GEMM): the
// direct convolution as its sum, its gradients as the same sum read the other way, and the transposed convolution
// as the direct one's adjoint. 1-D is the height-1 case. Layouts are NCHW, flat arrays.

export interface ConvReferenceGeometry {
  batch: number;
  inChannels: number;
  outChannels: number;
  groups: number;
  inSize: [number, number];
  outSize: [number, number];
  kernel: [number, number];
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
}

/** Calls visit(n, o, oh, ow, xIndex, wIndex) for every product term of the direct convolution. */
function forEachTerm(g: ConvReferenceGeometry, visit: (yIndex: number, xIndex: number, wIndex: number) => void): void {
  const icg = g.inChannels / g.groups;
  const ocg = g.outChannels / g.groups;
  const [H, W] = g.inSize;
  const [OH, OW] = g.outSize;
  const [KH, KW] = g.kernel;
  for (let n = 0; n < g.batch; n++)
    for (let o = 0; o < g.outChannels; o++) {
      const group = Math.floor(o / ocg);
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          const yIndex = ((n * g.outChannels + o) * OH + oh) * OW + ow;
          for (let c = 0; c < icg; c++)
            for (let i = 0; i < KH; i++) {
              const h = oh * g.stride[0] - g.padding[0] + i * g.dilation[0];
              if (h < 0 || h >= H) continue;
              for (let j = 0; j < KW; j++) {
                const w = ow * g.stride[1] - g.padding[1] + j * g.dilation[1];
                if (w < 0 || w >= W) continue;
                const xIndex = ((n * g.inChannels + group * icg + c) * H + h) * W + w;
                const wIndex = ((o * icg + c) * KH + i) * KW + j;
                visit(yIndex, xIndex, wIndex);
              }
            }
        }
    }
}

/** y = conv(x, w) + bias. */
export function convReference(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, g: ConvReferenceGeometry): Float64Array {
  const spatial = g.outSize[0] * g.outSize[1];
  const y = new Float64Array(g.batch * g.outChannels * spatial);
  if (bias) for (let e = 0; e < y.length; e++) y[e] = bias[Math.floor(e / spatial) % g.outChannels]!;
  forEachTerm(g, (yi, xi, wi) => {
    y[yi]! += x[xi]! * w[wi]!;
  });
  return y;
}

/** Gradients of sum(conv(x, w) + bias) ⊙ dy. */
export function convBackwardReference(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  g: ConvReferenceGeometry,
): { dx: Float64Array; dw: Float64Array; dbias: Float64Array } {
  const dx = new Float64Array(g.batch * g.inChannels * g.inSize[0] * g.inSize[1]);
  const dw = new Float64Array(w.length);
  const dbias = new Float64Array(g.outChannels);
  const spatial = g.outSize[0] * g.outSize[1];
  for (let e = 0; e < dy.length; e++) dbias[Math.floor(e / spatial) % g.outChannels]! += dy[e]!;
  forEachTerm(g, (yi, xi, wi) => {
    dx[xi]! += dy[yi]! * w[wi]!;
    dw[wi]! += dy[yi]! * x[xi]!;
  });
  return { dx, dw, dbias };
}

/**
 * The transposed convolution of x [batch, outChannels, outSize] (the direct geometry's output side) with the same
 * w: y [batch, inChannels, inSize] = adjoint(x) + bias [inChannels]; its gradients: dx = conv(dy, w),
 * dw = Σ x ⊗ dy over the terms, dbias = Σ dy per channel.
 */
export function convTransposeReference(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, g: ConvReferenceGeometry): Float64Array {
  const spatial = g.inSize[0] * g.inSize[1];
  const y = new Float64Array(g.batch * g.inChannels * spatial);
  if (bias) for (let e = 0; e < y.length; e++) y[e] = bias[Math.floor(e / spatial) % g.inChannels]!;
  forEachTerm(g, (yi, xi, wi) => {
    y[xi]! += x[yi]! * w[wi]!;
  });
  return y;
}

export function convTransposeBackwardReference(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  g: ConvReferenceGeometry,
): { dx: Float64Array; dw: Float64Array; dbias: Float64Array } {
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(w.length);
  const dbias = new Float64Array(g.inChannels);
  const spatial = g.inSize[0] * g.inSize[1];
  for (let e = 0; e < dy.length; e++) dbias[Math.floor(e / spatial) % g.inChannels]! += dy[e]!;
  forEachTerm(g, (yi, xi, wi) => {
    dx[yi]! += dy[xi]! * w[wi]!;
    dw[wi]! += x[yi]! * dy[xi]!;
  });
  return { dx, dw, dbias };
}

/** Sum of |terms| behind each element of conv(x, w), for error bounds: conv(|x|, |w|). */
export function convMagnitudes(x: ArrayLike<number>, w: ArrayLike<number>, g: ConvReferenceGeometry): Float64Array {
  return convReference(Array.from(x, Math.abs), Array.from(w, Math.abs), null, g);
}
