// Tensor: float32 (or bfloat16) data with a shape on one device ('cpu' | 'cuda'). Creation functions validate
// everything before the native call; a disposed tensor throws DisposedTensorError wherever it is used.
import type { BackwardOptions, GradNode } from './autograd.js';
import { DisposedTensorError, rangeError, typeError } from './errors.js';
import type { WeightNormState } from './nn.js';
import { type Device, type DType, native, type NativeTensor } from './native.js';
import { track } from './scope.js';

export type { Device, DType } from './native.js';

export interface CreateOptions {
  /** Where the tensor lives. Default 'cpu'. 'cuda' without a usable GPU throws a RangeError with the reason. */
  device?: Device;
  /**
   * Element type. Default 'float32'. 'bfloat16' (values rounded to nearest even) halves the memory of weights and
   * activations; ops.weightNorm, ops.weightNormBackward and ops.matmul take it (norms, gains and sums stay float32),
   * every other op wants float32: convert with tensor.cast().
   */
  dtype?: DType;
}

export interface RandnOptions extends CreateOptions {
  /** Seed of the counter-based generator: the same seed gives the same values on every device and run. */
  seed?: number;
  mean?: number;
  std?: number;
}

const handles = new WeakMap<Tensor, NativeTensor>();

export class Tensor {
  declare readonly shape: readonly number[];
  declare readonly size: number;
  #dtype: DType;
  /** Whether backward() computes a gradient for this tensor (parameters set it; results of ops inherit it). */
  requiresGrad = false;
  /** The accumulated gradient of a leaf tensor after backward() (null before; zeroGrad() clears it). */
  grad: Tensor | null = null;
  /** @internal The op that produced this tensor, for backward(). */
  gradNode: GradNode | null = null;
  /** The version counter, one object shared by a tensor and its views (they share storage: see version). */
  #versionCounter: { value: number } = { value: 0 };
  /**
   * @internal Set only on the direction v of a weight-normalized layer, by that layer (nn.ts, WeightNormState):
   * optimizers and checkpoints reach the layer's ‖v‖ cache through it. null on every other tensor.
   */
  weightNormState: WeightNormState | null = null;

  /** @internal Use tensor(), zeros() or randn(). */
  constructor(handle: NativeTensor) {
    if (!(handle instanceof native.NativeTensor)) {
      throw new TypeError('Tensor: use tensor(), zeros() or randn() to create tensors');
    }
    handles.set(this, handle);
    this.#dtype = handle.dtype;
    const shape = Object.freeze([...handle.shape]);
    // Not writable at run time either: a tensor's shape is its storage's, and cannot be reassigned.
    Object.defineProperty(this, 'shape', { value: shape, writable: false, enumerable: true });
    const size = shape.includes(0) ? 0 : shape.reduce((a, b) => a * b, 1);
    Object.defineProperty(this, 'size', { value: size, writable: false, enumerable: true });
    track(this);
  }

  /**
   * @internal Bumped by every in-place update (optimizer steps, loads), so caches derived from it can tell, and so
   * backward() can tell that a tensor saved by the graph changed since the forward. A view (reshape, view, flatten,
   * squeeze, unsqueeze) shares the counter with its base, as it shares the storage: an update through either is
   * seen through both.
   */
  get version(): number {
    return this.#versionCounter.value;
  }

  set version(value: number) {
    this.#versionCounter.value = value;
  }

  /** @internal Makes this tensor, a view of `base`'s storage, share base's version counter (ts/shape.ts). */
  shareVersionWith(base: Tensor): void {
    this.#versionCounter = base.#versionCounter;
  }

  /** The element type, 'float32' or 'bfloat16'. */
  get dtype(): DType {
    return this.#dtype;
  }

  get device(): Device {
    return handleOf(this, 'tensor.device', 'any').device as Device;
  }

  get disposed(): boolean {
    return handles.get(this)!.disposed;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** A copy of the data on the host (waits for pending GPU work); bfloat16 values are widened (exactly). */
  toArray(): Float32Array {
    return handleOf(this, 'tensor.toArray', 'any').toArray();
  }

  /**
   * A copy of the data on the host, read on a worker thread: the event loop keeps running while pending GPU work
   * finishes. The tensor may be disposed before the promise settles (the copy holds its own reference).
   */
  data(): Promise<Float32Array> {
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
   * values beyond bfloat16's range become ±Infinity); bfloat16 -> float32 is exact.
   */
  cast(dtype: DType): Tensor {
    const where = 'tensor.cast';
    const handle = handleOf(this, where, 'any');
    return new Tensor(native.cast(handle, checkDType(dtype, `${where}: dtype`)));
  }

  /** Frees the memory now (CUDA memory goes back to the caching allocator). Calling it twice is harmless. */
  dispose(): void {
    handles.get(this)!.dispose();
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

  /** @internal Moves the tensor's identity onto another handle (module.to(device) keeps parameter objects). */
  replaceHandle(handle: NativeTensor): void {
    const old = handles.get(this)!;
    handles.set(this, handle);
    this.#dtype = handle.dtype;
    if (old !== handle) old.dispose();
    // To its users this is an in-place update (a load, a move): views taken before see the bump too, as in PyTorch.
    this.version += 1;
  }

  toString(): string {
    const handle = handles.get(this)!;
    const type = this.dtype === 'float32' ? '' : ` ${this.dtype}`;
    return `Tensor [${this.shape.join(', ')}]${type} ${handle.disposed ? '(disposed)' : `on ${handle.device}`}`;
  }
}

let backwardHook: ((root: Tensor, options?: BackwardOptions) => void) | null = null;
/** @internal autograd.ts installs backward() here (a direct import would be circular at load time). */
export function setBackwardHook(hook: (root: Tensor, options?: BackwardOptions) => void): void {
  backwardHook = hook;
}

/**
 * @internal The native handle of a live tensor; names `where` in the error otherwise. Only float32 tensors pass
 * unless `dtypes` is 'any' (the few ops that also take bfloat16 say so), so no other op sees a bfloat16 tensor.
 */
export function handleOf(value: unknown, where: string, dtypes: 'float32' | 'any' = 'float32'): NativeTensor {
  if (!(value instanceof Tensor)) throw typeError(where, 'a Tensor', value);
  const handle = handles.get(value)!;
  if (handle.disposed) throw new DisposedTensorError(`${where}: the tensor ${value.toString()} was used after dispose()`);
  if (dtypes === 'float32' && value.dtype !== 'float32') {
    throw typeError(where, 'a float32 tensor (only weightNorm, weightNormBackward and matmul take bfloat16; use .cast(\'float32\'))', value);
  }
  return handle;
}

export function checkDType(value: unknown, where: string): DType {
  if (value !== 'float32' && value !== 'bfloat16') throw typeError(where, "'float32' or 'bfloat16'", value);
  return value;
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

/**
 * A tensor from a Float32Array or an array of numbers. The shape defaults to the data's own length (1-D);
 * the data is copied.
 */
export function tensor(data: Float32Array | readonly number[], shape?: readonly number[], options?: CreateOptions): Tensor {
  const where = 'tensor';
  const { device = 'cpu', dtype = 'float32' } = checkOptions<CreateOptions>(options, where, ['device', 'dtype']);
  let values: Float32Array;
  if (data instanceof Float32Array) {
    values = data;
  } else if (Array.isArray(data)) {
    data.forEach((x, i) => {
      if (typeof x !== 'number') throw typeError(`${where}: data[${i}]`, 'a number', x);
    });
    values = Float32Array.from(data);
  } else {
    throw typeError(`${where}: data`, 'a Float32Array or an array of numbers', data);
  }
  const dims = shape === undefined ? [values.length] : checkShape(shape, where);
  const size = dims.reduce((a, b) => a * b, 1);
  if (size !== values.length) {
    throw rangeError(`${where}: data`, `${size} values for shape [${dims.join(', ')}]`, `${values.length} values`);
  }
  const type = checkDType(dtype, `${where}: options.dtype`);
  return new Tensor(native.fromArray(values, dims, checkDevice(device, where, 'options.device'), type));
}

export function zeros(shape: readonly number[], options?: CreateOptions): Tensor {
  const where = 'zeros';
  const { device = 'cpu', dtype = 'float32' } = checkOptions<CreateOptions>(options, where, ['device', 'dtype']);
  const dims = checkShape(shape, where);
  const type = checkDType(dtype, `${where}: options.dtype`);
  return new Tensor(native.zeros(dims, checkDevice(device, where, 'options.device'), type));
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
      checkDType(dtype, `${where}: options.dtype`),
    ),
  );
}
