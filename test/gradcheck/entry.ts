// The shapes of the gradient-check registry (how a case runs, what tolerance it is held to) and the tolerances
// shared by every op family's registry file. Kept apart from registry.ts so that the families' files
// (registry-<family>.ts, spread into registry.ts) can import them without an import cycle.
import type { nn, Tensor } from '../../ts/index.js';
import type { LayerSpec, OpConfig } from './fixture.js';

/** float32 unit roundoff: one rounding moves a value by at most this fraction of itself. */
export const UNIT_ROUNDOFF = 2 ** -24;

/**
 * Allowed error of our float32 results against torch's float64 ones, as max|ours − torch| / scale: for outputs the
 * scale is max|torch|, for gradients the fixture's gradScales (the sum of magnitudes the backward adds up, see
 * fixture.ts). `reason` says where the float32 error comes from.
 */
export interface Tolerance {
  forward: number;
  gradient: number;
  reason: string;
}

/**
 * A float32 sum of k terms is within k·u of the exact sum relative to Σ|terms| (u = 2^-24; the worst case of
 * sequential summation, pairwise or blocked orders do better). Gradients are measured against that sum of
 * magnitudes; outputs against max|y|, which for these small random cases is within a factor ~8 of it, hence the
 * factor 8; the + 4 covers the elementwise roundings around the sums (scales, the norm's square root).
 */
export function accumulation(k: number, reason: string): Tolerance {
  const bound = 8 * (k + 4) * UNIT_ROUNDOFF;
  return { forward: bound, gradient: bound, reason: `${reason}: ~8·(k + 4)·2^-24 with k = ${k}` };
}

/** Elementwise results: one or two roundings per element, nothing accumulated. */
export const ELEMENTWISE: Tolerance = {
  forward: 4 * UNIT_ROUNDOFF,
  gradient: 4 * UNIT_ROUNDOFF,
  reason: 'elementwise: at most two float32 roundings per element (4·2^-24 leaves a factor 2 to spare)',
};

export interface OpRun {
  y: Tensor;
  /** The op's other outputs, compared with the fixture's extras of the same names (batch statistics, norms). */
  extras?: Record<string, Tensor>;
}

export interface OpEntry {
  run(t: Record<string, Tensor>, config: OpConfig, seed: number): OpRun;
  tolerance: Tolerance;
  /** Training-mode randomness: checked against the op's own mask or noise instead of torch. */
  random?: 'dropout' | 'noise';
}


export interface LayerEntry {
  /** The layer a spec describes, with fresh parameters (the harness loads the fixture's state dict after). */
  build(spec: LayerSpec, seed: number): nn.Module;
  tolerance: Tolerance;
}
