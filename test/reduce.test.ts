// Reductions over chosen axes and softmax, on every available backend, against the float64 references in
// test/reference/reduce.ts (gradients against torch: test/gradcheck.test.ts with gradcheck_reduce_torch.json).
//
// Tolerances: sums and means of up to a few thousand float32 inputs: 1e-6 of the sum (mean) of the inputs' magnitudes,
// the scale rounding errors grow with (a whole-tensor sum goes through float32 partial sums, and random data can
// cancel to a result hundreds of times smaller than its terms, so the output's own scale is the wrong yardstick); max/min/argmax are exact; var/std/logsumexp/softmax compute in double with float32 exp/log per element:
// 2e-6. A wrong axis, shape or formula is off by O(1).
import { describe, expect, it } from 'vitest';

import { backend, nn, setNumThreads, tensor, type Tensor } from '../ts/index.js';
import { normals, relativeError, reproduce, runSeed } from './helpers.js';
import * as ref from './reference/reduce.js';

const F = nn.functional;
const cudaUsable = backend().cuda.usable;
const devices = ['cpu', ...(cudaUsable ? ['cuda'] : [])] as const;
if (!cudaUsable) console.log(`reduce: CUDA cases skipped: ${backend().cuda.reason}`);

const seed = runSeed();
const random = (shape: number[], salt: number, scale = 1, offset = 0): Float32Array =>
  Float32Array.from(normals(shape.reduce((a, b) => a * b, 1), seed + salt), (v) => v * scale + offset);

const values = (t: Tensor): number[] => Array.from(t.toArray());

describe.each(devices)('reductions on %s', (device) => {
  const make = (data: Float32Array, shape: number[]) => tensor(data, shape, { device });

  it('sum, mean, amax, amin, var, std, logsumexp over consecutive axes match float64, with keepDim', () => {
    const shape = [3, 5, 7, 4];
    const data = random(shape, 1);
    const x = make(data, shape);
    for (const [first, last] of [
      [0, 0],
      [1, 1],
      [3, 3],
      [1, 2],
      [0, 3],
    ] as const) {
      const dims = Array.from({ length: last - first + 1 }, (_, k) => first + k);
      const v = ref.viewOf(shape, first, last);
      const magnitudes = data.map(Math.abs);
      const termScale = (reduce: (a: number[]) => number) => Math.max(...ref.reduceView(magnitudes, v, reduce));
      const cases: [string, Tensor, Float64Array, number, number?][] = [
        ['sum', F.sum(x, dims, { keepDim: true }), ref.reduceView(data, v, ref.sum), 1e-6, termScale(ref.sum)],
        ['mean', x.mean(dims, { keepDim: true }), ref.reduceView(data, v, ref.mean), 1e-6, termScale(ref.mean)],
        ['amax', x.amax(dims, { keepDim: true }), ref.reduceView(data, v, (a) => Math.max(...a)), 0],
        ['amin', F.amin(x, dims, { keepDim: true }), ref.reduceView(data, v, (a) => Math.min(...a)), 0],
        ['var', x.var(dims, { keepDim: true }), ref.reduceView(data, v, (a) => ref.variance(a, 1)), 2e-6],
        ['std', x.std(dims, { keepDim: true, correction: 0 }), ref.reduceView(data, v, (a) => Math.sqrt(ref.variance(a, 0))), 2e-6],
        ['logsumexp', x.logsumexp(dims, { keepDim: true }), ref.reduceView(data, v, ref.logsumexp), 2e-6],
      ];
      const keptShape = shape.map((s, i) => (dims.includes(i) ? 1 : s));
      for (const [name, y, expected, tolerance, scale] of cases) {
        expect(y.shape, `${name} dims ${dims}`).toEqual(keptShape);
        expect(relativeError(values(y), expected, scale), `${name} dims ${dims} (${reproduce(seed)})`).toBeLessThanOrEqual(tolerance);
      }
    }
  });

  it('takes negative dims, lists with gaps and any order, and drops reduced axes without keepDim', () => {
    const shape = [4, 3, 6];
    const data = random(shape, 2);
    const x = make(data, shape);
    expect(x.sum(-1).shape).toEqual([4, 3]);
    expect(relativeError(values(x.sum(-1)), values(x.sum(2)))).toBe(0);
    expect(x.mean([-1, 0]).shape).toEqual([3]);
    // [0, 2] has a gap: reduced run by run. sum is exact to rounding; amax exactly.
    const expected = new Float64Array(3);
    const maxima = new Float64Array(3).fill(-Infinity);
    for (let a = 0; a < 4; a++)
      for (let b = 0; b < 3; b++)
        for (let c = 0; c < 6; c++) {
          expected[b] += data[(a * 3 + b) * 6 + c]!;
          maxima[b] = Math.max(maxima[b]!, data[(a * 3 + b) * 6 + c]!);
        }
    expect(relativeError(values(x.sum([2, 0])), expected), reproduce(seed)).toBeLessThanOrEqual(1e-6);
    expect(values(x.amax([0, 2], { keepDim: true }))).toEqual(Array.from(maxima, (m) => Math.fround(m)));
    expect(x.amax([0, 2], { keepDim: true }).shape).toEqual([1, 3, 1]);
    // Every axis: undefined, an empty list, or all listed.
    expect(x.sum().shape).toEqual([1]);
    expect(x.sum([]).shape).toEqual([1]);
    expect(x.sum(undefined, { keepDim: true }).shape).toEqual([1, 1, 1]);
    expect(relativeError(values(x.sum([0, 1, 2])), values(x.sum()))).toBeLessThanOrEqual(1e-6);
    // var and std over axes with gaps (composed from the tensor math ops).
    const byMiddle: number[][] = [[], [], []];
    for (let a = 0; a < 4; a++) for (let b = 0; b < 3; b++) for (let c = 0; c < 6; c++) byMiddle[b]!.push(data[(a * 3 + b) * 6 + c]!);
    expect(relativeError(values(x.var([0, 2])), byMiddle.map((v) => ref.variance(v, 1))), reproduce(seed)).toBeLessThanOrEqual(2e-6);
    const std = x.std([0, -1], { keepDim: true, correction: 0 });
    expect(std.shape).toEqual([1, 3, 1]);
    expect(relativeError(values(std), byMiddle.map((v) => Math.sqrt(ref.variance(v, 0)))), reproduce(seed)).toBeLessThanOrEqual(2e-6);
  });

  it('max and min with a dim return values and indices; ties give the first index; argmax/argmin agree', () => {
    // Small integers: many ties.
    const shape = [5, 6, 3];
    const data = Float32Array.from(random(shape, 3), (v) => Math.round(v * 1.5) + 0); // + 0: no -0 (max keeps the first of -0 and 0)
    const x = make(data, shape);
    for (const dim of [0, 1, 2, -1]) {
      const d = dim < 0 ? dim + 3 : dim;
      const v = ref.viewOf(shape, d, d);
      const { values: maxValues, indices: maxIndices } = x.max(dim);
      const { values: minValues, indices: minIndices } = F.min(x, dim, { keepDim: true });
      expect(values(maxValues)).toEqual(Array.from(ref.reduceView(data, v, (a) => Math.max(...a))));
      expect(values(maxIndices)).toEqual(Array.from(ref.reduceView(data, v, (a) => ref.argExtreme(a, true))));
      expect(values(minValues)).toEqual(Array.from(ref.reduceView(data, v, (a) => Math.min(...a))));
      expect(values(minIndices)).toEqual(Array.from(ref.reduceView(data, v, (a) => ref.argExtreme(a, false))));
      expect(minIndices.shape).toEqual(shape.map((s, i) => (i === d ? 1 : s)));
      expect(maxIndices.dtype).toBe('int32');
      expect(values(x.argmax(dim))).toEqual(values(maxIndices));
      expect(values(F.argmin(x, dim))).toEqual(values(F.min(x, dim).indices));
    }
    // Without dim: over the flattened tensor.
    expect(values(x.argmax())).toEqual([ref.argExtreme(Array.from(data), true)]);
    expect(values(x.max())).toEqual([Math.max(...data)]);
    expect(values(F.min(x))).toEqual([Math.min(...data)]);
  });

  it('propagates NaN through max/min (the first NaN index) and sums', () => {
    const x = make(Float32Array.from([1, NaN, 3, NaN, 2, 0]), [2, 3]);
    expect(values(x.max(1).values)).toEqual([NaN, NaN]);
    expect(values(x.max(1).indices)).toEqual([1, 0]);
    expect(values(x.argmin(1))).toEqual([1, 0]);
    expect(values(x.amax(0))).toEqual([NaN, NaN, 3]);
    expect(values(x.sum(1))).toEqual([NaN, NaN]);
  });

  it('handles size-1 and zero-size axes like torch: sum of nothing 0, mean NaN, logsumexp -inf, max refused', () => {
    const one = make(Float32Array.from([1.5, -2, 4]), [3, 1]);
    expect(values(one.sum(1))).toEqual([1.5, -2, 4]);
    expect(values(one.var(1))).toEqual([NaN, NaN, NaN]); // n − 1 = 0: 0/0, as torch
    expect(values(one.var(1, { correction: 0 }))).toEqual([0, 0, 0]);
    const empty = make(new Float32Array(0), [2, 0, 3]);
    expect(empty.sum(1).shape).toEqual([2, 3]);
    expect(values(empty.sum(1))).toEqual([0, 0, 0, 0, 0, 0]);
    expect(values(empty.mean(1)).every(Number.isNaN)).toBe(true);
    expect(values(empty.logsumexp(1))).toEqual(Array(6).fill(-Infinity));
    expect(values(empty.sum())).toEqual([0]);
    expect(empty.sum(0).shape).toEqual([0, 3]);
    expect(empty.amax(0).shape).toEqual([0, 3]); // nothing reduced over an empty axis: fine
    expect(() => empty.amax(1)).toThrow(RangeError);
    expect(() => empty.max(1)).toThrow(/max: x: expected a non-empty reduced dimension/);
    expect(() => empty.argmax()).toThrow(RangeError);
    expect(F.softmax(empty, 1).shape).toEqual([2, 0, 3]);
  });

  it('logsumexp, softmax and logSoftmax stay finite and exact for large values (the max is subtracted)', () => {
    const shape = [4, 9];
    const data = random(shape, 4, 30, 5000);
    const x = make(data, shape);
    for (const dim of [0, 1]) {
      const v = ref.viewOf(shape, dim, dim);
      const lse = values(x.logsumexp(dim));
      expect(lse.every(Number.isFinite)).toBe(true);
      expect(relativeError(lse, ref.reduceView(data, v, ref.logsumexp)), reproduce(seed)).toBeLessThanOrEqual(2e-7);
      expect(relativeError(values(x.softmax(dim)), ref.mapView(data, v, ref.softmax)), reproduce(seed)).toBeLessThanOrEqual(2e-6);
      // logSoftmax values are O(10): measured against their own scale.
      expect(relativeError(values(F.logSoftmax(x, dim)), ref.mapView(data, v, ref.logSoftmax)), reproduce(seed)).toBeLessThanOrEqual(2e-6);
    }
    const extreme = make(Float32Array.from([-Infinity, -Infinity, 3e38, 3e38]), [2, 2]);
    expect(values(extreme.logsumexp(1))).toEqual([-Infinity, Math.fround(3e38 + Math.log(2))]);
  });

  it('softmax rows sum to 1 along the chosen axis, and nn.Softmax / nn.LogSoftmax apply it', () => {
    const shape = [2, 5, 3];
    const x = make(random(shape, 5, 3), shape);
    const y = new nn.Softmax(1).forward(x);
    expect(relativeError(values(y.sum(1)), Array(6).fill(1))).toBeLessThanOrEqual(1e-6);
    expect(values(new nn.LogSoftmax(-2).forward(x))).toEqual(values(F.logSoftmax(x, 1)));
    expect(() => new nn.Softmax(0.5)).toThrow(TypeError);
  });

  it('backward: max(dim) sends dy to the returned index, amax shares it among ties, sum/mean broadcast it', () => {
    const x = make(Float32Array.from([1, 3, 3, 2, 0, 2]), [2, 3]);
    x.requiresGrad = true;
    x.max(1).values.sum().backward();
    expect(values(x.grad!)).toEqual([0, 1, 0, 1, 0, 0]);
    x.grad = null;
    x.amax(1).sum().backward();
    expect(values(x.grad!)).toEqual([0, 0.5, 0.5, 0.5, 0, 0.5]);
    x.grad = null;
    x.mean(0).sum().backward();
    expect(values(x.grad!)).toEqual(Array(6).fill(0.5));
  });

  it('rejects bad dims with a RangeError naming dim, and bad options with a TypeError', () => {
    const x = make(random([2, 3], 6), [2, 3]);
    expect(() => x.sum(2)).toThrow(/sum: dim: expected an integer in \[-2, 1\], received 2/);
    expect(() => x.mean(-3)).toThrow(RangeError);
    expect(() => F.amax(x, [0, 0])).toThrow(/amax: dim: expected each axis at most once/);
    expect(() => x.sum(0.5)).toThrow(TypeError);
    expect(() => x.softmax(5)).toThrow(/softmax: dim/);
    expect(() => x.sum(0, { keepdim: true } as never)).toThrow(/sum: options.keepdim/);
    expect(() => x.var(0, { correction: -1 })).toThrow(TypeError);
  });

  it('gives bitwise identical results for any thread count', () => {
    if (device !== 'cpu') return;
    const shape = [64, 300, 40];
    const x = make(random(shape, 8), shape);
    const run = () => [x.sum(1), x.sum([0, 1]), x.mean(2), x.var(1), x.logsumexp(0), x.softmax(2)].map((t) => Buffer.from(t.toArray().buffer));
    try {
      setNumThreads(1);
      const single = run();
      setNumThreads(2);
      const two = run();
      setNumThreads(3);
      const three = run();
      for (let k = 0; k < single.length; k++) {
        expect(Buffer.compare(single[k]!, two[k]!), `result ${k}, 1 vs 2 threads`).toBe(0);
        expect(Buffer.compare(single[k]!, three[k]!), `result ${k}, 1 vs 3 threads`).toBe(0);
      }
    } finally {
      setNumThreads(0);
    }
  });
});

describe.skipIf(!cudaUsable)('CPU and CUDA agree', () => {
  it('on every reduction and softmax', () => {
    const shape = [6, 70, 33];
    const data = random(shape, 9);
    const [cpu, cuda] = (['cpu', 'cuda'] as const).map((device) => {
      const x = tensor(data, shape, { device });
      return [x.sum(1), x.mean([1, 2]), x.amax(0), x.var(2), x.std(1), x.logsumexp(1), x.softmax(2), x.logSoftmax(0), x.max(1).indices].map(values);
    });
    cpu!.forEach((expected, k) => expect(relativeError(cuda![k]!, expected), `result ${k} (${reproduce(seed)})`).toBeLessThanOrEqual(2e-6));
  });
});
