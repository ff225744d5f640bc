// Exploration schedules and the one-step temporal-difference target of Q-learning.
import { rangeError, typeError } from '../errors.js';
import { add, mul, sub } from '../pointwise.js';
import { amax } from '../reduce.js';
import { handleOf, Tensor } from '../tensor.js';

export interface LinearDecayOptions {
  start: number;
  end: number;
  /** Steps over which the value moves from start to end; it stays at end afterwards. */
  steps: number;
}

/**
 * ε-greedy's ε over time: start at step 0, linearly to end at `steps`, end from then on (Mnih et al., 2015 decay
 * ε from 1 to 0.1 over the first million frames).
 */
export function linearDecay(options: LinearDecayOptions): (step: number) => number {
  const where = 'rl.linearDecay';
  if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object like { start, end, steps }', options);
  const { start, end, steps } = options;
  for (const [name, value] of [['start', start], ['end', end]] as const) {
    if (typeof value !== 'number' || !Number.isFinite(value)) throw typeError(`${where}: options.${name}`, 'a finite number', value);
  }
  if (typeof steps !== 'number') throw typeError(`${where}: options.steps`, 'an integer ≥ 1', steps);
  if (!Number.isSafeInteger(steps) || steps < 1) throw rangeError(`${where}: options.steps`, 'an integer ≥ 1', String(steps));
  return (step: number) => {
    if (typeof step !== 'number' || !(step >= 0)) throw rangeError(`${where}: step`, 'a number ≥ 0', String(step));
    return step >= steps ? end : start + ((end - start) * step) / steps;
  };
}

export interface TdTargetOptions {
  /** Rewards r [batch]. */
  rewards: Tensor;
  /** Q_target(s', ·) [batch, actions], already computed without gradient. */
  nextQ: Tensor;
  /** 1 where s' is terminal (no bootstrap), else 0 [batch]. */
  terminated: Tensor;
  /** Discount γ in [0, 1]. */
  gamma: number;
}

/** y = r + γ·(1 − terminated)·max_a' Q_target(s', a') [batch]: the regression target of DQN's taken-action Q-value. */
export function tdTargets(options: TdTargetOptions): Tensor {
  const where = 'rl.tdTargets';
  if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object like { rewards, nextQ, terminated, gamma }', options);
  const { rewards, nextQ, terminated, gamma } = options;
  for (const [name, t] of [['rewards', rewards], ['nextQ', nextQ], ['terminated', terminated]] as const) {
    if (!(t instanceof Tensor)) throw typeError(`${where}: options.${name}`, 'a Tensor', t);
    handleOf(t, `${where}: options.${name}`);
  }
  if (typeof gamma !== 'number' || !(gamma >= 0 && gamma <= 1)) throw rangeError(`${where}: options.gamma`, 'a number in [0, 1]', String(gamma));
  if (nextQ.rank !== 2) throw rangeError(`${where}: options.nextQ`, '[batch, actions]', `[${nextQ.shape.join(', ')}]`);
  const batch = nextQ.shape[0]!;
  for (const [name, t] of [['rewards', rewards], ['terminated', terminated]] as const) {
    if (t.rank !== 1 || t.shape[0] !== batch) throw rangeError(`${where}: options.${name}`, `[${batch}] like nextQ's batch`, `[${t.shape.join(', ')}]`);
  }
  const bootstrap = mul(amax(nextQ, 1), sub(1, terminated));
  return add(rewards, mul(bootstrap, gamma));
}
