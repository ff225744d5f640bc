// The ReLU fused into max pooling (F.reluMaxPool2d, and nn.Sequential's ReLU → MaxPool2d blocks) against the two
// ops in a row: values and input gradients must hold the same bits, on every available backend. No tolerance: the
// fused op is meant to be an exact replacement (it reorders no sum), so any bit that differs is a bug. The inputs
// make the cases that differ under a wrong rule frequent: windows whose maximum is 0, -0 or negative (the ReLU passes
// +0 there: not dy, and not dy * 0, which is -0 for a negative dy and NaN for an infinite one), exact ties, NaN and
// ±inf in x, and infinite dy.
import { describe, expect, it } from 'vitest';

import { backend, nn, tensor, tidy, type Tensor } from '../ts/index.js';
import { firstBitDifference, reproduce, runSeed, uniformGenerator } from './helpers.js';

const F = nn.functional;
const cudaUsable = backend().cuda.usable;
const devices = ['cpu', ...(cudaUsable ? ['cuda'] : [])] as const;
if (!cudaUsable) console.log(`relu-pool: CUDA cases skipped: ${backend().cuda.reason}`);

/** Values drawn so that non-positive windows, ties and special values are common. */
function trickyValues(count: number, random: () => number, special: boolean): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const u = random();
    if (u < 0.35) out[i] = -1 - random();  // negative (whole windows of them: u < 0.35 four times is ~1.5%)
    else if (u < 0.45) out[i] = 0;
    else if (u < 0.5) out[i] = -0;
    else if (u < 0.55) out[i] = 0.5;  // ties
    else if (special && u < 0.56) out[i] = NaN;
    else if (special && u < 0.57) out[i] = Infinity;
    else if (special && u < 0.58) out[i] = -Infinity;
    else out[i] = 4 * random() - 3;
  }
  // A block of all-negative windows in every case (the first rows), so that the routing of blocked windows is
  // always exercised however the draw falls.
  for (let i = 0; i < Math.min(count, 64); i++) out[i] = -1 - random();
  return out;
}

interface Case {
  shape: [number, number, number, number];
  kernel: number;
  stride: number;
}

// 2/2 on rows of 14 (7 windows: the four-at-a-time kernels' overlapping last group), 28 (the CNN's first block),
// 18 and 5 (fewer than four windows: the scalar tail only); odd sizes (windows that do not tile the plane); 3/3
// (the generic disjoint path); 3/1 and 2/1 (overlapping windows: sums before the ReLU's backward).
const CASES: Case[] = [
  { shape: [2, 3, 6, 14], kernel: 2, stride: 2 },
  { shape: [3, 4, 28, 28], kernel: 2, stride: 2 },
  { shape: [1, 2, 4, 18], kernel: 2, stride: 2 },
  { shape: [2, 2, 5, 5], kernel: 2, stride: 2 },
  { shape: [2, 3, 7, 9], kernel: 2, stride: 2 },
  { shape: [2, 3, 9, 9], kernel: 3, stride: 3 },
  { shape: [2, 2, 6, 7], kernel: 3, stride: 1 },
  { shape: [2, 2, 5, 6], kernel: 2, stride: 1 },
];

/** y and x.grad for L = Σ y ⊙ r (r given: may hold infinities). */
function run(f: (x: Tensor) => Tensor, xValues: Float32Array, r: Float32Array, c: Case, device: 'cpu' | 'cuda') {
  return tidy(() => {
    const x = tensor(xValues.slice(), c.shape, { device });
    x.requiresGrad = true;
    const y = f(x);
    F.sum(F.mul(y, tensor(r, [...y.shape], { device }))).backward();
    return { y: y.toFloat32Array(), dx: x.grad!.toFloat32Array() };
  });
}

describe.each(devices)('reluMaxPool2d on %s', (device) => {
  const seed = runSeed();

  it.each(CASES.flatMap((c) => [true, false].map((special) => ({ ...c, special }))))(
    'same bits as relu then maxPool2d: $shape kernel $kernel stride $stride, special values $special',
    (c) => {
      const random = uniformGenerator(seed + c.shape[3] * 31 + c.kernel * 7 + c.stride + (c.special ? 1000 : 0));
      const x = trickyValues(c.shape.reduce((a, b) => a * b, 1), random, c.special);
      const oh = Math.floor((c.shape[2] - c.kernel) / c.stride) + 1, ow = Math.floor((c.shape[3] - c.kernel) / c.stride) + 1;
      // Negative weights give negative dy (-0 where blocked); with special values, some infinite dy too.
      const r = Float32Array.from({ length: c.shape[0] * c.shape[1] * oh * ow }, () => {
        const u = random();
        return c.special && u < 0.03 ? (u < 0.015 ? Infinity : -Infinity) : 2 * random() - 1;
      });
      const fused = run((t) => F.reluMaxPool2d(t, c.kernel, c.stride), x, r, c, device);
      const unfused = run((t) => F.maxPool2d(F.relu(t), c.kernel, c.stride), x, r, c, device);
      const context = `${device} (${reproduce(seed)})`;
      expect(firstBitDifference(fused.y, unfused.y), `${context}: forward, first differing element`).toBe(-1);
      expect(firstBitDifference(fused.dx, unfused.dx), `${context}: dx, first differing element`).toBe(-1);
    },
  );

  it('nn.Sequential runs ReLU → MaxPool2d fused, with the same bits as the layers one by one', () => {
    const random = uniformGenerator(seed + 5);
    const c: Case = { shape: [4, 3, 10, 10], kernel: 2, stride: 2 };
    const x = trickyValues(4 * 3 * 10 * 10, random, false);
    const layers = [new nn.ReLU(), new nn.MaxPool2d(2), new nn.ReLU(), new nn.MaxPool2d(3, 1)];
    const model = new nn.Sequential(...layers);
    const r = Float32Array.from({ length: 4 * 3 * 3 * 3 }, () => 2 * random() - 1);
    const sequential = run((t) => model.forward(t), x, r, c, device);
    const oneByOne = run((t) => layers.reduce((y, layer) => layer.forward(y), t), x, r, c, device);
    expect(firstBitDifference(sequential.y, oneByOne.y), 'forward').toBe(-1);
    expect(firstBitDifference(sequential.dx, oneByOne.dx), 'dx').toBe(-1);
  });

  it('reluMaxPool2d validates like maxPool2d', () => {
    const x = tensor(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4], { device });
    expect(() => F.reluMaxPool2d(x, 0)).toThrow(/reluMaxPool2d: kernel/);
    expect(() => F.reluMaxPool2d(x, 5)).toThrow(RangeError);
    expect(() => F.reluMaxPool2d(tensor(new Float32Array(4), [2, 2], { device }), 2)).toThrow(/reluMaxPool2d: x/);
  });
});
