// The MNIST loader: real digits from the `mnist` package, a deterministic split, seeded shuffled batches.
import { describe, expect, it } from 'vitest';

import { batches, loadMnist, PIXELS } from '../ts/data/mnist.js';

describe('MNIST loader', () => {
  it('splits the 10,000 digits into disjoint training and held-out sets with valid shapes and labels', () => {
    const { train, test } = loadMnist({ heldOut: 2000, seed: 3 });
    expect(train.count + test.count).toBe(10000);
    expect(test.count).toBe(2000);
    expect(train.images.length).toBe(train.count * PIXELS);
    for (const split of [train, test]) {
      expect(Math.min(...split.labels)).toBe(0);
      expect(Math.max(...split.labels)).toBe(9);
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of split.images) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      expect(lo).toBe(0);
      expect(hi).toBeLessThanOrEqual(1);
      expect(hi).toBeGreaterThan(0.9);
    }
    // Every class is present in both sets in roughly its share (about 1,000 digits per class overall).
    const perClass = Array.from({ length: 10 }, (_, d) => test.labels.filter((l) => l === d).length);
    for (const n of perClass) expect(n).toBeGreaterThan(120);
  });

  it('is deterministic: the same seed gives the same split, another seed another', () => {
    const a = loadMnist({ seed: 11 });
    const b = loadMnist({ seed: 11 });
    const c = loadMnist({ seed: 12 });
    expect(a.test.labels).toEqual(b.test.labels);
    expect(a.test.images).toEqual(b.test.images);
    expect(a.test.labels).not.toEqual(c.test.labels);
  });

  it('batches cover the split once per epoch, shuffled by (seed, epoch), in flat or image layout', () => {
    const { test } = loadMnist({ heldOut: 250, seed: 1 });
    const epoch0 = [...batches(test, { batchSize: 64, seed: 5, epoch: 0 })];
    expect(epoch0.map(([x]) => x.shape[0])).toEqual([64, 64, 64, 58]);
    expect(epoch0[0]![0].shape).toEqual([64, PIXELS]);
    const labels0 = epoch0.flatMap(([, y]) => [...y]);
    expect([...labels0].sort()).toEqual([...test.labels].sort());
    const again = [...batches(test, { batchSize: 64, seed: 5, epoch: 0 })].flatMap(([, y]) => [...y]);
    expect(again).toEqual(labels0);
    const epoch1 = [...batches(test, { batchSize: 64, seed: 5, epoch: 1 })].flatMap(([, y]) => [...y]);
    expect(epoch1).not.toEqual(labels0);
    const [image] = batches(test, { batchSize: 8, layout: 'image', dropLast: true }).next().value!;
    expect(image.shape).toEqual([8, 1, 28, 28]);
    for (const [x] of epoch0) x.dispose();
  });

  it('rejects bad options with clear errors', () => {
    expect(() => loadMnist({ heldOut: 0 })).toThrow(/loadMnist: options.heldOut: expected an integer in \[1, 9999\]/);
    const { test } = loadMnist({ heldOut: 10 });
    expect(() => batches(test, { batchSize: 0 }).next()).toThrow(/batches: options.batchSize/);
  });
});
