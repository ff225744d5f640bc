// Classification metrics (ts/metrics.ts) against counts computed here in plain JS from fresh random scores.
import { describe, expect, it } from 'vitest';

import { metrics, tensor } from '../ts/index.js';
import { reproduce, runSeed, uniformGenerator } from './helpers.js';

const seed = runSeed();
const uniform = uniformGenerator(seed);

function randomCase(rows: number, classes: number): { scores: Float32Array; labels: Int32Array } {
  const scores = Float32Array.from({ length: rows * classes }, () => uniform() * 4 - 2);
  const labels = Int32Array.from({ length: rows }, () => Math.floor(uniform() * classes));
  return { scores, labels };
}

/** The rank of the label's score in its row, by the plain definition (classes scoring strictly higher). */
function higherThanLabel(scores: Float32Array, classes: number, row: number, label: number): number {
  let higher = 0;
  for (let c = 0; c < classes; c++) if (scores[row * classes + c]! > scores[row * classes + label]!) higher++;
  return higher;
}

describe('metrics', () => {
  it(`accuracy from logits and from predicted indices agree with a direct count (${reproduce(seed)})`, () => {
    const rows = 50, classes = 7;
    const { scores, labels } = randomCase(rows, classes);
    const logits = tensor(scores, [rows, classes]);
    const expected = Array.from(labels).filter((label, i) => higherThanLabel(scores, classes, i, label) === 0).length / rows;
    expect(metrics.accuracy(logits, labels)).toBe(expected);
    expect(metrics.accuracy(logits, Array.from(labels))).toBe(expected);
    expect(metrics.accuracy(logits, tensor(Float32Array.from(labels), [rows]))).toBe(expected);
    expect(metrics.accuracy(logits, tensor(labels, [rows], { dtype: 'int32' }))).toBe(expected);
    expect(metrics.accuracy([0, 1, 2, 2], [0, 1, 1, 2])).toBe(0.75);
    logits.dispose();
  });

  it('argmax takes the first class on a tie', () => {
    const logits = tensor([1, 3, 3, 0, 0, 0], [2, 3]);
    expect(metrics.accuracy(logits, [1, 0])).toBe(1);
    expect(metrics.confusionMatrix(logits, [1, 0], 3)).toEqual([[1, 0, 0], [0, 1, 0], [0, 0, 0]]);
  });

  it(`topKAccuracy counts the label among the k best (${reproduce(seed)})`, () => {
    const rows = 40, classes = 6;
    const { scores, labels } = randomCase(rows, classes);
    const logits = tensor(scores, [rows, classes]);
    for (const k of [1, 2, 3, classes]) {
      const expected = Array.from(labels).filter((label, i) => higherThanLabel(scores, classes, i, label) < k).length / rows;
      expect(metrics.topKAccuracy(logits, labels, k), `k = ${k}`).toBe(expected);
    }
    expect(metrics.topKAccuracy(logits, labels, 1)).toBe(metrics.accuracy(logits, labels));
    expect(metrics.topKAccuracy(logits, labels, classes)).toBe(1);
    expect(() => metrics.topKAccuracy(logits, labels, 0)).toThrow(RangeError);
    expect(() => metrics.topKAccuracy(logits, labels, classes + 1)).toThrow(/k: expected an integer in \[1, 6\]/);
    logits.dispose();
  });

  it(`confusionMatrix: rows are labels, columns predictions; the diagonal is the correct count (${reproduce(seed)})`, () => {
    const rows = 60, classes = 4;
    const predictions = Int32Array.from({ length: rows }, () => Math.floor(uniform() * classes));
    const labels = Int32Array.from({ length: rows }, () => Math.floor(uniform() * classes));
    const matrix = metrics.confusionMatrix(predictions, labels, classes);
    expect(matrix.flat().reduce((a, b) => a + b, 0)).toBe(rows);
    for (let t = 0; t < classes; t++) {
      for (let p = 0; p < classes; p++) {
        const count = Array.from(labels).filter((label, i) => label === t && predictions[i] === p).length;
        expect(matrix[t]![p]).toBe(count);
      }
    }
    const diagonal = matrix.reduce((sum, row, t) => sum + row[t]!, 0);
    expect(diagonal / rows).toBe(metrics.accuracy(predictions, labels));
    const recall = metrics.perClassAccuracy(matrix);
    recall.forEach((r, t) => expect(r).toBe(matrix[t]![t]! / matrix[t]!.reduce((a, b) => a + b, 0)));
  });

  it('bad arguments name the function, the parameter, what was expected and what came', () => {
    const logits = tensor([0, 1, 2, 3, 4, 5], [2, 3]);
    expect(() => metrics.accuracy(logits, [0])).toThrow(/metrics.accuracy: labels: expected 2 labels/);
    expect(() => metrics.accuracy(logits, [0, 3])).toThrow(/labels: expected class indices in \[0, 2\], received 3 at position 1/);
    expect(() => metrics.accuracy('x' as never, [0])).toThrow(TypeError);
    expect(() => metrics.confusionMatrix([0, 5], [0, 1], 3)).toThrow(/predictions: expected class indices in \[0, 2\], received 5 at position 1/);
    expect(() => metrics.confusionMatrix(logits, [0, 1], 4)).toThrow(/scores for 4 classes/);
    expect(() => metrics.confusionMatrix([0], [0], 0)).toThrow(TypeError);
    logits.dispose();
  });
});
