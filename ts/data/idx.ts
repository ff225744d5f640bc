// The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number (two zero
// bytes, a dtype code, the number of dimensions), each dimension as a big-endian uint32, then the values row-major
// and big-endian. Files may be gzipped (recognized by the gzip magic bytes, not by the name). Everything read is
// validated, and every error names the file.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';

import { typeError } from '../errors.js';
import { Dataset } from './dataset.js';

/** A malformed IDX file (truncated, wrong magic, unexpected dimensions, images and labels that do not match). */
export class IdxFormatError extends Error {
  override name = 'IdxFormatError';
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
  }
}

/** The dtype codes of the format: byte width and how one value is read. */
const DTYPES: Record<number, { name: string; bytes: number; read: (view: DataView, offset: number) => number }> = {
  0x08: { name: 'uint8', bytes: 1, read: (v, o) => v.getUint8(o) },
  0x09: { name: 'int8', bytes: 1, read: (v, o) => v.getInt8(o) },
  0x0b: { name: 'int16', bytes: 2, read: (v, o) => v.getInt16(o, false) },
  0x0c: { name: 'int32', bytes: 4, read: (v, o) => v.getInt32(o, false) },
  0x0d: { name: 'float32', bytes: 4, read: (v, o) => v.getFloat32(o, false) },
  0x0e: { name: 'float64', bytes: 8, read: (v, o) => v.getFloat64(o, false) },
};

export interface IdxArray {
  /** 'uint8', 'int8', 'int16', 'int32', 'float32' or 'float64' (the file's dtype code). */
  dtype: string;
  shape: number[];
  /** The values row-major; uint8 files keep their bytes (no copy, no conversion). */
  values: Uint8Array | Float64Array;
}

const GZIP_MAGIC = [0x1f, 0x8b];

/** The file's bytes, gunzipped when they start with the gzip magic bytes. */
function readBytes(path: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (error) {
    const code = (error as { code?: string }).code;
    throw new Error(`${path}: cannot read the IDX file (${code ?? (error as Error).message})`, { cause: error });
  }
  if (raw.length >= 2 && raw[0] === GZIP_MAGIC[0] && raw[1] === GZIP_MAGIC[1]) {
    try {
      return gunzipSync(raw);
    } catch (error) {
      throw new IdxFormatError(path, `gzip data is corrupt or truncated (${(error as Error).message})`);
    }
  }
  return raw;
}

/** Parses one IDX file (raw or gzipped). */
export function readIdx(path: string): IdxArray {
  if (typeof path !== 'string' || path === '') throw typeError('data.readIdx: path', 'a file path', path);
  const bytes = readBytes(path);
  if (bytes.length < 4) throw new IdxFormatError(path, `truncated: ${bytes.length} bytes, shorter than the 4-byte IDX magic number`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new IdxFormatError(path, `wrong magic number: expected two zero bytes then a dtype code and a rank, got 0x${hex(bytes.subarray(0, 4))} (not an IDX file)`);
  }
  const dtype = DTYPES[bytes[2]!];
  if (!dtype) {
    throw new IdxFormatError(path, `wrong magic number 0x${hex(bytes.subarray(0, 4))}: dtype code 0x${bytes[2]!.toString(16).padStart(2, '0')} is none of 08, 09, 0b, 0c, 0d, 0e`);
  }
  const rank = bytes[3]!;
  if (rank < 1) throw new IdxFormatError(path, 'wrong dims: the magic number says 0 dimensions');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerBytes = 4 + 4 * rank;
  if (bytes.length < headerBytes) {
    throw new IdxFormatError(path, `truncated: ${bytes.length} bytes, shorter than the header (${headerBytes} bytes for ${rank} dimensions)`);
  }
  const shape = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i, false));
  const count = shape.reduce((a, b) => a * b, 1);
  const dataBytes = count * dtype.bytes;
  const present = bytes.length - headerBytes;
  if (present < dataBytes) {
    throw new IdxFormatError(path, `truncated: shape [${shape.join(', ')}] of ${dtype.name} needs ${dataBytes} data bytes, the file has ${present}`);
  }
  if (present > dataBytes) {
    throw new IdxFormatError(path, `${present - dataBytes} bytes after the data of shape [${shape.join(', ')}] of ${dtype.name} (wrong dims?)`);
  }
  if (dtype.bytes === 1 && dtype.name === 'uint8') {
    return { dtype: dtype.name, shape, values: bytes.subarray(headerBytes) };
  }
  const values = new Float64Array(count);
  for (let i = 0; i < count; i++) values[i] = dtype.read(view, headerBytes + i * dtype.bytes);
  return { dtype: dtype.name, shape, values };
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * A Dataset from an images file and a labels file in IDX format (raw or gzipped), such as MNIST's and
 * Fashion-MNIST's. Images [n, rows, cols] become examples of shape [1, rows, cols] (one channel, as loadMnist's);
 * [n, d] become [d]. uint8 pixels are scaled to [0, 1] (divided by 255, as the MNIST digits are); other dtypes keep
 * their values. Labels: one integer per image, [n].
 */
export function loadIdx(imagesPath: string, labelsPath: string): Dataset {
  const where = 'data.loadIdx';
  if (typeof imagesPath !== 'string' || imagesPath === '') throw typeError(`${where}: imagesPath`, 'a file path', imagesPath);
  if (typeof labelsPath !== 'string' || labelsPath === '') throw typeError(`${where}: labelsPath`, 'a file path', labelsPath);
  const images = readIdx(imagesPath);
  const labels = readIdx(labelsPath);
  if (images.shape.length < 2) {
    throw new IdxFormatError(imagesPath, `wrong dims for images: expected [count, ...] with at least 2 dimensions, got [${images.shape.join(', ')}]`);
  }
  if (labels.shape.length !== 1) {
    throw new IdxFormatError(labelsPath, `wrong dims for labels: expected one dimension [count], got [${labels.shape.join(', ')}]`);
  }
  if (labels.dtype === 'float32' || labels.dtype === 'float64') {
    throw new IdxFormatError(labelsPath, `labels must be integers, the file holds ${labels.dtype}`);
  }
  const count = images.shape[0]!;
  if (labels.shape[0] !== count) {
    throw new IdxFormatError(labelsPath, `${labels.shape[0]} labels for ${count} images in ${imagesPath}: the counts must match`);
  }
  const labelValues = Int32Array.from(labels.values);
  const negative = labelValues.findIndex((label) => label < 0);
  if (negative >= 0) throw new IdxFormatError(labelsPath, `label ${labelValues[negative]} at position ${negative} is negative`);
  const inputShape = images.shape.length === 3 ? [1, images.shape[1]!, images.shape[2]!] : images.shape.slice(1);
  const inputs = new Float32Array(images.values.length);
  if (images.dtype === 'uint8') {
    for (let i = 0; i < inputs.length; i++) inputs[i] = images.values[i]! / 255;
  } else {
    inputs.set(images.values);
  }
  return new Dataset(inputs, labelValues, inputShape);
}
