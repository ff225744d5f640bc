// batches(split, { prefetch: true }): the worker thread gives byte for byte the batches, in the same order, that
// batches() gives without it (seeded and in order, flat and image layouts, dropLast or not, several epochs), and
// the worker is gone after a loop ends, breaks or throws.
import { describe, expect, it } from 'vitest';

import { data, type Tensor } from '../ts/index.js';
import { livePrefetchWorkers } from '../ts/data/prefetch.js';
import { reproduce, runSeed, uniformGenerator } from './helpers.js';

const seed = runSeed();
const uniform = uniformGenerator(seed);

function randomDataset(count: number, shape: number[]): data.Dataset {
  const size = shape.reduce((a, b) => a * b, 1);
  // Arbitrary float32 bit patterns (signs, tiny and huge magnitudes): a value-changing copy would show.
  const bits = Uint32Array.from({ length: count * size }, () => (uniform() * 2 ** 32) >>> 0 & 0xbfffffff);
  const inputs = new Float32Array(bits.buffer);
  const labels = Int32Array.from({ length: count }, () => Math.floor(uniform() * 10));
  return new data.Dataset(inputs, labels, shape);
}

function collect(iterator: Iterable<data.Batch>): { shape: number[]; bytes: Buffer; labels: number[] }[] {
  const out: { shape: number[]; bytes: Buffer; labels: number[] }[] = [];
  for (const { x, y } of iterator) {
    const values = x.toArray() as Float32Array;
    out.push({ shape: [...x.shape], bytes: Buffer.from(values.buffer, values.byteOffset, values.byteLength), labels: Array.from(y) });
    x.dispose();
  }
  return out;
}

async function workersGone(): Promise<number> {
  for (let i = 0; i < 200 && livePrefetchWorkers() > 0; i++) await new Promise((r) => setTimeout(r, 25));
  return livePrefetchWorkers();
}

describe('batches with prefetch', () => {
  const cases = [
    { count: 103, shape: [1, 4, 5], batchSize: 10, seed: 7, epoch: 0, layout: 'image', dropLast: false },
    { count: 103, shape: [1, 4, 5], batchSize: 10, seed: 7, epoch: 3, layout: 'flat', dropLast: true },
    { count: 64, shape: [12], batchSize: 16, seed: undefined, epoch: 0, layout: 'flat', dropLast: false },
    { count: 9, shape: [3, 2], batchSize: 32, seed: 1, epoch: 1, layout: 'image', dropLast: false },
    { count: 9, shape: [3, 2], batchSize: 32, seed: 1, epoch: 1, layout: 'flat', dropLast: true },
  ] as const;
  for (const c of cases) {
    it(`gives the byte-identical batch sequence: ${JSON.stringify(c)}`, async () => {
      const set = randomDataset(c.count, [...c.shape]);
      const options = { batchSize: c.batchSize, seed: c.seed, epoch: c.epoch, layout: c.layout, dropLast: c.dropLast };
      const plain = collect(data.batches(set, options));
      const prefetched = collect(data.batches(set, { ...options, prefetch: true }));
      expect(prefetched.length, reproduce(seed)).toBe(plain.length);
      prefetched.forEach((b, i) => {
        expect(b.shape).toEqual(plain[i]!.shape);
        expect(b.labels, `batch ${i}`).toEqual(plain[i]!.labels);
        expect(b.bytes.equals(plain[i]!.bytes), `batch ${i}: bytes differ (${reproduce(seed)})`).toBe(true);
      });
      expect(await workersGone()).toBe(0);
    });
  }

  it('Dataset.batches takes the option too, and a plain LabeledData object works', () => {
    const set = randomDataset(50, [6]);
    const plainObject = { inputs: set.inputs, labels: set.labels, count: set.count, inputShape: set.inputShape };
    const a = collect(set.batches({ batchSize: 8, seed: 3, prefetch: true }));
    const b = collect(data.batches(plainObject, { batchSize: 8, seed: 3, prefetch: true }));
    const c = collect(data.batches(plainObject, { batchSize: 8, seed: 3 }));
    expect(a.map((x) => x.bytes.toString('hex'))).toEqual(c.map((x) => x.bytes.toString('hex')));
    expect(b.map((x) => x.labels)).toEqual(c.map((x) => x.labels));
  });

  it('two prefetching loops at once, interleaved, each get their own batches', () => {
    const set = randomDataset(40, [5]);
    const one = data.batches(set, { batchSize: 4, seed: 1, prefetch: true });
    const two = data.batches(set, { batchSize: 4, seed: 2, prefetch: true });
    const got1: number[][] = [];
    const got2: number[][] = [];
    for (;;) {
      const a = one.next();
      const b = two.next();
      if (a.done || b.done) {
        expect(a.done && b.done).toBe(true);
        break;
      }
      got1.push(Array.from(a.value.y));
      got2.push(Array.from(b.value.y));
      a.value.x.dispose();
      b.value.x.dispose();
    }
    expect(got1).toEqual(collect(data.batches(set, { batchSize: 4, seed: 1 })).map((x) => x.labels));
    expect(got2).toEqual(collect(data.batches(set, { batchSize: 4, seed: 2 })).map((x) => x.labels));
  });

  it('the worker exits after a break and after an exception in the loop body', async () => {
    const set = randomDataset(200, [8]);
    let seen = 0;
    for (const { x } of data.batches(set, { batchSize: 10, seed: 5, prefetch: true })) {
      x.dispose();
      if (++seen === 2) break;
    }
    expect(seen).toBe(2);
    expect(await workersGone()).toBe(0);
    expect(() => {
      for (const { x } of data.batches(set, { batchSize: 10, seed: 5, prefetch: true })) {
        x.dispose();
        throw new Error('planted failure in the training step');
      }
    }).toThrow('planted failure');
    expect(await workersGone()).toBe(0);
  });

  it('an empty dataset gives no batches and starts no worker; a non-boolean prefetch is a TypeError', () => {
    const empty = new data.Dataset(new Float32Array(0), new Int32Array(0), [3]);
    expect([...data.batches(empty, { batchSize: 4, prefetch: true })]).toEqual([]);
    expect(livePrefetchWorkers()).toBe(0);
    expect(() => [...data.batches(empty, { batchSize: 4, prefetch: 'yes' as unknown as boolean })]).toThrow(
      /batches: options\.prefetch: expected a boolean, received the string "yes"/,
    );
  });

  it('batches made while the loop trains are independent tensors (disposing one leaves the next intact)', () => {
    const set = randomDataset(30, [4]);
    const kept: Tensor[] = [];
    for (const { x } of data.batches(set, { batchSize: 10, prefetch: true })) kept.push(x);
    kept[0]!.dispose();
    expect(Array.from(kept[1]!.toArray() as Float32Array)).toEqual(Array.from(set.inputs.subarray(40, 80)));
    kept.slice(1).forEach((x) => x.dispose());
  });
});
