// Tensor: float32 (or bfloat16, int32, bool) data with a shape on one device ('cpu' | 'cuda'). Creation functions
// validate everything before the native call; a disposed tensor throws DisposedTensorError wherever it is used.
import { inspect as utilInspect, type InspectOptions } from 'node:util';
import type { BackwardOptions, GradNode } from './autograd.js';
import { DisposedTensorError, rangeError, shapeText, typeError } from './errors.js';
import type { WeightNormState } from './nn.js';
import { type Device, type DType, native, type NativeTensor } from './native.js';
import { track } from './scope.js';

export type { Device, DType, TensorArray } from './native.js';
import type { TensorArray } from './native.js';

export interface CreateOptions {
  /** Where the tensor lives. Default 'cpu'. 'cuda' without a usable GPU throws a RangeError with the reason. */
  device?: Device;
  /**
   * Element type. Default 'float32' (tensor() infers 'bool' from booleans and 'int32' from an Int32Array).
   * 'bfloat16' (values rounded to nearest even) halves the memory of weights and activations; ops.weightNorm,
   * ops.weightNormBackward and ops.matmul take it (norms, gains and sums stay float32). 'int32' (indices, labels)
   * and 'bool' (masks, comparison results) go through the tensor math ops (add, gt, where, ...) and cast(); every
   * other op wants float32: convert with tensor.cast().
   */
  dtype?: DType;
}

export interface RandnOptions extends CreateOptions {
  /** Seed of the counter-based generator: the same seed gives the same values on every device and run. */
  seed?: number;
  mean?: number;
  std?: number;
}

// A tensor's native handle, or null once disposed, for handleOf (set once the class is defined). A private field
// rather than a WeakMap keyed by tensor: every WeakMap entry is an ephemeron the garbage collector has to trace on
// its own, and a training step makes tens of tensors.
let liveHandle: (tensor: Tensor) => NativeTensor | null;

/** What registerPostAccumulateGradHook() returns: remove() unregisters the hook. */
export interface RemovableHandle {
  remove(): void;
}

export class Tensor {
  #handle: NativeTensor;
  /**
   * Whether dispose() ran: kept here rather than asked of the handle at every use (a native call per operand of
   * every op). A tensor's handle is its own: only dispose() frees it, and replaceHandle() swaps in a live one.
   */
  #disposed: boolean;
  #shape: readonly number[];
  #size: number;
  #dtype: DType;
  /** The handle's device, read from it on first use (a native call; most tensors never ask) and kept. */
  #device: Device | null = null;
  /** Whether backward() computes a gradient for this tensor (parameters set it; results of ops inherit it). */
  requiresGrad = false;
  /** The accumulated gradient of a leaf tensor after backward() (null before; zeroGrad() clears it). */
  grad: Tensor | null = null;
  /** @internal The op that produced this tensor, for backward(). */
  gradNode: GradNode | null = null;
  /**
   * The version counter, one object shared by a tensor and its views (they share storage: see version); made on
   * first use (most tensors are intermediates that never change and are never viewed).
   */
  #versionCounter: { value: number } | null = null;
  /**
   * @internal Set only on the direction v of a weight-normalized layer, by that layer (nn.ts, WeightNormState):
   * optimizers and checkpoints reach the layer's ‖v‖ cache through it. null on every other tensor.
   */
  weightNormState: WeightNormState | null = null;
  #postAccumulateGradHooks: { hook: (tensor: Tensor) => void }[] | null = null;

  static {
    liveHandle = (tensor) => (tensor.#disposed ? null : tensor.#handle);
  }

  /** @internal Use tensor(), zeros() or randn(). */
  constructor(handle: NativeTensor) {
    if (!(handle instanceof native.NativeTensor)) {
      throw new TypeError('Tensor: use tensor(), zeros() or randn() to create tensors');
    }
    this.#handle = handle;
    this.#disposed = handle.disposed;
    this.#dtype = handle.dtype;
    // The native getter returns a new array each time: this one is the tensor's own, frozen.
    const shape = Object.freeze(handle.shape);
    this.#shape = shape;
    // A 0 anywhere makes the size 0 even when the other dimensions' product overflows a double.
    let size = 1;
    for (const d of shape) size *= d;
    this.#size = shape.includes(0) ? 0 : size;
    track(this);
  }

  /**
   * The dimensions (frozen). Not assignable: a tensor's shape is its storage's (reshape() and view() make a new
   * tensor).
   */
  get shape(): readonly number[] {
    return this.#shape;
  }

  /** How many elements: the product of the dimensions (0 when one is 0). */
  get size(): number {
    return this.#size;
  }

  /**
   * @internal Bumped by every in-place update (optimizer steps, loads), so caches derived from it can tell, and so
   * backward() can tell that a tensor saved by the graph changed since the forward. A view (reshape, view, flatten,
   * squeeze, unsqueeze) shares the counter with its base, as it shares the storage: an update through either is
   * seen through both.
   */
  get version(): number {
    return this.#versionCounter?.value ?? 0;
  }

  set version(value: number) {
    (this.#versionCounter ??= { value: 0 }).value = value;
  }

  /** @internal Makes this tensor, a view of `base`'s storage, share base's version counter (ts/shape.ts). */
  shareVersionWith(base: Tensor): void {
    this.#versionCounter = base.#versionCounter ??= { value: 0 };
  }

  /** The element type: 'float32', 'bfloat16', 'int32' or 'bool'. */
  get dtype(): DType {
    return this.#dtype;
  }

  get device(): Device {
    if (this.#device !== null && !this.#disposed) return this.#device;
    return (this.#device = handleOf(this, 'tensor.device', 'any').device as Device);
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  get rank(): number {
    return this.shape.length;
  }

  /**
   * A copy of the data on the host (waits for pending GPU work): a Float32Array for float32 and bfloat16 (widened
   * exactly), an Int32Array for int32, a Uint8Array of 0s and 1s for bool.
   */
  toArray(): TensorArray {
    return handleOf(this, 'tensor.toArray', 'any').toArray();
  }

  /**
   * A copy of the values as float32 on the host, whatever the dtype: float32 as stored, bfloat16 widened exactly,
   * int32 converted (exact up to 2^24 in magnitude), bool as 0 and 1. For code that wants one array type.
   */
  toFloat32Array(): Float32Array {
    const values = this.toArray();
    return values instanceof Float32Array ? values : Float32Array.from(values);
  }

  /**
   * A copy of the data on the host, read on a worker thread: the event loop keeps running while pending GPU work
   * finishes. The tensor may be disposed before the promise settles (the copy holds its own reference).
   */
  data(): Promise<TensorArray> {
    try {
      return handleOf(this, 'tensor.data', 'any').data();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** A copy on `device` (a new tensor, even when it is already there). */
  to(device: Device): Tensor {
    const where = 'tensor.to';
    const handle = handleOf(this, where, 'any');
    return new Tensor(handle.to(checkDevice(device, where, 'device')));
  }

  /**
   * A copy with element type `dtype` on the same device: float32 -> bfloat16 rounds to nearest even (NaN stays NaN,
   * values beyond bfloat16's range become ±Infinity); bfloat16 -> float32 is exact; to int32 truncates toward zero
   * as PyTorch does (values beyond int32's range saturate, NaN becomes 0); to bool is x != 0 (NaN is true); bool to
   * a number type is 0 or 1; int32 -> float32 rounds to nearest beyond 2^24.
   */
  cast(dtype: DType): Tensor {
    const where = 'tensor.cast';
    const handle = handleOf(this, where, 'any');
    return new Tensor(native.cast(handle, checkDType(dtype, `${where}: dtype`)));
  }

  /** Frees the memory now (CUDA memory goes back to the caching allocator). Calling it twice is harmless. */
  dispose(): void {
    this.#handle.dispose();
    this.#disposed = true;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** The single value of a one-element tensor (waits for pending GPU work). */
  item(): number {
    if (this.size !== 1) throw rangeError('tensor.item', 'a tensor with exactly one element', `[${this.shape.join(', ')}]`);
    return this.toArray()[0]!;
  }

  /**
   * Reverse-mode differentiation from this one-element tensor: adds into .grad of every leaf that requires it.
   * Frees the graph unless `retainGraph` (a second backward() through it then throws); throws before computing
   * anything if a tensor the graph saved was changed in place since the forward (e.g. by optimizer.step()).
   */
  backward(options?: BackwardOptions): void {
    backwardHook!(this, options);
  }

  /**
   * Calls `hook(tensor)` each time a backward() has finished accumulating into this leaf's .grad: once per
   * backward(), after the last contribution (a leaf reached through several paths fires once, when all of them
   * have arrived), while the rest of the graph may still be running. This is where data-parallel training starts
   * averaging a gradient before backward() has ended (PyTorch's Tensor.register_post_accumulate_grad_hook). Only
   * for leaves that require a gradient (parameters). Hooks run in the order they were registered, inside the
   * backward() and without grad mode; an exception from one ends that backward(). Returns a handle whose remove()
   * unregisters the hook (calling it again is harmless).
   */
  registerPostAccumulateGradHook(hook: (tensor: Tensor) => void): RemovableHandle {
    const where = 'tensor.registerPostAccumulateGradHook';
    if (typeof hook !== 'function') throw typeError(`${where}: hook`, 'a function', hook);
    if (!this.requiresGrad) throw new TypeError(`${where}: the tensor does not require a gradient: set requiresGrad (a parameter) first`);
    if (this.gradNode) {
      throw new TypeError(`${where}: only a leaf tensor (a parameter) accumulates into .grad; this one is the output of '${this.gradNode.name}'`);
    }
    const entry = { hook };
    (this.#postAccumulateGradHooks ??= []).push(entry);
    return {
      remove: () => {
        const hooks = this.#postAccumulateGradHooks!;
        const index = hooks.indexOf(entry);
        if (index >= 0) hooks.splice(index, 1);
      },
    };
  }

  /** @internal Runs the hooks of registerPostAccumulateGradHook (autograd.ts, once this leaf's .grad is final). */
  runPostAccumulateGradHooks(): void {
    // A copy: a hook that removes itself (or another) does not skip the next one in this round.
    if (!this.#postAccumulateGradHooks) return;
    for (const { hook } of [...this.#postAccumulateGradHooks]) hook(this);
  }

  /** @internal Moves the tensor's identity onto another handle (module.to(device) keeps parameter objects). */
  replaceHandle(handle: NativeTensor): void {
    const old = this.#handle;
    this.#handle = handle;
    this.#disposed = handle.disposed;
    this.#dtype = handle.dtype;
    this.#device = null;
    if (old !== handle) old.dispose();
    // To its users this is an in-place update (a load, a move): views taken before see the bump too, as in PyTorch.
    this.version += 1;
  }

  /** `Tensor(shape=[2, 3], dtype=float32, device=cpu)`, or `..., disposed)` once disposed. No data is read. */
  toString(): string {
    const handle = this.#handle;
    const where = this.#disposed ? 'disposed' : `device=${handle.device}`;
    return `Tensor(shape=${shapeText(this.shape)}, dtype=${this.dtype}, ${where})`;
  }

  /**
   * console.log / util.inspect: toString() and then the values as nested lists, like PyTorch's repr; beyond 1000
   * elements only the first and last 3 of each dimension (reads the data: waits for pending GPU work).
   */
  [utilInspect.custom](_depth: number, options: InspectOptions): string {
    const header = this.toString();
    if (this.disposed) return header;
    return `${header}\n${formatValues(this.toArray(), this.shape, this.dtype, options?.breakLength ?? 80)}`;
  }
}

/** Elements per tensor above which the display summarizes (PyTorch's print threshold) and how many it keeps per end. */
const SUMMARY_THRESHOLD = 1000;
const EDGE_ITEMS = 3;

function formatValues(values: TensorArray, shape: readonly number[], dtype: DType, width: number): string {
  const summarize = values.length > SUMMARY_THRESHOLD;
  const text = (v: number): string => {
    if (dtype === 'bool') return v ? 'true' : 'false';
    if (dtype === 'int32' || !Number.isFinite(v)) return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e8) return `${v}.`;
    const magnitude = Math.abs(v);
    if (magnitude >= 1e8 || magnitude < 1e-4) return v.toExponential(4);
    const rounded = Number(v.toFixed(4));
    return Number.isInteger(rounded) ? `${rounded}.` : String(rounded);
  };
  const strides = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
  const render = (dim: number, offset: number, indent: string): string => {
    if (dim === shape.length) return text(values[offset]!);
    const size = shape[dim]!;
    const indices = summarize && size > 2 * EDGE_ITEMS
      ? [...Array(EDGE_ITEMS).keys(), -1, ...Array.from({ length: EDGE_ITEMS }, (_, i) => size - EDGE_ITEMS + i)]
      : [...Array(size).keys()];
    const items = indices.map((i) => (i < 0 ? '...' : render(dim + 1, offset + i * strides[dim]!, `${indent} `)));
    if (dim === shape.length - 1) {
      const line = `[${items.join(', ')}]`;
      if (line.length + indent.length <= width) return line;
      return `[${items.join(`,\n${indent} `)}]`;
    }
    const separator = `,${'\n'.repeat(shape.length - dim - 1)}${indent} `;
    return `[${items.join(separator)}]`;
  };
  return render(0, 0, '');
}

let backwardHook: ((root: Tensor, options?: BackwardOptions) => void) | null = null;
/** @internal autograd.ts installs backward() here (a direct import would be circular at load time). */
export function setBackwardHook(hook: (root: Tensor, options?: BackwardOptions) => void): void {
  backwardHook = hook;
}

/**
 * @internal The native handle of a live tensor; names `where` in the error otherwise. Only float32 tensors pass
 * unless `dtypes` is 'floating' (float32 or bfloat16: weightNorm, weightNormBackward and matmul) or 'any' (cast,
 * copies and the pointwise ops, which check element types themselves), so no other op sees another element type.
 */
export function handleOf(value: unknown, where: string, dtypes: 'float32' | 'floating' | 'any' = 'float32'): NativeTensor {
  if (!(value instanceof Tensor)) throw typeError(where, 'a Tensor', value);
  const handle = liveHandle(value);
  if (handle === null) throw new DisposedTensorError(`${where}: the tensor ${value.toString()} was used after dispose()`);
  if (dtypes === 'float32' && value.dtype !== 'float32') {
    throw typeError(
      where,
      `a float32 tensor, not ${value.dtype} (only weightNorm, weightNormBackward and matmul take bfloat16; int32 and bool ` +
        "go through the tensor math ops; use .cast('float32'))",
      value,
    );
  }
  if (dtypes === 'floating' && value.dtype !== 'float32' && value.dtype !== 'bfloat16') {
    throw typeError(where, `a float32 or bfloat16 tensor, not ${value.dtype} (use .cast('float32'))`, value);
  }
  return handle;
}

/** @internal The host data of a float32 or bfloat16 tensor (int32 and bool ones are a TypeError naming `where`). */
export function floatArray(value: unknown, where: string): Float32Array {
  const values = handleOf(value, where, 'floating').toArray();
  if (!(values instanceof Float32Array)) throw typeError(where, 'a float32 or bfloat16 tensor', value);
  return values;
}

export const DTYPES: readonly DType[] = ['float32', 'bfloat16', 'int32', 'bool'];

export function checkDType(value: unknown, where: string): DType {
  if (!DTYPES.includes(value as DType)) throw typeError(where, "'float32', 'bfloat16', 'int32' or 'bool'", value);
  return value as DType;
}

export function checkDevice(value: unknown, where: string, parameter: string): Device {
  if (value !== 'cpu' && value !== 'cuda') throw typeError(`${where}: ${parameter}`, "'cpu' or 'cuda'", value);
  if (value === 'cuda') {
    const cuda = native.backend().cuda;
    if (!cuda.usable) {
      throw new RangeError(`${where}: ${parameter} 'cuda' is not usable here: ${cuda.reason ?? 'unknown reason'}`);
    }
  }
  return value;
}

function checkShape(value: unknown, where: string): number[] {
  if (!Array.isArray(value)) throw typeError(`${where}: shape`, 'an array of non-negative integers', value);
  value.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw typeError(`${where}: shape[${i}]`, 'a non-negative integer', d);
    }
  });
  // A zero dim makes the tensor empty whatever the others are (and keeps Infinity * 0 out of the product).
  const size = (value as number[]).includes(0) ? 0 : (value as number[]).reduce((a, b) => a * b, 1);
  if (size > 2 ** 40) throw rangeError(`${where}: shape`, 'at most 2^40 elements', `[${value.join(', ')}]`);
  return [...(value as number[])];
}

function checkOptions<T extends object>(value: unknown, where: string, allowed: readonly string[]): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw typeError(`${where}: options`, 'an object', value);
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) throw typeError(`${where}: options`, `only the keys ${allowed.join(', ')}`, key);
  }
  return value as Partial<T>;
}

function checkNonNegative(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw typeError(where, 'a finite number >= 0', value);
  return value;
}

function checkFiniteNumber(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw typeError(where, 'a finite number', value);
  return value;
}

/** What tensor() takes: a number or boolean (a 0-d tensor), nested arrays of them, or a typed array. */
export type TensorData = number | boolean | Float32Array | Float64Array | Int32Array | Uint8Array | NestedArray;
export interface NestedArray extends ReadonlyArray<number | boolean | NestedArray> {}

/** Walks nested arrays: the shape they describe and their leaves in row-major order (ragged -> RangeError). */
function flattenNested(data: readonly unknown[], where: string): { shape: number[]; leaves: unknown[] } {
  const shape: number[] = [];
  for (let level: unknown = data; Array.isArray(level); level = level[0]) shape.push(level.length);
  const leaves: unknown[] = [];
  const walk = (value: unknown, depth: number, path: string): void => {
    if (depth === shape.length) {
      if (Array.isArray(value)) throw rangeError(`${where}: ${path}`, `a number or boolean (at depth ${depth}, like ${path.replace(/\[\d+\]$/, '[0]')})`, `an array of length ${value.length}`);
      if (typeof value !== 'number' && typeof value !== 'boolean') throw typeError(`${where}: ${path}`, 'a number or boolean', value);
      leaves.push(value);
      return;
    }
    if (!Array.isArray(value)) throw rangeError(`${where}: ${path}`, `an array of length ${shape[depth]} (the data is ragged)`, `a ${typeof value}`);
    if (value.length !== shape[depth]) {
      throw rangeError(`${where}: ${path}`, `an array of length ${shape[depth]} (like its siblings: the data is ragged)`, `length ${value.length}`);
    }
    value.forEach((item, i) => walk(item, depth + 1, `${path}[${i}]`));
  };
  walk(data, 0, 'data');
  return { shape, leaves };
}

/** Host values in the array type fromArray takes for `dtype` (int32 truncates toward zero; bool is x != 0). */
function hostValues(values: ArrayLike<number | boolean>, dtype: DType, where: string): Float32Array | Int32Array | Uint8Array {
  const count = values.length;
  if (dtype === 'bool') {
    const out = new Uint8Array(count);
    // x != 0, so NaN is true (as in PyTorch), unlike JS truthiness.
    for (let i = 0; i < count; i++) out[i] = Number(values[i]) !== 0 ? 1 : 0;
    return out;
  }
  if (dtype === 'int32') {
    if (values instanceof Int32Array) return values;
    const out = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      const v = Number(values[i]);
      if (!(Math.trunc(v) >= -(2 ** 31) && Math.trunc(v) < 2 ** 31)) {
        throw rangeError(`${where}: data[${i}]`, 'a value that fits int32 (finite, truncated toward zero)', String(v));
      }
      out[i] = Math.trunc(v);
    }
    return out;
  }
  if (values instanceof Float32Array) return values;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Number(values[i]);
  return out;
}

/**
 * A tensor from data (copied): nested arrays (shape inferred, e.g. [[1, 2], [3, 4]] is [2, 2]; ragged data is a
 * RangeError naming where), a flat array or typed array with `shape` (default: 1-D of its length), or a single
 * number or boolean (a 0-d tensor). The dtype is options.dtype, else inferred like PyTorch: booleans give 'bool',
 * an Int32Array 'int32', anything else 'float32'. tensor(data, options) and tensor(data, shape, options) both work.
 */
export function tensor(data: TensorData, shape?: readonly number[] | CreateOptions, options?: CreateOptions): Tensor {
  const where = 'tensor';
  if (typeof shape === 'object' && shape !== null && !Array.isArray(shape) && options === undefined) {
    options = shape as CreateOptions;
    shape = undefined;
  }
  const { device = 'cpu', dtype: requested } = checkOptions<CreateOptions>(options, where, ['device', 'dtype']);
  let values: ArrayLike<number | boolean>;
  let inferredShape: number[];
  let inferred: DType = 'float32';
  if (data instanceof Float32Array || data instanceof Float64Array || data instanceof Int32Array || data instanceof Uint8Array) {
    values = data;
    inferredShape = [data.length];
    if (data instanceof Int32Array) inferred = 'int32';
  } else if (Array.isArray(data)) {
    const flat = flattenNested(data, where);
    values = flat.leaves as (number | boolean)[];
    inferredShape = flat.shape;
    if (flat.leaves.length > 0 && flat.leaves.every((v) => typeof v === 'boolean')) inferred = 'bool';
  } else if (typeof data === 'number' || typeof data === 'boolean') {
    values = [data];
    inferredShape = [];
    if (typeof data === 'boolean') inferred = 'bool';
  } else {
    throw typeError(`${where}: data`, 'a number, boolean, nested array, Float32Array, Float64Array, Int32Array or Uint8Array', data);
  }
  const dims = shape === undefined ? inferredShape : checkShape(shape, where);
  const size = dims.includes(0) ? 0 : dims.reduce((a, b) => a * b, 1);
  if (size !== values.length) {
    throw rangeError(`${where}: data`, `${size} values for shape ${shapeText(dims)}`, `${values.length} values`);
  }
  const type = requested === undefined ? inferred : checkDType(requested, `${where}: options.dtype`);
  const target = checkDevice(device, where, 'options.device');
  return new Tensor(native.fromArray(hostValues(values, type, where), dims, target, type));
}

// zeros() and empty() are one op (memory is always zero-filled); `where` names the one called in errors.
function zeroFilled(where: string, shape: readonly number[], options?: CreateOptions): Tensor {
  const { device = 'cpu', dtype = 'float32' } = checkOptions<CreateOptions>(options, where, ['device', 'dtype']);
  const dims = checkShape(shape, where);
  const type = checkDType(dtype, `${where}: options.dtype`);
  return new Tensor(native.zeros(dims, checkDevice(device, where, 'options.device'), type));
}

export function zeros(shape: readonly number[], options?: CreateOptions): Tensor {
  return zeroFilled('zeros', shape, options);
}

/**
 * A tensor of `shape` and options.dtype for a result to overwrite. Unlike PyTorch's, its memory is zero-filled:
 * the library never hands out uninitialized memory (so this is zeros()).
 */
export function empty(shape: readonly number[], options?: CreateOptions): Tensor {
  return zeroFilled('empty', shape, options);
}

/** A tensor of `shape` filled with `value` (options.dtype, default float32; a boolean value defaults to bool). */
export function full(shape: readonly number[], value: number | boolean, options?: CreateOptions): Tensor {
  const where = 'full';
  const { device = 'cpu', dtype } = checkOptions<CreateOptions>(options, where, ['device', 'dtype']);
  const dims = checkShape(shape, where);
  if (typeof value !== 'number' && typeof value !== 'boolean') throw typeError(`${where}: value`, 'a number or boolean', value);
  const type = dtype === undefined ? (typeof value === 'boolean' ? 'bool' : 'float32') : checkDType(dtype, `${where}: options.dtype`);
  const size = dims.includes(0) ? 0 : dims.reduce((a, b) => a * b, 1);
  const values = hostValues([value], type, where);
  const filled = type === 'bool' ? new Uint8Array(size) : type === 'int32' ? new Int32Array(size) : new Float32Array(size);
  filled.fill(values[0]!);
  return new Tensor(native.fromArray(filled, dims, checkDevice(device, where, 'options.device'), type));
}

/** A tensor of ones (options.dtype, default float32). */
export function ones(shape: readonly number[], options?: CreateOptions): Tensor {
  return full(shape, 1, options);
}

/**
 * Normal samples, N(mean, std^2), from a seeded counter-based generator (default seed 0). With dtype 'bfloat16'
 * they are the float32 samples of the same seed, rounded.
 */
export function randn(shape: readonly number[], options?: RandnOptions): Tensor {
  const where = 'randn';
  const { device = 'cpu', seed = 0, mean = 0, std = 1, dtype = 'float32' } = checkOptions<RandnOptions>(options, where, [
    'device',
    'dtype',
    'seed',
    'mean',
    'std',
  ]);
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw typeError(`${where}: options.seed`, 'a non-negative safe integer', seed);
  }
  const dims = checkShape(shape, where);
  return new Tensor(
    native.randn(
      dims,
      seed,
      checkDevice(device, where, 'options.device'),
      checkFiniteNumber(mean, `${where}: options.mean`),
      checkNonNegative(std, `${where}: options.std`),
      checkFloatingDType(dtype, `${where}: options.dtype`),
    ),
  );
}

function checkFloatingDType(value: unknown, where: string): 'float32' | 'bfloat16' {
  if (value !== 'float32' && value !== 'bfloat16') throw typeError(where, "'float32' or 'bfloat16' (normal samples are not integers)", value);
  return value;
}
