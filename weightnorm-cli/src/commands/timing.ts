// When a timing comparison can be believed. compare times each variant in several rounds; on a machine shared with
// other work, a busy neighbour slows some rounds down. The paired per-round ratios cancel slow drifts, but when the
// round medians of one variant themselves spread widely, the load changed within rounds and even a ratio is noise.
// The rule: the slowest round median of any variant may be at most `maxSpread` (default 25%) above its fastest.

/** Default limit on (slowest round median / fastest) − 1 for any variant. */
export const DEFAULT_MAX_SPREAD = 0.25;

export interface TimingTrust {
  /** False when any timed variant's round medians spread more than maxSpread or it has fewer than 2 rounds, or none was timed. */
  trustworthy: boolean;
  maxSpread: number;
  /** Per variant label: (slowest round median / fastest) − 1 over its measured rounds (NaN rounds skipped); null with < 2 rounds. */
  spreads: Record<string, number | null>;
  /** The labels whose spread exceeds maxSpread (or that could not be judged). */
  offenders: string[];
}

/** (max / min) − 1 of the finite, positive values; null with fewer than two. */
export function roundSpread(roundMedians: readonly number[]): number | null {
  const measured = roundMedians.filter((x) => Number.isFinite(x) && x > 0);
  if (measured.length < 2) return null;
  return Math.max(...measured) / Math.min(...measured) - 1;
}

/** Judges a set of per-round step-time medians (label → one median per round). */
export function judgeTiming(roundMedians: Readonly<Record<string, readonly number[]>>, maxSpread = DEFAULT_MAX_SPREAD): TimingTrust {
  if (!(maxSpread >= 0)) throw new RangeError(`judgeTiming: maxSpread: expected a number >= 0, received ${maxSpread}`);
  const spreads: Record<string, number | null> = {};
  const offenders: string[] = [];
  for (const [label, medians] of Object.entries(roundMedians)) {
    if (!medians.some((x) => Number.isFinite(x) && x > 0)) continue; // never timed (it diverged): nothing to judge
    const spread = roundSpread(medians);
    spreads[label] = spread;
    if (spread === null || spread > maxSpread) offenders.push(label);
  }
  return { trustworthy: offenders.length === 0 && Object.keys(spreads).length > 0, maxSpread, spreads, offenders };
}
