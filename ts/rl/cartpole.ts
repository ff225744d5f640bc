// CartPole: a pole hinged on a cart that moves along a frictionless track; push the cart left or right to keep the
// pole upright. The dynamics of Barto, Sutton & Anderson (1983), "Neuronlike adaptive elements that can solve
// difficult learning control problems" (IEEE SMC 13(5)), with the constants, Euler integration, termination and
// reward of OpenAI Gym's CartPole-v0 / CartPole-v1 (gym/envs/classic_control/cartpole.py), friction terms zero:
//
//   F = +10 N (action 1) or −10 N (action 0); g = 9.8; m_c = 1.0; m_p = 0.1; M = m_c + m_p; l = 0.5 (half-length)
//   temp = (F + m_p·l·θ̇²·sin θ) / M
//   θ̈   = (g·sin θ − cos θ·temp) / (l·(4/3 − m_p·cos²θ / M))
//   ẍ   = temp − m_p·l·θ̈·cos θ / M
//   Euler step, τ = 0.02 s (positions move with the old velocities):
//   x ← x + τ·ẋ;  ẋ ← ẋ + τ·ẍ;  θ ← θ + τ·θ̇;  θ̇ ← θ̇ + τ·θ̈
//
// The episode terminates when |x| > 2.4 or |θ| > 12° (12·2π/360 rad) after a step; every step, the terminating one
// included, earns reward 1. It is truncated after maxEpisodeSteps steps: 200 as in CartPole-v0 (the default here:
// "solved" is an average return ≥ 195 over 100 consecutive episodes), 500 as in CartPole-v1. reset() draws each of
// (x, ẋ, θ, θ̇) from U(−0.05, 0.05) with the environment's seeded stream. The state is kept in float64.
import { rangeError, typeError } from '../errors.js';
import { uniformStream } from './random.js';

export const CARTPOLE = {
  gravity: 9.8,
  cartMass: 1.0,
  poleMass: 0.1,
  /** Half the pole's length (Gym's `length`). */
  halfLength: 0.5,
  forceMagnitude: 10.0,
  tau: 0.02,
  thetaThreshold: (12 * 2 * Math.PI) / 360,
  xThreshold: 2.4,
} as const;

export interface CartPoleOptions {
  /** Seed of the initial states (default 0): reset() after reset() continues the same stream. */
  seed?: number;
  /** Steps before an episode is truncated: 200 (CartPole-v0, default) or 500 (CartPole-v1), any integer ≥ 1. */
  maxEpisodeSteps?: number;
}

export interface CartPoleStep {
  /** (x, ẋ, θ, θ̇) after the step (a new array). */
  observation: Float64Array;
  reward: number;
  /** The pole fell or the cart left the track: the episode is over and the next state has no value. */
  terminated: boolean;
  /** maxEpisodeSteps reached without termination: the episode stops, but the state is an ordinary one. */
  truncated: boolean;
}

/** CartPole-v0 (or v1 with maxEpisodeSteps 500): 4 observations, 2 actions (0 push left, 1 push right). */
export class CartPole {
  static readonly observationSize = 4;
  static readonly actionCount = 2;
  readonly maxEpisodeSteps: number;
  private readonly uniform: () => number;
  private readonly x = new Float64Array(4);
  private steps = 0;
  private phase: 'unstarted' | 'running' | 'done' = 'unstarted';

  constructor(options: CartPoleOptions = {}) {
    const where = 'rl.CartPole';
    if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object like { seed, maxEpisodeSteps }', options);
    const seed = options.seed ?? 0;
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) throw typeError(`${where}: options.seed`, 'a non-negative safe integer', seed);
    const limit = options.maxEpisodeSteps ?? 200;
    if (typeof limit !== 'number') throw typeError(`${where}: options.maxEpisodeSteps`, 'an integer ≥ 1', limit);
    if (!Number.isSafeInteger(limit) || limit < 1) throw rangeError(`${where}: options.maxEpisodeSteps`, 'an integer ≥ 1', String(limit));
    this.maxEpisodeSteps = limit;
    this.uniform = uniformStream(seed);
  }

  /** Starts an episode from (x, ẋ, θ, θ̇) ~ U(−0.05, 0.05)⁴; returns the observation. */
  reset(): Float64Array {
    for (let i = 0; i < 4; i++) this.x[i] = -0.05 + 0.1 * this.uniform();
    this.steps = 0;
    this.phase = 'running';
    return this.x.slice();
  }

  /** The current (x, ẋ, θ, θ̇) (a copy). */
  get state(): Float64Array {
    return this.x.slice();
  }

  /**
   * Puts the system in (x, ẋ, θ, θ̇) (as Gym's `env.unwrapped.state = ...`), for tests and demonstrations; the
   * episode continues (or starts, with 0 steps taken) from there.
   */
  setState(state: ArrayLike<number>): void {
    const where = 'rl.CartPole.setState: state';
    if (state?.length !== 4 || !Array.from(state).every(Number.isFinite)) throw typeError(where, '4 finite numbers (x, ẋ, θ, θ̇)', state);
    this.x.set(state);
    if (this.phase !== 'running') this.steps = 0;
    this.phase = 'running';
  }

  /** Steps taken in the current episode. */
  get elapsedSteps(): number {
    return this.steps;
  }

  /** Applies the force of `action` for one τ. Throws before reset() and after the episode ended. */
  step(action: number): CartPoleStep {
    const where = 'rl.CartPole.step';
    if (action !== 0 && action !== 1) throw rangeError(`${where}: action`, '0 (push left) or 1 (push right)', String(action));
    if (this.phase !== 'running') {
      throw new Error(`${where}: the episode ${this.phase === 'unstarted' ? 'has not started' : 'is over'}; call reset() first`);
    }
    const { gravity, cartMass, poleMass, halfLength, forceMagnitude, tau, thetaThreshold, xThreshold } = CARTPOLE;
    const [x, xDot, theta, thetaDot] = this.x as unknown as [number, number, number, number];
    const force = action === 1 ? forceMagnitude : -forceMagnitude;
    const totalMass = cartMass + poleMass;
    const poleMassLength = poleMass * halfLength;
    const cos = Math.cos(theta);
    const sin = Math.sin(theta);
    const temp = (force + poleMassLength * thetaDot * thetaDot * sin) / totalMass;
    const thetaAcc = (gravity * sin - cos * temp) / (halfLength * (4 / 3 - (poleMass * cos * cos) / totalMass));
    const xAcc = temp - (poleMassLength * thetaAcc * cos) / totalMass;
    this.x[0] = x + tau * xDot;
    this.x[1] = xDot + tau * xAcc;
    this.x[2] = theta + tau * thetaDot;
    this.x[3] = thetaDot + tau * thetaAcc;
    this.steps++;
    const terminated = Math.abs(this.x[0]) > xThreshold || Math.abs(this.x[2]) > thetaThreshold;
    const truncated = !terminated && this.steps >= this.maxEpisodeSteps;
    if (terminated || truncated) this.phase = 'done';
    return { observation: this.x.slice(), reward: 1, terminated, truncated };
  }
}
