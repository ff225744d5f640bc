// rl.CartPole against the equations of motion integrated here in float64, written in the form of Florian (2007,
// "Correct equations for the dynamics of the cart-pole system", eqs. 21-22 with friction 0) rather than Gym's
// temp/thetaacc form, and against exactly known first steps; ReplayBuffer and linearDecay by their definitions.
import { describe, expect, it } from 'vitest';

import { rl } from '../ts/index.js';

const G = 9.8;
const MC = 1.0;
const MP = 0.1;
const L = 0.5;
const TAU = 0.02;

/** One Euler step of the frictionless cart-pole, Florian's form: θ̈ first from the force balance, then ẍ. */
function referenceStep([x, xDot, theta, thetaDot]: number[], action: number): number[] {
  const force = action === 1 ? 10 : -10;
  const thetaAcc =
    (G * Math.sin(theta) + Math.cos(theta) * ((-force - MP * L * thetaDot ** 2 * Math.sin(theta)) / (MC + MP))) /
    (L * (4 / 3 - (MP * Math.cos(theta) ** 2) / (MC + MP)));
  const xAcc = (force + MP * L * (thetaDot ** 2 * Math.sin(theta) - thetaAcc * Math.cos(theta))) / (MC + MP);
  return [x + TAU * xDot, xDot + TAU * xAcc, theta + TAU * thetaDot, thetaDot + TAU * thetaAcc];
}

/** A CartPole whose state is set by hand (reset first, then overwrite through the documented setState). */
function poleAt(state: number[], maxEpisodeSteps = 200): rl.CartPole {
  const env = new rl.CartPole({ maxEpisodeSteps });
  env.reset();
  env.setState(state);
  return env;
}

describe('rl.CartPole', () => {
  it('takes the exactly known first step from rest: ẍ = ±4400/451, θ̈ = ∓600/41', () => {
    // From x = ẋ = θ = θ̇ = 0: temp = F/1.1, θ̈ = −temp/(0.5·(4/3 − 0.1/1.1)) = −(100/11)·(66/41), ẍ = 100/11 + 300/451.
    for (const [action, sign] of [[1, 1], [0, -1]] as const) {
      const step = poleAt([0, 0, 0, 0]).step(action);
      expect(step.observation[0]).toBe(0);
      expect(step.observation[1]).toBeCloseTo(sign * TAU * (4400 / 451), 14);
      expect(step.observation[2]).toBe(0);
      expect(step.observation[3]).toBeCloseTo(-sign * TAU * (600 / 41), 14);
      expect(step).toMatchObject({ reward: 1, terminated: false, truncated: false });
    }
  });

  it('follows the float64 reference over a seeded 60-step trajectory of random actions', () => {
    const env = new rl.CartPole({ seed: 7, maxEpisodeSteps: 1000 });
    let reference = Array.from(env.reset());
    const coin = rl.uniformStream(99);
    let checked = 0;
    for (let t = 0; t < 60; t++) {
      const action = coin() < 0.5 ? 0 : 1;
      const step = env.step(action);
      reference = referenceStep(reference, action);
      // Same operations in a different order: agreement to ~1e-15 relative; 1e-12 absolute leaves room for 60 steps.
      for (let i = 0; i < 4; i++) expect(Math.abs(step.observation[i]! - reference[i]!)).toBeLessThan(1e-12);
      checked++;
      const fell = Math.abs(reference[0]!) > 2.4 || Math.abs(reference[2]!) > (12 * Math.PI) / 180;
      expect(step.terminated).toBe(fell);
      if (step.terminated) break;
    }
    expect(checked).toBeGreaterThan(5);
  });

  it('draws initial states from U(−0.05, 0.05), reproducibly per seed', () => {
    const a = new rl.CartPole({ seed: 3 });
    const b = new rl.CartPole({ seed: 3 });
    const c = new rl.CartPole({ seed: 4 });
    const states = Array.from({ length: 200 }, () => Array.from(a.reset()));
    for (const s of states) for (const v of s) expect(Math.abs(v)).toBeLessThan(0.05);
    expect(Array.from(b.reset())).toEqual(states[0]);
    expect(Array.from(c.reset())).not.toEqual(states[0]);
    const all = states.flat();
    expect(Math.min(...all)).toBeLessThan(-0.045); // spread over the whole interval
    expect(Math.max(...all)).toBeGreaterThan(0.045);
  });

  it('terminates past 12° or 2.4 m, with reward 1 on the terminating step', () => {
    const tilt = poleAt([0, 0, 0.2, 1]).step(1); // θ = 0.2 + 0.02·1 = 0.22 > 0.2094
    expect(tilt).toMatchObject({ reward: 1, terminated: true, truncated: false });
    const edge = poleAt([2.39, 1, 0, 0]).step(1); // x = 2.39 + 0.02 = 2.41
    expect(edge.terminated).toBe(true);
    const inside = poleAt([2.39, 0.4, 0.2, 0]).step(0); // x = 2.398, θ = 0.2: still inside
    expect(inside.terminated).toBe(false);
  });

  it('truncates at maxEpisodeSteps (200 by default, as CartPole-v0) and refuses steps after the end', () => {
    expect(new rl.CartPole().maxEpisodeSteps).toBe(200);
    const env = poleAt([0, 0, 0, 0], 4);
    const steps = [0, 1, 0, 1].map((a) => env.step(a));
    expect(steps.map((s) => s.truncated)).toEqual([false, false, false, true]);
    expect(steps.some((s) => s.terminated)).toBe(false);
    expect(() => env.step(0)).toThrow(/rl\.CartPole\.step: the episode is over; call reset\(\) first/);
    expect(() => new rl.CartPole().step(0)).toThrow(/has not started/);
  });

  it('rejects bad arguments with errors that name them', () => {
    const env = poleAt([0, 0, 0, 0]);
    expect(() => env.step(2)).toThrow(RangeError);
    expect(() => env.step(2)).toThrow(/rl\.CartPole\.step: action: expected 0 \(push left\) or 1 \(push right\), received 2/);
    expect(() => new rl.CartPole({ maxEpisodeSteps: 0 })).toThrow(RangeError);
    expect(() => new rl.CartPole({ seed: -1 })).toThrow(/rl\.CartPole: options\.seed/);
    expect(() => env.setState([0, 0, 0])).toThrow(/rl\.CartPole\.setState: state: expected 4 finite numbers/);
  });
});

describe('rl.ReplayBuffer', () => {
  const state = (t: number) => [t, t + 0.25, t + 0.5, t + 0.75];

  it('keeps the last `capacity` transitions and samples only those, each intact', () => {
    const buffer = new rl.ReplayBuffer({ capacity: 5, stateSize: 4, seed: 1 });
    for (let t = 0; t < 8; t++) buffer.push(state(t), t % 2, t * 10, state(t + 1), t === 7);
    expect(buffer.size).toBe(5);
    const batch = buffer.sample(400);
    const seen = new Set<number>();
    for (let i = 0; i < 400; i++) {
      const t = batch.states[i * 4]!;
      seen.add(t);
      expect(Array.from(batch.states.subarray(i * 4, i * 4 + 4))).toEqual(state(t));
      expect(Array.from(batch.nextStates.subarray(i * 4, i * 4 + 4))).toEqual(state(t + 1));
      expect(batch.actions[i]).toBe(t % 2);
      expect(batch.rewards[i]).toBe(t * 10);
      expect(batch.terminated[i]).toBe(t === 7 ? 1 : 0);
    }
    // Transitions 0..2 were overwritten; 3..7 all drawn (400 draws from 5: missing one has chance 5·0.8^400).
    expect([...seen].sort()).toEqual([3, 4, 5, 6, 7]);
  });

  it('samples uniformly and reproducibly per seed', () => {
    const fill = (seed: number) => {
      const b = new rl.ReplayBuffer({ capacity: 10, stateSize: 4, seed });
      for (let t = 0; t < 10; t++) b.push(state(t), 0, 0, state(t), false);
      return b;
    };
    const draws = fill(5).sample(20_000).slots;
    expect(Array.from(fill(5).sample(20_000).slots)).toEqual(Array.from(draws));
    expect(Array.from(fill(6).sample(50).slots)).not.toEqual(Array.from(draws.subarray(0, 50)));
    const counts = new Array<number>(10).fill(0);
    for (const s of draws) counts[s]!++;
    // Each slot expects 2000 draws, σ ≈ 42: ±250 is ~6σ.
    for (const c of counts) expect(Math.abs(c - 2000)).toBeLessThan(250);
  });

  it('rejects bad input', () => {
    const b = new rl.ReplayBuffer({ capacity: 3, stateSize: 4 });
    expect(() => b.sample(1)).toThrow(/rl\.ReplayBuffer\.sample: the buffer is empty/);
    expect(() => b.push([1, 2, 3], 0, 1, state(0), false)).toThrow(/rl\.ReplayBuffer\.push: state: expected 4 numbers, received 3/);
    expect(() => new rl.ReplayBuffer({ capacity: 0, stateSize: 4 })).toThrow(RangeError);
  });
});

describe('rl.linearDecay', () => {
  it('moves linearly from start to end over `steps`, then stays at end', () => {
    const epsilon = rl.linearDecay({ start: 1, end: 0.1, steps: 1000 });
    expect(epsilon(0)).toBe(1);
    expect(epsilon(250)).toBeCloseTo(0.775, 15);
    expect(epsilon(500)).toBeCloseTo(0.55, 15);
    expect(epsilon(1000)).toBe(0.1);
    expect(epsilon(5000)).toBe(0.1);
    expect(() => epsilon(-1)).toThrow(RangeError);
    expect(() => rl.linearDecay({ start: 1, end: 0, steps: 0 })).toThrow(/rl\.linearDecay: options\.steps: expected an integer ≥ 1/);
  });
});
