// Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 70,000 28×28 grayscale images of clothing in 10 classes, 60,000 for
// training and 10,000 for testing, the same format and sizes as MNIST. Read from the IDX files of Debian's package
// `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), or from any folder holding the four files.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { rangeError, typeError } from '../errors.js';
import { loadIdx } from './idx.js';
import { IMAGE_SIZE, MnistSplit } from './mnist.js';

/** Where Debian's `dataset-fashion-mnist` puts the files. */
export const FASHION_MNIST_DEBIAN_ROOT = '/usr/share/datasets/fashion-mnist';
/** Overrides the folder when set (the `root` option overrides both). */
export const FASHION_MNIST_ENV = 'WEIGHTNORM_FASHION_MNIST';

/** The class names, by label. */
export const FASHION_MNIST_CLASSES = [
  'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
] as const;

/** A Fashion-MNIST split: a Dataset of [1, 28, 28] images with pixel values in [0, 1], like an MNIST split. */
export class FashionMnistSplit extends MnistSplit {}

export interface FashionMnistOptions {
  /** 'train' (60,000 images) or 'test' (10,000); omit for both. */
  split?: 'train' | 'test';
  /** The folder with the IDX files (default: $WEIGHTNORM_FASHION_MNIST, else Debian's /usr/share/datasets/fashion-mnist). */
  root?: string;
}

const FILES = {
  train: ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte'],
  test: ['t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'],
} as const;

/** The file `name` in `root`, gzipped (as the package ships them) or not. */
function findFile(root: string, name: string): string | null {
  for (const candidate of [`${name}.gz`, name]) {
    const path = join(root, candidate);
    if (existsSync(path)) return path;
  }
  return null;
}

function loadSplit(where: string, root: string, split: 'train' | 'test', defaultRoot: boolean): FashionMnistSplit {
  const [images, labels] = FILES[split].map((name) => {
    const path = findFile(root, name);
    if (path !== null) return path;
    if (defaultRoot) {
      throw new Error(
        `${where}: ${join(root, name)}.gz not found: the images come from Debian's package \`dataset-fashion-mnist\`; ` +
          'install it (`sudo apt-get install dataset-fashion-mnist`), or pass { root } or set ' +
          `${FASHION_MNIST_ENV} to a folder with the four IDX files (gzipped or not)`,
      );
    }
    throw new Error(`${where}: neither ${join(root, name)}.gz nor ${join(root, name)} exists (root ${root})`);
  }) as [string, string];
  const dataset = loadIdx(images, labels);
  const expected = [1, IMAGE_SIZE, IMAGE_SIZE];
  if (dataset.inputShape.join() !== expected.join()) {
    throw new Error(`${where}: ${images} holds images of shape [${dataset.inputShape.slice(1).join(', ')}], Fashion-MNIST's are 28×28`);
  }
  return new FashionMnistSplit(dataset.inputs, dataset.labels, dataset.inputShape);
}

/**
 * Fashion-MNIST's training (60,000) and test (10,000) images as splits of [1, 28, 28] images in [0, 1] (pixel / 255),
 * in the files' order. With `split`, only that split is read.
 */
export function fashionMnist(options: FashionMnistOptions & { split: 'train' | 'test' }): FashionMnistSplit;
export function fashionMnist(options?: FashionMnistOptions): { train: FashionMnistSplit; test: FashionMnistSplit };
export function fashionMnist(options: FashionMnistOptions = {}): FashionMnistSplit | { train: FashionMnistSplit; test: FashionMnistSplit } {
  const where = 'data.fashionMnist';
  if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, "an object like { split: 'train' }", options);
  const { split, root } = options;
  if (split !== undefined && split !== 'train' && split !== 'test') throw rangeError(`${where}: options.split`, "'train' or 'test'", JSON.stringify(split));
  if (root !== undefined && (typeof root !== 'string' || root === '')) throw typeError(`${where}: options.root`, 'a folder path', root);
  const fromEnv = process.env[FASHION_MNIST_ENV];
  const folder = root ?? (fromEnv || FASHION_MNIST_DEBIAN_ROOT);
  const defaultRoot = root === undefined && !fromEnv;
  if (split !== undefined) return loadSplit(where, folder, split, defaultRoot);
  return { train: loadSplit(where, folder, 'train', defaultRoot), test: loadSplit(where, folder, 'test', defaultRoot) };
}
