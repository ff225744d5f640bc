// Minibatches gathered in a worker thread (`batches(split, { prefetch: true })`): while the main thread trains on
// batch k, a worker_threads Worker copies the examples of batches k+1 and k+2 into fresh host arrays and hands them
// over (the ArrayBuffers are transferred, not copied). The main thread only wraps them as tensors. The order comes
// from the same permutation() as without prefetch, and the copy is the same, so the batches are byte for byte the
// ones batches() gives without it.
//
// The iterator stays synchronous (a plain `for...of` training loop works unchanged): the main thread waits on a
// shared counter with Atomics.wait and takes the message with receiveMessageOnPort, never returning to the event loop.
// The worker is unref'd (it never keeps the process alive) and terminated when the loop ends, breaks or throws.
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';

import { tensor, type Device } from '../tensor.js';
import type { Batch, LabeledData } from './dataset.js';

/** Batches the worker may prepare ahead of the one the main thread is using. */
export const PREFETCH_DEPTH = 2;
/** How long the main thread waits for a worker that has not started (a machine under heavy load is slow, not dead). */
const START_TIMEOUT_MS = 60_000;

// Slots of the shared control array.
const PRODUCED = 0; // batches posted by the worker
const CONSUMED = 1; // batches taken by the main thread
const STOP = 2; // set by the main thread: the worker ends
const STARTED = 3; // set by the worker once it runs
const FAILED = 4; // set by the worker when it caught an error (its message follows on the port)

interface WorkerInput {
  inputs: Float32Array; // over a SharedArrayBuffer: read in place, never copied
  labels: Int32Array;
  order: Int32Array;
  exampleSize: number;
  batchSize: number;
  batchCount: number;
  depth: number;
  control: Int32Array;
  port: MessagePort;
}

/**
 * The worker's whole program. It is sent as source text (new Worker(..., { eval: true })), so that the same code
 * runs from the compiled package and from the TypeScript sources under a test runner: it must use nothing but its
 * argument and JavaScript's globals.
 */
function prepareBatchesInWorker(input: WorkerInput): void {
  const { inputs, labels, order, exampleSize, batchSize, batchCount, depth, control, port } = input;
  const [produced, consumed, stop, started, failed] = [0, 1, 2, 3, 4];
  Atomics.store(control, started, 1);
  Atomics.notify(control, produced);
  try {
    for (let batch = 0; batch < batchCount; batch++) {
      // Wait while `depth` batches are ready and not yet taken (or until told to stop).
      while (Atomics.load(control, stop) === 0 && batch - Atomics.load(control, consumed) >= depth) {
        Atomics.wait(control, consumed, Atomics.load(control, consumed), 100);
      }
      if (Atomics.load(control, stop) !== 0) break;
      const start = batch * batchSize;
      const size = Math.min(batchSize, order.length - start);
      const x = new Float32Array(size * exampleSize);
      const y = new Int32Array(size);
      for (let i = 0; i < size; i++) {
        const index = order[start + i]!;
        x.set(inputs.subarray(index * exampleSize, (index + 1) * exampleSize), i * exampleSize);
        y[i] = labels[index]!;
      }
      port.postMessage({ batch, x, y }, [x.buffer, y.buffer]);
      Atomics.add(control, produced, 1);
      Atomics.notify(control, produced);
    }
  } catch (error) {
    port.postMessage({ error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) });
    Atomics.store(control, failed, 1);
    Atomics.notify(control, produced);
  }
  port.close();
}

const WORKER_SOURCE = `'use strict';
const { workerData } = require('node:worker_threads');
(${prepareBatchesInWorker.toString()})(workerData);
`;

let liveWorkers = 0;

/** Prefetch workers that have not exited yet (for tests of the shutdown). */
export function livePrefetchWorkers(): number {
  return liveWorkers;
}

/** Shared-memory copies of datasets' inputs, made once per inputs array (the worker reads them in place). */
const sharedInputs = new WeakMap<Float32Array, Float32Array>();

function sharedCopy(inputs: Float32Array): Float32Array {
  if (inputs.buffer instanceof SharedArrayBuffer) return inputs;
  let shared = sharedInputs.get(inputs);
  if (!shared) {
    shared = new Float32Array(new SharedArrayBuffer(inputs.byteLength));
    shared.set(inputs);
    sharedInputs.set(inputs, shared);
  }
  return shared;
}

export interface PrefetchPlan {
  split: LabeledData;
  order: Int32Array;
  exampleSize: number;
  batchSize: number;
  /** Batches to produce: the last may be smaller (dropLast already applied). */
  batchCount: number;
  device: Device;
  layout: 'flat' | 'image';
  makeBatch: (x: ReturnType<typeof tensor>, y: Int32Array) => Batch;
}

/**
 * The batches of `plan`, gathered by a worker thread PREFETCH_DEPTH batches ahead. batches() calls this for
 * `{ prefetch: true }`; the first call for a dataset copies its inputs into shared memory once (kept while the
 * inputs array is alive).
 */
export function* prefetchedBatches(plan: PrefetchPlan): Generator<Batch, undefined, undefined> {
  const { split, order, exampleSize, batchSize, batchCount, device, layout } = plan;
  if (batchCount === 0) return undefined;
  const control = new Int32Array(new SharedArrayBuffer(5 * Int32Array.BYTES_PER_ELEMENT));
  const { port1, port2 } = new MessageChannel();
  const workerData: WorkerInput = {
    inputs: sharedCopy(split.inputs),
    labels: Int32Array.from(split.labels),
    order,
    exampleSize,
    batchSize,
    batchCount,
    depth: PREFETCH_DEPTH,
    control,
    port: port2,
  };
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData, transferList: [port2] });
  liveWorkers += 1;
  worker.once('exit', () => {
    liveWorkers -= 1;
  });
  worker.unref();
  port1.unref();
  try {
    const waitStart = performance.now();
    for (let batch = 0; batch < batchCount; batch++) {
      let message = receiveMessageOnPort(port1);
      while (message === undefined) {
        if (Atomics.load(control, STARTED) === 0 && performance.now() - waitStart > START_TIMEOUT_MS) {
          throw new Error(`batches (prefetch): the worker thread did not start within ${START_TIMEOUT_MS / 1000} s`);
        }
        const produced = Atomics.load(control, PRODUCED);
        if (produced <= batch && Atomics.load(control, FAILED) === 0) Atomics.wait(control, PRODUCED, produced, 100);
        message = receiveMessageOnPort(port1);
        if (message === undefined && Atomics.load(control, FAILED) !== 0) message = receiveMessageOnPort(port1);
      }
      const body = message.message as { batch: number; x: Float32Array; y: Int32Array } | { error: string };
      if ('error' in body) throw new Error(`batches (prefetch): the worker thread failed: ${body.error}`);
      if (body.batch !== batch) throw new Error(`batches (prefetch): expected batch ${batch} from the worker, received ${body.batch}`);
      Atomics.add(control, CONSUMED, 1);
      Atomics.notify(control, CONSUMED);
      const size = body.y.length;
      const shape = layout === 'image' ? [size, ...split.inputShape] : [size, exampleSize];
      yield plan.makeBatch(tensor(body.x, shape, { device }), body.y);
    }
  } finally {
    Atomics.store(control, STOP, 1);
    Atomics.notify(control, CONSUMED);
    port1.close();
    void worker.terminate();
  }
  return undefined;
}
