// The CPU's direct convolution kernels (cpu/conv.cc, "Direct path"): one input channel per group and stride 1 (a
// grayscale network's first layer, depthwise layers) run without im2col or GEMM, forward with bias (and weight
// norm's scale and raw product), dw and dbias in one pass over dy. Checked here against the float64 references of
// test/reference/conv.ts on fresh random inputs: row widths that exercise every block width (16, 8, 4, 1 outputs)
// and the overlapping last block, output-channel counts that exercise every channel group (8, 4, 2, 1) and its
// overlap, dilation, padding larger than the kernel, per-axis kernels, 1-D, depthwise groups, batch 1, the largest
// kernel the path takes (64 taps) and a 1x1 kernel; geometries just outside the path (stride 2, 81 taps, two input
// channels per group) fall back to im2col + GEMM and must agree as well. Weight-normalized layers on the path (both
// backward routes), and bits independent of the thread count.
//
// Tolerance: as test/conv.test.ts, errors relative to the sum of magnitudes behind each element; the forward sums
// at most 64 products, dw sums a few thousand in float lanes per image, added in double: k·2^-24 with k <= 4096 is
// ~2.4e-4 in the worst case and ~1e-6 in practice; 1e-4 is far below a wrong or missing term (O(1)).
import { describe, expect, it } from 'vitest';

import { nn, setNumThreads, type Tensor, tensor, tidy } from '../ts/index.js';
import { bitwiseEqual, maxAbs, normals, relativeError, reproduce, runSeed } from './helpers.js';
import { convBackwardReference, convReference, type ConvReferenceGeometry } from './reference/conv.js';

const F = nn.functional;
const TOLERANCE = 1e-4;
const seed = runSeed();

function values(n: number, s: number): Float64Array {
  return Float64Array.from(normals(n, s), (v) => Math.fround(v));
}

/** Error relative to the largest magnitude behind any element (test/conv.test.ts's measure). */
const scaledError = (got: ArrayLike<number>, ref: ArrayLike<number>, scale: ArrayLike<number>): number => relativeError(got, ref, maxAbs(scale));

const abs = (a: ArrayLike<number>): Float64Array => Float64Array.from(a, Math.abs);

/** A convolution on the direct path or next to it: the reference geometry's sizes, the optional ones defaulted. */
type Case = Pick<ConvReferenceGeometry, 'batch' | 'inChannels' | 'outChannels' | 'kernel'> &
  Partial<Pick<ConvReferenceGeometry, 'padding' | 'dilation' | 'stride' | 'groups'>> & {
    name: string;
    /** [height, width]; height 1 with `oneD` is a conv1d. */
    size: [number, number];
    oneD?: boolean;
  };

function geometry(c: Case): ConvReferenceGeometry {
  const padding = c.padding ?? [0, 0];
  const dilation = c.dilation ?? [1, 1];
  const stride = c.stride ?? [1, 1];
  const outSize = [0, 1].map((a) => Math.floor((c.size[a]! + 2 * padding[a]! - dilation[a]! * (c.kernel[a]! - 1) - 1) / stride[a]!) + 1) as [number, number];
  return { batch: c.batch, inChannels: c.inChannels, outChannels: c.outChannels, groups: c.groups ?? 1, inSize: c.size, outSize, kernel: c.kernel, stride, padding, dilation };
}

const CASES: Case[] = [
  { name: 'the training CNN first layer (1→32, 28×28, 3×3, padding 1)', batch: 3, inChannels: 1, outChannels: 32, size: [28, 28], kernel: [3, 3], padding: [1, 1] },
  { name: 'odd sizes 13×11 (rows of 8 + overlap), 5 channels (4 + overlap)', batch: 2, inChannels: 1, outChannels: 5, size: [13, 11], kernel: [3, 3], padding: [1, 1] },
  { name: 'batch 1, 5×5 dilation 2 padding 2, width 17 (16 + overlap of 1), 13 channels', batch: 1, inChannels: 1, outChannels: 13, size: [9, 17], kernel: [5, 5], padding: [2, 2], dilation: [2, 2] },
  { name: 'no padding, per-axis 3×2 kernel, rows of 4, 3 channels (2 + overlap)', batch: 2, inChannels: 1, outChannels: 3, size: [6, 5], kernel: [3, 2] },
  { name: 'rows of 1-3 outputs, 1 channel', batch: 3, inChannels: 1, outChannels: 1, size: [4, 3], kernel: [2, 1], padding: [0, 0] },
  { name: 'padding larger than the kernel (5×5, 3×3, padding 3)', batch: 2, inChannels: 1, outChannels: 4, size: [5, 5], kernel: [3, 3], padding: [3, 3] },
  { name: 'per-axis padding and dilation', batch: 2, inChannels: 1, outChannels: 6, size: [8, 19], kernel: [3, 3], padding: [0, 2], dilation: [1, 3] },
  { name: 'depthwise 2-D (groups 4, 2 outputs per group)', batch: 3, inChannels: 4, outChannels: 8, size: [10, 10], kernel: [3, 3], padding: [1, 1], dilation: [2, 1], groups: 4 },
  { name: 'depthwise 1×1 (groups 3)', batch: 2, inChannels: 3, outChannels: 6, size: [7, 9], kernel: [1, 1], groups: 3 },
  { name: 'the largest kernel on the path (8×8, 64 taps)', batch: 2, inChannels: 1, outChannels: 9, size: [12, 20], kernel: [8, 8], padding: [3, 4] },
  { name: '1-D, one long signal (batch 1: output channels split over the threads)', batch: 1, inChannels: 1, outChannels: 16, size: [1, 300], kernel: [1, 9], padding: [0, 4], oneD: true },
  { name: '1-D depthwise, dilation 3', batch: 2, inChannels: 5, outChannels: 10, size: [1, 40], kernel: [1, 4], padding: [0, 5], dilation: [1, 3], groups: 5, oneD: true },
  // Just outside the path: im2col + GEMM.
  { name: 'fallback: stride 2', batch: 2, inChannels: 1, outChannels: 4, size: [9, 10], kernel: [3, 3], padding: [1, 1], stride: [2, 2] },
  { name: 'fallback: 9×9 kernel (81 taps)', batch: 2, inChannels: 1, outChannels: 3, size: [12, 12], kernel: [9, 9], padding: [4, 4] },
  { name: 'fallback: two input channels per group', batch: 2, inChannels: 4, outChannels: 4, size: [8, 8], kernel: [3, 3], padding: [1, 1], groups: 2 },
];

function shapes(c: Case, g: ConvReferenceGeometry) {
  const spatial = (s: [number, number]) => (c.oneD ? [s[1]] : [...s]);
  return {
    x: [c.batch, c.inChannels, ...spatial(g.inSize)],
    w: [c.outChannels, c.inChannels / g.groups, ...spatial(g.kernel)],
    y: [c.batch, c.outChannels, ...spatial(g.outSize)],
  };
}

function options(c: Case) {
  const pick = (v: [number, number] | undefined) => (v === undefined ? undefined : c.oneD ? [v[1]] : v);
  return { padding: pick(c.padding) ?? 0, dilation: pick(c.dilation) ?? 1, stride: pick(c.stride) ?? 1, groups: c.groups ?? 1 };
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

describe('direct convolution (one input channel per group, stride 1) on the CPU', () => {
  it.each(CASES.map((c, i) => [c.name, c, i] as const))('%s: forward, dx, dw, dbias against float64', (_, c, i) => {
    const g = geometry(c);
    const s = seed + 100 * i;
    const shape = shapes(c, g);
    const xv = values(size(shape.x), s);
    const wv = values(size(shape.w), s + 1);
    const bv = values(c.outChannels, s + 2);
    const dyv = values(size(shape.y), s + 3);
    tidy(() => {
      const x = tensor(Float32Array.from(xv), shape.x);
      const w = tensor(Float32Array.from(wv), shape.w);
      const b = tensor(Float32Array.from(bv), [c.outChannels]);
      for (const t of [x, w, b]) t.requiresGrad = true;
      const y = (c.oneD ? F.conv1d : F.conv2d)(x, w, b, options(c));
      expect(y.shape).toEqual(shape.y);
      const what = `${c.name}, ${reproduce(seed)}`;
      expect(scaledError(y.toArray(), convReference(xv, wv, bv, g), convReference(abs(xv), abs(wv), abs(bv), g)), `forward: ${what}`).toBeLessThan(TOLERANCE);
      F.sum(F.mul(y, tensor(Float32Array.from(dyv), shape.y))).backward();
      const grads = convBackwardReference(dyv, xv, wv, g);
      const mags = convBackwardReference(abs(dyv), abs(xv), abs(wv), g);
      expect(scaledError(x.grad!.toArray(), grads.dx, mags.dx), `dx: ${what}`).toBeLessThan(TOLERANCE);
      expect(scaledError(w.grad!.toArray(), grads.dw, mags.dw), `dw: ${what}`).toBeLessThan(TOLERANCE);
      expect(scaledError(b.grad!.toArray(), grads.dbias, mags.dbias), `dbias: ${what}`).toBeLessThan(TOLERANCE);
    });
  });

  it('a NaN or infinity in x reaches only the outputs and weight gradients that read it', () => {
    // The weight gradient's last block of a row overlaps the block before it and masks the overlapped lanes out:
    // it must mask the products, not dy (0 · inf would turn an infinite dw into NaN).
    const c: Case = { name: 'inf', batch: 1, inChannels: 1, outChannels: 2, size: [3, 20], kernel: [1, 1] };
    const g = geometry(c);
    const xv = new Float64Array(60).fill(1);
    xv[20 + 5] = Infinity; // row 1, column 5: inside both blocks of its row (0-15 and 4-19)
    const wv = Float64Array.from([1, -1]);
    const dyv = new Float64Array(120).fill(1);
    tidy(() => {
      const x = tensor(Float32Array.from(xv), [1, 1, 3, 20]);
      const w = tensor(Float32Array.from(wv), [2, 1, 1, 1]);
      w.requiresGrad = true;
      F.sum(F.mul(F.conv2d(x, w), tensor(Float32Array.from(dyv), [1, 2, 3, 20]))).backward();
      expect(Array.from(w.grad!.toArray())).toEqual(Array.from(convBackwardReference(dyv, xv, wv, g).dw));
      expect(Array.from(w.grad!.toArray())).toEqual([Infinity, Infinity]);
    });
  });

  it.each([
    ['output larger than the weight (dv, dg from the weight-gradient product)', 3, [14, 14], [3, 3], 1],
    ['output no larger than the weight (raw product kept, dv in the epilogue)', 2, [4, 4], [4, 4], 0],
  ] as const)('Conv2d with weight norm, %s: forward, dx, dv, dg against float64', (_, batch, inSize, kernel, padding) => {
    const outChannels = 12;
    const layer = new nn.Conv2d(1, outChannels, [...kernel], { padding, weightNorm: true });
    try {
      tidy(() => {
        // Gains away from ‖v‖, so that the scale g/‖v‖ is not 1.
        layer.loadStateDict({ g: { shape: [outChannels], data: Float32Array.from(values(outChannels, seed + 5), (v) => 1 + 0.3 * v) } }, { allowMissingKeys: true });
        const v = Float64Array.from(layer.v!.toArray());
        const gain = Float64Array.from(layer.g!.toArray());
        const bias = Float64Array.from(layer.bias!.toArray());
        const taps = kernel[0] * kernel[1];
        const norms = Array.from({ length: outChannels }, (_, o) => Math.sqrt(v.slice(o * taps, (o + 1) * taps).reduce((a, e) => a + e * e, 0)));
        const w = Float64Array.from(v, (e, k) => (gain[Math.floor(k / taps)]! * e) / norms[Math.floor(k / taps)]!);
        const geo = geometry({ name: '', batch, inChannels: 1, outChannels, size: [...inSize], kernel: [...kernel], padding: [padding, padding] });
        const xv = values(batch * inSize[0] * inSize[1], seed + 6);
        const x = tensor(Float32Array.from(xv), [batch, 1, ...inSize]);
        x.requiresGrad = true;
        const y = layer.forward(x);
        const what = reproduce(seed);
        expect(scaledError(y.toArray(), convReference(xv, w, bias, geo), convReference(abs(xv), abs(w), abs(bias), geo)), `forward, ${what}`).toBeLessThan(TOLERANCE);
        const dyv = values(size([...y.shape]), seed + 7);
        F.sum(F.mul(y, tensor(Float32Array.from(dyv), [...y.shape]))).backward();
        const grads = convBackwardReference(dyv, xv, w, geo);
        const mags = convBackwardReference(abs(dyv), abs(xv), abs(w), geo);
        expect(scaledError(x.grad!.toArray(), grads.dx, mags.dx), `dx, ${what}`).toBeLessThan(TOLERANCE);
        // dv = (g/‖v‖)·dw − (g·(dw·v)/‖v‖³)·v and dg = (dw·v)/‖v‖ per output channel (Salimans & Kingma 2016, §2.1).
        const dv = new Float64Array(v.length);
        const dg = new Float64Array(outChannels);
        const dvScale = new Float64Array(v.length);
        for (let o = 0; o < outChannels; o++) {
          let dot = 0;
          let dotMagnitude = 0;
          for (let t = 0; t < taps; t++) {
            dot += grads.dw[o * taps + t]! * v[o * taps + t]!;
            dotMagnitude += mags.dw[o * taps + t]! * Math.abs(v[o * taps + t]!);
          }
          const n = norms[o]!;
          dg[o] = dot / n;
          for (let t = 0; t < taps; t++) {
            const k = o * taps + t;
            dv[k] = (gain[o]! / n) * grads.dw[k]! - ((gain[o]! * dot) / n ** 3) * v[k]!;
            dvScale[k] = Math.abs(gain[o]! / n) * mags.dw[k]! + Math.abs((gain[o]! * dotMagnitude) / n ** 3 * v[k]!);
          }
        }
        const dgScale = Float64Array.from({ length: outChannels }, (_, o) => {
          let m = 0;
          for (let t = 0; t < taps; t++) m += mags.dw[o * taps + t]! * Math.abs(v[o * taps + t]!);
          return m / norms[o]!;
        });
        expect(scaledError(layer.v!.grad!.toArray(), dv, dvScale), `dv, ${what}`).toBeLessThan(TOLERANCE);
        expect(scaledError(layer.g!.grad!.toArray(), dg, dgScale), `dg, ${what}`).toBeLessThan(TOLERANCE);
      });
    } finally {
      layer.dispose();
    }
  });

  it('y, dw and dbias have the same bits with 1, 2 and 3 threads', () => {
    const cases: Case[] = [CASES[0]!, CASES[2]!, CASES[7]!, CASES[10]!, { ...CASES[0]!, name: 'many images: several dw chunks', batch: 70 }];
    try {
      for (const [i, c] of cases.entries()) {
        const g = geometry(c);
        const shape = shapes(c, g);
        const xv = Float32Array.from(values(size(shape.x), seed + 50 + i));
        const wv = Float32Array.from(values(size(shape.w), seed + 60 + i));
        const bv = Float32Array.from(values(c.outChannels, seed + 70 + i));
        const dyv = Float32Array.from(values(size(shape.y), seed + 80 + i));
        const run = (threads: number): Float32Array[] => {
          setNumThreads(threads);
          return tidy(() => {
            const x = tensor(xv, shape.x);
            const w = tensor(wv, shape.w);
            const b = tensor(bv, [c.outChannels]);
            for (const t of [x, w, b]) t.requiresGrad = true;
            const y = (c.oneD ? F.conv1d : F.conv2d)(x, w, b, options(c));
            F.sum(F.mul(y, tensor(dyv, shape.y))).backward();
            return [y, x.grad!, w.grad!, b.grad!].map((t: Tensor) => t.toFloat32Array());
          });
        };
        const reference = run(1);
        for (const threads of [2, 3]) {
          const got = run(threads);
          got.forEach((a, k) => expect(bitwiseEqual(a, reference[k]!), `${c.name}: output ${k} with ${threads} threads`).toBe(true));
        }
      }
    } finally {
      setNumThreads(0);
    }
  });
});
