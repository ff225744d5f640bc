// Shared by the suites: the run's random seed, a small seeded generator, the error measure, and a tiny
// Fashion-MNIST folder.
import { randomInt } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

/**
 * The seed random inputs are drawn from: fresh each run, or WEIGHTNORM_TEST_SEED to reproduce a failure. Every
 * failure message that depends on random data names it.
 */
export function runSeed(): number {
  const fixed = process.env.WEIGHTNORM_TEST_SEED;
  if (fixed !== undefined && fixed !== '') {
    const seed = Number(fixed);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`WEIGHTNORM_TEST_SEED=${fixed}: expected a non-negative integer`);
    return seed;
  }
  return randomInt(0, 2 ** 40);
}

export function reproduce(seed: number): string {
  return `rerun with WEIGHTNORM_TEST_SEED=${seed}`;
}

/** Seeded uniform generator in [0, 1) (mulberry32); for the reference's own tests, which must not use the library. */
export function uniformGenerator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n standard normal samples (Box-Muller) from a seeded generator, as float64. */
export function normals(n: number, seed: number): Float64Array {
  const uniform = uniformGenerator(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(1 - uniform()));
    const angle = 2 * Math.PI * uniform();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < n) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}

export function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]!));
  return m;
}

/**
 * max |got − ref| / scale, with scale defaulting to max|ref| (an absolute error when the reference is all zero).
 * NaN anywhere in `got` gives Infinity, so a NaN can never pass a tolerance.
 */
export function relativeError(got: ArrayLike<number>, ref: ArrayLike<number>, scale = maxAbs(ref)): number {
  if (got.length !== ref.length) throw new RangeError(`length ${got.length} vs reference ${ref.length}`);
  const denominator = scale > 0 ? scale : 1;
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    const error = Math.abs(got[i]! - ref[i]!);
    if (Number.isNaN(error)) return Infinity;
    worst = Math.max(worst, error / denominator);
  }
  return worst;
}

/** Whether two float32 arrays hold the same bits (NaN payloads included; +0 and -0 differ). */
export function bitwiseEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** Index of the first differing bit pattern, or -1. */
export function firstBitDifference(a: Float32Array, b: Float32Array): number {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return i;
  return x.length === y.length ? -1 : Math.min(x.length, y.length);
}

export function shapeName(shape: readonly number[], dim: number | null): string {
  return `[${shape.join(', ')}] dim ${dim === null ? 'null' : dim}`;
}

/** An IDX file (MNIST's format) of unsigned bytes: magic 0x0000080n, the n dimensions, then the values. */
export function idxBytes(shape: number[], values: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * shape.length);
  header[2] = 0x08;
  header[3] = shape.length;
  shape.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(values)]);
}

/**
 * A folder `root` (made anew) holding the four files of a tiny Fashion-MNIST, 28×28 images of random pixels and
 * random labels from `uniform`, gzipped or not; returns what was written, per split.
 */
export function writeFashionMnistFolder(
  root: string,
  counts: { train: number; test: number },
  uniform: () => number,
  gzip = true,
): Record<'train' | 'test', { pixels: Uint8Array; labels: Uint8Array }> {
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const made = {} as Record<'train' | 'test', { pixels: Uint8Array; labels: Uint8Array }>;
  for (const [split, prefix] of [['train', 'train'], ['test', 't10k']] as const) {
    const n = counts[split];
    const pixels = Uint8Array.from({ length: n * 784 }, () => Math.floor(uniform() * 256));
    const labels = Uint8Array.from({ length: n }, () => Math.floor(uniform() * 10));
    const write = (file: string, bytes: Buffer) => writeFileSync(join(root, gzip ? `${file}.gz` : file), gzip ? gzipSync(bytes) : bytes);
    write(`${prefix}-images-idx3-ubyte`, idxBytes([n, 28, 28], pixels));
    write(`${prefix}-labels-idx1-ubyte`, idxBytes([n], labels));
    made[split] = { pixels, labels };
  }
  return made;
}
