// Data-parallel training over Gloo (CPU processes; tensors on a GPU are staged through host memory): a process
// group formed by a rendezvous at rank 0, collectives that run off the JavaScript thread, and DataParallel, which
// keeps a model's replicas identical by broadcasting rank 0's parameters once and averaging gradients after each
// backward().
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
import { native } from './native.js';
import type { AnyModule } from './nn.js';
import { keep } from './scope.js';
import { Tensor, tensor } from './tensor.js';

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
  /** 'auto' and 'gloo' are Gloo; 'nccl' is not implemented yet (an Error says so). */
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
  backend: 'gloo';
}

interface NativeProcessGroup {
  allReduce(data: Float32Array | Int32Array, op: ReduceOp): Promise<void>;
  broadcast(data: Float32Array | Int32Array | Uint8Array, root: number): Promise<void>;
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
  }): Promise<NativeProcessGroup>;
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

let group: { native: NativeProcessGroup; info: ProcessGroupInfo } | null = null;
// Collectives run one at a time in the order they were called: every rank must issue the same sequence.
let queue: Promise<unknown> = Promise.resolve();

function enqueue<T>(job: () => Promise<T>): Promise<T> {
  const run = queue.then(job, job);
  queue = run.catch(() => undefined);
  return run;
}

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
  if (backend === 'nccl') {
    throw new Error(`${where}: the 'nccl' backend is not implemented yet; use 'gloo' (GPU tensors are staged through host memory)`);
  }
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
  const localHost = process.env.WEIGHTNORM_DISTRIBUTED_HOST || undefined;
  const nativeGroup = await state.module.createProcessGroup({ rank, worldSize, masterAddr, masterPort, timeoutMs, localHost });
  group = { native: nativeGroup, info: { rank, worldSize, localRank, backend: 'gloo' } };
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
  const values = target.toArray() as Float32Array | Int32Array;
  return enqueue(() => pg.allReduce(values, op)).then(() => writeInto(target, values));
}

/** Replaces `tensor` on every rank with root's, in place. */
export function broadcast(tensor: Tensor, root = 0): Promise<void> {
  const where = 'distributed.broadcast';
  const target = checkTensor(tensor, where, ['float32', 'int32', 'bool']);
  const { native: pg, info } = current(where);
  checkInteger(root, `${where}: root`, 0, info.worldSize - 1);
  const values = target.toArray() as Float32Array | Int32Array | Uint8Array;
  return enqueue(() => pg.broadcast(values, root)).then(() => writeInto(target, values));
}

/** Resolves once every rank has called barrier(). */
export function barrier(): Promise<void> {
  const { native: pg } = current('distributed.barrier');
  return enqueue(() => pg.barrier());
}

/**
 * Leaves the process group: a last barrier (rank 0 hosts the store, so it waits for the others), then the
 * connections close. After a failure it only closes. init() may be called again afterwards.
 */
export function destroy(): Promise<void> {
  if (!group) return Promise.resolve();
  const pg = group.native;
  group = null;
  return enqueue(() => pg.destroy());
}

export interface DataParallelOptions {
  /** Gradients are averaged in buckets of about this many bytes (default 25 MiB, as PyTorch's DDP). */
  bucketBytes?: number;
  /** Also broadcast buffers (e.g. running statistics) from rank 0 at the start. Default true. */
  broadcastBuffers?: boolean;
}

interface Bucket {
  params: Tensor[];
  offsets: number[];
  values: Float32Array;
}

/**
 * A model replicated on every rank. Each rank runs forward and backward on its share of the batch (with a loss
 * that is a mean over that share), then `await synchronizeGradients()` before the optimizer step: every gradient
 * becomes the mean over ranks, which (equal shares) is the gradient of the mean loss over the global batch.
 * Buckets are sent while the next is being packed; communication does not yet overlap backward() itself.
 */
export class DataParallel<M extends AnyModule = AnyModule> {
  readonly module: M;
  readonly #buckets: Bucket[];

  private constructor(module: M, buckets: Bucket[]) {
    this.module = module;
    this.#buckets = buckets;
  }

  /** Wraps `module` and makes every rank's parameters (and buffers) rank 0's. */
  static async create<M extends AnyModule>(module: M, options: DataParallelOptions = {}): Promise<DataParallel<M>> {
    const where = 'distributed.DataParallel';
    if (typeof module !== 'object' || module === null || typeof (module as AnyModule).parameters !== 'function') {
      throw typeError(`${where}: module`, 'an nn.Module', module);
    }
    const bucketBytes = checkInteger(options.bucketBytes ?? 25 * 2 ** 20, `${where}: options.bucketBytes`, 4);
    current(where);
    const params = module.parameters();
    for (const [i, p] of params.entries()) {
      if (p.dtype !== 'float32') throw typeError(`${where}: parameters()[${i}]`, 'a float32 parameter', p);
    }
    const synced = [...params, ...(options.broadcastBuffers === false ? [] : module.namedBuffers().map(([, t]) => t))];
    for (const t of synced) await broadcast(t, 0);
    // Gradients become ready roughly in reverse order of the parameters, so the buckets are filled from the end.
    const buckets: Bucket[] = [];
    let pending: Tensor[] = [];
    let pendingElements = 0;
    const flush = () => {
      if (pending.length === 0) return;
      const offsets: number[] = [];
      let total = 0;
      for (const p of pending) {
        offsets.push(total);
        total += p.size;
      }
      buckets.push({ params: pending, offsets, values: new Float32Array(total) });
      pending = [];
      pendingElements = 0;
    };
    for (const p of [...params].reverse()) {
      if (pendingElements > 0 && (pendingElements + p.size) * 4 > bucketBytes) flush();
      pending.push(p);
      pendingElements += p.size;
    }
    flush();
    return new DataParallel(module, buckets);
  }

  forward(...inputs: Parameters<M['forward']>): ReturnType<M['forward']> {
    return this.module.forward(...inputs);
  }

  parameters(): Tensor[] {
    return this.module.parameters();
  }

  /** The number of gradient buckets and their sizes in elements (for tuning bucketBytes). */
  get bucketSizes(): number[] {
    return this.#buckets.map((b) => b.values.length);
  }

  /**
   * Averages every parameter's gradient over the ranks, in place. A parameter without a gradient on this rank
   * contributes zeros (and receives the average), so all ranks take the same step.
   */
  async synchronizeGradients(): Promise<void> {
    const { native: pg } = current('DataParallel.synchronizeGradients');
    const sent = this.#buckets.map((bucket) => {
      bucket.params.forEach((p, i) => {
        if (p.grad) bucket.values.set(p.grad.toArray() as Float32Array, bucket.offsets[i]!);
        else bucket.values.fill(0, bucket.offsets[i]!, bucket.offsets[i]! + p.size);
      });
      return enqueue(() => pg.allReduce(bucket.values, 'mean')).then(() => {
        bucket.params.forEach((p, i) => {
          const mean = bucket.values.subarray(bucket.offsets[i]!, bucket.offsets[i]! + p.size);
          if (p.grad) writeInto(p.grad, mean);
          else p.grad = keep(tensor(mean.slice(), [...p.shape], { device: p.device }));
        });
      });
    });
    await Promise.all(sent);
  }
}

/** `DataParallel.create(module, options)`. */
export function wrapDataParallel<M extends AnyModule>(module: M, options?: DataParallelOptions): Promise<DataParallel<M>> {
  return DataParallel.create(module, options);
}
