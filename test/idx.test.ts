// The IDX reader (ts/data/idx.ts): small files written here, raw and gzipped, with random contents; every kind of
// malformed file gives an IdxFormatError that names the file and says what is wrong.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';

import { data } from '../ts/index.js';
import { reproduce, runSeed, uniformGenerator } from './helpers.js';

const seed = runSeed();
const uniform = uniformGenerator(seed);
const dir = mkdtempSync(join(tmpdir(), 'weightnorm-idx-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const DTYPE_CODES = { uint8: 0x08, int8: 0x09, int16: 0x0b, int32: 0x0c, float32: 0x0d, float64: 0x0e } as const;
type DtypeName = keyof typeof DTYPE_CODES;
const WIDTH: Record<DtypeName, number> = { uint8: 1, int8: 1, int16: 2, int32: 4, float32: 4, float64: 8 };

/** An IDX file's bytes, written independently of the reader (big-endian header and values). */
function idxBytes(dtype: DtypeName, shape: number[], values: ArrayLike<number>): Buffer {
  const header = Buffer.alloc(4 + 4 * shape.length);
  header[2] = DTYPE_CODES[dtype];
  header[3] = shape.length;
  shape.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  const body = Buffer.alloc(values.length * WIDTH[dtype]);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    const o = i * WIDTH[dtype];
    if (dtype === 'uint8') body.writeUInt8(v, o);
    else if (dtype === 'int8') body.writeInt8(v, o);
    else if (dtype === 'int16') body.writeInt16BE(v, o);
    else if (dtype === 'int32') body.writeInt32BE(v, o);
    else if (dtype === 'float32') body.writeFloatBE(v, o);
    else body.writeDoubleBE(v, o);
  }
  return Buffer.concat([header, body]);
}

let fileCounter = 0;
function writeFile(name: string, bytes: Buffer, gzip = false): string {
  const path = join(dir, `${fileCounter++}-${name}${gzip ? '.gz' : ''}`);
  writeFileSync(path, gzip ? gzipSync(bytes) : bytes);
  return path;
}

function randomImages(count: number, rows: number, cols: number): Uint8Array {
  return Uint8Array.from({ length: count * rows * cols }, () => Math.floor(uniform() * 256));
}
function randomLabels(count: number): Uint8Array {
  return Uint8Array.from({ length: count }, () => Math.floor(uniform() * 10));
}

describe('data.loadIdx', () => {
  for (const gzip of [false, true]) {
    it(`reads ${gzip ? 'gzipped' : 'raw'} images and labels: shape [1, rows, cols], pixels / 255, labels as given`, () => {
      const count = 3 + Math.floor(uniform() * 20);
      const rows = 2 + Math.floor(uniform() * 6);
      const cols = 2 + Math.floor(uniform() * 6);
      const pixels = randomImages(count, rows, cols);
      const labels = randomLabels(count);
      const images = writeFile('images', idxBytes('uint8', [count, rows, cols], pixels), gzip);
      const labelFile = writeFile('labels', idxBytes('uint8', [count], labels), gzip);
      const set = data.loadIdx(images, labelFile);
      expect(set).toBeInstanceOf(data.Dataset);
      expect(set.count, reproduce(seed)).toBe(count);
      expect(set.inputShape).toEqual([1, rows, cols]);
      expect(Array.from(set.labels)).toEqual(Array.from(labels));
      expect(Array.from(set.inputs)).toEqual(Array.from(pixels, (p) => Math.fround(p / 255)));
      const last = set.get(-1);
      expect(last.y).toBe(labels[count - 1]);
      expect(Array.from(last.x)).toEqual(Array.from(pixels.subarray((count - 1) * rows * cols), (p) => Math.fround(p / 255)));
    });
  }

  it('the gzip magic bytes decide, not the name: a gzipped file without .gz and a raw one named .gz both read', () => {
    const pixels = randomImages(4, 3, 3);
    const labels = randomLabels(4);
    const gzNoSuffix = join(dir, 'gz-without-suffix');
    writeFileSync(gzNoSuffix, gzipSync(idxBytes('uint8', [4, 3, 3], pixels)));
    const rawWithSuffix = join(dir, 'raw-with-suffix.gz');
    writeFileSync(rawWithSuffix, idxBytes('uint8', [4], labels));
    const set = data.loadIdx(gzNoSuffix, rawWithSuffix);
    expect(Array.from(set.labels)).toEqual(Array.from(labels));
    expect(set.inputs[5]).toBe(Math.fround(pixels[5]! / 255));
  });

  it('every dtype code reads back big-endian values: int8, int16, int32, float32, float64 images keep their values', () => {
    const count = 5;
    const width = 4;
    for (const dtype of ['int8', 'int16', 'int32', 'float32', 'float64'] as const) {
      const values = Array.from({ length: count * width }, () => {
        const u = uniform();
        return dtype === 'int8' ? Math.floor(u * 256) - 128 : dtype === 'int16' ? Math.floor(u * 65536) - 32768
          : dtype === 'int32' ? Math.floor(u * 2 ** 31) - 2 ** 30 : dtype === 'float32' ? Math.fround(u * 10 - 5) : u * 10 - 5;
      });
      const labels = Array.from({ length: count }, (_, i) => i * 1000 + 7);
      const set = data.loadIdx(writeFile(`images-${dtype}`, idxBytes(dtype, [count, width], values)), writeFile('labels-int32', idxBytes('int32', [count], labels)));
      expect(set.inputShape, dtype).toEqual([width]);
      expect(Array.from(set.inputs), `${dtype}, ${reproduce(seed)}`).toEqual(values.map((v) => Math.fround(v)));
      expect(Array.from(set.labels)).toEqual(labels);
      const raw = data.readIdx(writeFile(`raw-${dtype}`, idxBytes(dtype, [count, width], values)));
      expect(raw.dtype).toBe(dtype);
      expect(raw.shape).toEqual([count, width]);
    }
  });
});

describe('data.loadIdx errors name the file and what is wrong', () => {
  const good = () => {
    const images = writeFile('images', idxBytes('uint8', [6, 4, 4], randomImages(6, 4, 4)));
    const labels = writeFile('labels', idxBytes('uint8', [6], randomLabels(6)));
    return { images, labels };
  };
  const expectIdxError = (fn: () => unknown, path: string, pattern: RegExp) => {
    let caught: unknown;
    try {
      fn();
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(data.IdxFormatError);
    const error = caught as InstanceType<typeof data.IdxFormatError>;
    expect(error.path).toBe(path);
    expect(error.message.startsWith(path)).toBe(true);
    expect(error.message).toMatch(pattern);
  };

  for (const gzip of [false, true]) {
    const kind = gzip ? 'gzipped' : 'raw';
    it(`truncated data (${kind})`, () => {
      const full = idxBytes('uint8', [6, 4, 4], randomImages(6, 4, 4));
      const images = writeFile('short-images', full.subarray(0, full.length - 5), gzip);
      expectIdxError(() => data.loadIdx(images, good().labels), images, /truncated: shape \[6, 4, 4\] of uint8 needs 96 data bytes, the file has 91/);
    });
    it(`truncated header (${kind})`, () => {
      const images = writeFile('short-header', idxBytes('uint8', [6, 4, 4], randomImages(6, 4, 4)).subarray(0, 10), gzip);
      expectIdxError(() => data.loadIdx(images, good().labels), images, /truncated: 10 bytes, shorter than the header \(16 bytes for 3 dimensions\)/);
      const tiny = writeFile('tiny', Buffer.from([0, 0]), gzip);
      expectIdxError(() => data.readIdx(tiny), tiny, /truncated: 2 bytes, shorter than the 4-byte IDX magic number/);
    });
    it(`wrong magic number (${kind})`, () => {
      const bytes = idxBytes('uint8', [6], randomLabels(6));
      bytes[0] = 0x50; // e.g. a PNG or text file
      const labels = writeFile('bad-magic', bytes, gzip);
      expectIdxError(() => data.loadIdx(good().images, labels), labels, /wrong magic number: expected two zero bytes.*got 0x5000/);
      const badCode = idxBytes('uint8', [6], randomLabels(6));
      badCode[2] = 0x0a;
      const codeFile = writeFile('bad-code', badCode, gzip);
      expectIdxError(() => data.loadIdx(good().images, codeFile), codeFile, /dtype code 0x0a is none of/);
    });
  }

  it('bytes after the data', () => {
    const images = writeFile('long', Buffer.concat([idxBytes('uint8', [6, 4, 4], randomImages(6, 4, 4)), Buffer.from([1, 2, 3])]));
    expectIdxError(() => data.loadIdx(images, good().labels), images, /3 bytes after the data of shape \[6, 4, 4\]/);
  });

  it('wrong dims: 1-D images, 2-D labels, float labels, zero dimensions', () => {
    const { images, labels } = good();
    const flatImages = writeFile('flat-images', idxBytes('uint8', [6], randomLabels(6)));
    expectIdxError(() => data.loadIdx(flatImages, labels), flatImages, /wrong dims for images: expected \[count, \.\.\.\].*got \[6\]/);
    const squareLabels = writeFile('2d-labels', idxBytes('uint8', [6, 1], randomLabels(6)));
    expectIdxError(() => data.loadIdx(images, squareLabels), squareLabels, /wrong dims for labels: expected one dimension \[count\], got \[6, 1\]/);
    const floatLabels = writeFile('float-labels', idxBytes('float32', [6], [0, 1, 2, 3, 4, 5]));
    expectIdxError(() => data.loadIdx(images, floatLabels), floatLabels, /labels must be integers, the file holds float32/);
    const rankZero = writeFile('rank-zero', Buffer.from([0, 0, 8, 0]));
    expectIdxError(() => data.readIdx(rankZero), rankZero, /wrong dims: the magic number says 0 dimensions/);
  });

  it('labels and images count mismatch', () => {
    const { images } = good();
    const labels = writeFile('seven-labels', idxBytes('uint8', [7], randomLabels(7)));
    expectIdxError(() => data.loadIdx(images, labels), labels, new RegExp(`7 labels for 6 images in ${images.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  });

  it('negative labels', () => {
    const { images } = good();
    const labels = writeFile('negative-labels', idxBytes('int8', [6], [0, 1, 2, -3, 4, 5]));
    expectIdxError(() => data.loadIdx(images, labels), labels, /label -3 at position 3 is negative/);
  });

  it('corrupt gzip data', () => {
    const gz = gzipSync(idxBytes('uint8', [6], randomLabels(6)));
    const labels = join(dir, 'corrupt.gz');
    writeFileSync(labels, gz.subarray(0, gz.length - 8));
    expectIdxError(() => data.loadIdx(good().images, labels), labels, /gzip data is corrupt or truncated/);
  });

  it('a missing file and bad arguments', () => {
    const missing = join(dir, 'no-such-file');
    expect(() => data.loadIdx(missing, good().labels)).toThrow(`${missing}: cannot read the IDX file (ENOENT)`);
    expect(() => data.loadIdx(42 as unknown as string, 'x')).toThrow(TypeError);
    expect(() => data.loadIdx(42 as unknown as string, 'x')).toThrow(/data\.loadIdx: imagesPath: expected a file path, received the number 42/);
    expect(() => data.loadIdx('x', '')).toThrow(/data\.loadIdx: labelsPath/);
  });
});
