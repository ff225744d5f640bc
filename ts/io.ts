// Checkpoints and interop in the safetensors format: an 8-byte little-endian header length, a JSON header
// { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__: { string: string } }, then the raw
// little-endian data, offsets counted from the end of the header. Saves are atomic (a temporary file in the same
// directory, fsync, rename over the target, fsync of the directory). Loads check the whole file and everything they
// will load (a key listed twice, NaN or infinite values unless allowNonFinite), and copy it to the target devices,
// before the first tensor of the model changes.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { endianness } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';

import { describe, typeError } from './errors.js';
import { native, type TensorArray } from './native.js';
import { type AnyModule, type HostTensor, type LoadStateDictOptions, Module, type RandomStreamState, type StagedLoad, WeightNormState } from './nn.js';
import { Optimizer, type OptimizerStateDict } from './optim.js';
import { checkDevice, type Device, type DType, handleOf, Tensor } from './tensor.js';

/** A file that cannot be loaded (truncated, corrupted, or not matching the model). Names the file and the key. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
  constructor(
    message: string,
    /** The file, as given. */
    readonly file: string,
    /** The tensor the problem is about, when there is one. */
    readonly key?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A model and the optimizer training it: saved together, a run resumes bit for bit. */
export interface TrainingState {
  model: AnyModule;
  optimizer?: Optimizer;
}

export type Checkpointable = AnyModule | TrainingState | Record<string, Tensor>;

export interface SaveOptions {
  /** Strings stored in the header's __metadata__ (keys starting with 'weightnorm.' are the library's). */
  metadata?: Record<string, string>;
}

export interface LoadOptions {
  /** Where the loaded tensors live. Default 'cpu'. */
  device?: Device;
  /** Check the data against the SHA-256 that save() records (default true; files from elsewhere have none). */
  verifyChecksum?: boolean;
  /** BF16 entries become bfloat16 tensors (exactly) instead of float32 ones (default false). */
  keepBfloat16?: boolean;
  /** Load NaN and infinite values (default false: they are a CheckpointError naming the tensor and position). */
  allowNonFinite?: boolean;
}

export interface LoadIntoOptions extends LoadStateDictOptions {
  verifyChecksum?: boolean;
  allowNonFinite?: boolean;
}

export interface LoadedFile {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

export interface TensorInfo {
  dtype: string;
  shape: number[];
}

const MAX_HEADER_BYTES = 100_000_000; // the reference implementation's limit
const MAX_ELEMENTS = 2 ** 40;
const FORMAT_VERSION = '1';
const META_FORMAT = 'weightnorm.format';
/** SHA-256 of the header as JSON without this key, then the data: any change to what a load would use is caught. */
const META_CHECKSUM = 'weightnorm.sha256';
const META_OPTIMIZER = 'weightnorm.optimizer';
const META_RANDOM = 'weightnorm.random_streams';
const OPTIMIZER_PREFIX = 'optimizer/';

/** Bytes per element of every safetensors dtype; F32 loads as is, F16, BF16 and F64 are converted to float32. */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};
const CONVERTED_DTYPES = ['F16', 'BF16', 'F64'];
const littleEndian = endianness() === 'LE';

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

interface ParsedFile {
  file: string;
  where: string;
  /** Whether decode() lets NaN and infinities through. */
  allowNonFinite: boolean;
  bytes: Uint8Array;
  dataStart: number;
  entries: Entry[];
  metadata: Record<string, string>;
}

const shapeText = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

// ---------------------------------------------------------------------------------------------------------------
// Reading and checking a file.

function readBytes(path: string, where: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new CheckpointError(`${where}: cannot read ${path}: ${(error as Error).message}`, path, undefined, { cause: error });
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null; // not a Map, Date, class instance...
}

/** The same test without narrowing (for typed option objects). */
function isObjectRecord(value: unknown): boolean {
  return isPlainObject(value);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * The first key that appears twice in one object of `text` (valid JSON), with the keys of the objects around it
 * (outermost first), or null. JSON.parse keeps the last of two equal keys without a word; a header that lists a
 * tensor twice means two different things to two readers.
 */
function duplicateKey(text: string): { path: string[]; key: string } | null {
  // One frame per open object (its keys so far and the key whose value is being read) or array (keys null).
  const frames: { keys: Set<string> | null; current: string }[] = [];
  let expectingKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let end = i + 1;
      while (text.charCodeAt(end) !== 0x22) end += text.charCodeAt(end) === 0x5c /* \ */ ? 2 : 1;
      const frame = frames[frames.length - 1];
      if (expectingKey && frame?.keys) {
        // Compared decoded: "\u0077" and "w" are the same key (decoding only keys with escapes keeps this cheap).
        const raw = text.slice(i + 1, end);
        const key = raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw;
        if (frame.keys.has(key)) return { path: frames.slice(0, -1).map((f) => f.current), key };
        frame.keys.add(key);
        frame.current = key;
        expectingKey = false;
      }
      i = end;
    } else if (c === 0x7b /* { */) {
      frames.push({ keys: new Set(), current: '' });
      expectingKey = true;
    } else if (c === 0x5b /* [ */) {
      frames.push({ keys: null, current: '' });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      frames.pop();
    } else if (c === 0x2c /* , */) {
      expectingKey = frames[frames.length - 1]?.keys != null;
    }
  }
  return null;
}

/** Checks the layout of a whole file: header, every entry, and that the tensors tile the data section exactly. */
function parse(bytes: Uint8Array, file: string, where: string, verifyChecksum: boolean, allowNonFinite = false): ParsedFile {
  const fail = (detail: string, key?: string): never => {
    throw new CheckpointError(`${where}: ${file}: ${detail}`, file, key);
  };
  if (bytes.length < 8) fail(`the file is ${bytes.length} bytes, too short for the 8-byte header length (truncated?)`);
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(bytes.length - 8)) {
    fail(`the header length ${headerLength} exceeds the ${bytes.length - 8} bytes after it (truncated, or not a safetensors file)`);
  }
  if (headerLength > BigInt(MAX_HEADER_BYTES)) fail(`the header length ${headerLength} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
  const dataStart = 8 + Number(headerLength);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, dataStart));
  } catch {
    return fail('the header is not valid UTF-8 (corrupted?)');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    return fail(`the header is not valid JSON (corrupted?): ${(error as Error).message}`);
  }
  if (!isPlainObject(header)) return fail(`the header is not a JSON object: found ${describe(header)}`);
  const duplicate = duplicateKey(text);
  if (duplicate) {
    const { path, key } = duplicate;
    const twice = 'is listed more than once in the header (ambiguous: readers differ on which one counts)';
    if (path.length === 0) fail(key === '__metadata__' ? `__metadata__ ${twice}` : `tensor '${key}' ${twice}`, key === '__metadata__' ? undefined : key);
    if (path[0] === '__metadata__') fail(`__metadata__ '${key}' ${twice}`);
    fail(`tensor '${path[0]}': field '${key}' ${twice}`, path[0]);
  }

  let metadata: Record<string, string> = {};
  if ('__metadata__' in header) {
    const raw = header.__metadata__;
    if (!isPlainObject(raw)) fail(`__metadata__ must be an object of strings, found ${describe(raw)}`);
    for (const [key, value] of Object.entries(raw as object)) {
      if (typeof value !== 'string') fail(`__metadata__ '${key}' must be a string, found ${describe(value)}`);
    }
    metadata = raw as Record<string, string>;
  }

  const dataLength = bytes.length - dataStart;
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const at = `tensor '${name}'`;
    if (!isPlainObject(raw)) fail(`${at}: expected { dtype, shape, data_offsets }, found ${describe(raw)}`, name);
    const entry = raw as Record<string, unknown>;
    for (const field of Object.keys(entry)) {
      if (!['dtype', 'shape', 'data_offsets'].includes(field)) fail(`${at}: unknown field '${field}'`, name);
    }
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string') return fail(`${at}: dtype must be a string, found ${describe(dtype)}`, name);
    const elementBytes = DTYPE_BYTES[dtype];
    if (elementBytes === undefined) fail(`${at}: unknown dtype '${dtype}'`, name);
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      return fail(`${at}: shape must be an array of non-negative integers, found ${JSON.stringify(shape)}`, name);
    }
    // A zero dim makes the tensor empty whatever the others are.
    let elements = (shape as number[]).includes(0) ? 0 : 1;
    for (const d of elements === 0 ? [] : (shape as number[])) {
      elements *= d;
      if (elements > MAX_ELEMENTS) fail(`${at}: shape ${shapeText(shape)} has more than 2^40 elements`, name);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      return fail(`${at}: data_offsets must be [begin, end] (non-negative integers), found ${JSON.stringify(offsets)}`, name);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(`${at}: data_offsets [${begin}, ${end}] end before they begin`, name);
    if (end > dataLength) {
      fail(`${at}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataLength} bytes): the file is truncated`, name);
    }
    const expected = elements * elementBytes!;
    if (end - begin !== expected) {
      fail(`${at}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes; shape ${shapeText(shape)} of ${dtype} needs ${expected}`, name);
    }
    entries.push({ name, dtype, shape: shape as number[], begin, end });
  }

  // The tensors must tile the data section: no overlap, no gap, nothing after the last one.
  const ordered = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: Entry | null = null;
  for (const entry of ordered) {
    if (entry.begin < cursor) {
      fail(
        `tensor '${entry.name}' (bytes [${entry.begin}, ${entry.end}]) overlaps tensor '${previous!.name}' ` +
          `(bytes [${previous!.begin}, ${previous!.end}])`,
        entry.name,
      );
    }
    if (entry.begin > cursor) {
      fail(`bytes [${cursor}, ${entry.begin}) of the data section belong to no tensor (before '${entry.name}')`, entry.name);
    }
    cursor = entry.end;
    previous = entry;
  }
  if (cursor !== dataLength) fail(`${dataLength - cursor} bytes follow the last tensor's data (corrupted?)`);

  if (META_FORMAT in metadata && metadata[META_FORMAT] !== FORMAT_VERSION) {
    fail(`${META_FORMAT} is '${metadata[META_FORMAT]}'; this version reads '${FORMAT_VERSION}'`);
  }
  const checksum = metadata[META_CHECKSUM];
  // save() always writes both keys: one without the other means a damaged key name.
  if (verifyChecksum && checksum === undefined && META_FORMAT in metadata) fail(`${META_FORMAT} without ${META_CHECKSUM} (corrupted?)`);
  if (verifyChecksum && checksum !== undefined) {
    const { [META_CHECKSUM]: _, ...rest } = metadata;
    const actual = digest({ ...header, __metadata__: rest }, [bytes.subarray(dataStart)]);
    if (actual !== checksum) fail(`the header and data do not match the SHA-256 in ${META_CHECKSUM} (the file is corrupted)`);
  }
  return { file, where, allowNonFinite, bytes, dataStart, entries, metadata };
}

/** The checksum save() records: SHA-256 of the header (as JSON.stringify writes it, checksum left out) and the data. */
function digest(header: Record<string, unknown>, data: readonly Uint8Array[]): string {
  const hash = createHash('sha256').update(JSON.stringify(header), 'utf8').update(new Uint8Array(1));
  for (const chunk of data) hash.update(chunk);
  return hash.digest('hex');
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** Index of the first NaN or infinity, or -1 (v − v is 0 exactly for finite v). */
function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v - v !== 0) return i;
  }
  return -1;
}

/**
 * An entry's values as float32 (converted from F16, BF16 or F64); other dtypes throw naming the tensor, and so does
 * a NaN or infinity unless the load allows them (an F64 beyond float32's range becomes one).
 */
function decode(parsed: ParsedFile, entry: Entry): Float32Array {
  const values = decodeValues(parsed, entry);
  const bad = parsed.allowNonFinite ? -1 : firstNonFinite(values);
  if (bad >= 0) {
    const raw = parsed.bytes.subarray(parsed.dataStart + entry.begin, parsed.dataStart + entry.end);
    const original = entry.dtype === 'F64' ? new DataView(raw.buffer, raw.byteOffset, raw.byteLength).getFloat64(8 * bad, true) : values[bad]!;
    const what = Number.isFinite(original) ? `${original} (F64) at index ${bad}, beyond float32's range` : `${original} at index ${bad}`;
    throw new CheckpointError(
      `${parsed.where}: ${parsed.file}: tensor '${entry.name}' holds ${what} (allowNonFinite: true loads non-finite values)`,
      parsed.file,
      entry.name,
    );
  }
  return values;
}

function decodeValues(parsed: ParsedFile, entry: Entry): Float32Array {
  const { bytes, dataStart } = parsed;
  const raw = bytes.subarray(dataStart + entry.begin, dataStart + entry.end);
  const count = entry.shape.reduce((a, b) => a * b, 1);
  // new Uint8Array(view) copies (Buffer#slice would not), giving aligned storage of its own.
  if (entry.dtype === 'F32' && littleEndian) return new Float32Array(new Uint8Array(raw).buffer, 0, count);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Float32Array(count);
  switch (entry.dtype) {
    case 'F32':
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      return out;
    case 'F16':
      for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
      return out;
    case 'BF16': {
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
      return out;
    }
    default:
      throw new CheckpointError(
        `${parsed.where}: ${parsed.file}: tensor '${entry.name}' has dtype ${entry.dtype}; only F32 can be loaded ` +
          `(${CONVERTED_DTYPES.join(', ')} are converted to float32)`,
        parsed.file,
        entry.name,
      );
  }
}

function decodeAll(parsed: ParsedFile, entries: readonly Entry[]): Record<string, HostTensor> {
  return Object.fromEntries(entries.map((e) => [e.name, { shape: e.shape, data: decode(parsed, e) }]));
}

// ---------------------------------------------------------------------------------------------------------------
// Writing.

function writeAll(fd: number, data: Uint8Array): void {
  let offset = 0;
  while (offset < data.length) offset += writeSync(fd, data, offset, data.length - offset);
}

/** Temporary file in the target's directory, fsync, rename over the target, fsync of the directory. */
function writeAtomically(path: string, chunks: readonly Uint8Array[], where: string): void {
  const target = resolve(path);
  const directory = dirname(target);
  const temporary = join(directory, `.${basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fd: number;
  try {
    fd = openSync(temporary, 'wx', 0o644);
  } catch (error) {
    throw new CheckpointError(`${where}: cannot write ${path}: ${(error as Error).message}`, path, undefined, { cause: error });
  }
  try {
    try {
      for (const chunk of chunks) writeAll(fd, chunk);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, target);
  } catch (error) {
    try {
      unlinkSync(temporary);
    } catch {
      // Already gone (the rename happened) or never fully created: nothing to clean.
    }
    throw new CheckpointError(`${where}: cannot write ${path}: ${(error as Error).message}`, path, undefined, { cause: error });
  }
  // Makes the rename itself durable. Windows cannot open a directory for fsync; the rename is still atomic there.
  if (process.platform !== 'win32') {
    const dirFd = openSync(directory, 'r');
    try {
      fsyncSync(dirFd);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error; // file systems without directory fsync
    } finally {
      closeSync(dirFd);
    }
  }
}

/** A tensor's host values as a safetensors dtype tag and little-endian bytes: F32, BF16, I32 or BOOL (one byte, 0/1). */
function encodeValues(values: TensorArray, dtype: DType): { tag: string; bytes: Uint8Array } {
  if (values instanceof Float32Array) {
    return dtype === 'bfloat16' ? { tag: 'BF16', bytes: bfloat16Bytes(values) } : { tag: 'F32', bytes: littleEndianBytes(values) };
  }
  if (values instanceof Int32Array) {
    const bytes = new Uint8Array(values.length * 4);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < values.length; i++) view.setInt32(4 * i, values[i]!, true);
    return { tag: 'I32', bytes };
  }
  return { tag: 'BOOL', bytes: Uint8Array.from(values) };
}

/** An I32 or BOOL entry's values, as fromArray takes them for int32 and bool tensors. */
function decodeIntegers(parsed: ParsedFile, entry: Entry): Int32Array | Uint8Array {
  const raw = parsed.bytes.subarray(parsed.dataStart + entry.begin, parsed.dataStart + entry.end);
  if (entry.dtype === 'BOOL') {
    const bad = raw.findIndex((b) => b > 1);
    if (bad >= 0) {
      throw new CheckpointError(`${parsed.where}: ${parsed.file}: BOOL tensor '${entry.name}' holds ${raw[bad]} at index ${bad} (expected 0 or 1)`, parsed.file, entry.name);
    }
    return Uint8Array.from(raw);
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Int32Array(raw.byteLength / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt32(4 * i, true);
  return out;
}

/** Safetensors tags loaded as int32 and bool tensors (by load(); a model's parameters stay float). */
const INTEGER_DTYPES: Record<string, DType> = { I32: 'int32', BOOL: 'bool' };

/** bfloat16 values (as toArray() widens them) as their 2-byte little-endian encodings: the top half of each float32. */
function bfloat16Bytes(values: Float32Array): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  const view = new DataView(out.buffer);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) view.setUint16(2 * i, bits[i]! >>> 16, true);
  return out;
}

function littleEndianBytes(values: Float32Array): Uint8Array {
  if (littleEndian) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((x, i) => view.setFloat32(4 * i, x, true));
  return out;
}

function isTrainingState(value: unknown): value is TrainingState {
  return isPlainObject(value) && value.model instanceof Module;
}

function checkTrainingState(where: string, value: TrainingState): void {
  for (const key of Object.keys(value)) {
    if (key !== 'model' && key !== 'optimizer') throw typeError(`${where}: state`, 'only the keys model, optimizer', key);
  }
  if (value.optimizer !== undefined && !(value.optimizer instanceof Optimizer)) {
    throw typeError(`${where}: state.optimizer`, 'an Optimizer', value.optimizer);
  }
}

/** The model's name of each of the optimizer's parameters. */
function parameterNames(where: string, model: AnyModule, optimizer: Optimizer): string[] {
  const names = new Map<Tensor, string>();
  for (const [name, t] of model.namedParameters()) if (!names.has(t)) names.set(t, name);
  return optimizer.params.map((p, i) => {
    const name = names.get(p);
    if (name === undefined) throw new TypeError(`${where}: the optimizer's parameter ${i} (${p.toString()}) is not a parameter of the model`);
    return name;
  });
}

function checkMetadata(where: string, metadata: unknown): Record<string, string> {
  if (metadata === undefined) return {};
  if (!isPlainObject(metadata)) throw typeError(`${where}: options.metadata`, 'an object of strings', metadata);
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== 'string') throw typeError(`${where}: options.metadata['${key}']`, 'a string', value);
    if (key.startsWith('weightnorm.')) {
      throw new TypeError(`${where}: options.metadata: the key '${key}' is reserved (keys starting with 'weightnorm.')`);
    }
  }
  return metadata as Record<string, string>;
}

/**
 * Writes a model's parameters and buffers (by their names), a { model, optimizer } training state, or a record of
 * tensors to `path` as a safetensors file (F32; BF16 for bfloat16 tensors, bit for bit; I32 and BOOL for int32 and bool ones). Atomic: a crash mid-save leaves the previous file intact.
 * With an optimizer, its state goes under 'optimizer/<parameter name>/<slot>' and its step counts (its own and each
 * parameter's) and lr in the metadata, so loadInto() resumes training bit for bit. Synchronous.
 */
export function save(source: Checkpointable, path: string, options: SaveOptions = {}): void {
  const where = 'io.save';
  if (typeof path !== 'string' || path === '') throw typeError(`${where}: path`, 'a file path', path);
  if (!isPlainObject(options)) throw typeError(`${where}: options`, 'an object like { metadata }', options);
  for (const key of Object.keys(options)) if (key !== 'metadata') throw typeError(`${where}: options`, 'only the key metadata', key);
  const metadata: Record<string, string> = { ...checkMetadata(where, options.metadata) };
  let tensors: [string, Tensor][];

  if (source instanceof Module || isTrainingState(source)) {
    const model = source instanceof Module ? source : source.model;
    const optimizer = source instanceof Module ? undefined : (checkTrainingState(where, source), source.optimizer);
    tensors = Object.entries(model.stateDict());
    const clash = tensors.find(([name]) => name.startsWith(OPTIMIZER_PREFIX));
    if (clash) throw new TypeError(`${where}: the model's tensor '${clash[0]}' uses the reserved prefix '${OPTIMIZER_PREFIX}'`);
    const streams = model.namedRandomStreams();
    if (streams.length > 0) metadata[META_RANDOM] = JSON.stringify(Object.fromEntries(streams));
    if (optimizer) {
      const { state, ...scalars } = optimizer.stateDict(parameterNames(where, model, optimizer));
      metadata[META_OPTIMIZER] = JSON.stringify(scalars);
      for (const [param, slots] of Object.entries(state)) {
        for (const [slot, t] of Object.entries(slots)) tensors.push([`${OPTIMIZER_PREFIX}${param}/${slot}`, t as Tensor]);
      }
    }
  } else if (isPlainObject(source)) {
    tensors = Object.entries(source);
    for (const [name, t] of tensors) {
      if (!(t instanceof Tensor)) throw typeError(`${where}: source['${name}']`, 'a Tensor', t);
      if (name === '' || name === '__metadata__') throw new TypeError(`${where}: source: '${name}' cannot name a tensor`);
    }
  } else {
    throw typeError(`${where}: source`, 'a Module, { model, optimizer } or a record of Tensors', source);
  }

  const header: Record<string, unknown> = {};
  const data: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const values = handleOf(t, `${where}: '${name}'`, 'any').toArray();
    const { tag, bytes } = encodeValues(values, t.dtype);
    header[name] = { dtype: tag, shape: [...t.shape], data_offsets: [offset, offset + bytes.length] };
    data.push(bytes);
    offset += bytes.length;
  }
  metadata[META_FORMAT] = FORMAT_VERSION;
  header.__metadata__ = metadata;
  metadata[META_CHECKSUM] = digest(header, data);
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20); // 8-aligned data, as the reference pads
  json.copy(padded);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(padded.length));
  writeAtomically(path, [length, padded, ...data], where);
}

// ---------------------------------------------------------------------------------------------------------------
// Loading.

function checkLoadIntoOptions(where: string, options: unknown): { keys: LoadStateDictOptions; verifyChecksum: boolean; allowNonFinite: boolean } {
  if (options === undefined) return { keys: {}, verifyChecksum: true, allowNonFinite: false };
  if (!isPlainObject(options)) throw typeError(`${where}: options`, 'an object', options);
  const allowed = ['allowExtraKeys', 'allowMissingKeys', 'verifyChecksum', 'allowNonFinite'];
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) throw typeError(`${where}: options`, `only the keys ${allowed.join(', ')}`, key);
  }
  const { allowExtraKeys = false, allowMissingKeys = false, verifyChecksum = true, allowNonFinite = false } = options as LoadIntoOptions;
  for (const [name, value] of Object.entries({ allowExtraKeys, allowMissingKeys, verifyChecksum, allowNonFinite })) {
    if (typeof value !== 'boolean') throw typeError(`${where}: options.${name}`, 'a boolean', value);
  }
  return { keys: { allowExtraKeys, allowMissingKeys }, verifyChecksum, allowNonFinite };
}

/** The header of a file (checked like load() does, data not decoded): each tensor's dtype and shape, and the metadata. */
export function inspect(path: string): { tensors: Record<string, TensorInfo>; metadata: Record<string, string> } {
  const where = 'io.inspect';
  if (typeof path !== 'string' || path === '') throw typeError(`${where}: path`, 'a file path', path);
  const parsed = parse(readBytes(path, where), path, where, false);
  return {
    tensors: Object.fromEntries(parsed.entries.map((e) => [e.name, { dtype: e.dtype, shape: [...e.shape] }])),
    metadata: { ...parsed.metadata },
  };
}

/**
 * Every tensor of a safetensors file (as float32, on options.device; BF16 entries as bfloat16 with keepBfloat16; I32 and BOOL entries as int32 and bool tensors)
 * and its metadata.
 */
export function load(path: string, options: LoadOptions = {}): LoadedFile {
  const where = 'io.load';
  if (typeof path !== 'string' || path === '') throw typeError(`${where}: path`, 'a file path', path);
  if (!isPlainObject(options)) throw typeError(`${where}: options`, 'an object like { device }', options);
  for (const key of Object.keys(options)) {
    if (!['device', 'verifyChecksum', 'keepBfloat16', 'allowNonFinite'].includes(key)) {
      throw typeError(`${where}: options`, 'only the keys device, verifyChecksum, keepBfloat16, allowNonFinite', key);
    }
  }
  const keepBfloat16 = options.keepBfloat16 ?? false;
  if (typeof keepBfloat16 !== 'boolean') throw typeError(`${where}: options.keepBfloat16`, 'a boolean', keepBfloat16);
  const allowNonFinite = options.allowNonFinite ?? false;
  if (typeof allowNonFinite !== 'boolean') throw typeError(`${where}: options.allowNonFinite`, 'a boolean', allowNonFinite);
  const device = checkDevice(options.device ?? 'cpu', where, 'options.device');
  const verifyChecksum = options.verifyChecksum ?? true;
  if (typeof verifyChecksum !== 'boolean') throw typeError(`${where}: options.verifyChecksum`, 'a boolean', verifyChecksum);
  const parsed = parse(readBytes(path, where), path, where, verifyChecksum, allowNonFinite);
  const host = decodeAll(parsed, parsed.entries.filter((e) => !(e.dtype in INTEGER_DTYPES)));
  const tensors: [string, Tensor][] = [];
  try {
    for (const entry of parsed.entries) {
      const integerType = INTEGER_DTYPES[entry.dtype];
      if (integerType) {
        tensors.push([entry.name, new Tensor(native.fromArray(decodeIntegers(parsed, entry), [...entry.shape], device, integerType))]);
        continue;
      }
      const { shape, data } = host[entry.name]!;
      // A BF16 entry decodes to float32 values that bfloat16 holds exactly: keeping it loses nothing.
      const dtype = keepBfloat16 && entry.dtype === 'BF16' ? 'bfloat16' : 'float32';
      tensors.push([entry.name, new Tensor(native.fromArray(data, [...shape], device, dtype))]);
    }
  } catch (error) {
    for (const [, t] of tensors) t.dispose();
    throw error;
  }
  return { tensors: Object.fromEntries(tensors), metadata: { ...parsed.metadata } };
}

function parseJsonMetadata(parsed: ParsedFile, key: string): unknown {
  try {
    return JSON.parse(parsed.metadata[key]!);
  } catch (error) {
    throw new CheckpointError(`${parsed.where}: ${parsed.file}: __metadata__ '${key}' is not valid JSON (corrupted?)`, parsed.file, undefined, {
      cause: error,
    });
  }
}

/** The optimizer part of a training checkpoint, checked for form (the optimizer checks the content). */
function optimizerStateOf(parsed: ParsedFile, entries: readonly Entry[]): OptimizerStateDict {
  const fail = (detail: string, key?: string): never => {
    throw new CheckpointError(`${parsed.where}: ${parsed.file}: ${detail}`, parsed.file, key);
  };
  const scalars = parseJsonMetadata(parsed, META_OPTIMIZER);
  if (!isPlainObject(scalars) || typeof scalars.type !== 'string' || !isPlainObject(scalars.hyperparameters)) {
    return fail(`__metadata__ '${META_OPTIMIZER}' must be { type, stepCount, lr, hyperparameters }`);
  }
  const state: Record<string, Record<string, HostTensor>> = {};
  for (const entry of entries) {
    const rest = entry.name.slice(OPTIMIZER_PREFIX.length);
    const cut = rest.lastIndexOf('/');
    if (cut <= 0 || cut === rest.length - 1) fail(`tensor '${entry.name}' is not named optimizer/<parameter>/<slot>`, entry.name);
    const param = rest.slice(0, cut);
    state[param] ??= {};
    state[param][rest.slice(cut + 1)] = { shape: entry.shape, data: decode(parsed, entry) };
  }
  return { ...(scalars as unknown as Omit<OptimizerStateDict, 'state'>), state };
}

/** The random-stream positions recorded with the model, checked against the model's dropout/noise layers. */
function randomStreamsOf(parsed: ParsedFile, model: AnyModule, keys: LoadStateDictOptions): [Module, RandomStreamState][] {
  if (!(META_RANDOM in parsed.metadata)) return [];
  const fail = (detail: string): never => {
    throw new CheckpointError(`${parsed.where}: ${parsed.file}: __metadata__ '${META_RANDOM}': ${detail}`, parsed.file);
  };
  const saved = parseJsonMetadata(parsed, META_RANDOM);
  if (!isPlainObject(saved)) return fail('expected an object by module name');
  const modules = new Map(model.namedModules());
  const streams = new Map(model.namedRandomStreams());
  const plan: [Module, RandomStreamState][] = [];
  for (const [name, state] of Object.entries(saved)) {
    if (!streams.has(name)) {
      if (keys.allowExtraKeys) continue;
      fail(`the model has no dropout or noise layer named '${name}'`);
    }
    if (!isPlainObject(state) || !isCount(state.seed) || !isCount(state.calls)) {
      fail(`'${name}' must be { seed, calls } (non-negative integers)`);
    }
    plan.push([modules.get(name)!, { seed: (state as RandomStreamState).seed, calls: (state as RandomStreamState).calls }]);
  }
  const absent = [...streams.keys()].filter((name) => !(name in saved));
  if (absent.length > 0 && !keys.allowMissingKeys) fail(`no entry for the model's random layer(s) ${absent.map((n) => `'${n}'`).join(', ')}`);
  return plan;
}

/** Runs a model's or optimizer's check, reporting what it finds as a CheckpointError naming the file. */
function asCheckpointError<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (error instanceof CheckpointError) throw error;
    const key = /'([^']+)'/.exec((error as Error).message)?.[1];
    throw new CheckpointError((error as Error).message, file, key, { cause: error });
  }
}

/**
 * Loads a file written by save() into a model, or a { model, optimizer } to resume training. Everything is checked
 * and staged first (names, shapes, dtypes, offsets, checksum, optimizer state): on any error the model and the
 * optimizer are exactly as they were. Returns the file's metadata. A Module target ignores a checkpoint's optimizer
 * part; a target with an optimizer needs one.
 */
export function loadInto(target: AnyModule | TrainingState, path: string, options?: LoadIntoOptions): Record<string, string> {
  const where = 'io.loadInto';
  if (!(target instanceof Module) && !isTrainingState(target)) throw typeError(`${where}: target`, 'a Module or { model, optimizer }', target);
  if (!(target instanceof Module)) checkTrainingState(where, target);
  if (typeof path !== 'string' || path === '') throw typeError(`${where}: path`, 'a file path', path);
  const { keys, verifyChecksum, allowNonFinite } = checkLoadIntoOptions(where, options);
  const model = target instanceof Module ? target : target.model;
  const optimizer = target instanceof Module ? undefined : target.optimizer;
  const paramNames = optimizer ? parameterNames(where, model, optimizer) : [];

  const located = `${where}: ${path}`;
  const parsed = parse(readBytes(path, where), path, where, verifyChecksum, allowNonFinite);
  const isCheckpoint = META_OPTIMIZER in parsed.metadata;
  const modelEntries = parsed.entries.filter((e) => !(isCheckpoint && e.name.startsWith(OPTIMIZER_PREFIX)));
  const optimizerEntries = parsed.entries.filter((e) => isCheckpoint && e.name.startsWith(OPTIMIZER_PREFIX));
  if (optimizer && !isCheckpoint) {
    const why = 'it was saved from a model or a record, not { model, optimizer }';
    throw new CheckpointError(`${located}: the file holds no optimizer state (${why})`, path);
  }
  const staged: StagedLoad[] = [];
  let streams: [Module, RandomStreamState][];
  try {
    staged.push(asCheckpointError(path, () => model.prepareLoadStateDict(decodeAll(parsed, modelEntries), keys, located)));
    if (optimizer) {
      const state = optimizerStateOf(parsed, optimizerEntries);
      staged.push(asCheckpointError(path, () => optimizer.prepareLoadStateDict(state, paramNames, `${located}: optimizer`)));
    }
    streams = randomStreamsOf(parsed, model, keys);
  } catch (error) {
    for (const load of staged) load.discard();
    throw error;
  }
  // Model first: the optimizer adopts saved weight norms only if they match the loaded v.
  for (const load of staged) load.commit();
  for (const [module, state] of streams) module.restoreRandomStream(state);
  return { ...parsed.metadata };
}

// ---------------------------------------------------------------------------------------------------------------
// PyTorch interop.

export interface TorchImportOptions extends LoadStateDictOptions {
  /** Load NaN and infinite values from a file (default false: they are a CheckpointError). */
  allowNonFinite?: boolean;
  /**
   * Renames torch's module prefixes to ours before the weight-norm names are mapped: { 'features.0.': '0.' } (the
   * longest matching prefix wins), or a function of the whole torch name.
   */
  prefixMap?: Record<string, string> | ((torchName: string) => string);
}

export interface TorchMapOptions {
  prefixMap?: TorchImportOptions['prefixMap'];
  /** When given, BatchNorm weight/bias map to gamma/beta and torch's weight-norm dim is checked against the layer's. */
  model?: AnyModule;
}

// torch suffix → ours; g is reshaped from torch's keepdim shape to 1-D.
const TORCH_SUFFIXES: readonly [string, string][] = [
  ['parametrizations.weight.original0', 'g'],
  ['parametrizations.weight.original1', 'v'],
  ['weight_g', 'g'],
  ['weight_v', 'v'],
  ['running_mean', 'runningMean'],
  ['running_var', 'runningVar'],
];
const TORCH_DROPPED = ['num_batches_tracked'];

// Recurrent layers' matrices (weight_ih_l0, weight_hh_l1, a cell's weight_ih): torch's weight_norm names them
// weight_hh_l0_g / weight_hh_l0_v, its parametrizations parametrizations.weight_hh_l0.original0 (g) / original1 (v);
// ours are weight_hh_l0_g / weight_hh_l0_v.
const TORCH_RECURRENT_OLD = /^(.*?)(weight_(?:ih|hh)(?:_l\d+)?)_([gv])$/;
const TORCH_RECURRENT_NEW = /^(.*?)parametrizations\.(weight_(?:ih|hh)(?:_l\d+)?)\.original([01])$/;

function torchRecurrentWeightNorm(name: string): { mapped: string; g: boolean; v: string; owner: string } | null {
  const old = TORCH_RECURRENT_OLD.exec(name);
  const parametrized = old ? null : TORCH_RECURRENT_NEW.exec(name);
  if (!old && !parametrized) return null;
  const [, prefix, matrix, which] = (old ?? parametrized)!;
  const g = old ? which === 'g' : which === '0';
  return { mapped: `${prefix}${matrix}_${g ? 'g' : 'v'}`, g, v: `${prefix}${matrix}_v`, owner: `the matrix '${prefix}${matrix}'` };
}

function splitName(name: string): [string, string] {
  const cut = name.lastIndexOf('.');
  return cut < 0 ? ['', name] : [name.slice(0, cut + 1), name.slice(cut + 1)];
}

function renamePrefix(name: string, prefixMap: TorchMapOptions['prefixMap']): string {
  if (prefixMap === undefined) return name;
  if (typeof prefixMap === 'function') {
    const renamed = prefixMap(name);
    if (typeof renamed !== 'string') throw typeError(`io.mapTorchStateDict: options.prefixMap('${name}')`, 'a string', renamed);
    return renamed;
  }
  const from = Object.keys(prefixMap)
    .filter((prefix) => name.startsWith(prefix))
    .sort((a, b) => b.length - a.length)[0];
  return from === undefined ? name : prefixMap[from] + name.slice(from.length);
}

/** torch's weight-norm dim from g's keepdim shape: null for a 0-d g, undefined when it cannot tell (one channel). */
function torchDimOf(gShape: readonly number[]): number | null | undefined {
  if (gShape.length === 0) return null;
  const axes = gShape.map((d, i) => (d !== 1 ? i : -1)).filter((i) => i >= 0);
  return axes.length === 1 ? axes[0] : undefined;
}

/**
 * A torch state dict (e.g. from io.load() of a file torch wrote) under this library's names: `<p>.weight_g` and
 * `<p>.parametrizations.weight.original0` become `<p>.g` (reshaped from torch's [out, 1, ...] to [out]),
 * `<p>.weight_v` and `...original1` become `<p>.v`, running_mean/running_var become runningMean/runningVar,
 * num_batches_tracked is dropped; other names are kept. A recurrent layer's `<p>.weight_hh_l0_g` and
 * `<p>.parametrizations.weight_hh_l0.original0` become `<p>.weight_hh_l0_g` (v likewise: `_v`, original1).
 * g becomes a view: dispose it with the inputs.
 */
export function mapTorchStateDict(stateDict: Record<string, Tensor>, options: TorchMapOptions = {}): Record<string, Tensor> {
  const where = 'io.mapTorchStateDict';
  return mapTorchNames(stateDict, options, where, (detail) => {
    throw new RangeError(`${where}: ${detail}`);
  });
}

/** mapTorchStateDict(), reporting a state dict that does not fit the model through `fail` (the torch name as key). */
function mapTorchNames(
  stateDict: Record<string, Tensor>,
  options: TorchMapOptions,
  where: string,
  fail: (detail: string, key: string) => never,
): Record<string, Tensor> {
  if (!isPlainObject(stateDict)) throw typeError(`${where}: stateDict`, 'a record of Tensors', stateDict);
  if (!isObjectRecord(options)) throw typeError(`${where}: options`, 'an object like { prefixMap, model }', options);
  const { prefixMap, model } = options;
  if (prefixMap !== undefined && typeof prefixMap !== 'function' && !isObjectRecord(prefixMap)) {
    throw typeError(`${where}: options.prefixMap`, 'a record of prefixes or a function', prefixMap);
  }
  if (model !== undefined && !(model instanceof Module)) throw typeError(`${where}: options.model`, 'a Module', model);
  const ours = model ? model.stateDict() : undefined;
  const out = new Map<string, Tensor>();
  const sourceOf = new Map<string, string>();
  const views: Tensor[] = [];
  try {
    for (const [torchName, t] of Object.entries(stateDict)) {
      handleOf(t, `${where}: stateDict['${torchName}']`);
      const name = renamePrefix(torchName, prefixMap);
      if (TORCH_DROPPED.some((suffix) => name === suffix || name.endsWith(`.${suffix}`))) continue;
      const rule = TORCH_SUFFIXES.find(([suffix]) => name === suffix || name.endsWith(`.${suffix}`));
      const found = rule ? { base: name.slice(0, name.length - rule[0].length), ours: rule[1] } : null;
      const weightNorm = found
        ? { mapped: found.base + found.ours, g: found.ours === 'g', v: `${found.base}v`, owner: `the layer '${found.base.slice(0, -1)}'` }
        : torchRecurrentWeightNorm(name);
      let mapped = name;
      let value = t;
      if (weightNorm) {
        mapped = weightNorm.mapped;
        if (weightNorm.g) {
          const v = ours?.[weightNorm.v];
          const wn = v ? WeightNormState.of(v) : null;
          const torchDim = torchDimOf(t.shape);
          if (wn && torchDim !== undefined && torchDim !== wn.dim) {
            fail(
              `'${torchName}' has shape ${shapeText(t.shape)} (torch weight_norm dim=${torchDim ?? 'None'}), ` +
                `but ${weightNorm.owner} normalizes with dim ${wn.dim}`,
              torchName,
            );
          }
          value = new Tensor(native.reshape(handleOf(t, where), [t.size]));
          views.push(value);
        }
      } else if (ours) {
        const [base, last] = splitName(name);
        const isBatchNorm = `${base}gamma` in ours && !(`${base}weight` in ours);
        if (isBatchNorm && last === 'weight') mapped = `${base}gamma`;
        if (isBatchNorm && last === 'bias') mapped = `${base}beta`;
      }
      if (out.has(mapped)) fail(`'${torchName}' and '${sourceOf.get(mapped)}' both map to '${mapped}'`, torchName);
      out.set(mapped, value);
      sourceOf.set(mapped, torchName);
    }
  } catch (error) {
    for (const view of views) view.dispose();
    throw error;
  }
  return Object.fromEntries(out);
}

/**
 * Loads a PyTorch weight-normalized state dict (a record of tensors, or the path of a safetensors file torch's state
 * dict was written to) into a model whose layers were built with weightNorm, under either of torch's naming schemes
 * (see mapTorchStateDict). All-or-nothing, like Module.loadStateDict().
 */
export function importTorchWeightNorm(source: Record<string, Tensor> | string, model: AnyModule, options: TorchImportOptions = {}): void {
  const where = 'io.importTorchWeightNorm';
  if (!(model instanceof Module)) throw typeError(`${where}: model`, 'a Module', model);
  if (!isObjectRecord(options)) throw typeError(`${where}: options`, 'an object', options);
  const { prefixMap, allowNonFinite = false, ...keys } = options;
  if (typeof allowNonFinite !== 'boolean') throw typeError(`${where}: options.allowNonFinite`, 'a boolean', allowNonFinite);
  let stateDict: Record<string, Tensor>;
  let owned: Tensor[] = [];
  if (typeof source === 'string') {
    const parsed = parse(readBytes(source, where), source, where, true, allowNonFinite);
    const kept = parsed.entries.filter((e) => !TORCH_DROPPED.some((suffix) => e.name === suffix || e.name.endsWith(`.${suffix}`)));
    stateDict = Object.fromEntries(
      Object.entries(decodeAll(parsed, kept)).map(([name, { shape, data }]) => [name, new Tensor(native.fromArray(data, [...shape], 'cpu'))]),
    );
    owned = Object.values(stateDict);
  } else {
    stateDict = source;
  }
  try {
    // A file that does not fit the model is a CheckpointError naming the file, like every other load problem.
    const mapped =
      typeof source === 'string'
        ? mapTorchNames(stateDict, { prefixMap, model }, where, (detail, key) => {
            throw new CheckpointError(`${where}: ${source}: ${detail}`, source, key);
          })
        : mapTorchStateDict(stateDict, { prefixMap, model });
    const inputs = new Set(Object.values(stateDict));
    try {
      const located = typeof source === 'string' ? `${where}: ${source}` : where;
      const staged =
        typeof source === 'string'
          ? asCheckpointError(source, () => model.prepareLoadStateDict(mapped, keys, located))
          : model.prepareLoadStateDict(mapped, keys, located);
      staged.commit();
    } finally {
      for (const t of Object.values(mapped)) if (!inputs.has(t)) t.dispose(); // the reshaped views of g
    }
  } finally {
    for (const t of owned) t.dispose();
  }
}

export type { HostTensor, LoadStateDictOptions, OptimizerStateDict, RandomStreamState };
