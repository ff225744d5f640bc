// Experience replay for off-policy learning (Mnih et al., 2015): a fixed-capacity ring of transitions
// (s, a, r, s', terminated), the oldest overwritten first, sampled uniformly with replacement by a seeded stream so
// that a run is reproducible. Everything is kept in flat typed arrays: one minibatch is a handful of copies, ready
// to become tensors, with no per-transition objects.
import { rangeError, typeError } from '../errors.js';
import { uniformStream } from './random.js';

export interface ReplayBufferOptions {
  /** Transitions kept (the oldest is dropped when a new one arrives at capacity). */
  capacity: number;
  /** Numbers per state (CartPole: 4). */
  stateSize: number;
  /** Seed of the sampling stream (default 0). */
  seed?: number;
}

/** A minibatch of transitions, row i of each array belonging to the same transition. */
export interface ReplayBatch {
  /** [batch × stateSize], row-major. */
  states: Float32Array;
  actions: Int32Array;
  rewards: Float32Array;
  /** [batch × stateSize], row-major. */
  nextStates: Float32Array;
  /** 1 where the episode terminated on that transition (s' has no value), else 0. */
  terminated: Float32Array;
  /** Which stored slots were drawn (for tests and debugging). */
  slots: Int32Array;
}

function checkCount(where: string, value: unknown, min: number): number {
  if (typeof value !== 'number') throw typeError(where, `an integer ≥ ${min}`, value);
  if (!Number.isSafeInteger(value) || value < min) throw rangeError(where, `an integer ≥ ${min}`, String(value));
  return value;
}

export class ReplayBuffer {
  readonly capacity: number;
  readonly stateSize: number;
  private readonly states: Float32Array;
  private readonly nextStates: Float32Array;
  private readonly actions: Int32Array;
  private readonly rewards: Float32Array;
  private readonly terminated: Float32Array;
  private readonly uniform: () => number;
  private next = 0;
  private count = 0;

  constructor(options: ReplayBufferOptions) {
    const where = 'rl.ReplayBuffer';
    if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object like { capacity, stateSize, seed }', options);
    this.capacity = checkCount(`${where}: options.capacity`, options.capacity, 1);
    this.stateSize = checkCount(`${where}: options.stateSize`, options.stateSize, 1);
    const seed = checkCount(`${where}: options.seed`, options.seed ?? 0, 0);
    this.states = new Float32Array(this.capacity * this.stateSize);
    this.nextStates = new Float32Array(this.capacity * this.stateSize);
    this.actions = new Int32Array(this.capacity);
    this.rewards = new Float32Array(this.capacity);
    this.terminated = new Float32Array(this.capacity);
    this.uniform = uniformStream(seed);
  }

  /** Transitions stored (≤ capacity). */
  get size(): number {
    return this.count;
  }

  /** Stores one transition, overwriting the oldest when full. */
  push(state: ArrayLike<number>, action: number, reward: number, nextState: ArrayLike<number>, terminated: boolean): void {
    const where = 'rl.ReplayBuffer.push';
    if (state?.length !== this.stateSize) throw rangeError(`${where}: state`, `${this.stateSize} numbers`, String(state?.length));
    if (nextState?.length !== this.stateSize) throw rangeError(`${where}: nextState`, `${this.stateSize} numbers`, String(nextState?.length));
    if (!Number.isInteger(action) || action < 0) throw rangeError(`${where}: action`, 'an integer ≥ 0', String(action));
    if (!Number.isFinite(reward)) throw rangeError(`${where}: reward`, 'a finite number', String(reward));
    const at = this.next;
    this.states.set(state, at * this.stateSize);
    this.nextStates.set(nextState, at * this.stateSize);
    this.actions[at] = action;
    this.rewards[at] = reward;
    this.terminated[at] = terminated ? 1 : 0;
    this.next = (at + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
  }

  /** `batchSize` transitions drawn uniformly with replacement from those stored. */
  sample(batchSize: number): ReplayBatch {
    const where = 'rl.ReplayBuffer.sample';
    checkCount(`${where}: batchSize`, batchSize, 1);
    if (this.count === 0) throw new RangeError(`${where}: the buffer is empty; push() transitions first`);
    const n = this.stateSize;
    const batch: ReplayBatch = {
      states: new Float32Array(batchSize * n),
      actions: new Int32Array(batchSize),
      rewards: new Float32Array(batchSize),
      nextStates: new Float32Array(batchSize * n),
      terminated: new Float32Array(batchSize),
      slots: new Int32Array(batchSize),
    };
    for (let i = 0; i < batchSize; i++) {
      const slot = Math.min(Math.floor(this.uniform() * this.count), this.count - 1);
      batch.slots[i] = slot;
      batch.states.set(this.states.subarray(slot * n, slot * n + n), i * n);
      batch.nextStates.set(this.nextStates.subarray(slot * n, slot * n + n), i * n);
      batch.actions[i] = this.actions[slot]!;
      batch.rewards[i] = this.rewards[slot]!;
      batch.terminated[i] = this.terminated[slot]!;
    }
    return batch;
  }
}
