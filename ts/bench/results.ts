// The shape of bench/results/<machine>.json, and the derived figures (GB/s, % of roofline, ratios, targets).
import type { BenchCase } from './cases.js';
import type { OutputErrors, Timing } from './measure.js';
import type { PeerInfo, PeerPrepared } from './peer.js';

export type Op = 'forward' | 'backward' | 'forward+backward';

export interface Variant {
  ms: number;
  gbps: number;
  /** Achieved GB/s as a percentage of the copy roofline measured on the same element count. */
  roofPct: number;
}

export interface OpRow {
  op: Op;
  /** Minimal bytes the op must move (see cases.ts minimalBytes). */
  bytes: number;
  fused: Variant;
  unfused: Variant;
  /** unfused ms / fused ms. */
  fusedSpeedup: number;
  torchFused: Variant | null;
  torchComposite: Variant | null;
  /** torch fused ms / our fused ms (> 1: ours is faster); null where torch has no fused kernel. */
  vsTorchFused: number | null;
}

export interface CheckResult {
  /** Our fused vs our unfused, on the case's own shape. */
  fusedVsUnfused: OutputErrors;
  /** Our fused vs torch (fused and composite), on `shape` (smaller, same rank and dim); or why it was skipped. */
  torch: { shape: number[]; fused: OutputErrors | null; composite: OutputErrors } | { skipped: string };
  tolerance: number;
  pass: boolean;
}

/** torch's timings for one case. */
export interface PeerResult extends PeerPrepared {
  /** out.copy_(v) on the same rotation: a cross-check of our copy roofline. */
  copy: Timing;
  fused: { forward: Timing; backward: Timing } | null;
  composite: { forward: Timing; backward: Timing };
}

export interface CaseResult {
  case: BenchCase;
  /** dim as passed to the kernels (in [0, rank) or null). */
  dim: number | null;
  elements: number;
  channels: number;
  /** Input sets rotated between runs, and the distinct bytes one pass over them touches. */
  sets: number;
  rotationBytes: number;
  copy: Timing & { gbps: number };
  timings: { forward: { fused: Timing; unfused: Timing }; backward: { fused: Timing; unfused: Timing } };
  /** torch's timings (null without a peer, or when it failed on this case: see peerError). */
  peer: PeerResult | null;
  peerError: string | null;
  rows: OpRow[];
  check: CheckResult;
  /** 1, or more when the case was measured again because its rounds disagreed. */
  attempts: number;
  /** Variants whose two best rounds still differ by > 25% (background load): treat their figures with care. */
  unstable: string[];
  /** os.loadavg() at the start of each attempt. */
  loadAverage: number[][];
}

export interface TargetResult {
  name: string;
  met: boolean;
  /** The cases that miss it, with their figure. */
  misses: string[];
}

export interface BackendResult {
  machine: string;
  device: 'cpu' | 'cuda';
  deviceName: string;
  threads: number;
  date: string;
  node: string;
  weightnorm: string;
  quick: boolean;
  warmup: number;
  /** Timed runs per measurement in all, split over `rounds` rounds. */
  repeats: number;
  rounds: number;
  cacheBytes: number;
  rotationTargetBytes: number;
  peer: PeerInfo | { notInstalled: string[] } | { disabled: true };
  cases: CaseResult[];
  targets: TargetResult[];
  durationSeconds: number;
  /** os.loadavg() before and after: other work on the machine makes CPU timings noisy. */
  loadAverage: { start: number[]; end: number[] };
}

function variant(ms: number, bytes: number, roofGbps: number): Variant {
  const gbps = bytes / (ms * 1e6);
  return { ms, gbps, roofPct: (100 * gbps) / roofGbps };
}

/** Rows for forward, backward, and forward+backward (the sum of the two medians). */
export function opRows(
  bytes: { forward: number; backward: number },
  timings: CaseResult['timings'],
  peer: PeerResult | null,
  roofGbps: number,
): OpRow[] {
  const ms = {
    forward: {
      fused: timings.forward.fused.ms,
      unfused: timings.forward.unfused.ms,
      torchFused: peer?.fused?.forward.ms ?? null,
      torchComposite: peer?.composite.forward.ms ?? null,
    },
    backward: {
      fused: timings.backward.fused.ms,
      unfused: timings.backward.unfused.ms,
      torchFused: peer?.fused?.backward.ms ?? null,
      torchComposite: peer?.composite.backward.ms ?? null,
    },
  };
  const sum = (a: number | null, b: number | null) => (a === null || b === null ? null : a + b);
  const all = {
    forward: { bytes: bytes.forward, ...ms.forward },
    backward: { bytes: bytes.backward, ...ms.backward },
    'forward+backward': {
      bytes: bytes.forward + bytes.backward,
      fused: ms.forward.fused + ms.backward.fused,
      unfused: ms.forward.unfused + ms.backward.unfused,
      torchFused: sum(ms.forward.torchFused, ms.backward.torchFused),
      torchComposite: sum(ms.forward.torchComposite, ms.backward.torchComposite),
    },
  };
  return (Object.keys(all) as Op[]).map((op) => {
    const r = all[op];
    return {
      op,
      bytes: r.bytes,
      fused: variant(r.fused, r.bytes, roofGbps),
      unfused: variant(r.unfused, r.bytes, roofGbps),
      fusedSpeedup: r.unfused / r.fused,
      torchFused: r.torchFused === null ? null : variant(r.torchFused, r.bytes, roofGbps),
      torchComposite: r.torchComposite === null ? null : variant(r.torchComposite, r.bytes, roofGbps),
      vsTorchFused: r.torchFused === null ? null : r.torchFused / r.fused,
    };
  });
}

/**
 * The project's performance targets (issue 3): fused forward ≥ 80% of roofline for ≥ 1M elements; fused/unfused
 * ≥ 1.8× forward and ≥ 2.5× backward; faster than torch's fused kernel on every shape it has one for.
 */
export function evaluateTargets(cases: CaseResult[]): TargetResult[] {
  const row = (c: CaseResult, op: Op) => c.rows.find((r) => r.op === op)!;
  const target = (name: string, misses: string[]): TargetResult => ({ name, met: misses.length === 0, misses });
  const big = cases.filter((c) => c.elements >= 1 << 20);
  const vsTorch = (op: Op) =>
    cases.filter((c) => row(c, op).vsTorchFused !== null && row(c, op).vsTorchFused! <= 1)
      .map((c) => `${c.case.name} ${row(c, op).vsTorchFused!.toFixed(2)}×`);
  const withTorch = cases.some((c) => row(c, 'forward').vsTorchFused !== null);
  const targets = [
    target('fused forward ≥ 80% of roofline (≥ 1M elements)',
      big.filter((c) => row(c, 'forward').fused.roofPct < 80).map((c) => `${c.case.name} ${row(c, 'forward').fused.roofPct.toFixed(0)}%`)),
    target('fused/unfused ≥ 1.8× forward',
      cases.filter((c) => row(c, 'forward').fusedSpeedup < 1.8).map((c) => `${c.case.name} ${row(c, 'forward').fusedSpeedup.toFixed(2)}×`)),
    target('fused/unfused ≥ 2.5× backward',
      cases.filter((c) => row(c, 'backward').fusedSpeedup < 2.5).map((c) => `${c.case.name} ${row(c, 'backward').fusedSpeedup.toFixed(2)}×`)),
  ];
  if (withTorch) {
    targets.push(target('faster than torch fused, forward', vsTorch('forward')));
    targets.push(target('faster than torch fused, backward', vsTorch('backward')));
  }
  return targets;
}
