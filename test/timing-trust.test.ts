// compare's rule for when its timing can be believed (weightnorm-cli/src/commands/timing.ts), on synthetic
// per-round step-time medians: a steady series passes, a series with one round slowed by background load fails.
import { describe, expect, it } from 'vitest';

import { DEFAULT_MAX_SPREAD, judgeTiming, roundSpread } from '../weightnorm-cli/src/commands/timing.js';
import { reproduce, runSeed, uniformGenerator } from './helpers.js';

const seed = runSeed();
const uniform = uniformGenerator(seed);

/** Round medians around `base` ms with ±`jitter` relative noise. */
function steady(base: number, rounds: number, jitter: number): number[] {
  return Array.from({ length: rounds }, () => base * (1 + (uniform() * 2 - 1) * jitter));
}

describe('timing trust', () => {
  it('the spread is slowest / fastest − 1 over the measured rounds (NaN rounds skipped)', () => {
    expect(roundSpread([10, 12, 11])).toBeCloseTo(0.2, 12);
    expect(roundSpread([10, NaN, 15])).toBeCloseTo(0.5, 12);
    expect(roundSpread([10])).toBeNull();
    expect(roundSpread([NaN, NaN])).toBeNull();
  });

  it('steady rounds (±5% jitter) are trustworthy', () => {
    const trust = judgeTiming({ plain: steady(35, 15, 0.05), 'weight norm': steady(37, 15, 0.05) });
    expect(trust.trustworthy, reproduce(seed)).toBe(true);
    expect(trust.offenders).toEqual([]);
    expect(trust.maxSpread).toBe(DEFAULT_MAX_SPREAD);
    expect(trust.spreads.plain!).toBeLessThanOrEqual(0.11);
  });

  it('one round slowed by a busy neighbour (+60%) makes the comparison untrustworthy and names the variant', () => {
    const plain = steady(35, 15, 0.05);
    const wn = steady(37, 15, 0.05);
    const slowRound = Math.floor(uniform() * 15);
    wn[slowRound] = wn[slowRound]! * 1.6;
    const trust = judgeTiming({ plain, 'weight norm': wn });
    expect(trust.trustworthy, reproduce(seed)).toBe(false);
    expect(trust.offenders).toEqual(['weight norm']);
    expect(trust.spreads['weight norm']!).toBeGreaterThan(0.4);
  });

  it('the limit is a parameter: a 20% spread passes at 25% and fails at 10%', () => {
    const series = { plain: [10, 11, 12], wn: [10, 10.4, 10.8] };
    expect(judgeTiming(series).trustworthy).toBe(true);
    expect(judgeTiming(series, 0.1).offenders).toEqual(['plain']);
  });

  it('a variant with a single timed round cannot be judged; one never timed (it diverged) is left out; none timed is not trustworthy', () => {
    expect(judgeTiming({ plain: [10, 10.2], wn: [11, NaN] }).offenders).toEqual(['wn']);
    const diverged = judgeTiming({ plain: [10, 10.2], bn: [NaN, NaN] });
    expect(diverged.trustworthy).toBe(true);
    expect(diverged.spreads).toEqual({ plain: expect.closeTo(0.02, 12) });
    expect(judgeTiming({}).trustworthy).toBe(false);
    expect(() => judgeTiming({ plain: [1, 2] }, -1)).toThrow(RangeError);
  });
});

describe('compare: the order of the variants in its timing rounds', () => {
  it('each round runs every variant once; over 2 × count rounds each starts twice and follows two different variants', async () => {
    const { timingOrder } = await import('../weightnorm-cli/src/commands/compare.js');
    for (const count of [2, 3, 4, 5]) {
      const predecessors = Array.from({ length: count }, () => new Set<number>());
      const firsts = Array<number>(count).fill(0);
      for (let round = 0; round < 2 * count; round++) {
        const order = timingOrder(count, round);
        expect([...order].sort((a, b) => a - b), `${count} variants, round ${round}`).toEqual([...Array(count).keys()]);
        firsts[order[0]!]! += 1;
        for (let k = 1; k < count; k++) predecessors[order[k]!]!.add(order[k - 1]!);
      }
      expect(firsts, `${count} variants: how often each runs first`).toEqual(Array(count).fill(2));
      // With a rotation alone every variant (but the first of a round) would always follow the same one.
      for (const [variant, seen] of predecessors.entries()) {
        expect(seen.size, `${count} variants: the variants ${variant} follows`).toBeGreaterThanOrEqual(Math.min(2, count - 1));
      }
    }
  });
});
