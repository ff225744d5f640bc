// data.fashionMnist: folder resolution (root option, environment variable, Debian's package path), the error when the
// package is missing, and (where Debian's dataset-fashion-mnist is installed, as .ci/run does) the real files.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';

// Hides Debian's folder from the loader while `hidden.debian` is set, to see the message a machine without the
// package gives on a machine that has it.
const hidden = vi.hoisted(() => ({ debian: false }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const existsSync = (path: import('node:fs').PathLike) =>
    hidden.debian && String(path).startsWith('/usr/share/datasets/fashion-mnist') ? false : fs.existsSync(path);
  return { ...fs, default: { ...fs, existsSync }, existsSync };
});

import { data } from '../ts/index.js';
import { idxBytes, reproduce, runSeed, uniformGenerator, writeFashionMnistFolder } from './helpers.js';

const seed = runSeed();
const uniform = uniformGenerator(seed);
const dir = mkdtempSync(join(tmpdir(), 'weightnorm-fashion-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const savedEnv = process.env[data.FASHION_MNIST_ENV];
afterEach(() => {
  if (savedEnv === undefined) delete process.env[data.FASHION_MNIST_ENV];
  else process.env[data.FASHION_MNIST_ENV] = savedEnv;
});

/** A folder with the four files of a tiny Fashion-MNIST (28×28 images), gzipped or not. */
function fakeRoot(name: string, counts: { train: number; test: number }, gzip: boolean) {
  const root = join(dir, name);
  return { root, made: writeFashionMnistFolder(root, counts, uniform, gzip) };
}

describe('data.fashionMnist with a given folder', () => {
  for (const gzip of [true, false]) {
    it(`reads the four ${gzip ? 'gzipped' : 'raw'} files of { root }: MnistSplit-like [1, 28, 28] images in [0, 1]`, () => {
      const { root, made } = fakeRoot(`fake-${gzip}`, { train: 7, test: 3 }, gzip);
      const { train, test } = data.fashionMnist({ root });
      expect(train).toBeInstanceOf(data.FashionMnistSplit);
      expect(train).toBeInstanceOf(data.MnistSplit);
      expect(train.count).toBe(7);
      expect(test.count).toBe(3);
      expect(train.inputShape).toEqual([1, 28, 28]);
      expect(Array.from(test.labels)).toEqual(Array.from(made.test!.labels));
      expect(Array.from(train.images), reproduce(seed)).toEqual(Array.from(made.train!.pixels, (p) => Math.fround(p / 255)));
      const only = data.fashionMnist({ root, split: 'test' });
      expect(only.count).toBe(3);
      expect(Array.from(only.inputs)).toEqual(Array.from(test.inputs));
    });
  }

  it(`$${data.FASHION_MNIST_ENV} names the folder when no root is given; root wins over it`, () => {
    const a = fakeRoot('env-a', { train: 2, test: 1 }, true);
    const b = fakeRoot('env-b', { train: 4, test: 1 }, true);
    process.env[data.FASHION_MNIST_ENV] = a.root;
    expect(data.fashionMnist({ split: 'train' }).count).toBe(2);
    expect(data.fashionMnist({ split: 'train', root: b.root }).count).toBe(4);
  });

  it('missing files in a given folder name the paths; images that are not 28×28 are refused', () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty, { recursive: true });
    expect(() => data.fashionMnist({ root: empty })).toThrow(`data.fashionMnist: neither ${join(empty, 'train-images-idx3-ubyte')}.gz nor`);
    const odd = join(dir, 'odd');
    mkdirSync(odd, { recursive: true });
    writeFileSync(join(odd, 't10k-images-idx3-ubyte'), idxBytes([2, 4, 4], new Uint8Array(32)));
    writeFileSync(join(odd, 't10k-labels-idx1-ubyte'), idxBytes([2], new Uint8Array(2)));
    expect(() => data.fashionMnist({ root: odd, split: 'test' })).toThrow(/holds images of shape \[4, 4\], Fashion-MNIST's are 28×28/);
  });

  it('bad options', () => {
    expect(() => data.fashionMnist({ split: 'validation' as 'train' })).toThrow(RangeError);
    expect(() => data.fashionMnist({ split: 'validation' as 'train' })).toThrow(/data\.fashionMnist: options\.split: expected 'train' or 'test', received "validation"/);
    expect(() => data.fashionMnist({ root: 3 as unknown as string })).toThrow(/data\.fashionMnist: options\.root: expected a folder path/);
    expect(() => data.fashionMnist(null as unknown as object)).toThrow(TypeError);
  });
});

describe("data.fashionMnist from Debian's package", () => {
  const installed = existsSync(join(data.FASHION_MNIST_DEBIAN_ROOT, 'train-images-idx3-ubyte.gz'));

  it('without the package, the error names dataset-fashion-mnist, how to install it, and the overrides', () => {
    delete process.env[data.FASHION_MNIST_ENV];
    hidden.debian = true;
    try {
      expect(() => data.fashionMnist()).toThrow(
        /^data\.fashionMnist: \/usr\/share\/datasets\/fashion-mnist\/train-images-idx3-ubyte\.gz not found: .*`dataset-fashion-mnist`.*`sudo apt-get install dataset-fashion-mnist`.*\{ root \}.*WEIGHTNORM_FASHION_MNIST/,
      );
    } finally {
      hidden.debian = false;
    }
  });

  it.skipIf(!installed)('reads the real files: 60,000 training and 10,000 test images, 10 balanced classes, pixels in [0, 1]', () => {
    // Skipped only where Debian's dataset-fashion-mnist is not installed (.ci/run installs it).
    delete process.env[data.FASHION_MNIST_ENV];
    const { train, test } = data.fashionMnist();
    expect(train.count).toBe(60000);
    expect(test.count).toBe(10000);
    for (const [split, perClass] of [[train, 6000], [test, 1000]] as const) {
      const counts = new Array<number>(10).fill(0);
      for (const label of split.labels) counts[label]! += 1;
      expect(counts).toEqual(new Array(10).fill(perClass));
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of split.inputs) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      expect(lo).toBe(0);
      expect(hi).toBe(1);
    }
    expect(data.FASHION_MNIST_CLASSES[train.labels[0]!]).toBe('Ankle boot'); // the first training image is a boot
  });
});

describe('the CLI on Fashion-MNIST', () => {
  const installed = existsSync(join(data.FASHION_MNIST_DEBIAN_ROOT, 'train-images-idx3-ubyte.gz'));
  it.skipIf(!installed)('train --dataset fashion-mnist trains on the clothing images and says so in its log and checkpoint', async () => {
    // Skipped only where Debian's dataset-fashion-mnist is not installed (.ci/run installs it).
    delete process.env[data.FASHION_MNIST_ENV];
    const { runTrain } = await import('../weightnorm-cli/src/commands/train.js');
    const out = join(dir, 'cli-train');
    const lines: string[] = [];
    const log = console.log;
    console.log = (...args: unknown[]) => lines.push(args.join(' '));
    let code: number;
    try {
      code = await runTrain({
        model: 'mlp', norm: 'wn', optimizer: 'adam', momentum: 0, epochs: 1, steps: 4, batch: 50, trainSize: 200, hidden: 16,
        device: 'cpu', seed: 0, threads: 1, out, progress: false, dataset: 'fashion-mnist',
      });
    } finally {
      console.log = log;
    }
    expect(code).toBe(0);
    expect(lines[0]).toContain('Fashion-MNIST: 200 training / 10000 held-out images');
    const written = JSON.parse(readFileSync(join(out, 'log.json'), 'utf8'));
    expect(written.config.dataset).toBe('fashion-mnist');
    expect(written.config.heldOut).toBe(10000);
    expect(written.steps).toHaveLength(4);
  });

  it.skipIf(!installed)('vae --dataset fashion-mnist: the bound on all 10,000 test images improves in a few steps', async () => {
    // Skipped only where Debian's dataset-fashion-mnist is not installed (.ci/run installs it).
    delete process.env[data.FASHION_MNIST_ENV];
    const { runVae } = await import('../weightnorm-cli/src/commands/vae.js');
    const out = join(dir, 'cli-vae');
    const log = console.log;
    console.log = () => {};
    let code: number;
    try {
      code = await runVae({
        norm: 'wn', dataset: 'fashion-mnist', epochs: 1, steps: 4, latent: 2, channels: [2, 4], batch: 50, lr: 2e-3, trainSize: 200,
        block: 2, plainInit: 'default', device: 'cpu', seed: 0, threads: 1, out,
      });
    } finally {
      console.log = log;
    }
    expect(code).toBe(0);
    const report = JSON.parse(readFileSync(join(out, 'vae-fashion-mnist.json'), 'utf8'));
    expect([report.config.dataset, report.config.trainSize, report.config.heldOut]).toEqual(['fashion-mnist', 200, 10000]);
    const [atInit, after] = report.variants[0].heldOut;
    // Four Adamax steps from data-dependent init raised it by 36-50 nats per image for seeds 0-2 (-623…-636 → -583…-600).
    expect(after.elbo).toBeGreaterThan(atInit.elbo);
    expect(after.elbo).toBeLessThan(0); // a bound on log p(x) of binary pixels
  });
});
