// Classification metrics on the host: accuracy, top-k accuracy and the confusion matrix. Each takes either scores
// (a [N, C] tensor of logits or probabilities: the prediction is the highest-scoring class, the first on a tie, as
// argmax does) or the predicted class indices themselves, and the true labels.
import { rangeError, shapeText, typeError } from './errors.js';
import { floatArray, handleOf, Tensor } from './tensor.js';

/** Class indices: a tensor of them, an Int32Array or an array of integers. */
export type ClassIndices = Tensor | Int32Array | readonly number[];

function indicesOf(where: string, value: unknown): ArrayLike<number> {
  if (value instanceof Tensor) {
    handleOf(value, where, 'any');
    if (value.rank !== 1) throw rangeError(where, 'a 1-D tensor of class indices', shapeText(value.shape));
    return value.toArray();
  }
  if (value instanceof Int32Array || Array.isArray(value)) return value as ArrayLike<number>;
  throw typeError(where, 'a Tensor, an Int32Array or an array of class indices', value);
}

function checkIndices(where: string, values: ArrayLike<number>, classes: number | null): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isInteger(v) || v < 0 || (classes !== null && v >= classes)) {
      const range = classes === null ? 'non-negative integers' : `class indices in [0, ${classes - 1}]`;
      throw rangeError(where, range, `${String(v)} at position ${i}`);
    }
  }
}

/** Scores [N, C] as a flat array with their shape. */
function scoresOf(where: string, value: Tensor): { scores: Float32Array; rows: number; classes: number } {
  handleOf(value, where, 'floating');
  if (value.rank !== 2 || value.shape[1] === 0) throw rangeError(where, '[N, C] scores (logits or probabilities) with C >= 1', shapeText(value.shape));
  return { scores: floatArray(value, where), rows: value.shape[0]!, classes: value.shape[1]! };
}

/** The predicted classes: the argmax of each row of scores, or the given indices. */
function predictionsOf(where: string, value: unknown): { predictions: ArrayLike<number>; classes: number | null } {
  if (value instanceof Tensor && value.rank === 2) {
    const { scores, rows, classes } = scoresOf(where, value);
    const predictions = new Int32Array(rows);
    for (let i = 0; i < rows; i++) {
      let best = 0;
      for (let c = 1; c < classes; c++) if (scores[i * classes + c]! > scores[i * classes + best]!) best = c;
      predictions[i] = best;
    }
    return { predictions, classes };
  }
  const predictions = indicesOf(where, value);
  checkIndices(where, predictions, null);
  return { predictions, classes: null };
}

function labelsFor(where: string, labels: unknown, count: number, classes: number | null): ArrayLike<number> {
  const values = indicesOf(`${where}: labels`, labels);
  if (values.length !== count) throw rangeError(`${where}: labels`, `${count} labels (one per prediction)`, `${values.length}`);
  checkIndices(`${where}: labels`, values, classes);
  return values;
}

/**
 * The fraction of examples whose predicted class equals the label: predictions as [N, C] scores (argmax) or N
 * class indices. 0 examples give NaN.
 */
export function accuracy(predictions: ClassIndices, labels: ClassIndices): number {
  const where = 'metrics.accuracy';
  const { predictions: predicted, classes } = predictionsOf(`${where}: predictions`, predictions);
  const truth = labelsFor(where, labels, predicted.length, classes);
  let correct = 0;
  for (let i = 0; i < predicted.length; i++) if (predicted[i] === truth[i]) correct++;
  return correct / predicted.length;
}

/**
 * The fraction of examples whose label is among the k highest scores of its row of logits [N, C]: counted when
 * fewer than k classes score strictly higher than the label (a tie with the k-th score counts as a hit).
 */
export function topKAccuracy(logits: Tensor, labels: ClassIndices, k: number): number {
  const where = 'metrics.topKAccuracy';
  if (!(logits instanceof Tensor)) throw typeError(`${where}: logits`, 'a [N, C] Tensor of scores', logits);
  const { scores, rows, classes } = scoresOf(`${where}: logits`, logits);
  if (!Number.isInteger(k) || k < 1 || k > classes) throw rangeError(`${where}: k`, `an integer in [1, ${classes}] (the number of classes)`, String(k));
  const truth = labelsFor(where, labels, rows, classes);
  let hits = 0;
  for (let i = 0; i < rows; i++) {
    const labelScore = scores[i * classes + truth[i]!]!;
    let higher = 0;
    for (let c = 0; c < classes; c++) if (scores[i * classes + c]! > labelScore) higher++;
    if (higher < k) hits++;
  }
  return hits / rows;
}

/**
 * counts[t][p]: how many examples of true class t were predicted as class p (rows: labels, columns: predictions,
 * as scikit-learn orders them). predictions as [N, C] scores (argmax) or N class indices.
 */
export function confusionMatrix(predictions: ClassIndices, labels: ClassIndices, numClasses: number): number[][] {
  const where = 'metrics.confusionMatrix';
  if (!Number.isInteger(numClasses) || numClasses < 1) throw typeError(`${where}: numClasses`, 'an integer >= 1', numClasses);
  const { predictions: predicted, classes } = predictionsOf(`${where}: predictions`, predictions);
  if (classes !== null && classes !== numClasses) {
    throw rangeError(`${where}: predictions`, `scores for ${numClasses} classes (numClasses)`, `${classes} columns`);
  }
  checkIndices(`${where}: predictions`, predicted, numClasses);
  const truth = labelsFor(where, labels, predicted.length, numClasses);
  const counts = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  for (let i = 0; i < predicted.length; i++) counts[truth[i]!]![predicted[i]!]! += 1;
  return counts;
}

/** Per class, the fraction of its examples predicted correctly (recall): diagonal / row sum; NaN for an absent class. */
export function perClassAccuracy(matrix: readonly (readonly number[])[]): number[] {
  if (!Array.isArray(matrix) || matrix.some((row) => !Array.isArray(row) || row.length !== matrix.length)) {
    throw typeError('metrics.perClassAccuracy: matrix', 'a square confusion matrix (number[][])', matrix);
  }
  return matrix.map((row, t) => row[t]! / row.reduce((a: number, b: number) => a + b, 0));
}
