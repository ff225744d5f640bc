// Reinforcement learning: a classic-control environment, experience replay, an exploration schedule and the TD
// target, enough for DQN (the `weightnorm dqn` command trains one).
export { CartPole, CARTPOLE, type CartPoleOptions, type CartPoleStep } from './cartpole.js';
export { ReplayBuffer, type ReplayBatch, type ReplayBufferOptions } from './replay.js';
export { linearDecay, tdTargets, type LinearDecayOptions, type TdTargetOptions } from './schedule.js';
export { uniformStream } from './random.js';
