// Labeled datasets as flat float32 arrays, seeded deterministic shuffles, and minibatches as tensors. Nothing here
// is specific to one dataset: loadMnist (./mnist.ts) is one source of LabeledData, and any Float32Array of
// inputs with Int32Array labels is another.
import { rangeError, typeError } from '../errors.js';
import { tensor, type Device, type Tensor } from '../tensor.js';

export { CLASSES, IMAGE_SIZE, loadMnist, PIXELS, type MnistOptions, type MnistSplit } from './mnist.js';

export interface LabeledData {
  /** count × (product of inputShape) values, example after example (row-major). */
  readonly inputs: Float32Array;
  /** count integer class labels. */
  readonly labels: Int32Array;
  readonly count: number;
  /** The shape of one example, e.g. [1, 28, 28] for a grayscale image; [n] for a plain feature vector. */
  readonly inputShape: readonly number[];
}

/** A small seeded generator (mulberry32) for shuffling: deterministic, independent of Math.random. */
export function shuffler(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n: number) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

/** A seeded Fisher-Yates permutation of 0..n-1. */
export function permutation(n: number, seed: number): Int32Array {
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const next = shuffler(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = next(i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

export interface BatchOptions {
  batchSize: number;
  /** Shuffle seed; each epoch gets its own order from (seed, epoch). Omit to keep the split's order. */
  seed?: number;
  epoch?: number;
  device?: Device;
  /** 'flat' gives [batch, inputs per example] (MLPs); 'image' keeps each example's shape, [batch, ...inputShape] (CNNs). */
  layout?: 'flat' | 'image';
  /** Drop a last, smaller batch (default false). */
  dropLast?: boolean;
}

/** Batches of (inputs, labels) over a split. Each inputs tensor is new: dispose it (or use tidy()). */
export function* batches(split: LabeledData, options: BatchOptions): Generator<[Tensor, Int32Array]> {
  const where = 'batches';
  const { batchSize, seed, epoch = 0, device = 'cpu', layout = 'flat', dropLast = false } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw typeError(`${where}: options.batchSize`, 'an integer >= 1', batchSize);
  const exampleSize = split.inputShape.reduce((product, n) => product * n, 1);
  if (split.inputs.length !== split.count * exampleSize) {
    throw rangeError(`${where}: split.inputs`, `count × ${exampleSize} = ${split.count * exampleSize} values (inputShape [${split.inputShape.join(', ')}])`, `${split.inputs.length} values`);
  }
  const order = seed === undefined ? Int32Array.from({ length: split.count }, (_, i) => i) : permutation(split.count, seed * 1_000_003 + epoch);
  for (let start = 0; start < split.count; start += batchSize) {
    const size = Math.min(batchSize, split.count - start);
    if (dropLast && size < batchSize) return;
    const inputs = new Float32Array(size * exampleSize);
    const labels = new Int32Array(size);
    for (let i = 0; i < size; i++) {
      const index = order[start + i]!;
      inputs.set(split.inputs.subarray(index * exampleSize, (index + 1) * exampleSize), i * exampleSize);
      labels[i] = split.labels[index]!;
    }
    const shape = layout === 'image' ? [size, ...split.inputShape] : [size, exampleSize];
    yield [tensor(inputs, shape, { device }), labels];
  }
}
