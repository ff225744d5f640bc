// The dqn command's choices and defaults, apart from the command itself so that cli.ts can show them without
// loading the native addon.
import { InvalidArgumentError } from 'commander';

export const DQN_NORMS = ['none', 'wn'] as const;
export type DqnNorm = (typeof DQN_NORMS)[number];

export const DQN_DEFAULTS = {
  norm: [...DQN_NORMS] as DqnNorm[],
  episodes: 250,
  seeds: 5,
  firstSeed: 0,
  hidden: 64,
  lr: 1e-3,
  batch: 64,
  gamma: 0.99,
  buffer: 20_000,
  learnStart: 500,
  clip: 10,
  trainEvery: 1,
  targetEvery: 200,
  epsilonStart: 1,
  epsilonEnd: 0.01,
  epsilonSteps: 3000,
  initStates: 500,
  maxEpisodeSteps: 200,
  out: 'runs/dqn',
};

/** An exploration rate: a number in [0, 1]. */
export function probability(text: string): number {
  const n = Number(text);
  if (text.trim() === '' || !(n >= 0 && n <= 1)) throw new InvalidArgumentError('Expected a number in [0, 1].');
  return n;
}

/** A finite number ≥ 0. */
export function nonNegative(text: string): number {
  const n = Number(text);
  if (text.trim() === '' || !(n >= 0 && Number.isFinite(n))) throw new InvalidArgumentError('Expected a finite number ≥ 0.');
  return n;
}
