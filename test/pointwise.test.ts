// Tensor math: the int32 and bool element types (creation, cast, devices, safetensors), tensor() from nested
// arrays, the display, and the broadcasting elementwise ops against PyTorch float64 fixtures.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';

import { afterAll, afterEach, describe, expect, it } from 'vitest';

import { backend, empty, full, io, nn, ones, randn, type Tensor, tensor, zeros } from '../ts/index.js';
import { reproduce, runSeed, uniformGenerator } from './helpers.js';

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
