// Data-parallel training: a process group formed by a rendezvous at rank 0, collectives that run off the JavaScript
// thread (Gloo for host memory; NCCL, loaded at run time, for CUDA tensors when every rank has it, else Gloo with
// the data staged through host memory), and DataParallel, which keeps a model's replicas identical by broadcasting
// rank 0's parameters once and averaging gradients, overlapping backward().
//
// The native side is a separate module, weightnorm_distributed.node (binding/distributed.cc), loaded here on first
// use: the core addon never needs Gloo, and without the module available() is false and init() says why.
//
// Weight norm needs no extra traffic: the parameters are v and g (w = g·v/‖v‖ is computed in forward), their
// gradients are averaged like any other, every rank applies the same update to the same values, and so computes
// the same ‖v‖ locally. The replicas stay bit-identical (test/distributed.test.ts checks it).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { rangeError, typeError } from './errors.js';
import { native, type NativeTensor } from './native.js';
import type { AnyModule } from './nn.js';
import { keep } from './scope.js';
import { handleOf, type RemovableHandle, Tensor, tensor } from './tensor.js';

export type Backend = 'auto' | 'gloo' | 'nccl';
export type ReduceOp = 'sum' | 'mean' | 'max' | 'min';

export interface InitOptions {
  /** This process's rank in [0, worldSize). Default: the RANK environment variable. */
  rank?: number;
  /** Number of processes. Default: WORLD_SIZE. */
  worldSize?: number;
  /** Where rank 0 hosts the rendezvous store. Default: MASTER_ADDR, else '127.0.0.1'. */
  masterAddr?: string;
  /** Its TCP port. Default: MASTER_PORT, else 29500. */
  masterPort?: number;
  /**
   * What CUDA tensors go through. 'auto' (default): NCCL when every rank can load libnccl.so.2 and sees a CUDA
   * device, Gloo (staged through host memory) otherwise. 'nccl': NCCL, or an Error saying why not. 'gloo': Gloo only.
   * CPU tensors always go through Gloo.
   */
  backend?: Backend;
  /**
   * Every rendezvous and collective gives up after this long with an error naming the ranks that exited (or
   * saying none did). Default: WEIGHTNORM_DISTRIBUTED_TIMEOUT_MS, else 60000.
   */
  timeoutMs?: number;
}

export interface ProcessGroupInfo {
  rank: number;
  worldSize: number;
  /** The rank among the processes on this node (LOCAL_RANK, which the launcher sets; else rank). */
  localRank: number;
  /** What CUDA tensors go through (CPU tensors: always Gloo). */
  backend: 'gloo' | 'nccl';
}

/** Every call returns at once and runs on the group's communication thread, in the order made. */
interface NativeProcessGroup {
  allReduce(data: Float32Array | Int32Array, op: ReduceOp): Promise<void>;
  broadcast(data: Float32Array | Int32Array | Uint8Array, root: number): Promise<void>;
  /** NCCL on CUDA memory (the address from native.cudaAddress), off the JavaScript thread. */
  allReduceDevice(address: bigint, count: number, dtype: 'float32' | 'int32', op: ReduceOp): Promise<void>;
  broadcastDevice(address: bigint, bytes: number, root: number): Promise<void>;
  /** Whether the group has an NCCL communicator. */
  readonly nccl: boolean;
  barrier(): Promise<void>;
  destroy(): Promise<void>;
}

interface NativeDistributed {
  createProcessGroup(options: {
    rank: number;
    worldSize: number;
    masterAddr: string;
    masterPort: number;
    timeoutMs: number;
    localHost?: string;
    nccl: 'off' | 'auto' | 'required';
  }): Promise<NativeProcessGroup>;
  /** Whether libnccl.so.2 loads and a CUDA device is usable here; why not otherwise. */
  ncclStatus(): { usable: boolean; reason: string | null };
}

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
let loaded: { module: NativeDistributed } | { reason: string } | undefined;

function loadModule(): { module: NativeDistributed } | { reason: string } {
  if (loaded) return loaded;
  const candidates = [
    resolve(packageRoot, 'build/Release/weightnorm_distributed.node'),
    resolve(packageRoot, `prebuilds/${process.platform}-${process.arch}/weightnorm_distributed.node`),
  ];
  const path = candidates.find((candidate) => existsSync(candidate));
  if (!path) {
    loaded = {
      reason:
        'built without Gloo (install libgloo-dev and rebuild: WEIGHTNORM_BUILD_FROM_SOURCE=1 npm rebuild weightnorm; ' +
        'the prebuilt addon does not carry the data-parallel module)',
    };
  } else {
    try {
      loaded = { module: createRequire(import.meta.url)(path) as NativeDistributed };
    } catch (error) {
      // Typically libgloo.so.0 is missing at run time (the module was built on a machine that had it).
      const message = error instanceof Error ? error.message : String(error);
      loaded = { reason: `${path} does not load (${message}); install libgloo0 (or libgloo-dev) on this machine` };
    }
  }
  return loaded;
}

/** Whether data-parallel training can run here (the Gloo module was built and loads). */
export function available(): boolean {
  return 'module' in loadModule();
}

/** Why available() is false (null when it is true). */
export function unavailableReason(): string | null {
  const state = loadModule();
  return 'reason' in state ? state.reason : null;
}

/**
 * Why backend 'nccl' cannot be used on this machine (libnccl.so.2 does not load, no CUDA device, or a build without
 * CUDA), or null when it can.
 */
export function ncclUnavailableReason(): string | null {
  const state = loadModule();
  if ('reason' in state) return `data-parallel training is unavailable: ${state.reason}`;
  return state.module.ncclStatus().reason;
}

let group: { native: NativeProcessGroup; info: ProcessGroupInfo } | null = null;

function envInteger(name: string, where: string, fallback?: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') {
    if (fallback !== undefined) return fallback;
    throw rangeError(where, `a value, or the environment variable ${name} (the launcher sets it)`, 'neither');
  }
  const value = Number(text);
  if (!Number.isInteger(value)) throw rangeError(where, `an integer in ${name}`, JSON.stringify(text));
  return value;
}

function checkInteger(value: unknown, where: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw typeError(where, 'an integer', value);
  if (!Number.isInteger(value) || value < min || value > max) throw rangeError(where, `an integer in [${min}, ${max}]`, String(value));
  return value;
}

/**
 * Joins the process group (every rank calls it; it resolves when all have arrived and connected). Options left out
 * come from RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and LOCAL_RANK), as the launcher (`weightnorm launch`) and
 * torchrun set them.
 */
export async function init(options: InitOptions = {}): Promise<ProcessGroupInfo> {
  const where = 'distributed.init';
  if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object', options);
  if (group) throw new Error(`${where}: already initialized (rank ${group.info.rank} of ${group.info.worldSize}); call destroy() first`);
  const backend = options.backend ?? 'auto';
  if (!['auto', 'gloo', 'nccl'].includes(backend)) throw typeError(`${where}: options.backend`, "'auto', 'gloo' or 'nccl'", backend);
  const worldSize = checkInteger(options.worldSize ?? envInteger('WORLD_SIZE', `${where}: options.worldSize`), `${where}: options.worldSize`, 1, 65536);
  const rank = checkInteger(options.rank ?? envInteger('RANK', `${where}: options.rank`), `${where}: options.rank`, 0, worldSize - 1);
  const masterAddr = options.masterAddr ?? (process.env.MASTER_ADDR || '127.0.0.1');
  if (typeof masterAddr !== 'string' || masterAddr === '') throw typeError(`${where}: options.masterAddr`, 'a host name or address', masterAddr);
  const masterPort = checkInteger(options.masterPort ?? envInteger('MASTER_PORT', `${where}: options.masterPort`, 29500), `${where}: options.masterPort`, 1, 65535);
  const timeoutMs = checkInteger(
    options.timeoutMs ?? envInteger('WEIGHTNORM_DISTRIBUTED_TIMEOUT_MS', `${where}: options.timeoutMs`, 60000),
    `${where}: options.timeoutMs`, 1, 2 ** 31 - 1);
  const localRank = envInteger('LOCAL_RANK', `${where}: LOCAL_RANK`, rank);
  const state = loadModule();
  if ('reason' in state) throw new Error(`${where}: data-parallel training is unavailable: ${state.reason}`);
  if (backend === 'nccl') {
    // Checked here, before the rendezvous, so that the error is this rank's own reason (the ranks also compare notes
    // during the rendezvous, so that one rank without NCCL makes every rank fail alike).
    const reason = state.module.ncclStatus().reason;
    if (reason !== null) throw new Error(`${where}: backend 'nccl' is unavailable: ${reason}; use backend 'gloo' or 'auto'`);
  }
  const localHost = process.env.WEIGHTNORM_DISTRIBUTED_HOST || undefined;
  const nccl = backend === 'nccl' ? 'required' : backend === 'auto' ? 'auto' : 'off';
  const nativeGroup = await state.module.createProcessGroup({ rank, worldSize, masterAddr, masterPort, timeoutMs, localHost, nccl });
  group = { native: nativeGroup, info: { rank, worldSize, localRank, backend: nativeGroup.nccl ? 'nccl' : 'gloo' } };
  return { ...group.info };
}

export function isInitialized(): boolean {
  return group !== null;
}

function current(where: string): { native: NativeProcessGroup; info: ProcessGroupInfo } {
  if (!group) throw new Error(`${where}: no process group; call distributed.init() first`);
  return group;
}

export function getRank(): number {
  return current('distributed.getRank').info.rank;
}

export function getWorldSize(): number {
  return current('distributed.getWorldSize').info.worldSize;
}

function checkTensor(value: unknown, where: string, dtypes: readonly string[]): Tensor {
  if (!(value instanceof Tensor)) throw typeError(`${where}: tensor`, 'a Tensor', value);
  if (!dtypes.includes(value.dtype)) throw typeError(`${where}: tensor`, `a ${dtypes.join(' or ')} tensor`, value);
  return value;
}

/** Writes `values` into `target` in place (same object, its version bumped, as an in-place op would). */
function writeInto(target: Tensor, values: Float32Array | Int32Array | Uint8Array): void {
  target.replaceHandle(native.fromArray(values, [...target.shape], target.device, target.dtype));
}

/**
 * NCCL wrote into `target`'s memory in place: an in-place update for autograd's checks and derived caches. The
 * tensor must stay alive until the promise settles (the collective holds its address, not a reference).
 */
function bumpVersion(target: Tensor): void {
  target.version += 1;
}

export interface AllReduceOptions {
  /** Default 'sum'. 'mean' divides the sum by worldSize (float32 only). */
  op?: ReduceOp;
}

/** Replaces `tensor` (float32 or int32) on every rank with the reduction over ranks, in place. */
export function allReduce(tensor: Tensor, options: AllReduceOptions = {}): Promise<void> {
  const where = 'distributed.allReduce';
  const target = checkTensor(tensor, where, ['float32', 'int32']);
  const op = options.op ?? 'sum';
  if (!['sum', 'mean', 'max', 'min'].includes(op)) throw typeError(`${where}: options.op`, "'sum', 'mean', 'max' or 'min'", op);
  if (op === 'mean' && target.dtype === 'int32') {
    throw typeError(`${where}: tensor`, "a float32 tensor for op 'mean' (an int32 mean would truncate)", target);
  }
  const { native: pg } = current(where);
  if (target.device === 'cuda' && pg.nccl) {
    const address = native.cudaAddress(handleOf(target, where, 'any'));
    return pg.allReduceDevice(address, target.size, target.dtype as 'float32' | 'int32', op).then(() => bumpVersion(target));
  }
  const values = target.toArray() as Float32Array | Int32Array;
  return pg.allReduce(values, op).then(() => writeInto(target, values));
}

/** Replaces `tensor` on every rank with root's, in place. */
export function broadcast(tensor: Tensor, root = 0): Promise<void> {
  const where = 'distributed.broadcast';
  const target = checkTensor(tensor, where, ['float32', 'int32', 'bool']);
  const { native: pg, info } = current(where);
  checkInteger(root, `${where}: root`, 0, info.worldSize - 1);
  if (target.device === 'cuda' && pg.nccl) {
    const address = native.cudaAddress(handleOf(target, where, 'any'));
    const bytes = target.size * (target.dtype === 'bool' ? 1 : 4);
    return pg.broadcastDevice(address, bytes, root).then(() => bumpVersion(target));
  }
  const values = target.toArray() as Float32Array | Int32Array | Uint8Array;
  return pg.broadcast(values, root).then(() => writeInto(target, values));
}

/** Resolves once every rank has called barrier(). */
export function barrier(): Promise<void> {
  const { native: pg } = current('distributed.barrier');
  return pg.barrier();
}

/**
 * Leaves the process group: a last barrier (rank 0 hosts the store, so it waits for the others), then the
 * connections close. After a failure it only closes. init() may be called again afterwards.
 */
export function destroy(): Promise<void> {
  if (!group) return Promise.resolve();
  const pg = group.native;
  group = null;
  return pg.destroy();
}

export interface DataParallelOptions {
  /**
   * Gradients are averaged in buckets of about this many bytes (default 25 MiB, as PyTorch's DDP; the first bucket,
   * the last layers' gradients, holds at most 1 MiB so that it can be sent early).
   */
  bucketBytes?: number;
  /** Also broadcast buffers (e.g. running statistics) from rank 0 at the start. Default true. */
  broadcastBuffers?: boolean;
  /**
   * Start averaging a bucket during backward(), as soon as all its gradients are final (default true). false: all
   * buckets are sent by synchronize(), after backward() (slower; for comparison and debugging).
   */
  overlap?: boolean;
}

const FIRST_BUCKET_BYTES = 2 ** 20;

interface Bucket {
  params: Tensor[];
  /** Each parameter's index in module.parameters(), for error messages. */
  indices: number[];
  offsets: number[];
  /** Host staging for Gloo (empty when the bucket goes through NCCL). */
  values: Float32Array;
  /** NCCL: the gradients joined on the device, from the start of the all-reduce until synchronize() copies them back. */
  flat: NativeTensor | null;
  /** Per parameter: its version and its gradient (object and version) when the gradient was packed; null before. */
  packed: ({ paramVersion: number; grad: Tensor | null; gradVersion: number } | null)[];
  packedCount: number;
  /** The all-reduce of this round, once started. */
  sent: Promise<void> | null;
}

/**
 * A model replicated on every rank. Each rank runs forward and backward on its share of the batch (with a loss
 * that is a mean over that share), then `await dp.synchronize()` (or `await dp.step(optimizer)`) before the
 * optimizer step: every gradient becomes the mean over ranks, which (equal shares) is the gradient of the mean loss
 * over the global batch.
 *
 * The averaging overlaps backward(), as PyTorch's DistributedDataParallel: the gradients are grouped into buckets
 * in reverse parameter order (the last layers' gradients are final first), and a hook on every parameter
 * (registerPostAccumulateGradHook) starts a bucket's all-reduce, off the JavaScript thread, as soon as all of its
 * gradients are final and every earlier bucket has started (so every rank issues the same collectives in the same
 * order). synchronize() starts what is left, waits for all of them and writes the means into .grad.
 *
 * Un-averaged gradients are never used silently: until synchronize() has resolved, the next forward() throws, and
 * synchronize() itself throws if a parameter or a gradient changed after its gradient was sent (an
 * optimizer.step() or a clipping before synchronize()).
 */
export class DataParallel<M extends AnyModule = AnyModule> {
  readonly module: M;
  readonly #buckets: Bucket[];
  readonly #hooks: RemovableHandle[] = [];
  /** The next bucket to start: buckets start strictly in order. */
  #nextBucket = 0;
  #syncing = true;
  readonly #overlap: boolean;
  /** The parameters are CUDA tensors and the group has NCCL: buckets are joined and reduced on the device. */
  readonly #onDevice: boolean;

  private constructor(module: M, buckets: Bucket[], overlap: boolean, onDevice: boolean) {
    this.module = module;
    this.#buckets = buckets;
    this.#overlap = overlap;
    this.#onDevice = onDevice;
  }

  /** Wraps `module` and makes every rank's parameters (and buffers) rank 0's. */
  static async create<M extends AnyModule>(module: M, options: DataParallelOptions = {}): Promise<DataParallel<M>> {
    const where = 'distributed.DataParallel';
    if (typeof module !== 'object' || module === null || typeof (module as AnyModule).parameters !== 'function') {
      throw typeError(`${where}: module`, 'an nn.Module', module);
    }
    const bucketBytes = checkInteger(options.bucketBytes ?? 25 * 2 ** 20, `${where}: options.bucketBytes`, 4);
    const overlap = options.overlap ?? true;
    if (typeof overlap !== 'boolean') throw typeError(`${where}: options.overlap`, 'a boolean', overlap);
    const { native: pg } = current(where);
    const params = module.parameters();
    for (const [i, p] of params.entries()) {
      if (p.dtype !== 'float32') throw typeError(`${where}: parameters()[${i}]`, 'a float32 parameter', p);
    }
    const synced = [...params, ...(options.broadcastBuffers === false ? [] : module.namedBuffers().map(([, t]) => t))];
    for (const t of synced) await broadcast(t, 0);
    const onDevice = pg.nccl && params.length > 0 && params.every((p) => p.device === 'cuda');
    // Gradients become final roughly in reverse order of the parameters, so the buckets are filled from the end.
    // Frozen parameters (requiresGrad false) are broadcast above but get no gradient: no bucket, as in PyTorch.
    const buckets: Bucket[] = [];
    let pending: number[] = [];
    let pendingElements = 0;
    const flush = () => {
      if (pending.length === 0) return;
      const offsets: number[] = [];
      let total = 0;
      for (const i of pending) {
        offsets.push(total);
        total += params[i]!.size;
      }
      buckets.push({
        params: pending.map((i) => params[i]!),
        indices: pending,
        offsets,
        values: new Float32Array(onDevice ? 0 : total),
        flat: null,
        packed: pending.map(() => null),
        packedCount: 0,
        sent: null,
      });
      pending = [];
      pendingElements = 0;
    };
    for (let i = params.length - 1; i >= 0; i--) {
      if (!params[i]!.requiresGrad) continue;
      const size = params[i]!.size;
      // The first bucket is small (as DDP's 1 MiB first bucket), so that communication starts early in backward()
      // even when the whole model would fit in one bucket.
      const limit = buckets.length === 0 ? Math.min(bucketBytes, FIRST_BUCKET_BYTES) : bucketBytes;
      if (pendingElements > 0 && (pendingElements + size) * 4 > limit) flush();
      pending.push(i);
      pendingElements += size;
    }
    flush();
    const dp = new DataParallel(module, buckets, overlap, onDevice);
    // Without overlap the hooks still pack the gradients (and so arm the guards against un-averaged use).
    buckets.forEach((bucket, b) =>
      bucket.params.forEach((p, i) => dp.#hooks.push(p.registerPostAccumulateGradHook(() => dp.#gradientFinal(b, i)))),
    );
    return dp;
  }

  /** The hook: parameter i of bucket b has its final gradient for this backward(). */
  #gradientFinal(b: number, i: number): void {
    if (!this.#syncing) return;
    const bucket = this.#buckets[b]!;
    if (bucket.packed[i]) {
      throw new Error(
        `DataParallel: parameters()[${bucket.indices[i]}] received a second gradient before synchronize(): await ` +
          'dp.synchronize() after each backward(), or run the backward() calls that only accumulate inside dp.noSync()',
      );
    }
    this.#pack(bucket, i);
    if (this.#overlap) this.#startReadyBuckets();
  }

  #pack(bucket: Bucket, i: number): void {
    const p = bucket.params[i]!;
    const offset = bucket.offsets[i]!;
    // A parameter without a gradient on this rank (unused in this forward) contributes zeros and receives the mean.
    // On the device the bucket is joined when it starts (#startReadyBuckets).
    if (!this.#onDevice) {
      if (p.grad) bucket.values.set(p.grad.toArray() as Float32Array, offset);
      else bucket.values.fill(0, offset, offset + p.size);
    }
    bucket.packed[i] = { paramVersion: p.version, grad: p.grad, gradVersion: p.grad?.version ?? 0 };
    bucket.packedCount += 1;
  }

  #startReadyBuckets(): void {
    const { native: pg } = current('DataParallel');
    while (this.#nextBucket < this.#buckets.length) {
      const bucket = this.#buckets[this.#nextBucket]!;
      if (bucket.packedCount < bucket.params.length) return;
      if (this.#onDevice) {
        const parts = bucket.params.map((p) =>
          p.grad ? native.view(handleOf(p.grad, 'DataParallel: grad'), [p.size]) : native.full([p.size], 0, 'cuda'));
        const flat = native.concat(parts, 0);
        for (const part of parts) part.dispose(); // views and zeros: the storage of .grad stays with .grad
        bucket.flat = flat;
        const address = native.cudaAddress(flat);
        bucket.sent = pg.allReduceDevice(address, flat.shape[0]!, 'float32', 'mean');
      } else {
        bucket.sent = pg.allReduce(bucket.values, 'mean');
      }
      // Awaited by synchronize(); until then a failure must not count as an unhandled rejection.
      bucket.sent.catch(() => undefined);
      this.#nextBucket += 1;
    }
  }

  /** Whether gradients of a backward() were sent and synchronize() has not yet written their means back. */
  get #inProgress(): boolean {
    return this.#buckets.some((bucket) => bucket.packedCount > 0);
  }

  forward(...inputs: Parameters<M['forward']>): ReturnType<M['forward']> {
    if (this.#inProgress) {
      throw new Error(
        'DataParallel.forward: the gradients of the last backward() are still being averaged over the ranks: ' +
          'await dp.synchronize() (or dp.step(optimizer)) before the optimizer step and the next forward()',
      );
    }
    return this.module.forward(...inputs);
  }

  parameters(): Tensor[] {
    return this.module.parameters();
  }

  /** How many buckets' all-reduces have started since the last synchronize() (during backward(), with overlap). */
  get bucketsStarted(): number {
    return this.#nextBucket;
  }

  /** The number of gradient buckets and their sizes in elements (for tuning bucketBytes). */
  get bucketSizes(): number[] {
    // From the parameters, not the host staging (empty when the bucket goes through NCCL).
    return this.#buckets.map((b) => b.params.reduce((elements, p) => elements + p.size, 0));
  }

  /**
   * Makes every parameter's gradient the mean over the ranks, in place: starts the buckets backward() has not
   * started (all of them without overlap), waits for every all-reduce, and writes the means into .grad. Call it
   * after backward() and before the optimizer step (or use step()). A parameter without a gradient on this rank
   * contributes zeros (and receives the mean), so all ranks take the same step.
   */
  async synchronize(): Promise<void> {
    const where = 'DataParallel.synchronize';
    current(where);
    for (const bucket of this.#buckets) {
      bucket.packed.forEach((packed, i) => {
        if (!packed) this.#pack(bucket, i);
      });
    }
    this.#startReadyBuckets();
    try {
      await Promise.all(this.#buckets.map((bucket) => bucket.sent));
      for (const bucket of this.#buckets) {
        bucket.params.forEach((p, i) => {
          const packed = bucket.packed[i]!;
          const k = bucket.indices[i];
          if (p.version !== packed.paramVersion) {
            throw new Error(
              `${where}: parameters()[${k}] was updated in place after its gradient was sent (optimizer.step() before ` +
                'synchronize() resolved?): that step used this rank\'s own gradient, not the mean; await ' +
                'dp.synchronize() first, or use await dp.step(optimizer)',
            );
          }
          if (p.grad !== packed.grad || (packed.grad && packed.grad.version !== packed.gradVersion)) {
            throw new Error(
              `${where}: parameters()[${k}].grad changed after it was sent (gradient clipping or zeroGrad() before ` +
                'synchronize()?): the mean would overwrite the change; clip after synchronize()',
            );
          }
        });
      }
      for (const bucket of this.#buckets) {
        bucket.params.forEach((p, i) => {
          const offset = bucket.offsets[i]!;
          if (bucket.flat) {
            p.grad ??= keep(new Tensor(native.full([...p.shape], 0, p.device)));
            const target = native.view(handleOf(p.grad, `${where}: grad`), [p.size]);
            native.copyRows(target, 0, bucket.flat, offset, p.size);
            target.dispose();
            p.grad.version += 1; // written in place
            return;
          }
          const mean = bucket.values.subarray(offset, offset + p.size);
          if (p.grad) writeInto(p.grad, mean);
          else p.grad = keep(tensor(mean.slice(), [...p.shape], { device: p.device }));
        });
      }
    } finally {
      // A new round starts whatever happened: after a failure the group is broken anyway (later calls say so).
      for (const bucket of this.#buckets) {
        bucket.flat?.dispose();
        bucket.flat = null;
        bucket.packed.fill(null);
        bucket.packedCount = 0;
        bucket.sent = null;
      }
      this.#nextBucket = 0;
    }
  }

  /** `await dp.synchronize()`, then `optimizer.step()`: the averaged gradients' step. */
  async step(optimizer: { step(): void }): Promise<void> {
    if (typeof optimizer !== 'object' || optimizer === null || typeof optimizer.step !== 'function') {
      throw typeError('DataParallel.step: optimizer', 'an optimizer (an object with step())', optimizer);
    }
    await this.synchronize();
    optimizer.step();
  }

  /**
   * Runs `fn` (forward and backward passes that only accumulate gradients, as PyTorch's no_sync) without starting
   * any all-reduce; the next backward() outside it, and synchronize(), average the accumulated gradients.
   */
  noSync<T>(fn: () => T): T {
    if (typeof fn !== 'function') throw typeError('DataParallel.noSync: fn', 'a function', fn);
    const previous = this.#syncing;
    this.#syncing = false;
    try {
      return fn();
    } finally {
      this.#syncing = previous;
    }
  }

  /** Removes the gradient hooks and returns the module (to train or wrap it otherwise afterwards). */
  unwrap(): M {
    for (const hook of this.#hooks.splice(0)) hook.remove();
    return this.module;
  }
}

/** `DataParallel.create(module, options)`. */
export function wrapDataParallel<M extends AnyModule>(module: M, options?: DataParallelOptions): Promise<DataParallel<M>> {
  return DataParallel.create(module, options);
}
