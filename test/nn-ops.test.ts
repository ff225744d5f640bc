// The training-stack ops on every available backend: forward values against the float64 references in
// test/reference/nn.ts, and gradients (from backward()) against central finite differences of those references.
//
// Tolerances: forwards are float32 sums of at most a few hundred products (relative error ~1e-6), so 2e-5 of the
// output's scale. Gradients add the finite-difference error of the float64 reference (h = 1e-5, error ~1e-9) and
// float32 backward sums, so 1e-4 of the gradient's scale; a wrong formula shows up as O(1).
import { describe, expect, it } from 'vitest';

import { backend, nn, tensor, type Tensor } from '../ts/index.js';
import { normals, relativeError, reproduce, runSeed } from './helpers.js';
import * as ref from './reference/nn.js';

const F = nn.functional;
const cudaUsable = backend().cuda.usable;
const devices = ['cpu', ...(cudaUsable ? ['cuda'] : [])] as const;
if (!cudaUsable) console.log(`nn-ops: CUDA cases skipped: ${backend().cuda.reason}`);

const FORWARD_TOLERANCE = 2e-5;
const GRADIENT_TOLERANCE = 1e-4;

interface Input {
  shape: number[];
  values?: Float64Array;
  grad?: boolean;
}

/**
 * Runs `ours` on tensors made from the inputs, compares with `reference`, then checks every input marked `grad`
 * against finite differences of L(x) = Σ r ⊙ reference(x) for a random r.
 */
function checkOp(
  name: string,
  device: 'cpu' | 'cuda',
  seed: number,
  inputs: Input[],
  ours: (t: Tensor[]) => Tensor,
  reference: (x: Float64Array[]) => Float64Array,
): void {
  const values = inputs.map((input, i) => {
    const size = input.shape.reduce((a, b) => a * b, 1);
    // Rounded to float32 so that both sides see exactly the same inputs.
    return Float64Array.from(Float32Array.from(input.values ?? normals(size, seed + 17 * i)));
  });
  const tensors = inputs.map((input, i) => {
    const t = tensor(Float32Array.from(values[i]!), input.shape, { device });
    t.requiresGrad = input.grad ?? false;
    return t;
  });
  const y = ours(tensors);
  const want = reference(values);
  const r = Float64Array.from(Float32Array.from(normals(want.length, seed + 999)));
  const context = `${name} on ${device} (${reproduce(seed)})`;
  expect(relativeError(y.toArray(), want), `${context}: forward`).toBeLessThan(FORWARD_TOLERANCE);

  const rTensor = tensor(Float32Array.from(r), [...y.shape], { device });
  F.sum(F.mul(y, rTensor)).backward();
  const loss = (x: Float64Array[]): number => reference(x).reduce((acc, v, i) => acc + v * r[i]!, 0);
  inputs.forEach((input, i) => {
    if (!input.grad) return;
    const fd = new Float64Array(values[i]!.length);
    for (let e = 0; e < fd.length; e++) {
      const original = values[i]![e]!;
      const h = 1e-5 * Math.max(1, Math.abs(original));
      values[i]![e] = original + h;
      const up = loss(values);
      values[i]![e] = original - h;
      const down = loss(values);
      values[i]![e] = original;
      fd[e] = (up - down) / (2 * h);
    }
    const grad = tensors[i]!.grad;
    expect(grad, `${context}: input ${i} got no gradient`).not.toBeNull();
    expect(relativeError(grad!.toArray(), fd), `${context}: gradient of input ${i}`).toBeLessThan(GRADIENT_TOLERANCE);
  });
}

const f64 = (t: Tensor) => Float64Array.from(t.toArray());

describe.each(devices)('training ops on %s', (device) => {
  const seed = runSeed();

  it('linear: y = x·wᵀ + b', () => {
    checkOp('linear', device, seed, [{ shape: [5, 7], grad: true }, { shape: [3, 7], grad: true }, { shape: [3], grad: true }],
      ([x, w, b]) => F.linear(x!, w!, b!),
      ([x, w, b]) => ref.linear(x!, w!, b!, 5, 3, 7));
  });

  it('weightNormLinear never materializes w and matches g·v/‖v‖', () => {
    checkOp(
      'weightNormLinear',
      device,
      seed,
      [{ shape: [6, 9], grad: true }, { shape: [4, 9], grad: true }, { shape: [4], grad: true }, { shape: [4], grad: true }],
      ([x, v, g, b]) => {
        const norm = F.weightNorm(v!, g!).norm; // ‖v‖ per row, as the layer caches it
        return F.weightNormLinear(x!, v!, g!, b!, norm);
      },
      ([x, v, g, b]) => ref.linear(x!, ref.weightNormRows(v!, g!, 4), b!, 6, 4, 9),
    );
  });

  it('weightNormLinear materializes w only for a large batch, and both paths give the same gradients', () => {
    // 1,100 rows over 8 input features into 1,024 outputs: more rows than WEIGHT_NORM_LINEAR_MATERIALIZE_RATIO × 8
    // and a [1100, 1024] output of at least WEIGHT_NORM_LINEAR_MATERIALIZE_MIN_ELEMENTS: weightNorm, then linear.
    const [batch, inFeatures, outFeatures] = [1100, 8, 1024];
    expect(batch).toBeGreaterThan(F.WEIGHT_NORM_LINEAR_MATERIALIZE_RATIO * inFeatures);
    expect(batch * outFeatures).toBeGreaterThanOrEqual(F.WEIGHT_NORM_LINEAR_MATERIALIZE_MIN_ELEMENTS);
    const make = (size: number, offset: number, shape: number[], grad: boolean) => {
      const t = tensor(Float32Array.from(normals(size, seed + offset)), shape, { device });
      t.requiresGrad = grad;
      return t;
    };
    const x = make(batch * inFeatures, 1, [batch, inFeatures], false);
    const v = make(outFeatures * inFeatures, 2, [outFeatures, inFeatures], true);
    const g = make(outFeatures, 3, [outFeatures], true);
    const b = make(outFeatures, 4, [outFeatures], true);
    const r = make(batch * outFeatures, 5, [batch, outFeatures], false); // loss = Σ r ⊙ y
    const norm = F.weightNorm(v, g).norm;
    const y = F.weightNormLinear(x, v, g, b, norm);
    expect(y.gradNode?.name).toBe('linear');
    const reference = ref.linear(f64(x), ref.weightNormRows(f64(v), f64(g), outFeatures), f64(b), batch, outFeatures, inFeatures);
    expect(relativeError(y.toArray(), reference)).toBeLessThan(1e-5);
    F.sum(F.mul(y, r)).backward();
    const materialized = [v, g, b].map((p) => p.grad!.toArray());
    // The same gradients from the implicit path, 10 rows at a time (each chunk small enough to keep w implicit).
    for (const p of [v, g, b]) p.grad = null;
    for (let start = 0; start < batch; start += 10) {
      const rows = Math.min(10, batch - start);
      const xs = tensor(x.toArray().slice(start * inFeatures, (start + rows) * inFeatures), [rows, inFeatures], { device });
      const rs = tensor(r.toArray().slice(start * outFeatures, (start + rows) * outFeatures), [rows, outFeatures], { device });
      const ys = F.weightNormLinear(xs, v, g, b, norm);
      expect(ys.gradNode?.name).toBe('weightNormLinear');
      F.sum(F.mul(ys, rs)).backward();
    }
    [v, g, b].forEach((p, i) => expect(relativeError(p.grad!.toArray(), Float64Array.from(materialized[i]!)), `gradient ${i}`).toBeLessThan(1e-4));
  });

  it('matmul', () => {
    checkOp('matmul', device, seed, [{ shape: [4, 6], grad: true }, { shape: [6, 3], grad: true }],
      ([a, b]) => F.matmul(a!, b!),
      ([a, b]) => ref.linear(a!, Float64Array.from({ length: 18 }, (_, e) => b![(e % 6) * 3 + Math.floor(e / 6)]!), null, 4, 3, 6));
  });

  for (const [stride, padding, size] of [[1, 1, 5], [2, 0, 7], [1, 0, 4]] as const) {
    it(`conv2d stride ${stride} padding ${padding}`, () => {
      const g = { batch: 2, channels: 3, height: size, width: size + 1, outChannels: 4, kernel: 3, stride, padding };
      checkOp(
        'conv2d',
        device,
        seed,
        [{ shape: [2, 3, size, size + 1], grad: true }, { shape: [4, 3, 3, 3], grad: true }, { shape: [4], grad: true }],
        ([x, w, b]) => F.conv2d(x!, w!, b!, { stride, padding }),
        ([x, w, b]) => ref.conv2d(x!, w!, b!, g),
      );
    });
  }

  it('maxPool2d (disjoint and overlapping windows)', () => {
    checkOp('maxPool2d 2/2', device, seed, [{ shape: [2, 3, 6, 4], grad: true }],
      ([x]) => F.maxPool2d(x!, 2, 2),
      ([x]) => ref.maxPool2d(x!, 6, 6, 4, 2, 2));
    // Rows of 7 and 9 windows: the CPU's four-at-a-time kernels (forward and backward), their last group of four
    // overlapping the previous one.
    checkOp('maxPool2d 2/2 rows of 7 windows', device, seed + 2, [{ shape: [2, 3, 6, 14], grad: true }],
      ([x]) => F.maxPool2d(x!, 2, 2),
      ([x]) => ref.maxPool2d(x!, 6, 6, 14, 2, 2));
    checkOp('maxPool2d 2/2 rows of 9 windows', device, seed + 3, [{ shape: [1, 2, 4, 18], grad: true }],
      ([x]) => F.maxPool2d(x!, 2, 2),
      ([x]) => ref.maxPool2d(x!, 2, 4, 18, 2, 2));
    checkOp('maxPool2d 3/1', device, seed + 1, [{ shape: [1, 2, 5, 5], grad: true }],
      ([x]) => F.maxPool2d(x!, 3, 1),
      ([x]) => ref.maxPool2d(x!, 2, 5, 5, 3, 1));
    // The ReLU fused into the pooling: the float64 reference pools relu(x).
    const relu = (x: Float64Array) => ref.map(x, (v) => Math.max(v, 0));
    checkOp('reluMaxPool2d 2/2', device, seed + 4, [{ shape: [2, 3, 6, 14], grad: true }],
      ([x]) => F.reluMaxPool2d(x!, 2, 2),
      ([x]) => ref.maxPool2d(relu(x!), 6, 6, 14, 2, 2));
    checkOp('reluMaxPool2d 3/1', device, seed + 5, [{ shape: [1, 2, 5, 5], grad: true }],
      ([x]) => F.reluMaxPool2d(x!, 3, 1),
      ([x]) => ref.maxPool2d(relu(x!), 2, 5, 5, 3, 1));
  });

  it('globalAvgPool2d', () => {
    checkOp('globalAvgPool2d', device, seed, [{ shape: [3, 4, 2, 5], grad: true }],
      ([x]) => F.globalAvgPool2d(x!),
      ([x]) => ref.globalAvgPool(x!, 12, 10));
  });

  it('relu, leakyRelu, tanh', () => {
    checkOp('relu', device, seed, [{ shape: [7, 5], grad: true }], ([x]) => F.relu(x!), ([x]) => ref.map(x!, (v) => Math.max(v, 0)));
    checkOp('leakyRelu', device, seed, [{ shape: [7, 5], grad: true }], ([x]) => F.leakyRelu(x!, 0.2),
      ([x]) => ref.map(x!, (v) => (v > 0 ? v : 0.2 * v)));
    checkOp('tanh', device, seed, [{ shape: [7, 5], grad: true }], ([x]) => F.tanh(x!), ([x]) => ref.map(x!, Math.tanh));
  });

  it('crossEntropy (stable for large logits)', () => {
    const labels = [2, 0, 4, 1, 4, 3];
    checkOp('crossEntropy', device, seed, [{ shape: [6, 5], grad: true }], ([x]) => F.crossEntropy(x!, labels),
      ([x]) => ref.crossEntropy(x!, labels, 5));
    const huge = tensor(Float32Array.from({ length: 10 }, (_, i) => (i % 2 ? 1e4 : -1e4)), [2, 5], { device });
    const loss = F.crossEntropy(huge, [1, 0]).item();
    expect(Number.isFinite(loss)).toBe(true);
  });

  it('sum, mean, mul, add, scale, reshape', () => {
    checkOp('mean(mul(add))', device, seed, [{ shape: [3, 4], grad: true }, { shape: [3, 4], grad: true }],
      ([a, b]) => F.reshape(F.scale(F.mul(F.add(a!, b!), a!), 3), [2, 6]),
      ([a, b]) => a!.map((v, i) => 3 * (v + b![i]!) * v));
    checkOp('mean', device, seed, [{ shape: [4, 5], grad: true }], ([a]) => F.mean(a!),
      ([a]) => Float64Array.of(a!.reduce((s, v) => s + v, 0) / 20));
  });

  it('batchNorm (rank 2 and rank 4)', () => {
    checkOp('batchNorm rank 2', device, seed, [{ shape: [8, 3], grad: true }, { shape: [3], grad: true }, { shape: [3], grad: true }],
      ([x, g, b]) => F.batchNorm(x!, g!, b!, 1e-5).y,
      ([x, g, b]) => ref.batchNorm(x!, g!, b!, [8, 3], 1e-5));
    checkOp('batchNorm rank 4', device, seed, [{ shape: [2, 3, 2, 3], grad: true }, { shape: [3], grad: true }, { shape: [3], grad: true }],
      ([x, g, b]) => F.batchNorm(x!, g!, b!, 1e-5).y,
      ([x, g, b]) => ref.batchNorm(x!, g!, b!, [2, 3, 2, 3], 1e-5));
  });

  it('meanOnlyBatchNorm: forward, and its backward is the centred gradient', () => {
    checkOp('meanOnlyBatchNorm', device, seed, [{ shape: [4, 3, 2, 2], grad: true }, { shape: [3], grad: true }],
      ([x, b]) => F.meanOnlyBatchNorm(x!, b!, null).y,
      ([x, b]) => ref.meanOnlyBatchNorm(x!, b!, [4, 3, 2, 2]));
    // dx = dy − mean over (batch, space) of dy, per channel.
    const x = tensor(Float32Array.from(normals(24, seed + 5)), [4, 3, 2], { device });
    x.requiresGrad = true;
    const bias = tensor([0, 0, 0], [3], { device });
    const dyValues = Float32Array.from(normals(24, seed + 6));
    F.sum(F.mul(F.meanOnlyBatchNorm(x, bias, null).y, tensor(dyValues, [4, 3, 2], { device }))).backward();
    const centred = new Float64Array(24);
    for (let c = 0; c < 3; c++) {
      let m = 0;
      for (let o = 0; o < 4; o++) for (let i = 0; i < 2; i++) m += dyValues[(o * 3 + c) * 2 + i]!;
      m /= 8;
      for (let o = 0; o < 4; o++) for (let i = 0; i < 2; i++) centred[(o * 3 + c) * 2 + i] = dyValues[(o * 3 + c) * 2 + i]! - m;
    }
    expect(relativeError(x.grad!.toArray(), centred)).toBeLessThan(1e-6);
  });

  it('weightNorm (materialized, conv layout) differentiates like the reference', () => {
    checkOp('weightNorm conv', device, seed, [{ shape: [4, 2, 3, 3], grad: true }, { shape: [4], grad: true }],
      ([v, g]) => F.weightNorm(v!, g!).w,
      ([v, g]) => ref.weightNormRows(v!, g!, 4));
  });

  it('dropout: y = x · mask, gradient = dy · mask, about p dropped', () => {
    const x = tensor(Float32Array.from(normals(4000, seed)), [40, 100], { device });
    x.requiresGrad = true;
    const y = F.dropout(x, 0.3, seed);
    const yv = y.toArray();
    const xv = x.toArray();
    let dropped = 0;
    for (let i = 0; i < yv.length; i++) {
      if (yv[i] === 0) dropped++;
      else expect(Math.abs(yv[i]! - xv[i]! / 0.7)).toBeLessThan(1e-5 * Math.abs(xv[i]! / 0.7) + 1e-7);
    }
    // Binomial(4000, 0.3): std ≈ 29; 5 std either side.
    expect(Math.abs(dropped - 1200)).toBeLessThan(145);
    F.sum(y).backward();
    const gv = x.grad!.toArray();
    for (let i = 0; i < yv.length; i++) expect(gv[i]).toBeCloseTo(yv[i] === 0 ? 0 : 1 / 0.7, 5);
    // Same seed, same mask.
    expect(F.dropout(x, 0.3, seed).toArray()).toEqual(yv);
  });

  it('the weight-normalized Linear equals the materialized one, forward and backward', () => {
    const make = (values: Float64Array, shape: number[]) => {
      const t = tensor(Float32Array.from(values), shape, { device });
      t.requiresGrad = true;
      return t;
    };
    const run = (materialize: boolean) => {
      const x = make(normals(40, seed + 1), [5, 8]);
      const v = make(normals(24, seed + 2), [3, 8]);
      const g = make(normals(3, seed + 3), [3]);
      const b = make(normals(3, seed + 4), [3]);
      const { w, norm } = F.weightNorm(v, g);
      const y = materialize ? F.linear(x, w, b) : F.weightNormLinear(x, v, g, b, norm);
      F.sum(F.mul(y, y)).backward();
      return [y, x.grad!, v.grad!, g.grad!, b.grad!].map((t) => t.toArray());
    };
    const fused = run(false);
    const materialized = run(true);
    fused.forEach((got, i) => expect(relativeError(got, Float64Array.from(materialized[i]!)), `output ${i}`).toBeLessThan(1e-5));
  });
});

describe.skipIf(!cudaUsable)('CPU and CUDA agree', () => {
  it('on a weight-normalized MLP step', () => {
    const seed = runSeed();
    const results = (['cpu', 'cuda'] as const).map((device) => {
      const x = tensor(Float32Array.from(normals(64, seed)), [8, 8], { device });
      const v = tensor(Float32Array.from(normals(40, seed + 1)), [5, 8], { device });
      v.requiresGrad = true;
      const g = tensor([1, 2, 3, 4, 5], [5], { device });
      g.requiresGrad = true;
      const y = F.weightNormLinear(x, v, g, null, F.weightNorm(v, g).norm);
      F.crossEntropy(y, [0, 1, 2, 3, 4, 0, 1, 2]).backward();
      return [y.toArray(), v.grad!.toArray(), g.grad!.toArray()];
    });
    results[0]!.forEach((cpu, i) => expect(relativeError(results[1]![i]!, Float64Array.from(cpu))).toBeLessThan(1e-5));
  });
});
