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

import { fileURLToPath } from 'node:url';

import { backend, type Device, init, io, manualSeed, nn, noGrad, type Tensor, tensor, tidy } from '../ts/index.js';
import { native } from '../ts/native.js';
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
const devices: Device[] = ['cpu', ...(cudaUsable ? (['cuda'] as const) : [])];
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
  // The per-image path (cpu/conv.cc: output planes of at least 64 positions): images spread over the threads, and
  // dw summed from per-chunk partials (45 images of 100 positions: 3 chunks of at most 21).
  { name: '2-D per-image path, several dw chunks', dims: 2, batch: 45, inChannels: 3, outChannels: 5, size: [10, 10], kernel: [3, 3], padding: [1, 1] },
  { name: '2-D per-image path, groups 2, dilation 2, stride 2', dims: 2, batch: 5, inChannels: 4, outChannels: 6, size: [21, 19], kernel: [3, 3], stride: [2, 2], padding: [2, 1], dilation: [2, 2], groups: 2 },
  { name: '1-D per-image path, one input channel', dims: 1, batch: 7, inChannels: 1, outChannels: 4, size: [80], kernel: [5], padding: [2] },
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

  it('a batch large enough to be split into several im2col batches matches the float64 reference', () => {
    // 1-D, 1000 channels × k9 × 60 positions = 540K floats per image: 7 images fill the col budget (4M floats), so a
    // batch of 9 takes two im2col batches and the regrouped product (60 positions: below the per-image path's 64).
    const [batch, channels, length] = [9, 1000, 60];
    const xv = values(batch * channels * length, seed + 7);
    const wv = values(8 * channels * 9, seed + 8);
    const g: ConvReferenceGeometry = {
      batch, inChannels: channels, outChannels: 8, groups: 1, inSize: [1, length], outSize: [1, length], kernel: [1, 9],
      stride: [1, 1], padding: [0, 4], dilation: [1, 1],
    };
    tidy(() => {
      const x = tensor(Float32Array.from(xv), [batch, channels, length], { device });
      const w = tensor(Float32Array.from(wv), [8, channels, 9], { device });
      const y = F.conv1d(x, w, null, { padding: 4 }).toArray();
      const error = scaledError(y, convReference(xv, wv, null, g), convReference(abs(xv), abs(wv), null, g));
      expect(error, reproduce(seed)).toBeLessThan(TOLERANCE);
    });
  });
});

/** A float64 w = g·v/max(‖v‖, eps) over `dim` (null: the whole tensor). */
function weightNormReference(v: ArrayLike<number>, g: ArrayLike<number>, shape: number[], dim: number | null): Float64Array {
  const outer = dim === null ? 1 : shape.slice(0, dim).reduce((a, b) => a * b, 1);
  const channels = dim === null ? 1 : shape[dim]!;
  const inner = dim === null ? v.length : shape.slice(dim + 1).reduce((a, b) => a * b, 1);
  const squares = new Float64Array(channels);
  for (let e = 0; e < v.length; e++) squares[Math.floor(e / inner) % channels]! += v[e]! ** 2;
  void outer;
  return Float64Array.from(v, (x, e) => {
    const c = Math.floor(e / inner) % channels;
    return (g[c]! * x) / Math.max(Math.sqrt(squares[c]!), 1e-12);
  });
}

describe.each(devices)('conv layers on %s', (device) => {
  // Two routes for dv, dg: a long output keeps no raw product (dv, dg from the weight-gradient product); a short
  // one keeps t and writes dv in the GEMM epilogue.
  it.each([
    ['output larger than the weight (no t kept)', 3, 20],
    ['output smaller than the weight (t kept)', 1, 2],
    ['per-image path (planes of 100 positions, images spread over the threads)', 6, 100],
  ] as const)('Conv1d with weight norm (dim 0, scale in the GEMM epilogue), %s: matches conv1d on the materialized w', (_, batch, length) => {
    manualSeed(seed % 2 ** 31);
    tidy(() => {
      const layer = new nn.Conv1d(6, 8, 5, { padding: 4, dilation: 2, groups: 2, weightNorm: true }).to(device);
      const x = tensor(Float32Array.from(values(batch * 6 * length, seed + 11)), [batch, 6, length], { device });
      x.requiresGrad = true;
      // Gains away from ‖v‖, so that the epilogue's scale g/‖v‖ is not 1.
      layer.loadStateDict({ g: { shape: [8], data: Float32Array.from(values(8, seed + 12), (v) => 1 + 0.3 * v) } }, { allowMissingKeys: true });
      const dy = Float32Array.from(values(batch * 8 * length, seed + 13));
      const y = layer.forward(x);
      const gv = convReference(x.toArray(), weightNormReference(layer.v!.toArray(), layer.g!.toArray(), [...layer.v!.shape], 0), Array.from(layer.bias!.toArray()), {
        batch, inChannels: 6, outChannels: 8, groups: 2, inSize: [1, length], outSize: [1, length], kernel: [1, 5], stride: [1, 1], padding: [0, 4], dilation: [1, 2],
      });
      expect(scaledError(y.toArray(), gv, convReference(abs(x.toArray()), abs(weightNormReference(layer.v!.toArray(), layer.g!.toArray(), [...layer.v!.shape], 0)), null, {
        batch, inChannels: 6, outChannels: 8, groups: 2, inSize: [1, length], outSize: [1, length], kernel: [1, 5], stride: [1, 1], padding: [0, 4], dilation: [1, 2],
      }))).toBeLessThan(TOLERANCE);
      F.sum(F.mul(y, tensor(dy, [batch, 8, length], { device }))).backward();
      // The same loss through the materialized path: w = weightNorm(v, g), then plain conv1d.
      const v2 = tensor(layer.v!.toArray(), [...layer.v!.shape], { device });
      const g2 = tensor(layer.g!.toArray(), [8], { device });
      const x2 = tensor(x.toArray(), [batch, 6, length], { device });
      for (const t of [v2, g2, x2]) t.requiresGrad = true;
      const { w } = F.weightNorm(v2, g2, { dim: 0 });
      F.sum(F.mul(F.conv1d(x2, w, layer.bias, { padding: 4, dilation: 2, groups: 2 }), tensor(dy, [batch, 8, length], { device }))).backward();
      const pairs: [Tensor, Tensor, string][] = [[x.grad!, x2.grad!, 'dx'], [layer.v!.grad!, v2.grad!, 'dv'], [layer.g!.grad!, g2.grad!, 'dg']];
      for (const [fused, materialized, name] of pairs) {
        const a = fused.toArray();
        const b = materialized.toArray();
        const scale = Math.max(...Array.from(b, Math.abs));
        expect(scaledError(a, b, [scale]), `${name}, ${reproduce(seed)}`).toBeLessThan(TOLERANCE);
      }
    });
  });
});

/** A small vocoder-like tree: a ModuleList of blocks inside a custom Module, as HiFi-GAN holds its layers. */
class Blocks extends nn.Module {
  readonly pre: nn.Conv1d;
  readonly blocks: nn.ModuleList;
  readonly post: nn.Conv1d;
  constructor() {
    super();
    this.pre = this.registerModule('pre', new nn.Conv1d(3, 8, 7, { padding: 3, weightNorm: true }));
    this.blocks = this.registerModule(
      'blocks',
      new nn.ModuleList([
        new nn.ConvTranspose1d(8, 4, 8, { stride: 4, padding: 2, weightNorm: true }),
        new nn.Conv1d(4, 4, 3, { dilation: 3, padding: 3, weightNorm: { dim: 2 } }),
        new nn.ConvTranspose1d(4, 4, 3, { stride: 1, padding: 1, groups: 2 }),
      ]),
    );
    this.post = this.registerModule('post', new nn.Conv1d(4, 2, 3, { padding: 1, bias: false }));
  }
  forward(x: Tensor): Tensor {
    let y = this.pre.forward(x);
    for (const block of this.blocks) y = block.forward(F.leakyRelu(y, 0.1));
    return this.post.forward(y);
  }
}

describe('module trees: ModuleList names, removeWeightNorms, data-dependent init', () => {
  it('ModuleList children are named 0, 1, … so state-dict keys line up with PyTorch', () => {
    const model = new Blocks();
    try {
      expect(Object.keys(model.stateDict())).toEqual([
        'pre.v', 'pre.g', 'pre.bias',
        'blocks.0.v', 'blocks.0.g', 'blocks.0.bias',
        'blocks.1.v', 'blocks.1.g', 'blocks.1.bias',
        'blocks.2.weight', 'blocks.2.bias',
        'post.weight',
      ]);
      expect(model.blocks.length).toBe(3);
      expect(model.blocks.at(-1)).toBeInstanceOf(nn.ConvTranspose1d);
      expect(() => model.blocks.forward(tensor([1], [1]))).toThrow(TypeError);
      expect(() => model.blocks.at(3)).toThrow(/nn.ModuleList.at: index/);
    } finally {
      model.dispose();
    }
  });

  it('weight norm of a transposed convolution is one norm per input channel (weight axis 0), of dim 2 one per tap', () => {
    const t = new nn.ConvTranspose1d(5, 3, 4, { weightNorm: true });
    const c = new nn.Conv1d(6, 6, 8, { groups: 3, padding: 4, weightNorm: { dim: 2 } });
    try {
      expect(t.v!.shape).toEqual([5, 3, 4]);
      expect(t.g!.shape).toEqual([5]);
      expect(t.bias!.shape).toEqual([3]);
      expect(c.v!.shape).toEqual([6, 2, 8]);
      expect(c.g!.shape).toEqual([8]);
    } finally {
      t.dispose();
      c.dispose();
    }
  });

  it('removeWeightNorms folds every weight-normalized layer of the tree and keeps the outputs', () => {
    manualSeed((seed + 5) % 2 ** 31);
    const model = new Blocks();
    try {
      const x = tensor(Float32Array.from(values(2 * 3 * 9, seed + 21)), [2, 3, 9]);
      const before = noGrad(() => tidy(() => model.forward(x).toArray()));
      expect(nn.removeWeightNorms(model)).toBe(model);
      expect(Object.keys(model.stateDict()).filter((k) => k.endsWith('.v') || k.endsWith('.g'))).toEqual([]);
      const after = noGrad(() => tidy(() => model.forward(x).toArray()));
      const scale = Math.max(...Array.from(before, Math.abs));
      expect(scaledError(after, before, [scale])).toBeLessThan(1e-5);
      expect(() => nn.removeWeightNorm(model.pre)).toThrow(/nn.removeWeightNorm: the Conv1d is not weight-normalized/);
      x.dispose();
    } finally {
      model.dispose();
    }
  });

  it('init.dataDependent initializes every weighted layer of any tree: unit-variance, zero-mean pre-activations per output channel', () => {
    manualSeed((seed + 9) % 2 ** 31);
    const model = new Blocks();
    try {
      const batch = tensor(Float32Array.from(values(4 * 3 * 16, seed + 31)), [4, 3, 16]);
      init.dataDependent(model, batch, { seed: seed % 2 ** 31 });
      // Re-run the forward, recording each weighted layer's output: after init each has per-channel statistics
      // (0, 1) on this batch (the bias-less post layer: σ = 1 only).
      const outputs: [string, Tensor][] = [];
      for (const [name, layer] of model.namedModules()) {
        if (!(layer instanceof nn.WeightedLayer)) continue;
        const forward = layer.forward.bind(layer);
        Object.defineProperty(layer, 'forward', { configurable: true, value: (x: Tensor) => {
          const y = forward(x);
          outputs.push([name, y]);
          return y;
        } });
      }
      noGrad(() => tidy(() => {
        model.forward(batch);
        for (const [name, y] of outputs) {
          const [n, c, l] = y.shape as [number, number, number];
          const data = y.toArray();
          for (let ch = 0; ch < c; ch++) {
            let sum = 0;
            let squares = 0;
            for (let b = 0; b < n; b++) for (let i = 0; i < l; i++) sum += data[(b * c + ch) * l + i]!;
            const mean = sum / (n * l);
            for (let b = 0; b < n; b++) for (let i = 0; i < l; i++) squares += (data[(b * c + ch) * l + i]! - mean) ** 2;
            const std = Math.sqrt(squares / (n * l));
            if (name !== 'post') expect(Math.abs(mean), `${name} channel ${ch} mean, ${reproduce(seed)}`).toBeLessThan(1e-4);
            expect(Math.abs(std - 1), `${name} channel ${ch} σ, ${reproduce(seed)}`).toBeLessThan(1e-4);
          }
        }
      }));
      for (const [, layer] of model.namedModules()) delete (layer as { forward?: unknown }).forward;
      batch.dispose();
    } finally {
      model.dispose();
    }
  });
});

describe('weight norm edge cases', () => {
  it('a zero channel of v stays finite (eps floor) in the fused forward and backward', () => {
    const layer = new nn.Conv1d(2, 3, 3, { padding: 1, weightNorm: true });
    try {
      const v = layer.v!.toArray();
      v.fill(0, 0, 6);
      layer.loadStateDict({ v: { shape: [3, 2, 3], data: v } }, { allowMissingKeys: true });
      tidy(() => {
        const x = tensor(Float32Array.from(values(2 * 2 * 5, seed + 41)), [2, 2, 5]);
        x.requiresGrad = true;
        const y = layer.forward(x);
        F.sum(y).backward();
        for (const t of [y, x.grad!, layer.v!.grad!, layer.g!.grad!]) expect(t.toArray().every(Number.isFinite)).toBe(true);
        // Channel 0's output is its bias alone.
        const out = y.toArray();
        for (let i = 0; i < 5; i++) expect(out[i]).toBe(layer.bias!.toArray()[0]);
      });
    } finally {
      layer.dispose();
    }
  });

  it("wav2vec2's positional conv at reduced width (k16, padding 8, groups 4, weightNorm dim 2) matches the float64 reference", () => {
    const layer = new nn.Conv1d(8, 8, 16, { padding: 8, groups: 4, weightNorm: { dim: 2 } });
    try {
      layer.loadStateDict({ g: { shape: [16], data: Float32Array.from(values(16, seed + 51), (v) => 1 + 0.2 * v) } }, { allowMissingKeys: true });
      tidy(() => {
        const x = tensor(Float32Array.from(values(2 * 8 * 30, seed + 52)), [2, 8, 30]);
        const y = noGrad(() => layer.forward(x));
        expect(y.shape).toEqual([2, 8, 31]);
        const w = weightNormReference(layer.v!.toArray(), layer.g!.toArray(), [8, 2, 16], 2);
        const g: ConvReferenceGeometry = {
          batch: 2, inChannels: 8, outChannels: 8, groups: 4, inSize: [1, 30], outSize: [1, 31], kernel: [1, 16], stride: [1, 1], padding: [0, 8], dilation: [1, 1],
        };
        expect(scaledError(y.toArray(), convReference(x.toArray(), w, Array.from(layer.bias!.toArray()), g), convReference(abs(x.toArray()), abs(w), null, g))).toBeLessThan(TOLERANCE);
      });
    } finally {
      layer.dispose();
    }
  });
});

describe('errors name the parameter', () => {
  const x1 = tensor(new Float32Array(2 * 4 * 6), [2, 4, 6]);
  const expectError = (call: () => unknown, type: typeof RangeError | typeof TypeError, pattern: RegExp) => {
    let caught: unknown;
    try {
      call();
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(type);
    expect((caught as Error).message).toMatch(pattern);
  };

  it('a dilated kernel larger than the padded input', () => {
    expectError(() => F.conv1d(x1, tensor(new Float32Array(3 * 4 * 4), [3, 4, 4]), null, { dilation: 2 }), RangeError, /conv1d: weight: expected a kernel no larger than the padded input.*dilation 2/);
    expectError(() => new nn.Conv1d(4, 2, 3, { dilation: 4 }).forward(x1), RangeError, /conv1d: weight/);
  });

  it('outputPadding must be smaller than the stride or the dilation', () => {
    expectError(() => F.convTranspose1d(x1, tensor(new Float32Array(4 * 2 * 3), [4, 2, 3]), null, { stride: 2, outputPadding: 2 }), RangeError, /convTranspose1d: options.outputPadding: expected each value smaller than the stride or the dilation/);
    expectError(() => new nn.ConvTranspose1d(4, 2, 3, { stride: 2, dilation: 2, outputPadding: 2 }), RangeError, /nn.ConvTranspose1d: options.outputPadding/);
    expect(() => new nn.ConvTranspose1d(4, 2, 3, { stride: 1, dilation: 3, outputPadding: 2 }).dispose()).not.toThrow();
  });

  it('groups must divide both channel counts', () => {
    expectError(() => new nn.Conv1d(4, 6, 3, { groups: 4 }), RangeError, /nn.Conv1d: options.groups: expected a divisor of both channel counts \(in 4, out 6\)/);
    expectError(() => new nn.ConvTranspose2d(6, 4, 3, { groups: 3 }), RangeError, /nn.ConvTranspose2d: options.groups/);
    expectError(() => F.conv1d(x1, tensor(new Float32Array(3 * 2 * 3), [3, 2, 3]), null, { groups: 2 }), RangeError, /conv1d: options.groups/);
  });

  it('wrong input rank or channels', () => {
    const layer = new nn.Conv1d(4, 2, 3);
    try {
      expectError(() => layer.forward(tensor(new Float32Array(4 * 6), [4, 6])), RangeError, /nn.Conv1d.forward: x: expected \[batch, 4, length\], received \[4, 6\]/);
      expectError(() => layer.forward(tensor(new Float32Array(2 * 3 * 6), [2, 3, 6])), RangeError, /nn.Conv1d.forward: x: expected \[batch, 4, length\], received \[2, 3, 6\]/);
      expectError(() => F.conv1d(x1, tensor(new Float32Array(2 * 3 * 3), [2, 3, 3])), RangeError, /conv1d: weight: expected \[outChannels, 4, kernelSize\]/);
      expectError(() => F.conv2d(x1, tensor(new Float32Array(2 * 4 * 9), [2, 4, 3, 3])), RangeError, /conv2d: x: expected \[batch, channels, height, width\]/);
    } finally {
      layer.dispose();
    }
    expectError(() => F.convTranspose1d(x1, tensor(new Float32Array(3 * 2 * 3), [3, 2, 3])), RangeError, /convTranspose1d: weight: expected \[4, outChannels \/ groups, kernelSize\]/);
    expectError(() => new nn.Conv2d(4, 2, [3, 3, 3] as unknown as number), TypeError, /nn.Conv2d: kernelSize/);
  });

  it('pad and upsample arguments', () => {
    expectError(() => F.pad(x1, [6, 0], { mode: 'reflect' }), RangeError, /pad: pads: expected pads smaller than the padded axes/);
    expectError(() => F.pad(x1, [1, 2, 3]), TypeError, /pad: pads/);
    expectError(() => F.pad(x1, [-1, 0], { mode: 'replicate' }), RangeError, /pad: pads: expected non-negative pads/);
    expectError(() => F.upsample(x1, { scaleFactor: 1.5 }), TypeError, /upsample: options.scaleFactor/);
    expectError(() => F.interpolate(x1, { size: 9 }), RangeError, /interpolate: options.size: expected whole multiples/);
    expectError(() => new nn.ReflectionPad1d([1, 2, 3] as unknown as number), TypeError, /nn.ReflectionPad1d: padding/);
  });
});

describe('PyTorch weights keep their meaning', () => {
  it('a torch weight_norm ConvTranspose1d(3, 4, 3, stride=2) imported into nn.ConvTranspose1d gives torch\'s output', () => {
    const dir = fileURLToPath(new URL('./fixtures/torch_state_dicts/', import.meta.url));
    const layer = new nn.ConvTranspose1d(3, 4, 3, { stride: 2, weightNorm: true });
    try {
      io.importTorchWeightNorm(`${dir}convtranspose1d.weight_norm.safetensors`, layer);
      const { tensors } = io.load(`${dir}convtranspose1d.io.safetensors`);
      const y = noGrad(() => layer.forward(tensors.input!));
      expect(y.shape).toEqual([2, 4, 11]);
      const expected = tensors.output!.toArray();
      const scale = Math.max(...Array.from(expected, Math.abs));
      // float32 sums of 6 products and the norm: a few ulps of the output's scale.
      expect(scaledError(y.toArray(), expected, [scale])).toBeLessThan(1e-5);
      y.dispose();
      for (const t of Object.values(tensors)) t.dispose();
    } finally {
      layer.dispose();
    }
  });
});

describe('the raw binding checks the conv options by name (as a caller skipping ts/ would see)', () => {
  const raw = native as unknown as Record<string, (...args: unknown[]) => unknown>;
  it('per-axis pairs, groups, the weight-norm epilogue operands and pad modes', () => {
    const x = native.randn([1, 2, 1, 5], seed % 2 ** 31, 'cpu', 0, 1);
    const w = native.randn([4, 2, 1, 3], (seed + 1) % 2 ** 31, 'cpu', 0, 1);
    const geometry = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 };
    try {
      expect(() => raw.conv!(x, w, null, { ...geometry, stride: [1] })).toThrow(/conv: options.stride: expected \[height, width\]/);
      expect(() => raw.conv!(x, w, null, { ...geometry, dilation: [1, 0] })).toThrow(/conv: options.dilation/);
      expect(() => raw.conv!(x, w, null, { ...geometry, groups: 3 })).toThrow(RangeError);
      const scale = native.full([4], 1, 'cpu');
      expect(() => raw.conv!(x, w, null, { ...geometry, rawOut: scale })).toThrow(/conv: options.rawOut: expected options.channelScale with it/);
      scale.dispose();
      expect(() => raw.convTranspose!(x, w, null, { ...geometry })).toThrow(/convTranspose: options.outputSize/);
      expect(() => raw.pad!(x, { top: 0, bottom: 0, left: 1, right: 1, mode: 'wrap', value: 0 })).toThrow(/pad: options.mode/);
      const y = native.conv(x, w, null, geometry);
      expect(y.shape).toEqual([1, 4, 1, 3]);
      y.dispose();
    } finally {
      x.dispose();
      w.dispose();
    }
  });
});
