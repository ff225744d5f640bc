// The dataset type: N examples of one shape as one float32 array plus N integer labels, with seeded shuffles and
// minibatches as tensors. data.fromArrays builds one from plain arrays; loadMnist returns one; batches() and
// evaluate() take any LabeledData (this class or a plain object of the same fields).
import { rangeError, shapeText, typeError } from '../errors.js';
import { tensor, type Device, type Tensor } from '../tensor.js';
import { prefetchedBatches } from './prefetch.js';

export interface LabeledData {
  /** count × (product of inputShape) values, example after example (row-major). */
  readonly inputs: Float32Array;
  /** count integer class labels. */
  readonly labels: Int32Array;
  readonly count: number;
  /** The shape of one example, e.g. [1, 28, 28] for a grayscale image; [n] for a plain feature vector. */
  readonly inputShape: readonly number[];
}

/**
 * One minibatch: `{ x, y }` (inputs [batch, ...], labels), also destructurable as `[x, y]`. x is a new tensor:
 * dispose it (or use tidy()).
 */
export type Batch = [Tensor, Int32Array] & { readonly x: Tensor; readonly y: Int32Array };

/** batches()'s iterator: `.next().value` is a Batch (or undefined once done), never `any`. */
export type BatchIterator = Generator<Batch, undefined, undefined>;

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
  /**
   * Gather each next batch's host arrays in a worker thread while this one trains (default false): the same batches
   * in the same order, byte for byte. See ./prefetch.ts.
   */
  prefetch?: boolean;
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

/**
 * The shuffle seed of one epoch: (seed · 1,000,003 + epoch) modulo 2^32, the low 32 bits that shuffler() keeps,
 * computed exactly for every safe-integer seed. Written as a float64 product it lost the epoch to rounding once the
 * product passed 2^53 (seeds above about 9·10^9), and every epoch then had the same order.
 */
export function epochSeed(seed: number, epoch: number): number {
  const low = seed % 4294967296;
  return (Math.imul(low, 1_000_003) + epoch) >>> 0;
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

function exampleSizeOf(split: LabeledData): number {
  return split.inputShape.reduce((product, n) => product * n, 1);
}

function makeBatch(x: Tensor, y: Int32Array): Batch {
  return Object.assign([x, y] as [Tensor, Int32Array], { x, y });
}

/** The examples at `indices` as one batch: inputs [indices.length, ...] on `device` and their labels. */
function gatherBatch(split: LabeledData, indices: ArrayLike<number>, device: Device, layout: 'flat' | 'image'): Batch {
  const exampleSize = exampleSizeOf(split);
  const size = indices.length;
  const inputs = new Float32Array(size * exampleSize);
  const labels = new Int32Array(size);
  for (let i = 0; i < size; i++) {
    const index = indices[i]!;
    inputs.set(split.inputs.subarray(index * exampleSize, (index + 1) * exampleSize), i * exampleSize);
    labels[i] = split.labels[index]!;
  }
  const shape = layout === 'image' ? [size, ...split.inputShape] : [size, exampleSize];
  return makeBatch(tensor(inputs, shape, { device }), labels);
}

function checkBatchOptions(where: string, options: BatchOptions): Required<Omit<BatchOptions, 'seed'>> & { seed: number | undefined } {
  if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object like { batchSize }', options);
  const { batchSize, seed, epoch = 0, device = 'cpu', layout = 'flat', dropLast = false, prefetch = false } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw typeError(`${where}: options.batchSize`, 'an integer >= 1', batchSize);
  if (seed !== undefined && (!Number.isSafeInteger(seed) || seed < 0)) throw typeError(`${where}: options.seed`, 'a non-negative integer', seed);
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw typeError(`${where}: options.epoch`, 'a non-negative integer', epoch);
  if (layout !== 'flat' && layout !== 'image') throw typeError(`${where}: options.layout`, "'flat' or 'image'", layout);
  if (typeof prefetch !== 'boolean') throw typeError(`${where}: options.prefetch`, 'a boolean', prefetch);
  return { batchSize, seed, epoch, device, layout, dropLast, prefetch };
}

/**
 * Batches of { x, y } (also [x, y]) over any labeled data, in order or in a seeded shuffle per epoch. Each x is a
 * new tensor: dispose it (or use tidy()).
 */
export function* batches(split: LabeledData, options: BatchOptions): BatchIterator {
  const where = 'batches';
  const { batchSize, seed, epoch, device, layout, dropLast, prefetch } = checkBatchOptions(where, options);
  const exampleSize = exampleSizeOf(split);
  if (split.inputs.length !== split.count * exampleSize) {
    throw rangeError(`${where}: split.inputs`, `count × ${exampleSize} = ${split.count * exampleSize} values (inputShape [${split.inputShape.join(', ')}])`, `${split.inputs.length} values`);
  }
  const order = seed === undefined ? Int32Array.from({ length: split.count }, (_, i) => i) : permutation(split.count, epochSeed(seed, epoch));
  if (prefetch) {
    const batchCount = dropLast ? Math.floor(split.count / batchSize) : Math.ceil(split.count / batchSize);
    yield* prefetchedBatches({ split, order, exampleSize, batchSize, batchCount, device, layout, makeBatch });
    return undefined;
  }
  for (let start = 0; start < split.count; start += batchSize) {
    const size = Math.min(batchSize, split.count - start);
    if (dropLast && size < batchSize) return undefined;
    yield gatherBatch(split, order.subarray(start, start + size), device, layout);
  }
  return undefined;
}

/** One example: its input values (a view, inputShape row-major) and its label. */
export interface Example {
  x: Float32Array;
  y: number;
}

/**
 * A labeled dataset: `inputs` holds `count` examples of `inputShape` (float32, row-major), `labels` their classes.
 * Views and shuffles share or copy the arrays as their docs say; nothing here touches a device until a batch is made.
 */
export class Dataset implements LabeledData {
  readonly inputs: Float32Array;
  readonly labels: Int32Array;
  readonly count: number;
  readonly inputShape: readonly number[];

  constructor(inputs: Float32Array, labels: Int32Array, inputShape: readonly number[]) {
    const where = 'data.Dataset';
    if (!(inputs instanceof Float32Array)) throw typeError(`${where}: inputs`, 'a Float32Array', inputs);
    if (!(labels instanceof Int32Array)) throw typeError(`${where}: labels`, 'an Int32Array', labels);
    checkShape(where, inputShape);
    const exampleSize = inputShape.reduce((a, b) => a * b, 1);
    if (inputs.length !== labels.length * exampleSize) {
      throw rangeError(`${where}: inputs`, `${labels.length} examples (one per label) × ${exampleSize} values (inputShape ${shapeText(inputShape)})`, `${inputs.length} values`);
    }
    checkLabels(`${where}: labels`, labels);
    this.inputs = inputs;
    this.labels = labels;
    this.count = labels.length;
    this.inputShape = [...inputShape];
  }

  /** The number of examples. */
  get length(): number {
    return this.count;
  }

  /** Example `index` (negative counts from the end): its input values (a view, not a copy) and label. */
  get(index: number): Example {
    const i = index < 0 ? this.count + index : index;
    if (!Number.isInteger(index) || i < 0 || i >= this.count) throw rangeError('data.Dataset.get: index', `an integer in [${-this.count}, ${this.count - 1}]`, String(index));
    const size = exampleSizeOf(this);
    return { x: this.inputs.subarray(i * size, (i + 1) * size), y: this.labels[i]! };
  }

  /** The examples at `indices` as one batch (a new tensor x on `device`). */
  batch(indices: ArrayLike<number>, options: { device?: Device; layout?: 'flat' | 'image' } = {}): Batch {
    const where = 'data.Dataset.batch';
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k]!;
      if (!Number.isInteger(i) || i < 0 || i >= this.count) throw rangeError(`${where}: indices`, `integers in [0, ${this.count - 1}]`, `${String(i)} at position ${k}`);
    }
    return gatherBatch(this, indices, options.device ?? 'cpu', options.layout ?? 'flat');
  }

  /** Examples [start, end) as a dataset of the same type sharing this one's memory (no copy). */
  slice(start = 0, end = this.count): this {
    const s = Math.max(0, Math.min(this.count, start < 0 ? this.count + start : start));
    const e = Math.max(s, Math.min(this.count, end < 0 ? this.count + end : end));
    const size = exampleSizeOf(this);
    return this.derive(this.inputs.subarray(s * size, e * size), this.labels.subarray(s, e));
  }

  /** A copy with the examples in a seeded random order (the same seed gives the same order everywhere). */
  shuffled(seed: number): this {
    if (!Number.isSafeInteger(seed) || seed < 0) throw typeError('data.Dataset.shuffled: seed', 'a non-negative integer', seed);
    const order = permutation(this.count, seed);
    const size = exampleSizeOf(this);
    const inputs = new Float32Array(this.inputs.length);
    const labels = new Int32Array(this.count);
    order.forEach((from, to) => {
      inputs.set(this.inputs.subarray(from * size, (from + 1) * size), to * size);
      labels[to] = this.labels[from]!;
    });
    return this.derive(inputs, labels);
  }

  /** Minibatches over this dataset: see batches(). */
  batches(options: BatchOptions): BatchIterator {
    return batches(this, options);
  }

  /** A dataset of this class over other arrays of the same example shape. */
  protected derive(inputs: Float32Array, labels: Int32Array): this {
    const make = this.constructor as new (inputs: Float32Array, labels: Int32Array, inputShape: readonly number[]) => this;
    return new make(inputs, labels, this.inputShape);
  }
}

function checkShape(where: string, shape: unknown): void {
  if (!Array.isArray(shape) || shape.length === 0 || shape.some((d) => !Number.isSafeInteger(d) || d < 1)) {
    throw typeError(`${where}: inputShape`, 'the shape of one example, positive integers like [784] or [1, 28, 28]', shape);
  }
}

function checkLabels(where: string, labels: ArrayLike<number>): void {
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (!Number.isInteger(label) || label < 0) throw rangeError(where, 'non-negative integer class labels', `${String(label)} at position ${i}`);
  }
}

/**
 * A Dataset from plain arrays. `inputs`: one row per example (number[][], Float32Array[], ...) or all values in
 * one flat array (Float32Array, Float64Array, number[]), example after example. `labels`: one integer class per
 * example. `inputShape`: the shape of one example (default [values per row] for rows; required for flat inputs).
 * The values are copied into float32.
 */
export function fromArrays(
  inputs: Float32Array | Float64Array | readonly number[] | readonly ArrayLike<number>[],
  labels: Int32Array | readonly number[],
  inputShape?: readonly number[],
): Dataset {
  const where = 'data.fromArrays';
  if (!(labels instanceof Int32Array) && !Array.isArray(labels)) throw typeError(`${where}: labels`, 'an Int32Array or an array of integers', labels);
  checkLabels(`${where}: labels`, labels);
  const count = labels.length;
  let flat: Float32Array;
  let shape: readonly number[];
  const isRows = Array.isArray(inputs) && inputs.length > 0 && typeof inputs[0] !== 'number';
  if (isRows) {
    const rows = inputs as readonly ArrayLike<number>[];
    if (rows.length !== count) throw rangeError(`${where}: inputs`, `${count} rows (one per label)`, `${rows.length}`);
    const width = rows[0]!.length;
    shape = inputShape ?? [width];
    checkShape(where, shape);
    const size = shape.reduce((a, b) => a * b, 1);
    flat = new Float32Array(count * size);
    rows.forEach((row, i) => {
      if (row === null || typeof row !== 'object' || row.length !== size) {
        throw rangeError(`${where}: inputs[${i}]`, `${size} values (inputShape ${shapeText(shape)})`, row === null || typeof row !== 'object' ? typeof row : `${row.length}`);
      }
      flat.set(Float32Array.from(row), i * size);
    });
  } else if (inputs instanceof Float32Array || inputs instanceof Float64Array || Array.isArray(inputs)) {
    if (inputShape === undefined) {
      if (count === 0 || inputs.length % count !== 0) {
        throw rangeError(`${where}: inputShape`, 'the shape of one example (required for flat inputs that do not divide evenly)', 'none');
      }
      shape = [inputs.length / count];
    } else {
      shape = inputShape;
    }
    checkShape(where, shape);
    const values = inputs as ArrayLike<number>;
    for (let i = 0; i < values.length; i++) {
      if (typeof values[i] !== 'number') throw typeError(`${where}: inputs[${i}]`, 'a number', values[i]);
    }
    flat = Float32Array.from(values);
  } else {
    throw typeError(`${where}: inputs`, 'a Float32Array, a number[] or an array of rows', inputs);
  }
  return new Dataset(flat, Int32Array.from(labels), shape);
}
