// The Tensor API: creation, copies, shape, randn's generator, dispose and memory accounting, devices.
import { afterEach, describe, expect, it } from 'vitest';

import {
  backend,
  DisposedTensorError,
  memory,
  ops,
  randn,
  type Tensor,
  tensor,
  zeros,
} from '../ts/index.js';
import { bitwiseEqual, reproduce, runSeed } from './helpers.js';

const seed = runSeed();
console.log(`tensor.test: random seed ${seed} (${reproduce(seed)})`);
const info = backend();

// Every tensor a test makes is disposed after it, so memory() counts are exact in the accounting tests (no
// garbage-collection finalizer can change them mid-test).
const live: Tensor[] = [];
function keep<T extends Tensor>(t: T): T {
  live.push(t);
  return t;
}
afterEach(() => {
  for (const t of live.splice(0)) t.dispose();
});

describe('creation', () => {
  it('tensor() from a Float32Array keeps the values and shape', () => {
    const data = new Float32Array([1.5, -2, 3.25, 0, 1e-30, -7]);
    const t = keep(tensor(data, [2, 3]));
    expect(t.shape).toEqual([2, 3]);
    expect(t.size).toBe(6);
    expect(t.rank).toBe(2);
    expect(t.device).toBe('cpu');
    expect(t.disposed).toBe(false);
    expect(bitwiseEqual(t.toArray(), data)).toBe(true);
  });

  it('tensor() from number[] rounds to float32; the shape defaults to 1-D', () => {
    const t = keep(tensor([0.1, 2, -3]));
    expect(t.shape).toEqual([3]);
    expect([...t.toArray()]).toEqual([Math.fround(0.1), 2, -3]);
  });

  it('tensor() copies its data: changing the source later does not change the tensor', () => {
    const data = new Float32Array([1, 2, 3, 4]);
    const t = keep(tensor(data, [4]));
    data[0] = 99;
    expect(t.toArray()[0]).toBe(1);
  });

  it('a rank-0 tensor holds one value; an empty shape dimension holds none', () => {
    const scalar = keep(tensor([5], []));
    expect(scalar.shape).toEqual([]);
    expect(scalar.size).toBe(1);
    expect(scalar.rank).toBe(0);
    expect([...scalar.toArray()]).toEqual([5]);
    const empty = keep(tensor([], [2, 0, 3]));
    expect(empty.size).toBe(0);
    expect(empty.toArray().length).toBe(0);
  });

  it('zeros() gives zeros of the shape', () => {
    const t = keep(zeros([3, 4, 5]));
    expect(t.shape).toEqual([3, 4, 5]);
    expect(t.toArray().length).toBe(60);
    expect(t.toArray().every((x) => Object.is(x, 0))).toBe(true);
    expect(keep(zeros([0])).size).toBe(0);
    expect(keep(zeros([])).toArray()).toEqual(new Float32Array([0]));
  });
});

describe('randn', () => {
  it(`the same seed gives the same values; different seeds differ (seed ${seed})`, () => {
    const a = keep(randn([1000], { seed }));
    const b = keep(randn([1000], { seed }));
    const c = keep(randn([1000], { seed: seed + 1 }));
    expect(bitwiseEqual(a.toArray(), b.toArray())).toBe(true);
    const x = a.toArray();
    const y = c.toArray();
    expect(x.filter((value, i) => value === y[i]).length, reproduce(seed)).toBeLessThan(5);
  });

  it('the default seed is 0 and is reproducible', () => {
    const a = keep(randn([64]));
    const b = keep(randn([64], { seed: 0 }));
    expect(bitwiseEqual(a.toArray(), b.toArray())).toBe(true);
  });

  it('values are finite and not all equal, shapes are kept', () => {
    const t = keep(randn([3, 0, 2], { seed }));
    expect(t.size).toBe(0);
    const u = keep(randn([7, 9], { seed })).toArray();
    expect(u.every(Number.isFinite)).toBe(true);
    expect(new Set(u).size).toBeGreaterThan(60);
  });

  // n = 200000 samples: the sample mean has standard error std/√n and the sample std about std/√(2n). Five
  // standard errors (a chance of about 6e-7 of a false failure each) are the tolerance.
  for (const [mean, std] of [
    [0, 1],
    [3, 2],
    [-1, 0.05],
  ] as const) {
    it(`mean ${mean}, std ${std}: sample mean and std within 5 standard errors (seed ${seed})`, () => {
      const n = 200_000;
      const values = keep(randn([n], { seed, mean, std })).toArray();
      let sum = 0;
      for (const x of values) sum += x;
      const sampleMean = sum / n;
      let squares = 0;
      for (const x of values) squares += (x - sampleMean) ** 2;
      const sampleStd = Math.sqrt(squares / (n - 1));
      expect(Math.abs(sampleMean - mean), reproduce(seed)).toBeLessThan((5 * std) / Math.sqrt(n));
      expect(Math.abs(sampleStd - std), reproduce(seed)).toBeLessThan((5 * std) / Math.sqrt(2 * n));
      // Normal, not uniform: about 68.3% within one std (binomial standard error 0.1%; 5 of them allowed).
      const within = values.filter((x) => Math.abs(x - mean) < std).length / n;
      expect(Math.abs(within - 0.6827), reproduce(seed)).toBeLessThan(5 * Math.sqrt((0.6827 * 0.3173) / n));
    });
  }

  it('std 0 gives the mean exactly', () => {
    expect([...keep(randn([4], { seed, mean: 2.5, std: 0 })).toArray()]).toEqual([2.5, 2.5, 2.5, 2.5]);
  });

  it.skipIf(!info.cuda.usable)('a seed gives the same values on cuda as on cpu', () => {
    const cpu = keep(randn([10_000], { seed }));
    const cuda = keep(randn([10_000], { seed, device: 'cuda' }));
    expect(cuda.device).toBe('cuda');
    expect(bitwiseEqual(cuda.toArray(), cpu.toArray()), reproduce(seed)).toBe(true);
  });
});

describe('copies and shape', () => {
  it('toArray() returns a fresh copy each time', () => {
    const t = keep(tensor([1, 2, 3]));
    const first = t.toArray();
    first[0] = 42;
    expect([...t.toArray()]).toEqual([1, 2, 3]);
    expect(t.toArray()).not.toBe(t.toArray());
  });

  it("to('cpu') makes a new tensor with the same values; each can be disposed alone", () => {
    const t = keep(tensor([1, 2, 3, 4], [2, 2]));
    const copy = keep(t.to('cpu'));
    expect(copy).not.toBe(t);
    expect(copy.shape).toEqual([2, 2]);
    expect(copy.device).toBe('cpu');
    expect(bitwiseEqual(copy.toArray(), t.toArray())).toBe(true);
    copy.dispose();
    expect([...t.toArray()]).toEqual([1, 2, 3, 4]);
  });

  it('the shape is a frozen copy: neither the caller’s array nor the shape itself can change it', () => {
    const shape = [2, 3];
    const t = keep(zeros(shape));
    shape[0] = 7;
    expect(t.shape).toEqual([2, 3]);
    expect(Object.isFrozen(t.shape)).toBe(true);
    expect(() => (t.shape as number[]).push(1)).toThrow(TypeError);
    expect(() => {
      (t.shape as number[])[0] = 9;
    }).toThrow(TypeError);
    expect(t.shape).toEqual([2, 3]);
    expect(t.size).toBe(6);
  });

  it.skipIf(!info.cuda.usable)("to('cuda') and back round-trips the bits", () => {
    const t = keep(randn([33, 7], { seed }));
    const onGpu = keep(t.to('cuda'));
    expect(onGpu.device).toBe('cuda');
    const back = keep(onGpu.to('cpu'));
    expect(bitwiseEqual(back.toArray(), t.toArray())).toBe(true);
    expect(bitwiseEqual(onGpu.toArray(), t.toArray())).toBe(true);
  });
});

describe('dispose', () => {
  it('use after dispose throws DisposedTensorError naming the use', () => {
    const t = tensor([1, 2, 3]);
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.toArray()).toThrow(DisposedTensorError);
    expect(() => t.toArray()).toThrow(/tensor\.toArray.*after dispose/);
    expect(() => t.to('cpu')).toThrow(DisposedTensorError);
    expect(() => t.device).toThrow(DisposedTensorError);
    // What stays readable: the shape, the size and a description.
    expect(t.shape).toEqual([3]);
    expect(t.size).toBe(3);
    expect(String(t)).toMatch(/disposed/);
  });

  it('an op with a disposed argument throws DisposedTensorError naming the argument', () => {
    const v = keep(randn([3, 4], { seed }));
    const g = keep(randn([3], { seed: seed + 1 }));
    const { w, norm } = ops.weightNorm(v, g);
    keep(w), keep(norm);
    const dw = keep(randn([3, 4], { seed: seed + 2 }));
    const dead = (t: Tensor) => {
      const copy = t.to('cpu');
      copy.dispose();
      return copy;
    };
    expect(() => ops.weightNorm(dead(v), g)).toThrow(DisposedTensorError);
    expect(() => ops.weightNorm(dead(v), g)).toThrow(/weightNorm: v/);
    expect(() => ops.weightNorm(v, dead(g))).toThrow(/weightNorm: g/);
    expect(() => ops.weightNormBackward(dead(dw), v, g, norm)).toThrow(/weightNormBackward: dw/);
    expect(() => ops.weightNormBackward(dw, dead(v), g, norm)).toThrow(/weightNormBackward: v/);
    expect(() => ops.weightNormBackward(dw, v, dead(g), norm)).toThrow(/weightNormBackward: g/);
    expect(() => ops.weightNormBackward(dw, v, g, dead(norm))).toThrow(DisposedTensorError);
    expect(() => ops.weightNormBackward(dw, v, g, dead(norm))).toThrow(/weightNormBackward: norm/);
  });

  it('disposing twice is harmless and frees once', () => {
    const before = memory().cpu;
    const t = tensor([1, 2, 3, 4]);
    expect(memory().cpu.tensors).toBe(before.tensors + 1);
    t.dispose();
    expect(() => t.dispose()).not.toThrow();
    expect(memory().cpu).toEqual(before);
  });

  it('[Symbol.dispose]() disposes', () => {
    const before = memory().cpu;
    const t = tensor([1, 2]);
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
    expect(memory().cpu).toEqual(before);
  });

  it('a `using` declaration disposes at the end of the block', () => {
    const before = memory().cpu;
    let escaped: Tensor | undefined;
    {
      using t = tensor([1, 2, 3]);
      escaped = t;
      expect(memory().cpu.tensors).toBe(before.tensors + 1);
    }
    expect(escaped.disposed).toBe(true);
    expect(memory().cpu).toEqual(before);
  });
});

/**
 * Back at the baseline: the same live tensors, bytes and allocator bytes; the caching allocator may hold more than
 * before (the blocks just freed, small ones included), within its limit.
 */
function expectBaseline(now: ReturnType<typeof memory>, before: ReturnType<typeof memory>): void {
  const { cachedBytes, ...live } = now.cpu;
  const { cachedBytes: cachedBefore, ...liveBefore } = before.cpu;
  expect(live).toEqual(liveBefore);
  expect(cachedBytes!).toBeGreaterThanOrEqual(cachedBefore!);
  expect(cachedBytes!).toBeLessThanOrEqual(now.cpu.cacheLimitBytes!);
  expect(now.cuda).toEqual(before.cuda);
}

describe('memory()', () => {
  it('counts live tensors and their bytes, and returns to the baseline after disposing', () => {
    const before = memory();
    const a = tensor(new Float32Array(10), [2, 5]);
    const b = zeros([3, 7]);
    const c = randn([1000], { seed });
    expect(memory().cpu).toMatchObject({ tensors: before.cpu.tensors + 3, bytes: before.cpu.bytes + 4 * (10 + 21 + 1000) });
    const d = c.to('cpu');
    const empty = zeros([0, 4]);
    expect(memory().cpu).toMatchObject({ tensors: before.cpu.tensors + 5, bytes: before.cpu.bytes + 4 * (10 + 21 + 2000) });
    for (const t of [a, b, c, d, empty]) t.dispose();
    expectBaseline(memory(), before);
  });

  it('exactly: one op makes exactly its outputs, and disposing them restores the counts', () => {
    const v = randn([6, 5], { seed });
    const g = randn([6], { seed: seed + 1 });
    const dw = randn([6, 5], { seed: seed + 2 });
    const base = memory().cpu;
    const { w, norm } = ops.weightNorm(v, g);
    expect(memory().cpu).toMatchObject({ tensors: base.tensors + 2, bytes: base.bytes + 4 * (30 + 6) });
    const { dv, dg } = ops.weightNormBackward(dw, v, g, norm, { fused: false });
    expect(memory().cpu).toMatchObject({ tensors: base.tensors + 4, bytes: base.bytes + 4 * 2 * (30 + 6) });
    for (const t of [w, norm, dv, dg]) t.dispose();
    expectBaseline(memory(), { ...memory(), cpu: base });
    for (const t of [v, g, dw]) t.dispose();
    expect(memory().cpu).toMatchObject({ tensors: base.tensors - 3, bytes: base.bytes - 4 * (30 + 6 + 30) });
  });
});

describe('devices', () => {
  it('backend() describes the cpu and whether cuda is usable (with the reason when not)', () => {
    expect(info.cpu.threads).toBeGreaterThanOrEqual(1);
    expect(typeof info.cuda.compiled).toBe('boolean');
    expect(typeof info.cuda.usable).toBe('boolean');
    if (!info.cuda.usable) expect(info.cuda.reason).toMatch(/\S/);
    if (info.cuda.usable) expect(info.cuda.device?.name).toMatch(/\S/);
  });

  it.skipIf(info.cuda.usable)("'cuda' without a usable GPU: RangeError with the reason, for every way to ask", () => {
    const reason = info.cuda.reason!;
    const host = keep(tensor([1, 2]));
    const attempts: [string, () => unknown][] = [
      ['tensor', () => tensor([1, 2], undefined, { device: 'cuda' })],
      ['zeros', () => zeros([2], { device: 'cuda' })],
      ['randn', () => randn([2], { device: 'cuda' })],
      ['tensor.to', () => host.to('cuda')],
    ];
    const before = memory();
    for (const [where, attempt] of attempts) {
      expect(attempt, where).toThrow(RangeError);
      expect(attempt, where).toThrow(where);
      expect(attempt, where).toThrow(reason);
    }
    expect(memory()).toEqual(before);
  });

  it.skipIf(!info.cuda.usable)('cuda tensors are counted under memory().cuda', () => {
    const before = memory().cuda;
    const t = zeros([256], { device: 'cuda' });
    expect(t.device).toBe('cuda');
    expect(memory().cuda.tensors).toBe(before.tensors + 1);
    expect(memory().cuda.bytes).toBe(before.bytes + 1024);
    t.dispose();
    expect(memory().cuda.tensors).toBe(before.tensors);
    expect(memory().cuda.bytes).toBe(before.bytes);
  });
});
