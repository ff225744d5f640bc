// The data module: the MNIST loader (real digits from the `mnist` package, a deterministic split), seeded shuffled
// batches over any labeled data, and evaluate() over any labeled data.
import { describe, expect, it } from 'vitest';

import { batches, type LabeledData, loadMnist, PIXELS } from '../ts/data/index.js';
import { Module } from '../ts/nn.js';
import type { Tensor } from '../ts/tensor.js';
import { evaluate } from '../ts/train.js';
import { normals, runSeed } from './helpers.js';

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
    // Compared as bytes: a deep toEqual over 1.5 million floats takes minutes on a loaded host.
    const bytes = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
    expect(bytes(a.test.images).equals(bytes(b.test.images)), 'the same seed gives the same images').toBe(true);
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

/** Logits = inputs: evaluate's accuracy and loss then follow from the data alone. */
class Passthrough extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

describe('data and evaluate on labeled data that is not MNIST', () => {
  const seed = runSeed();
  const count = 37;
  const classes = 3;
  const inputs = Float32Array.from(normals(count * classes, seed));
  const labels = Int32Array.from({ length: count }, (_, i) => (i * 7 + seed) % classes);
  const dataset: LabeledData = { inputs, labels, count, inputShape: [classes] };

  it(`batches keep each example's shape and visit every example once (seed ${seed})`, () => {
    const seen: number[] = [];
    for (const [x, y] of batches(dataset, { batchSize: 8, seed: 2, layout: 'image' })) {
      expect(x.shape).toEqual([y.length, classes]);
      const values = x.toArray();
      // Each row is one example's inputs, unchanged: find it in the dataset by its values.
      for (let i = 0; i < y.length; i++) {
        const row = values.subarray(i * classes, (i + 1) * classes);
        const index = Array.from({ length: count }, (_, j) => j).find((j) => row.every((v, c) => v === inputs[j * classes + c]));
        expect(index, `batch row ${i} is an example of the dataset`).toBeDefined();
        expect(y[i]).toBe(labels[index!]);
        seen.push(index!);
      }
      x.dispose();
    }
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: count }, (_, j) => j));
  });

  it('evaluate: accuracy and mean cross-entropy against a float64 reference', () => {
    let correct = 0;
    let loss = 0;
    for (let i = 0; i < count; i++) {
      const row = Array.from(inputs.subarray(i * classes, (i + 1) * classes), Number);
      const max = Math.max(...row);
      if (row.indexOf(max) === labels[i]) correct++;
      loss += Math.log(row.reduce((sum, v) => sum + Math.exp(v - max), 0)) + max - row[labels[i]!]!;
    }
    const result = evaluate(new Passthrough(), dataset, { batchSize: 10 });
    expect(result.accuracy).toBe(correct / count);
    // float32 logits and a float32 log-sum-exp per example: a few float32 ulps of the per-example loss.
    expect(result.loss).toBeCloseTo(loss / count, 5);
  });

  it('batches rejects inputs whose length does not match count × inputShape, naming the parameter', () => {
    const short: LabeledData = { ...dataset, inputs: inputs.subarray(1) };
    expect(() => batches(short, { batchSize: 4 }).next()).toThrow(
      new RangeError(`batches: split.inputs: expected count × 3 = ${count * classes} values (inputShape [3]), received ${count * classes - 1} values`),
    );
  });
});
