// Tensor math: the int32 and bool element types (creation, cast, devices, safetensors), tensor() from nested
// arrays, the display, and the broadcasting elementwise ops against PyTorch float64 fixtures.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';

import { afterAll, afterEach, describe, expect, it } from 'vitest';

import * as wn from '../ts/index.js';
import { backend, empty, full, io, nn, noGrad, ones, randn, type Tensor, tensor, zeros } from '../ts/index.js';
import { normals, relativeError, reproduce, runSeed, uniformGenerator } from './helpers.js';

const seed = runSeed();
console.log(`pointwise.test: random seed ${seed} (${reproduce(seed)})`);
const cudaUsable = backend().cuda.usable;
const devices = ['cpu', 'cuda'] as const;

const live: Tensor[] = [];
function keep<T extends Tensor>(t: T): T {
  live.push(t);
  return t;
}
afterEach(() => {
  for (const t of live.splice(0)) t.dispose();
});

const directory = mkdtempSync(join(tmpdir(), 'weightnorm-pointwise-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

/** Random float32-representable values spanning signs, fractions, halves, zeros and the int32 edges. */
function castInputs(count: number, random: () => number): Float32Array {
  const specials = [0, -0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.999, 2147483520, -2147483648, 3e9, -3e9, NaN, Infinity, -Infinity];
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = i < specials.length ? specials[i]! : (random() - 0.5) * 2 ** (random() * 34);
  return out;
}

/** PyTorch's float -> int32 (truncation toward zero), with our rule for what int32 cannot hold: saturate, NaN -> 0. */
function truncateToInt32(v: number): number {
  if (Number.isNaN(v)) return 0;
  return Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, Math.trunc(v))) + 0; // + 0: int32 has no -0
}

describe('int32 and bool tensors', () => {
  it('tensor() infers bool from booleans and int32 from an Int32Array; toArray returns the matching typed array', () => {
    const b = keep(tensor([[true, false, true], [false, false, true]]));
    expect(b.dtype).toBe('bool');
    expect(b.shape).toEqual([2, 3]);
    expect(b.toArray()).toEqual(new Uint8Array([1, 0, 1, 0, 0, 1]));
    const i = keep(tensor(new Int32Array([7, -2147483648, 2147483647])));
    expect(i.dtype).toBe('int32');
    expect(i.toArray()).toEqual(new Int32Array([7, -2147483648, 2147483647]));
    const f = keep(tensor([[1, 2], [3, 4]]));
    expect(f.dtype).toBe('float32');
    expect(f.toArray()).toBeInstanceOf(Float32Array);
    expect(keep(tensor(new Float64Array([0.1, 2]))).toArray()).toEqual(new Float32Array([0.1, 2]));
    expect(keep(tensor(new Uint8Array([0, 200]))).toArray()).toEqual(new Float32Array([0, 200]));
    expect(keep(tensor(new Uint8Array([0, 200]), { dtype: 'bool' })).toArray()).toEqual(new Uint8Array([0, 1]));
    expect(keep(tensor([1.9, -1.9, 3], { dtype: 'int32' })).toArray()).toEqual(new Int32Array([1, -1, 3]));
    expect(keep(tensor([0, NaN, -2], { dtype: 'bool' })).toArray()).toEqual(new Uint8Array([0, 1, 1]));
    const scalar = keep(tensor(2.5));
    expect(scalar.shape).toEqual([]);
    expect(scalar.item()).toBe(2.5);
    expect(keep(tensor(true)).dtype).toBe('bool');
    expect(keep(tensor([1, 2, 3, 4, 5, 6], [2, 3], { dtype: 'int32' })).shape).toEqual([2, 3]);
    expect(keep(tensor([[], []])).shape).toEqual([2, 0]);
  });

  it('tensor() names the path of ragged or ill-typed nested data', () => {
    expect(() => tensor([[1, 2], [3]])).toThrow(RangeError);
    expect(() => tensor([[1, 2], [3]])).toThrow(/^tensor: data\[1\]: expected an array of length 2/);
    expect(() => tensor([[1, 2], 3] as never)).toThrow(/^tensor: data\[1\]: expected an array of length 2/);
    expect(() => tensor([[1, [2]], [3, 4]] as never)).toThrow(/^tensor: data\[0\]\[1\]: expected a number or boolean/);
    expect(() => tensor([[1, 'x']] as never)).toThrow(TypeError);
    expect(() => tensor([[1, 'x']] as never)).toThrow(/^tensor: data\[0\]\[1\]: expected a number or boolean, received the string "x"/);
    expect(() => tensor([3e9], { dtype: 'int32' })).toThrow(/^tensor: data\[0\]: expected a value that fits int32/);
    expect(() => tensor([1, 2, 3], [2, 2])).toThrow(/^tensor: data: expected 4 values for shape \[2, 2\], received 3 values/);
    expect(() => tensor([1], { dtype: 'int64' as never })).toThrow(/^tensor: options.dtype: expected 'float32', 'bfloat16', 'int32' or 'bool'/);
  });

  it('zeros, empty, ones and full make every dtype', () => {
    expect(keep(zeros([2, 2], { dtype: 'int32' })).toArray()).toEqual(new Int32Array(4));
    expect(keep(zeros([3], { dtype: 'bool' })).toArray()).toEqual(new Uint8Array(3));
    expect(keep(empty([2], { dtype: 'bool' })).dtype).toBe('bool');
    expect(keep(ones([2], { dtype: 'int32' })).toArray()).toEqual(new Int32Array([1, 1]));
    expect(keep(full([2], true)).toArray()).toEqual(new Uint8Array([1, 1]));
    expect(keep(full([2], -3.5)).toArray()).toEqual(new Float32Array([-3.5, -3.5]));
    expect(() => randn([2], { dtype: 'int32' as never })).toThrow(/^randn: options.dtype: expected 'float32' or 'bfloat16'/);
  });

  for (const device of devices) {
    it.skipIf(device === 'cuda' && !cudaUsable)(`cast between float32, bfloat16, int32 and bool on ${device} follows PyTorch`, () => {
      const random = uniformGenerator(seed);
      const values = castInputs(257, random);
      const x = keep(tensor(values, { device }));
      const asInt = keep(x.cast('int32'));
      expect(asInt.dtype).toBe('int32');
      expect(asInt.device).toBe(device);
      expect(Array.from(asInt.toArray())).toEqual(Array.from(values, truncateToInt32));
      const asBool = keep(x.cast('bool'));
      expect(Array.from(asBool.toArray())).toEqual(Array.from(values, (v) => (v !== 0 ? 1 : 0)));
      expect(Array.from(keep(asBool.cast('float32')).toArray())).toEqual(Array.from(values, (v) => (v !== 0 ? 1 : 0)));
      expect(Array.from(keep(asBool.cast('int32')).toArray())).toEqual(Array.from(values, (v) => (v !== 0 ? 1 : 0)));
      const ints = new Int32Array(100).map(() => Math.floor((random() - 0.5) * 2 ** 32));
      const i = keep(tensor(ints, { device }));
      expect(Array.from(keep(i.cast('float32')).toArray())).toEqual(Array.from(ints, (v) => Math.fround(v)));
      expect(Array.from(keep(i.cast('bool')).toArray())).toEqual(Array.from(ints, (v) => (v !== 0 ? 1 : 0)));
      expect(Array.from(keep(keep(i.cast('bfloat16')).cast('int32')).toArray())).toEqual(
        Array.from(keep(keep(keep(i.cast('float32')).cast('bfloat16')).cast('int32')).toArray()),
      );
      expect(keep(keep(x.cast('bfloat16')).cast('bool')).toArray()).toEqual(asBool.toArray());
      expect(keep(asInt.cast('int32')).toArray()).toEqual(asInt.toArray());
    });
  }

  it.skipIf(!cudaUsable)('int32 and bool tensors move between devices unchanged', () => {
    const ints = new Int32Array([1, -5, 2147483647, -2147483648]);
    const i = keep(tensor(ints));
    const onGpu = keep(i.to('cuda'));
    expect(onGpu.dtype).toBe('int32');
    expect(keep(onGpu.to('cpu')).toArray()).toEqual(ints);
    const b = keep(tensor([true, false, true]));
    expect(keep(keep(b.to('cuda')).to('cpu')).toArray()).toEqual(new Uint8Array([1, 0, 1]));
  });

  it('int32 and bool tensors round-trip through safetensors as I32 and BOOL', () => {
    const path = join(directory, 'dtypes.safetensors');
    const ints = new Int32Array([3, -7, 2147483647, -2147483648, 0]);
    const record = {
      ints: keep(tensor(ints, [5])),
      mask: keep(tensor([[true, false], [false, true]])),
      weights: keep(tensor([0.5, -1.25])),
    };
    io.save(record, path);
    const header = io.inspect(path).tensors;
    expect(header.ints).toEqual({ dtype: 'I32', shape: [5] });
    expect(header.mask).toEqual({ dtype: 'BOOL', shape: [2, 2] });
    expect(header.weights).toEqual({ dtype: 'F32', shape: [2] });
    const loaded = io.load(path).tensors;
    for (const t of Object.values(loaded)) keep(t);
    expect(loaded.ints!.dtype).toBe('int32');
    expect(loaded.ints!.toArray()).toEqual(ints);
    expect(loaded.mask!.dtype).toBe('bool');
    expect(loaded.mask!.shape).toEqual([2, 2]);
    expect(loaded.mask!.toArray()).toEqual(new Uint8Array([1, 0, 0, 1]));
    expect(loaded.weights!.toArray()).toEqual(new Float32Array([0.5, -1.25]));
  });

  it('every float op given an int32 or bool tensor raises a TypeError naming the parameter and the dtype', () => {
    const F = nn.functional;
    const i = keep(tensor(new Int32Array([1, 2, 3, 4]), [2, 2]));
    const b = keep(tensor([[true, false], [true, true]]));
    const w = keep(randn([2, 2]));
    expect(() => F.linear(i, w)).toThrow(TypeError);
    expect(() => F.linear(i, w)).toThrow(/^linear: x: expected a float32 tensor, not int32/);
    expect(() => F.linear(w, b)).toThrow(/^linear: weight: expected a float32 tensor, not bool/);
    expect(() => F.sum(b)).toThrow(/^sum: x: expected a float32 tensor, not bool/);
    expect(() => F.matmul(w, i)).toThrow(/^matmul: b: expected a float32 tensor, not int32/);
    expect(() => F.weightNorm(i, keep(ones([2])))).toThrow(/weightNorm: v: expected a float32 tensor, not int32/);
  });
});

describe('display', () => {
  it('toString and util.inspect show shape, dtype, device and the first values like PyTorch', () => {
    const t = keep(tensor([[1, 2.5, -3], [4, 5, 6]]));
    expect(String(t)).toBe('Tensor(shape=[2, 3], dtype=float32, device=cpu)');
    expect(inspect(t)).toBe('Tensor(shape=[2, 3], dtype=float32, device=cpu)\n[[1., 2.5, -3.],\n [4., 5., 6.]]');
    expect(inspect(keep(tensor([true, false])))).toBe('Tensor(shape=[2], dtype=bool, device=cpu)\n[true, false]');
    expect(inspect(keep(tensor(new Int32Array([-1, 2]))))).toBe('Tensor(shape=[2], dtype=int32, device=cpu)\n[-1, 2]');
    const big = keep(zeros([50, 40]));
    const lines = inspect(big).split('\n');
    expect(lines[1]).toBe('[[0., 0., 0., ..., 0., 0., 0.],');
    expect(lines).toHaveLength(1 + 7);
    const gone = tensor([1, 2]);
    gone.dispose();
    expect(String(gone)).toBe('Tensor(shape=[2], dtype=float32, disposed)');
    expect(inspect(gone)).toBe('Tensor(shape=[2], dtype=float32, disposed)');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Broadcasting elementwise ops against a float64 reference written here (independent of the kernels' layouts).

const F = nn.functional;

/** out[i] = f(a[..], b[..]) with NumPy broadcasting, in float64. */
function broadcastReference(
  aShape: readonly number[],
  a: ArrayLike<number>,
  bShape: readonly number[],
  b: ArrayLike<number>,
  f: (x: number, y: number) => number,
): { shape: number[]; values: Float64Array } {
  const rank = Math.max(aShape.length, bShape.length);
  const pad = (s: readonly number[]) => [...new Array<number>(rank - s.length).fill(1), ...s];
  const pa = pad(aShape);
  const pb = pad(bShape);
  const shape = pa.map((d, i) => (d === 1 ? pb[i]! : d));
  const count = shape.reduce((x, y) => x * y, 1);
  const strides = (s: number[]) => s.map((d, i) => (d === 1 ? 0 : s.slice(i + 1).reduce((x, y) => x * y, 1)));
  const sa = strides(pa);
  const sb = strides(pb);
  const values = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    let rest = i;
    let oa = 0;
    let ob = 0;
    for (let d = rank - 1; d >= 0; d--) {
      const index = rest % shape[d]!;
      rest = Math.floor(rest / shape[d]!);
      oa += index * sa[d]!;
      ob += index * sb[d]!;
    }
    values[i] = f(a[oa]!, b[ob]!);
  }
  return { shape, values };
}

/** The sum of `values` (of `shape`) down to `target` (right-aligned; 1 where broadcast), in float64. */
function sumToReference(shape: readonly number[], values: ArrayLike<number>, target: readonly number[]): Float64Array {
  const pad = [...new Array<number>(shape.length - target.length).fill(1), ...target];
  const count = pad.reduce((x, y) => x * y, 1);
  const out = new Float64Array(count);
  for (let i = 0; i < values.length; i++) {
    let rest = i;
    let offset = 0;
    let stride = 1;
    for (let d = shape.length - 1; d >= 0; d--) {
      const index = rest % shape[d]!;
      rest = Math.floor(rest / shape[d]!);
      if (pad[d] !== 1) offset += index * stride;
      stride *= pad[d]!;
    }
    out[offset] += values[i]!;
  }
  return out;
}

const f32 = Math.fround;
/** float32 maths of one operation on float32 inputs: the exact result rounded once. */
const BINARY: Record<string, (x: number, y: number) => number> = {
  add: (x, y) => x + y,
  sub: (x, y) => x - y,
  mul: (x, y) => x * y,
  div: (x, y) => x / y,
  minimum: (x, y) => (Number.isNaN(x) || Number.isNaN(y) ? NaN : Math.min(x, y)),
  maximum: (x, y) => (Number.isNaN(x) || Number.isNaN(y) ? NaN : Math.max(x, y)),
};

/** Shape pairs that broadcast: size-1 dims, rank mismatch, 0-d, zero-size dims, and sizes that cross the kernels' blocks. */
const SHAPE_PAIRS: [number[], number[]][] = [
  [[2, 3], [2, 3]],
  [[4, 1, 3], [5, 1]],
  [[3], [2, 1, 3]],
  [[], [2, 3]],
  [[2, 3], []],
  [[1, 1], [4]],
  [[0, 3], [3]],
  [[2, 0, 1], [1, 5]],
  [[3, 65, 1, 37], [65, 20, 1]],
  [[70000], [1]],
  [[2, 1, 20000], [2, 3, 1]],
];

/** The first index where got and want differ (NaN equals NaN, -0 equals 0 only when both are zero), or -1. */
function firstMismatch(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) return Math.min(got.length, want.length);
  for (let i = 0; i < got.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (g !== w && !(Number.isNaN(g) && Number.isNaN(w))) return i;
  }
  return -1;
}

function randomValues(count: number, salt: number): Float32Array {
  return Float32Array.from(normals(count, seed + salt));
}

for (const device of devices) {
  describe.skipIf(device === 'cuda' && !cudaUsable)(`broadcasting ops on ${device}`, () => {
    SHAPE_PAIRS.forEach(([aShape, bShape], pairIndex) => {
      it(`add, sub, mul, div, minimum, maximum: [${aShape}] with [${bShape}] equal float32 rounding of the exact result`, () => {
        const size = (s: number[]) => s.reduce((x, y) => x * y, 1);
        const av = randomValues(size(aShape), 10 * pairIndex);
        const bv = randomValues(size(bShape), 10 * pairIndex + 1);
        const a = keep(tensor(av, aShape, { device }));
        const b = keep(tensor(bv, bShape, { device }));
        for (const [name, f] of Object.entries(BINARY)) {
          const y = keep((F as unknown as Record<string, (a: Tensor, b: Tensor) => Tensor>)[name]!(a, b));
          const ref = broadcastReference(aShape, av, bShape, bv, f);
          expect(y.shape, `${name} (${reproduce(seed)})`).toEqual(ref.shape);
          // One float32 rounding of the exact float64 result: equal values.
          const got = y.toArray();
          const want = Float32Array.from(ref.values);
          const bad = firstMismatch(got, want);
          expect(bad, `${name}: index ${bad}: ${got[bad]} vs ${want[bad]} (${reproduce(seed)})`).toBe(-1);
        }
        const gt = keep(a.gt(b));
        expect(gt.dtype).toBe('bool');
        expect(firstMismatch(gt.toArray(), broadcastReference(aShape, av, bShape, bv, (x, y) => (x > y ? 1 : 0)).values)).toBe(-1);
      });
    });

    it('gradients of broadcast operands are the output gradient summed back to their shapes', () => {
      for (const [aShape, bShape] of SHAPE_PAIRS.slice(0, 9)) {
        const size = (s: number[]) => s.reduce((x, y) => x * y, 1);
        const av = randomValues(size(aShape), 101);
        const bv = randomValues(size(bShape), 102);
        const a = keep(tensor(av, aShape, { device }));
        const b = keep(tensor(bv, bShape, { device }));
        a.requiresGrad = true;
        b.requiresGrad = true;
        const y = keep(a.mul(b));
        const cv = randomValues(y.size, 103);
        const c = keep(tensor(cv, [...y.shape], { device }));
        keep(F.sum(keep(y.mul(c)))).backward();
        const outShape = [...y.shape];
        // da = Σ c·b over the broadcast dims; each product is one float32 rounding, the sum is in double.
        const dyTimesB = broadcastReference(outShape, cv, bShape, bv, (x, z) => f32(x * z)).values;
        const dyTimesA = broadcastReference(outShape, cv, aShape, av, (x, z) => f32(x * z)).values;
        const refA = sumToReference(outShape, dyTimesB, aShape);
        const refB = sumToReference(outShape, dyTimesA, bShape);
        expect(a.grad!.shape).toEqual(aShape);
        expect(b.grad!.shape).toEqual(bShape);
        expect(relativeError(a.grad!.toArray(), refA), `[${aShape}]·[${bShape}] da (${reproduce(seed)})`).toBeLessThanOrEqual(2 ** -23);
        expect(relativeError(b.grad!.toArray(), refB), `[${aShape}]·[${bShape}] db (${reproduce(seed)})`).toBeLessThanOrEqual(2 ** -23);
        keep(a.grad!);
        keep(b.grad!);
      }
    });

    it('int32 arithmetic wraps around like PyTorch int32, comparisons and logical ops give bool', () => {
      const a = keep(tensor(new Int32Array([2147483647, -2147483648, 7, -7, 0, 100000]), [2, 3], { device }));
      const b = keep(tensor(new Int32Array([1, -1, 3]), { device }));
      expect(Array.from(keep(a.add(b)).toArray())).toEqual([-2147483648, 2147483647, 10, -6, -1, 100003]);
      expect(Array.from(keep(a.sub(b)).toArray())).toEqual([2147483646, -2147483647, 4, -8, 1, 99997]);
      expect(Array.from(keep(a.mul(b)).toArray())).toEqual([2147483647, -2147483648, 21, -7, 0, 300000]);
      expect(Array.from(keep(a.mul(a)).toArray())).toEqual([1, 0, 49, 49, 0, 1410065408]);
      expect(Array.from(keep(a.minimum(b)).toArray())).toEqual([1, -2147483648, 3, -7, -1, 3]);
      expect(Array.from(keep(a.maximum(b)).toArray())).toEqual([2147483647, -1, 7, 1, 0, 100000]);
      expect(Array.from(keep(a.add(b, { alpha: 2 })).toArray())).toEqual([-2147483647, 2147483646, 13, -5, -2, 100006]);
      expect(Array.from(keep(a.neg()).toArray())).toEqual([-2147483647, -2147483648, -7, 7, 0, -100000]);
      expect(Array.from(keep(a.abs()).toArray())).toEqual([2147483647, -2147483648, 7, 7, 0, 100000]);
      expect(Array.from(keep(a.sign()).toArray())).toEqual([1, -1, 1, -1, 0, 1]);
      expect(Array.from(keep(a.clamp(-5, 8)).toArray())).toEqual([8, -5, 7, -5, 0, 8]);
      // Bounds beyond float32's 2^24 stay exact.
      expect(Array.from(keep(keep(tensor(new Int32Array([16777219, -16777219]), { device })).clamp(-16777217, 16777217)).toArray())).toEqual([16777217, -16777217]);
      expect(Array.from(keep(a.relu()).toArray())).toEqual([2147483647, 0, 7, 0, 0, 100000]);
      for (const [name, f] of [
        ['eq', (x: number, y: number) => x === y], ['ne', (x: number, y: number) => x !== y], ['lt', (x: number, y: number) => x < y],
        ['le', (x: number, y: number) => x <= y], ['gt', (x: number, y: number) => x > y], ['ge', (x: number, y: number) => x >= y],
        ['logicalAnd', (x: number, y: number) => x !== 0 && y !== 0], ['logicalOr', (x: number, y: number) => x !== 0 || y !== 0],
      ] as const) {
        const out = keep((F as unknown as Record<string, (a: Tensor, b: Tensor | number) => Tensor>)[name]!(a, keep(tensor(new Int32Array([7, -1, 0]), { device }))));
        expect(out.dtype).toBe('bool');
        const ref = broadcastReference([2, 3], a.toArray(), [3], [7, -1, 0], (x, y) => (f(x, y) ? 1 : 0)).values;
        expect(Array.from(out.toArray()), name).toEqual(Array.from(ref));
      }
      const mask = keep(tensor([[true, false, true], [false, false, true]], { device }));
      expect(Array.from(keep(mask.logicalNot()).toArray())).toEqual([0, 1, 0, 1, 1, 0]);
      expect(Array.from(keep(mask.logicalAnd(true)).toArray())).toEqual([1, 0, 1, 0, 0, 1]);
      expect(Array.from(keep(mask.eq(keep(tensor([true, false, false], { device })))).toArray())).toEqual([1, 1, 0, 0, 1, 0]);
      expect(Array.from(keep(wn.where(mask, a, b)).toArray())).toEqual([2147483647, -1, 7, 1, -1, 100000]);
      expect(Array.from(keep(wn.where(mask, true, false)).toArray())).toEqual([1, 0, 1, 0, 0, 1]);
      expect(keep(wn.where(mask, true, false)).dtype).toBe('bool');
      expect(Array.from(keep(wn.where(keep(mask.logicalNot()), mask, false)).toArray())).toEqual([0, 0, 0, 0, 0, 0]);
    });

    it('unary ops equal their float64 definitions (to float32 library accuracy)', () => {
      const values = Float32Array.from(normals(300, seed + 7), (v) => 3 * v);
      const positive = values.map((v) => Math.abs(v) + 0.01);
      const x = keep(tensor(values, { device }));
      const px = keep(tensor(positive, { device }));
      const erf = (z: number): number => {
        // Abramowitz-Stegun 7.1.26 is too coarse; use the series/continued-fraction-free identity via the normal CDF.
        const t = 1 / (1 + 0.5 * Math.abs(z));
        const tau = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 +
          t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return z >= 0 ? 1 - tau : tau - 1;
      };
      const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));
      const cases: [string, Tensor, Float32Array, (v: number) => number, number][] = [
        ['neg', keep(x.neg()), values, (v) => -v, 0],
        ['exp', keep(x.exp()), values, Math.exp, 2 ** -21],
        ['log', keep(px.log()), positive, Math.log, 2 ** -21],
        ['sqrt', keep(px.sqrt()), positive, Math.sqrt, 2 ** -23],
        ['rsqrt', keep(px.rsqrt()), positive, (v) => 1 / Math.sqrt(v), 2 ** -22],
        ['abs', keep(x.abs()), values, Math.abs, 0],
        ['sign', keep(x.sign()), values, Math.sign, 0],
        ['clamp', keep(x.clamp(-1, 0.5)), values, (v) => Math.min(Math.max(v, -1), 0.5), 0],
        ['sigmoid', keep(x.sigmoid()), values, sigmoid, 2 ** -21],
        ['tanh', keep(x.tanh()), values, Math.tanh, 2 ** -21],
        ['relu', keep(x.relu()), values, (v) => Math.max(v, 0), 0],
        ['leakyRelu', keep(F.leakyRelu(x, 0.2)), values, (v) => (v > 0 ? v : f32(0.2) * v), 2 ** -23],
        ['elu', keep(F.elu(x, 0.5)), values, (v) => (v > 0 ? v : 0.5 * Math.expm1(v)), 2 ** -21],
        ['softplus', keep(F.softplus(x, 2, 3)), values, (v) => (2 * v > 3 ? v : Math.log1p(Math.exp(2 * v)) / 2), 2 ** -20],
        ['gelu', keep(F.gelu(x)), values, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)), 2 ** -20],
        ['gelu tanh', keep(F.gelu(x, { approximate: 'tanh' })), values, (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))), 2 ** -20],
        ['silu', keep(F.silu(x)), values, (v) => v * sigmoid(v), 2 ** -21],
      ];
      for (const [name, y, input, f, tolerance] of cases) {
        const ref = Float64Array.from(input, f);
        expect(relativeError(y.toArray(), ref), `${name} (${reproduce(seed)})`).toBeLessThanOrEqual(Math.max(tolerance, 2 ** -24));
      }
    });
  });
}

describe('tensor methods', () => {
  it('each is the function of its name with the tensor first, taking the same arguments after it', () => {
    const one = ['logicalNot', 'neg', 'exp', 'log', 'sqrt', 'rsqrt', 'abs', 'sign', 'sigmoid', 'tanh', 'relu'];
    const two = ['mul', 'div', 'pow', 'minimum', 'maximum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'logicalAnd', 'logicalOr'];
    const three = ['add', 'sub', 'clamp'];
    const x = keep(randn([5], { seed: runSeed() }));
    const y = keep(randn([5], { seed: runSeed() + 1 }));
    const methods = Object.getOwnPropertyNames(Object.getPrototypeOf(x)) as string[];
    for (const [names, args] of [[one, []], [two, [y]], [three, [-0.5, 0.5]]] as const) {
      for (const name of names) {
        const method = (x as unknown as Record<string, (...a: unknown[]) => Tensor>)[name]!;
        expect(methods, name).toContain(name);
        expect(Object.getOwnPropertyDescriptor(Object.getPrototypeOf(x), name)!.enumerable, name).toBe(false);
        expect(method.name, name).toBe(name);
        expect(method.length, name).toBe(names === one ? 0 : names === two ? 1 : 2);
        const operand = name.startsWith('logical') ? x.gt(0) : x;
        const free = (wn as unknown as Record<string, (...a: unknown[]) => Tensor>)[name]!;
        const methodArgs = name === 'logicalAnd' || name === 'logicalOr' ? [y.gt(0)] : name === 'add' || name === 'sub' ? [y, { alpha: 2 }] : args;
        const viaMethod = (operand as unknown as Record<string, (...a: unknown[]) => Tensor>)[name]!(...methodArgs);
        expect(Array.from(viaMethod.toArray()), name).toEqual(Array.from(free(operand, ...methodArgs).toArray()));
      }
    }
  });
});

describe('promotion, scalars and errors', () => {
  it('promotes as the README states', () => {
    const i = keep(tensor(new Int32Array([1, 2, 3])));
    const b = keep(tensor([true, false, true]));
    const f = keep(tensor([0.5, 1.5, 2.5]));
    const dtypeOf = (t: Tensor) => keep(t).dtype;
    expect(dtypeOf(i.add(1))).toBe('int32');
    expect(dtypeOf(i.add(0.5))).toBe('float32');
    expect(dtypeOf(i.add(NaN))).toBe('float32');
    expect(dtypeOf(i.add(f))).toBe('float32');
    expect(dtypeOf(i.add(b))).toBe('int32');
    expect(dtypeOf(b.add(b))).toBe('int32');
    expect(dtypeOf(b.mul(true))).toBe('int32');
    expect(dtypeOf(b.add(2))).toBe('int32');
    expect(dtypeOf(f.add(2))).toBe('float32');
    expect(dtypeOf(i.div(i))).toBe('float32');
    expect(dtypeOf(i.pow(2))).toBe('float32');
    expect(dtypeOf(i.exp())).toBe('float32');
    expect(dtypeOf(b.abs())).toBe('int32');
    expect(dtypeOf(i.clamp(0.5))).toBe('float32');
    expect(dtypeOf(i.add(i, { alpha: 0.5 }))).toBe('float32');
    expect(dtypeOf(i.lt(0.5))).toBe('bool');
    expect(Array.from(keep(i.lt(1.5)).toArray())).toEqual([1, 0, 0]);
    expect(Array.from(keep(i.div(2)).toArray())).toEqual([0.5, 1, 1.5]);
    expect(Array.from(keep(i.add(0.5)).toArray())).toEqual([1.5, 2.5, 3.5]);
    expect(Array.from(keep(wn.add(2, i)).toArray())).toEqual([3, 4, 5]);
    expect(Array.from(keep(wn.sub(10, f)).toArray())).toEqual([9.5, 8.5, 7.5]);
    expect(Array.from(keep(f.add(NaN)).toArray()).every(Number.isNaN)).toBe(true);
    expect(Array.from(keep(f.clamp(NaN)).toArray()).every(Number.isNaN)).toBe(true);
    expect(Array.from(keep(f.maximum(keep(tensor([NaN])))).toArray()).every(Number.isNaN)).toBe(true);
    expect(keep(wn.where(keep(f.gt(1)), i, f)).dtype).toBe('float32');
  });

  it('raises clear errors for shapes that do not broadcast, bad dtypes and bad operands', () => {
    const a = keep(zeros([2, 3]));
    expect(() => a.add(keep(zeros([4])))).toThrow(RangeError);
    expect(() => a.add(keep(zeros([4])))).toThrow(/^add: expected shapes that broadcast .*received \[2, 3\] and \[4\]/);
    expect(() => wn.where(keep(tensor([true, false, true])), a, keep(zeros([2, 2])))).toThrow(/^where: .*received \[3\] and \[2, 3\] and \[2, 2\]/);
    expect(() => a.add('1' as never)).toThrow(TypeError);
    expect(() => a.add('1' as never)).toThrow(/^add: b: expected a Tensor, a number or a boolean, received the string "1"/);
    expect(() => wn.add(1, 2 as never)).toThrow(/^add: expected at least one Tensor operand/);
    expect(() => a.mul(keep(zeros([3], { dtype: 'bfloat16' })))).toThrow(/^mul: b: expected a float32, int32 or bool tensor, not bfloat16/);
    expect(() => keep(tensor([true])).neg()).toThrow(/^neg: x: expected a float32 or int32 tensor \(negating a bool tensor/);
    expect(() => wn.where(a, a, a)).toThrow(/^where: condition: expected a bool tensor, not float32/);
    expect(() => a.clamp()).toThrow(/^clamp: expected at least one of min and max/);
    expect(() => a.clamp('0' as never)).toThrow(/^clamp: min: expected a number, null or undefined/);
    expect(() => F.leakyRelu(a, NaN)).toThrow(/^leakyRelu: negativeSlope: expected a finite number, received NaN/);
    expect(() => F.softplus(a, 0)).toThrow(RangeError);
    expect(() => F.gelu(a, { approximate: 'erf' as never })).toThrow(/^gelu: options.approximate: expected 'none' or 'tanh'/);
    expect(() => a.add(a, { beta: 1 } as never)).toThrow(/^add: options: expected only the key alpha/);
    expect(() => new nn.ELU(Infinity)).toThrow(/^nn.ELU: alpha: expected a finite number/);
    const disposed = zeros([2]);
    disposed.dispose();
    expect(() => a.add(disposed)).toThrow(/^add: b: the tensor Tensor\(shape=\[2\], dtype=float32, disposed\) was used after dispose/);
  });

  it('a float32 tensor combined with an int32 or bool one gets its gradient; the promoted operand is a constant', () => {
    const x = keep(tensor([0.5, -1, 2]));
    x.requiresGrad = true;
    const i = keep(tensor(new Int32Array([3, -2, 0])));
    const mask = keep(tensor([true, false, true]));
    keep(F.sum(keep(keep(x.mul(i)).add(keep(wn.where(mask, x, i)))))).backward();
    keep(x.grad!);
    expect(Array.from(x.grad!.toArray())).toEqual([4, -2, 1]);
  });

  it('a backward outside the tidy() of its forward finds what it reads (scalars and promoted operands are remade)', () => {
    const x = keep(tensor([1, -2, 4]));
    x.requiresGrad = true;
    const i = keep(tensor(new Int32Array([2, 3, -1])));
    // The forward's scalar 3 and its float32 copy of i are disposed when tidy() ends; x and i themselves stay.
    keep(F.sum(keep(wn.tidy(() => x.mul(3))))).backward();
    keep(F.sum(keep(wn.tidy(() => x.div(i))))).backward();
    keep(x.grad!);
    expect(Array.from(x.grad!.toArray())).toEqual([3 + 1 / 2, 3 + 1 / 3, 3 - 1].map(Math.fround));
  });

  it.skipIf(!cudaUsable)('operands on different devices are a TypeError naming the parameter', () => {
    const a = keep(zeros([2]));
    const b = keep(zeros([2], { device: 'cuda' }));
    expect(() => a.add(b)).toThrow(/^add: b: expected a tensor on 'cpu' like a/);
  });

  it('methods, top-level exports and layers are the same functions', () => {
    const x = keep(randn([3, 4], { seed: seed % 1e9 }));
    expect(keep(wn.exp(x)).toArray()).toEqual(keep(F.exp(x)).toArray());
    expect(keep(x.relu()).toArray()).toEqual(keep(new nn.ReLU().forward(x)).toArray());
    expect(keep(new nn.Sigmoid().forward(x)).toArray()).toEqual(keep(x.sigmoid()).toArray());
    expect(keep(new nn.GELU({ approximate: 'tanh' }).forward(x)).toArray()).toEqual(keep(F.gelu(x, { approximate: 'tanh' })).toArray());
    expect(keep(new nn.SiLU().forward(x)).toArray()).toEqual(keep(F.silu(x)).toArray());
    expect(keep(new nn.ELU(0.3).forward(x)).toArray()).toEqual(keep(F.elu(x, 0.3)).toArray());
    expect(keep(new nn.Softplus(2, 1).forward(x)).toArray()).toEqual(keep(F.softplus(x, 2, 1)).toArray());
    expect(keep(F.scale(x, 2)).toArray()).toEqual(keep(x.mul(2)).toArray());
    // Inside noGrad nothing is recorded; comparisons never record.
    x.requiresGrad = true;
    expect(keep(noGrad(() => x.mul(2))).requiresGrad).toBe(false);
    expect(keep(x.gt(0)).requiresGrad).toBe(false);
    expect(keep(x.mul(2)).requiresGrad).toBe(true);
  });
});
