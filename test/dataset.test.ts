// The dataset type (ts/data/dataset.ts): fromArrays in each input form, get/batch/slice/shuffled, batches as { x, y }
// and [x, y], and evaluate() on a dataset that is not MNIST.
import { describe, expect, it } from 'vitest';

import { data, evaluate, manualSeed, nn } from '../ts/index.js';
import { reproduce, runSeed, uniformGenerator } from './helpers.js';

const seed = runSeed();
const uniform = uniformGenerator(seed);

describe('data.fromArrays and Dataset', () => {
  const rows = Array.from({ length: 10 }, (_, i) => Array.from({ length: 6 }, (_, j) => i * 10 + j));
  const labels = Array.from({ length: 10 }, (_, i) => i % 3);

  it('rows, a flat number[] and a Float32Array with a shape give the same dataset', () => {
    const fromRows = data.fromArrays(rows, labels);
    const flat = data.fromArrays(rows.flat(), Int32Array.from(labels), [2, 3]);
    const typed = data.fromArrays(Float32Array.from(rows.flat()), labels, [6]);
    expect(fromRows.length).toBe(10);
    expect(fromRows.inputShape).toEqual([6]);
    expect(flat.inputShape).toEqual([2, 3]);
    expect(fromRows.inputs).toEqual(flat.inputs);
    expect(typed.labels).toEqual(fromRows.labels);
    expect(fromRows.get(3)).toEqual({ x: Float32Array.from(rows[3]!), y: 0 });
    expect(fromRows.get(-1).y).toBe(labels[9]);
    expect(fromRows).toBeInstanceOf(data.Dataset);
  });

  it('batch, slice and shuffled keep examples and labels together', () => {
    const ds = data.fromArrays(rows, labels);
    const { x, y } = ds.batch([4, 1], { layout: 'flat' });
    expect(x.shape).toEqual([2, 6]);
    expect(Array.from(x.toArray())).toEqual([...rows[4]!, ...rows[1]!]);
    expect(Array.from(y)).toEqual([labels[4], labels[1]]);
    const part = ds.slice(2, 5);
    expect(part.length).toBe(3);
    expect(part.get(0).x).toEqual(Float32Array.from(rows[2]!));
    const shuffled = ds.shuffled(7);
    expect(shuffled.shuffled).toBeDefined();
    expect(shuffled.inputs).not.toEqual(ds.inputs);
    for (let i = 0; i < shuffled.length; i++) {
      const { x: values, y: label } = shuffled.get(i);
      const original = values[0]! / 10;
      expect(label).toBe(labels[original]);
    }
    expect(ds.shuffled(7).inputs).toEqual(shuffled.inputs);
  });

  it(`batches yield { x, y } that also destructure as [x, y], in a seeded order per epoch (${reproduce(seed)})`, () => {
    const n = 23;
    const ds = data.fromArrays(Array.from({ length: n }, (_, i) => [i, uniform()]), Array.from({ length: n }, (_, i) => i));
    const seen: number[] = [];
    for (const { x, y } of ds.batches({ batchSize: 5, seed: 3, epoch: 1 })) {
      const values = x.toArray();
      y.forEach((label, i) => expect(values[i * 2]).toBe(label));
      seen.push(...y);
      x.dispose();
    }
    expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i));
    const again = [...data.batches(ds, { batchSize: 5, seed: 3, epoch: 1 })].flatMap(([, y]) => [...y]);
    expect(again).toEqual(seen);
    const first = data.batches(ds, { batchSize: 4, dropLast: true }).next().value;
    expect(first?.y).toEqual(Int32Array.from([0, 1, 2, 3]));
    expect(first?.[0]).toBe(first?.x);
    expect([...ds.batches({ batchSize: 5, dropLast: true })].length).toBe(4);
  });

  it('evaluate takes any dataset', () => {
    manualSeed(3);
    const ds = data.fromArrays(rows, labels);
    const model = new nn.Linear(6, 3);
    const { loss, accuracy } = evaluate(model, ds, { batchSize: 4 });
    expect(Number.isFinite(loss)).toBe(true);
    expect(accuracy).toBeGreaterThanOrEqual(0);
    expect(accuracy).toBeLessThanOrEqual(1);
  });

  it('bad inputs are errors naming the parameter', () => {
    expect(() => data.fromArrays(rows, [0, 1])).toThrow(/data.fromArrays: inputs: expected 2 rows \(one per label\), received 10/);
    expect(() => data.fromArrays(rows, labels, [5])).toThrow(/inputs\[0\]: expected 5 values/);
    expect(() => data.fromArrays([1, 2, 3], [0, 1])).toThrow(/inputShape/);
    expect(() => data.fromArrays(rows, [...labels.slice(0, 9), -1])).toThrow(/labels: expected non-negative integer class labels, received -1 at position 9/);
    expect(() => data.fromArrays('x' as never, labels)).toThrow(TypeError);
    const ds = data.fromArrays(rows, labels);
    expect(() => ds.get(10)).toThrow(RangeError);
    expect(() => ds.batch([0, 11])).toThrow(/indices: expected integers in \[0, 9\], received 11 at position 1/);
    expect(() => ds.batches({ batchSize: 0 }).next()).toThrow(/options.batchSize/);
  });
});

describe('epoch shuffle seeds', () => {
  // The reference is exact integer arithmetic (BigInt): (seed · 1,000,003 + epoch) mod 2^32.
  const exact = (s: number, epoch: number) => Number((BigInt(s) * 1_000_003n + BigInt(epoch)) % 4294967296n);

  it(`equal (seed · 1,000,003 + epoch) mod 2^32 for every safe-integer seed (${reproduce(seed)})`, () => {
    for (let i = 0; i < 200; i++) {
      const s = Math.floor(uniform() * Number.MAX_SAFE_INTEGER);
      const epoch = Math.floor(uniform() * 1000);
      expect(data.epochSeed(s, epoch)).toBe(exact(s, epoch));
    }
    // The float64 product the batches used before is exact up to 2^53: same orders as before there.
    expect(data.epochSeed(123_456, 7)).toBe((123_456 * 1_000_003 + 7) >>> 0);
  });

  it('give different orders to different epochs of a large seed', () => {
    const large = 2 ** 40 + 12_345;
    const split = data.fromArrays(Array.from({ length: 64 }, (_, i) => [i]), Array.from({ length: 64 }, () => 0));
    const firstInputs = (epoch: number) => [...data.batches(split, { batchSize: 64, seed: large, epoch })][0]!.x.toArray();
    expect(firstInputs(0)).not.toEqual(firstInputs(1));
  });
});
