// The convolution family against float64 references written from the definitions (test/reference/conv.ts): conv1d,
// conv2d, convTranspose1d/2d with strides, paddings, dilations, groups and output paddings, including the edge
// cases (kernel == input, stride > kernel, depthwise groups, output padding allowed by the dilation); the
// weight-normalized convolution with its scale in the GEMM epilogue; pad (constant, reflect, replicate, crop) and
// nearest upsampling; the layers (Conv1d, ConvTranspose1d/2d, Conv2d with dilation and groups), ModuleList,
// removeWeightNorm(s), data-dependent init in any module tree; and the errors that name their parameter.
// PyTorch float64 gradient checks of the same layers live in the gradient-check harness (registry-conv.ts).
//
// Tolerances: forwards and gradients are float32 sums of at most a few hundred products; errors are measured
// relative to the sum of magnitudes behind each element (conv(|x|, |w|) etc.), where k·2^-24 with k <= 512 is
// ~3e-5: 1e-4 leaves a margin and is far below a wrong or missing term (O(1) of that scale).
import { describe, expect, it } from 'vitest';

import { backend, init, manualSeed, nn, noGrad, type Tensor, tensor, tidy } from '../ts/index.js';
import { normals, reproduce, runSeed } from './helpers.js';
import {
  convBackwardReference,
  convReference,
  type ConvReferenceGeometry,
  convTransposeBackwardReference,
  convTransposeReference,
} from './reference/conv.js';

const F = nn.functional;
const cudaUsable = backend().cuda.usable;
const devices = ['cpu', ...(cudaUsable ? ['cuda'] : [])] as const;
if (!cudaUsable) console.log(`conv: CUDA cases skipped: ${backend().cuda.reason}`);

const TOLERANCE = 1e-4;
const seed = runSeed();

function values(n: number, s: number): Float64Array {
  return Float64Array.from(normals(n, s), (v) => Math.fround(v));
}

/** max |got − ref| / max(scale), scale the sum of magnitudes behind each element. */
function scaledError(got: ArrayLike<number>, ref: ArrayLike<number>, scale: ArrayLike<number>): number {
  expect(got.length).toBe(ref.length);
  let worst = 0;
  let top = 0;
  for (let i = 0; i < scale.length; i++) top = Math.max(top, Math.abs(scale[i]!));
  for (let i = 0; i < got.length; i++) {
    const e = Math.abs(got[i]! - ref[i]!);
    if (Number.isNaN(e)) return Infinity;
    worst = Math.max(worst, e / (top > 0 ? top : 1));
  }
  return worst;
}

const abs = (a: ArrayLike<number>): Float64Array => Float64Array.from(a, Math.abs);

interface ConvCase {
  name: string;
  dims: 1 | 2;
  batch: number;
  inChannels: number;
  outChannels: number;
  size: number[];
  kernel: number[];
  stride?: number[];
  padding?: number[];
  dilation?: number[];
  groups?: number;
  outputPadding?: number[];
}

const pairOf = (dims: 1 | 2, v: number[] | undefined, fill: number, heightFill: number): [number, number] =>
  dims === 1 ? [heightFill, (v ?? [fill])[0]!] : [(v ?? [fill, fill])[0]!, (v ?? [fill, fill])[1]!];

function directGeometry(c: ConvCase): ConvReferenceGeometry {
  const inSize = pairOf(c.dims, c.size, 1, 1);
  const kernel = pairOf(c.dims, c.kernel, 1, 1);
  const stride = pairOf(c.dims, c.stride, 1, 1);
  const padding = pairOf(c.dims, c.padding, 0, 0);
  const dilation = pairOf(c.dims, c.dilation, 1, 1);
  const out = [0, 1].map((a) => Math.floor((inSize[a]! + 2 * padding[a]! - dilation[a]! * (kernel[a]! - 1) - 1) / stride[a]!) + 1) as [number, number];
  return { batch: c.batch, inChannels: c.inChannels, outChannels: c.outChannels, groups: c.groups ?? 1, inSize, outSize: out, kernel, stride, padding, dilation };
}

/** The transposed case's direct geometry: its output is the direct conv's input side. */
function transposeGeometry(c: ConvCase): ConvReferenceGeometry {
  const size = pairOf(c.dims, c.size, 1, 1);
  const kernel = pairOf(c.dims, c.kernel, 1, 1);
  const stride = pairOf(c.dims, c.stride, 1, 1);
  const padding = pairOf(c.dims, c.padding, 0, 0);
  const dilation = pairOf(c.dims, c.dilation, 1, 1);
  const outputPadding = pairOf(c.dims, c.outputPadding, 0, 0);
  const out = [0, 1].map((a) => (size[a]! - 1) * stride[a]! - 2 * padding[a]! + dilation[a]! * (kernel[a]! - 1) + outputPadding[a]! + 1) as [number, number];
  // direct conv: in = the transposed output (outChannels of the transposed op), out = x's side.
  return { batch: c.batch, inChannels: c.outChannels, outChannels: c.inChannels, groups: c.groups ?? 1, inSize: out, outSize: size, kernel, stride, padding, dilation };
}

const spatialShape = (dims: 1 | 2, s: [number, number]): number[] => (dims === 1 ? [s[1]] : [...s]);

const DIRECT_CASES: ConvCase[] = [
  { name: '1-D k3 p1', dims: 1, batch: 2, inChannels: 3, outChannels: 4, size: [9], kernel: [3], padding: [1] },
  { name: '1-D k7 dilation 3 padding 9', dims: 1, batch: 2, inChannels: 2, outChannels: 3, size: [20], kernel: [7], padding: [9], dilation: [3] },
  { name: '1-D stride 3 > kernel 2', dims: 1, batch: 3, inChannels: 2, outChannels: 2, size: [11], kernel: [2], stride: [3] },
  { name: '1-D kernel == input', dims: 1, batch: 2, inChannels: 3, outChannels: 2, size: [5], kernel: [5] },
  { name: '1-D groups 2', dims: 1, batch: 2, inChannels: 4, outChannels: 6, size: [10], kernel: [3], padding: [2], groups: 2 },
  { name: '1-D depthwise (groups == channels)', dims: 1, batch: 2, inChannels: 4, outChannels: 4, size: [12], kernel: [5], padding: [2], groups: 4 },
  { name: '1-D wav2vec2-like (k even, padding k/2, groups)', dims: 1, batch: 1, inChannels: 8, outChannels: 8, size: [13], kernel: [8], padding: [4], groups: 4 },
  { name: '1-D pointwise', dims: 1, batch: 3, inChannels: 5, outChannels: 2, size: [7], kernel: [1] },
  { name: '2-D per-axis kernel, stride, padding, dilation', dims: 2, batch: 2, inChannels: 3, outChannels: 4, size: [7, 9], kernel: [3, 2], stride: [2, 1], padding: [1, 2], dilation: [1, 2] },
  { name: '2-D groups 3', dims: 2, batch: 2, inChannels: 6, outChannels: 3, size: [5, 5], kernel: [3, 3], padding: [1, 1], groups: 3 },
  { name: '2-D depthwise stride 2', dims: 2, batch: 2, inChannels: 3, outChannels: 6, size: [6, 7], kernel: [3, 3], stride: [2, 2], groups: 3 },
  { name: '2-D kernel == input', dims: 2, batch: 2, inChannels: 2, outChannels: 3, size: [4, 3], kernel: [4, 3] },
];

const TRANSPOSE_CASES: ConvCase[] = [
  { name: '1-D HiFi-GAN-like up 4 (k8 s4 p2)', dims: 1, batch: 2, inChannels: 4, outChannels: 3, size: [6], kernel: [8], stride: [4], padding: [2] },
  { name: '1-D output padding 1 < stride 2', dims: 1, batch: 2, inChannels: 3, outChannels: 2, size: [5], kernel: [3], stride: [2], padding: [1], outputPadding: [1] },
  { name: '1-D output padding allowed by dilation (s1 d2 op1)', dims: 1, batch: 2, inChannels: 2, outChannels: 2, size: [5], kernel: [3], dilation: [2], outputPadding: [1] },
  { name: '1-D groups 2 dilation 2', dims: 1, batch: 2, inChannels: 4, outChannels: 6, size: [7], kernel: [3], stride: [2], dilation: [2], padding: [1], groups: 2 },
  { name: '1-D stride 3 > kernel 2', dims: 1, batch: 2, inChannels: 2, outChannels: 3, size: [4], kernel: [2], stride: [3] },
  { name: '1-D pointwise', dims: 1, batch: 2, inChannels: 3, outChannels: 4, size: [6], kernel: [1] },
  { name: '2-D per-axis, output padding', dims: 2, batch: 2, inChannels: 3, outChannels: 2, size: [4, 5], kernel: [3, 2], stride: [2, 3], padding: [1, 0], outputPadding: [1, 2] },
  { name: '2-D depthwise', dims: 2, batch: 2, inChannels: 3, outChannels: 3, size: [3, 4], kernel: [3, 3], stride: [2, 2], padding: [1, 1], groups: 3 },
];

function options(c: ConvCase, transposed: boolean): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (c.stride) o.stride = c.dims === 1 ? c.stride[0] : c.stride;
  if (c.padding) o.padding = c.dims === 1 ? c.padding[0] : c.padding;
  if (c.dilation) o.dilation = c.dims === 1 ? [c.dilation[0]] : c.dilation;
  if (c.groups) o.groups = c.groups;
  if (transposed && c.outputPadding) o.outputPadding = c.dims === 1 ? c.outputPadding[0] : c.outputPadding;
  return o;
}

describe.each(devices)('convolutions against the float64 reference on %s', (device) => {
  it.each(DIRECT_CASES.map((c, i) => [c.name, c, i] as const))('conv %s: forward and input, weight, bias gradients', (_, c, i) => {
    const g = directGeometry(c);
    const s = seed + 100 * i;
    const xShape = [c.batch, c.inChannels, ...spatialShape(c.dims, g.inSize)];
    const wShape = [c.outChannels, c.inChannels / g.groups, ...spatialShape(c.dims, g.kernel)];
    const yShape = [c.batch, c.outChannels, ...spatialShape(c.dims, g.outSize)];
    const xv = values(xShape.reduce((a, b) => a * b), s);
    const wv = values(wShape.reduce((a, b) => a * b), s + 1);
    const bv = values(c.outChannels, s + 2);
    const dyv = values(yShape.reduce((a, b) => a * b), s + 3);
    tidy(() => {
      const x = tensor(Float32Array.from(xv), xShape, { device });
      const w = tensor(Float32Array.from(wv), wShape, { device });
      const b = tensor(Float32Array.from(bv), [c.outChannels], { device });
      for (const t of [x, w, b]) t.requiresGrad = true;
      const fn = c.dims === 1 ? F.conv1d : F.conv2d;
      const y = fn(x, w, b, options(c, false));
      expect(y.shape).toEqual(yShape);
      const ref = convReference(xv, wv, bv, g);
      const magnitude = convReference(abs(xv), abs(wv), abs(bv), g);
      expect(scaledError(y.toArray(), ref, magnitude), `${c.name} forward, ${reproduce(seed)}`).toBeLessThan(TOLERANCE);
      F.sum(F.mul(y, tensor(Float32Array.from(dyv), yShape, { device }))).backward();
      const grads = convBackwardReference(dyv, xv, wv, g);
      const mags = convBackwardReference(abs(dyv), abs(xv), abs(wv), g);
      expect(scaledError(x.grad!.toArray(), grads.dx, mags.dx), `${c.name} dx, ${reproduce(seed)}`).toBeLessThan(TOLERANCE);
      expect(scaledError(w.grad!.toArray(), grads.dw, mags.dw), `${c.name} dw, ${reproduce(seed)}`).toBeLessThan(TOLERANCE);
      expect(scaledError(b.grad!.toArray(), grads.dbias, mags.dbias), `${c.name} dbias, ${reproduce(seed)}`).toBeLessThan(TOLERANCE);
    });
  });

  it.each(TRANSPOSE_CASES.map((c, i) => [c.name, c, i] as const))('convTranspose %s: forward and gradients', (_, c, i) => {
    const g = transposeGeometry(c);
    const s = seed + 1000 + 100 * i;
    const xShape = [c.batch, c.inChannels, ...spatialShape(c.dims, g.outSize)];
    const wShape = [c.inChannels, c.outChannels / g.groups, ...spatialShape(c.dims, g.kernel)];
    const yShape = [c.batch, c.outChannels, ...spatialShape(c.dims, g.inSize)];
    const xv = values(xShape.reduce((a, b) => a * b), s);
    const wv = values(wShape.reduce((a, b) => a * b), s + 1);
    const bv = values(c.outChannels, s + 2);
    const dyv = values(yShape.reduce((a, b) => a * b), s + 3);
    tidy(() => {
      const x = tensor(Float32Array.from(xv), xShape, { device });
      const w = tensor(Float32Array.from(wv), wShape, { device });
      const b = tensor(Float32Array.from(bv), [c.outChannels], { device });
      for (const t of [x, w, b]) t.requiresGrad = true;
      const fn = c.dims === 1 ? F.convTranspose1d : F.convTranspose2d;
      const y = fn(x, w, b, options(c, true));
      expect(y.shape).toEqual(yShape);
      const ref = convTransposeReference(xv, wv, bv, g);
      const magnitude = convTransposeReference(abs(xv), abs(wv), abs(bv), g);
      expect(scaledError(y.toArray(), ref, magnitude), `${c.name} forward, ${reproduce(seed)}`).toBeLessThan(TOLERANCE);
      F.sum(F.mul(y, tensor(Float32Array.from(dyv), yShape, { device }))).backward();
      const grads = convTransposeBackwardReference(dyv, xv, wv, g);
      const mags = convTransposeBackwardReference(abs(dyv), abs(xv), abs(wv), g);
      expect(scaledError(x.grad!.toArray(), grads.dx, mags.dx), `${c.name} dx, ${reproduce(seed)}`).toBeLessThan(TOLERANCE);
      expect(scaledError(w.grad!.toArray(), grads.dw, mags.dw), `${c.name} dw, ${reproduce(seed)}`).toBeLessThan(TOLERANCE);
      expect(scaledError(b.grad!.toArray(), grads.dbias, mags.dbias), `${c.name} dbias, ${reproduce(seed)}`).toBeLessThan(TOLERANCE);
    });
  });

  it('a batch large enough to be split into several im2col batches gives the same result as one image at a time', () => {
    // 1-D, 40 channels × k9 × 4096 positions = 1.5M floats per image: a batch of 4 spans more than one col budget
    // (4M floats) and goes through the regrouped product.
    tidy(() => {
      const x = tensor(Float32Array.from(values(4 * 40 * 4096, seed + 7)), [4, 40, 4096], { device });
      const w = tensor(Float32Array.from(values(8 * 40 * 9, seed + 8)), [8, 40, 9], { device });
      const y = F.conv1d(x, w, null, { padding: 4 }).toArray();
      for (let n = 0; n < 4; n++) {
        const one = F.conv1d(tensor(x.toArray().slice(n * 40 * 4096, (n + 1) * 40 * 4096), [1, 40, 4096], { device }), w, null, { padding: 4 }).toArray();
        expect(Array.from(y.slice(n * 8 * 4096, (n + 1) * 8 * 4096))).toEqual(Array.from(one));
      }
    });
  });
});
