// Native measurements of one case on one device: rotated input sets, the fused-vs-unfused check, and the timed
// runs of copy (the roofline), forward and backward, fused and unfused.
import { floats } from './floats.js';
import { readFileSync } from 'node:fs';
import { type Device, native, type NativeTensor } from 'weightnorm/native';

import { benchmarkHarness } from './native-bench.js';
import { type BenchCase, channelsOf, normalizeDim } from './cases.js';

/** The eps every benchmark call uses (the library default). */
export const BENCH_EPS = 1e-12;

/** Bytes per element one input set adds to a rotation: its float32 v (see rotationSets). */
export const ROTATED_BYTES_PER_ELEMENT = 4;

export interface Timing {
  /**
   * The figure reported: the lowest of the per-round medians. Rounds alternate ours and the peer's, so a burst of
   * background load (a shared machine) spoils one round of each instead of one side's whole measurement.
   */
  ms: number;
  roundMedians: number[];
  /** Median of every run pooled over all rounds. */
  pooledMedian: number;
  runs: number;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function summarizeRounds(rounds: readonly (readonly number[])[]): Timing {
  const roundMedians = rounds.map(median);
  return {
    ms: Math.min(...roundMedians),
    roundMedians,
    pooledMedian: median(rounds.flat()),
    runs: rounds.reduce((n, r) => n + r.length, 0),
  };
}

/**
 * Largest cache level of this CPU in bytes (sysfs), or null where it cannot be read. On a VM this is the host's
 * shared cache as reported, which is the safe (larger) figure for sizing the rotation.
 */
export function cpuLastLevelCacheBytes(): number | null {
  let best: { level: number; bytes: number } | null = null;
  for (let index = 0; index < 8; index++) {
    const base = `/sys/devices/system/cpu/cpu0/cache/index${index}`;
    try {
      const level = Number(readFileSync(`${base}/level`, 'utf8'));
      const text = readFileSync(`${base}/size`, 'utf8').trim();
      const unit = text.endsWith('K') ? 1024 : text.endsWith('M') ? 1 << 20 : 1;
      const bytes = Number.parseInt(text, 10) * unit;
      if (!best || level > best.level) best = { level, bytes };
    } catch {
      break;
    }
  }
  return best?.bytes ?? null;
}

/**
 * How many input sets to rotate: enough that one pass over their per-element inputs (v, 4 bytes per element; the
 * backward's dw is the next set's v) exceeds `targetBytes`, at least 2 so no run reuses the previous run's inputs,
 * and within `capBytes` of memory. The outputs are not rotated: every run writes the case's one output block, as a
 * caching allocator hands a training step the block it freed last (binding/bench.cc, peer_torch.py).
 */
export function rotationSets(elements: number, targetBytes: number, capBytes: number): number {
  const perSet = ROTATED_BYTES_PER_ELEMENT * elements;
  const wanted = Math.max(2, Math.ceil(targetBytes / perSet));
  return Math.max(2, Math.min(wanted, Math.floor(capBytes / perSet)));
}

/** max|a − b| / max|b|: the error relative to the reference's scale (elementwise relative error explodes near 0). */
export function relativeError(actual: Float32Array, reference: Float32Array): number {
  if (actual.length !== reference.length) return Number.POSITIVE_INFINITY;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < reference.length; i++) {
    const d = Math.abs(actual[i]! - reference[i]!);
    if (!(d <= diff)) diff = d; // also catches NaN
    const r = Math.abs(reference[i]!);
    if (r > scale) scale = r;
  }
  return scale > 0 ? diff / scale : diff;
}

/** Input sets for one case: K copies of v (and of g and the saved norm), each in its own buffer. */
export class CaseInputs {
  readonly vs: NativeTensor[] = [];
  readonly gs: NativeTensor[] = [];
  readonly norms: NativeTensor[] = [];
  readonly dim: number | null;

  constructor(
    readonly benchCase: BenchCase,
    readonly device: Device,
    readonly sets: number,
    seed: number,
  ) {
    const shape = benchCase.shape;
    this.dim = normalizeDim(benchCase.dim, shape.length);
    const channels = channelsOf(benchCase);
    // One random v copied into every set: the values do not change the timing, the addresses do, and a copy is
    // several times cheaper than generating K random tensors.
    const v0 = native.randn(shape, seed, device, 0, 1);
    const g0 = native.randn([channels], seed + 1, device, 1, 0.25);
    const norm0 = native.weightNorm(v0, g0, this.dim, BENCH_EPS, true);
    norm0.w.dispose();
    const vData = sets > 1 ? v0.toArray() : null;
    const gData = g0.toArray();
    const normData = norm0.norm.toArray();
    for (let i = 0; i < sets; i++) {
      this.vs.push(i === 0 ? v0 : native.fromArray(vData!, shape, device));
      this.gs.push(i === 0 ? g0 : native.fromArray(gData, [channels], device));
      this.norms.push(i === 0 ? norm0.norm : native.fromArray(normData, [channels], device));
    }
  }

  /** dw of set i is v of set i+1: a distinct buffer in each run without allocating another K tensors. */
  dw(i: number): NativeTensor {
    return this.vs[(i + 1) % this.sets]!;
  }

  setsFor(op: 'forward' | 'backward' | 'copy'): NativeTensor[][] {
    return this.vs.map((v, i) => {
      if (op === 'copy') return [v];
      if (op === 'forward') return [v, this.gs[i]!];
      return [this.dw(i), v, this.gs[i]!, this.norms[i]!];
    });
  }

  /**
   * Per-run milliseconds of `op`, timed natively. The warm-up covers at least one full rotation, so every input set
   * and the output block (allocated per call) are touched before timing starts.
   */
  time(op: 'forward' | 'backward' | 'copy', fused: boolean, warmup: number, repeats: number): number[] {
    const sets = this.setsFor(op);
    const request = op === 'copy' ? { op, sets } : { op, fused, sets, dim: this.dim, eps: BENCH_EPS };
    return Array.from(benchmarkHarness().times(request, Math.max(warmup, this.sets), repeats));
  }

  dispose(): void {
    for (const t of [...this.vs, ...this.gs, ...this.norms]) t.dispose();
  }
}

export interface OutputErrors {
  w: number;
  norm: number;
  dv: number;
  dg: number;
}

export function worst(errors: OutputErrors): number {
  return Math.max(errors.w, errors.norm, errors.dv, errors.dg);
}

/** Our forward and backward outputs (as host arrays) for one input, fused or unfused. */
export function ourOutputs(
  v: NativeTensor,
  g: NativeTensor,
  dw: NativeTensor,
  dim: number | null,
  fused: boolean,
): Record<keyof OutputErrors, Float32Array> {
  const { w, norm } = native.weightNorm(v, g, dim, BENCH_EPS, fused);
  const { dv, dg } = native.weightNormBackward(dw, v, g, norm, dim, BENCH_EPS, fused);
  const out = { w: floats(w.toArray()), norm: floats(norm.toArray()), dv: floats(dv.toArray()), dg: floats(dg.toArray()) };
  for (const t of [w, norm, dv, dg]) t.dispose();
  return out;
}

/**
 * Fused against unfused on the case's own shape (set 0's v and g): both must agree before either is timed. dw is
 * a fresh random tensor, not the timing's dw (a copy of v, which would make dv cancel to ~0).
 */
export function checkFusedAgainstUnfused(inputs: CaseInputs, seed: number): OutputErrors {
  const [v, g] = [inputs.vs[0]!, inputs.gs[0]!];
  const dw = native.randn(inputs.benchCase.shape, seed, inputs.device, 0, 1);
  const fused = ourOutputs(v, g, dw, inputs.dim, true);
  const unfused = ourOutputs(v, g, dw, inputs.dim, false);
  dw.dispose();
  return {
    w: relativeError(fused.w, unfused.w),
    norm: relativeError(fused.norm, unfused.norm),
    dv: relativeError(fused.dv, unfused.dv),
    dg: relativeError(fused.dg, unfused.dg),
  };
}

/**
 * Error allowed for the bfloat16 weight norm against the float32 fused kernel on the same (bfloat16-rounded)
 * inputs: each output element is rounded once to bfloat16 (2^-9 relative) and sums run in float32; a wrong term
 * is O(1).
 */
export const BF16_TOLERANCE = 1e-2;

export type Bf16Check = { errors: OutputErrors; tolerance: number; pass: boolean } | { unavailable: string };

/**
 * The bfloat16 forward and backward (v, dw rounded to bfloat16, g and norm float32) against our float32 fused
 * kernels on the same rounded inputs. A kernel that throws (not implemented on this backend) gives `unavailable`.
 */
export function checkBf16(inputs: CaseInputs, seed: number, roundToBfloat16: (x: Float32Array) => Float32Array,
  outputs: (op: 'forward' | 'backward', set: NativeTensor[]) => { out: NativeTensor; perChannel: NativeTensor | null }): Bf16Check {
  const { shape } = inputs.benchCase;
  const device = inputs.device;
  const v = native.fromArray(roundToBfloat16(floats(inputs.vs[0]!.toArray())), shape, device);
  const dwRandom = native.randn(shape, seed, device, 0, 1);
  const dw = native.fromArray(roundToBfloat16(floats(dwRandom.toArray())), shape, device);
  dwRandom.dispose();
  const g = inputs.gs[0]!;
  const owned: NativeTensor[] = [v, dw];
  try {
    const reference = ourOutputs(v, g, dw, inputs.dim, true);
    const norm = native.fromArray(reference.norm, [reference.norm.length], device);
    owned.push(norm);
    const forward = outputs('forward', [v, g]);
    owned.push(forward.out, forward.perChannel!);
    const backward = outputs('backward', [dw, v, g, norm]);
    owned.push(backward.out, backward.perChannel!);
    const errors: OutputErrors = {
      w: relativeError(floats(forward.out.toArray()), reference.w),
      norm: relativeError(floats(forward.perChannel!.toArray()), reference.norm),
      dv: relativeError(floats(backward.out.toArray()), reference.dv),
      dg: relativeError(floats(backward.perChannel!.toArray()), reference.dg),
    };
    return { errors, tolerance: BF16_TOLERANCE, pass: worst(errors) <= BF16_TOLERANCE };
  } catch (error) {
    return { unavailable: (error as Error).message };
  } finally {
    for (const t of owned) t.dispose();
  }
}
