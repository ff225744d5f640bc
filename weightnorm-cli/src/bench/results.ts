// The shape of bench/results/<machine>.json, and the derived figures (GB/s, % of roofline, ratios, targets).
import type { BenchCase } from './cases.js';
import type { GemmRow } from './gemm.js';
import type { Bf16Check, OutputErrors, Timing } from './measure.js';
import type { PeerInfo, PeerPrepared } from './peer.js';
import { isUnavailable } from './rounds.js';
import { GEMM_TARGET_CASE } from './gemm.js';
import { CONV_RATIO_GOAL, type ConvLayerRow } from './conv-layers.js';
import { LINEAR_RATIO_GOAL, type LinearRow, type MnistRow, noisyRatio, TRAINING_BATCH, TRAINING_MAX_SPREAD, TRAINING_VS_TORCH_GOAL, TRAINING_WN_GOAL, TRAINING_WN_MAX_SPREAD, type TrainingRow } from './training.js';

export type { GemmRow } from './gemm.js';
export type { LinearRow, MnistRow, TrainingRow } from './training.js';
export type { LstmRow } from './lstm.js';
import type { LstmRow } from './lstm.js';
export type { ConvLayerRow } from './conv-layers.js';
export type { VocoderRow } from './vocoder.js';
import type { VocoderRow } from './vocoder.js';

import type { Suite } from './suites.js';

export { type Suite, SUITES } from './suites.js';

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

/** One bfloat16 weight-norm row: bytes count the per-element tensors at 2 bytes, g/norm/dg at 4. */
export interface Bf16Row {
  op: 'forward' | 'backward';
  bytes: number;
  /** null: not available (see the check) or not timed. */
  ours: Variant | null;
  torch: Variant | null;
  /** torch bf16 ms / ours (> 1: ours faster). */
  vsTorch: number | null;
}

export interface Bf16Result {
  /** Against our float32 fused kernel on the same bfloat16-rounded inputs; or why ours is unavailable. */
  check: Bf16Check;
  rows: Bf16Row[];
  /** Why torch's bfloat16 weight norm was not timed (null when it was). */
  torchNa: string | null;
}

export interface CaseResult {
  case: BenchCase;
  /** dim as passed to the kernels (in [0, rank) or null). */
  dim: number | null;
  elements: number;
  channels: number;
  /**
   * Input sets rotated between runs, and the distinct input bytes one pass over them touches (the outputs are one
   * block per case, written by every run).
   */
  sets: number;
  rotationBytes: number;
  copy: Timing & { gbps: number };
  timings: { forward: { fused: Timing; unfused: Timing }; backward: { fused: Timing; unfused: Timing } };
  /** torch's timings (null without a peer, or when it failed on this case: see peerError). */
  peer: PeerResult | null;
  peerError: string | null;
  rows: OpRow[];
  /** The bfloat16 overloads, against the same float32 copy roofline. */
  bf16: Bf16Result;
  check: CheckResult;
  /** CUDA: the kernel route the fused weight norm took ("cluster-rows", "rows", "columns", "row-split", "view-split"). */
  route?: string | null;
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
  /** CPU runs: which GEMM our side ran (backend().cpu.gemm); absent in results written before it was recorded. */
  cpuGemm?: string;
  quick: boolean;
  warmup: number;
  /** Timed runs per measurement in all, split over `rounds` rounds. */
  repeats: number;
  rounds: number;
  cacheBytes: number;
  rotationTargetBytes: number;
  peer: PeerInfo | { notInstalled: string[] } | { disabled: true };
  /** The suites this run measured. */
  suites: Suite[];
  cases: CaseResult[];
  targets: TargetResult[];
  gemm: GemmRow[];
  linear: LinearRow[];
  mnist: MnistRow[];
  /** The training suite's CNN and MLP steps (absent in results written before the suite existed). */
  training?: TrainingRow[];
  /** The LSTM training step (absent in results written before the suite existed). */
  lstm?: LstmRow[];
  /** The convolution layers' training step, weight norm vs plain (absent in results written before that suite). */
  convLayers?: ConvLayerRow[];
  /** HiFi-GAN generator rows (absent from results written before the suite existed). */
  vocoder?: VocoderRow[];
  /** The side-by-side suites' goals (GEMM, Linear, MNIST, training, conv), each met, not met or unavailable (its kernel or peer missing, or not measured). */
  suiteGoals: SuiteGoal[];
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
 * The weight-norm kernels' performance targets: fused forward ≥ 80% of roofline for ≥ 1M elements; fused/unfused
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

export interface SuiteGoal {
  name: string;
  /** noisy: measured, but on rounds that spread too widely to judge (a busy machine); the detail says which. */
  status: 'met' | 'not met' | 'unavailable' | 'noisy';
  /** The figures behind the status, or why it is unavailable. */
  detail: string;
}

/**
 * The side-by-side suites' goals: GEMM ≥ 70% of cuBLAS FP32 and ≥ 60% of cuBLAS TF32 at 4096³ (CUDA); the weight-normalized Linear
 * within 5% of the plain one on every shape; the MNIST CNN step at least as fast as PyTorch eager.
 */
export function evaluateSuiteGoals(device: 'cpu' | 'cuda', suites: readonly Suite[], gemm: GemmRow[], linear: LinearRow[], mnist: MnistRow[]): SuiteGoal[] {
  const targets: SuiteGoal[] = [];
  const gemmGoal = (precision: 'fp32' | 'tf32', goal: number, label: string) => {
    const name = `GEMM ${precision.toUpperCase()} ≥ ${Math.round(goal * 100)}% of cuBLAS ${label} at 4096³`;
    const row = gemm.find((r) => r.case.name === GEMM_TARGET_CASE && r.precision === precision);
    if (device !== 'cuda') return targets.push({ name, status: 'unavailable', detail: 'cuBLAS goal: CUDA only' });
    if (!suites.includes('gemm') || !row) return targets.push({ name, status: 'unavailable', detail: 'not measured (gemm suite or the 4096³ case not run)' });
    if (isUnavailable(row.ours as never)) return targets.push({ name, status: 'unavailable', detail: `ours: ${(row.ours as { unavailable: string }).unavailable}` });
    if (row.ratio === null) return targets.push({ name, status: 'unavailable', detail: `torch: ${(row.torch as { unavailable: string }).unavailable}` });
    const ours = row.ours as { tflops: number };
    const torch = row.torch as { tflops: number };
    return targets.push({
      name,
      status: row.ratio >= goal ? 'met' : 'not met',
      detail: `${(100 * row.ratio).toFixed(0)}% (${ours.tflops.toFixed(1)} vs ${torch.tflops.toFixed(1)} TFLOP/s)`,
    });
  };
  gemmGoal('fp32', 0.7, 'FP32');
  gemmGoal('tf32', 0.6, 'TF32');

  const linearName = `weight-normalized Linear fwd+bwd ≤ ${LINEAR_RATIO_GOAL.toFixed(2)}× the plain Linear (every shape)`;
  if (!suites.includes('linear') || linear.length === 0) targets.push({ name: linearName, status: 'unavailable', detail: 'not measured' });
  else {
    const missing = linear.filter((r) => r.ratio === null);
    const misses = linear.filter((r) => r.ratio !== null && r.ratio > LINEAR_RATIO_GOAL);
    const figures = linear.map((r) => `${r.case.name} ${r.ratio === null ? 'n/a' : `${r.ratio.toFixed(3)}×`}`).join(', ');
    targets.push({ name: linearName, status: missing.length ? 'unavailable' : misses.length ? 'not met' : 'met', detail: figures });
  }

  const mnistName = 'MNIST CNN training step at least as fast as PyTorch eager (batch 64 and 256, WN on and off)';
  if (!suites.includes('mnist') || mnist.length === 0) targets.push({ name: mnistName, status: 'unavailable', detail: 'not measured' });
  else {
    const missing = mnist.filter((r) => r.vsTorch === null);
    const misses = mnist.filter((r) => r.vsTorch !== null && r.vsTorch < 1);
    const figures = mnist.map((r) => `${r.norm} b${r.batch} ${r.vsTorch === null ? 'n/a' : `${r.vsTorch.toFixed(2)}×`}`).join(', ');
    targets.push({ name: mnistName, status: missing.length ? 'unavailable' : misses.length ? 'not met' : 'met', detail: `torch ms / ours: ${figures}` });
  }
  return targets;
}

/** Names of everything whose check failed (weight-norm cases, GEMM rows, Linear and MNIST checks). */
export function checksFailed(result: BackendResult): string[] {
  const failed = result.cases.filter((c) => !c.check.pass).map((c) => c.case.name);
  for (const r of result.gemm) if (r.check && !r.check.pass) failed.push(`gemm ${r.case.name} ${r.precision}`);
  for (const r of result.linear) if ('pass' in r.check && !r.check.pass) failed.push(`linear ${r.case.name}`);
  for (const r of result.mnist) if ('pass' in r.check && !r.check.pass) failed.push(`mnist b${r.batch} ${r.norm}`);
  for (const r of result.training ?? [])
    for (const norm of ['plain', 'wn'] as const) {
      const check = r.checks[norm];
      if ('pass' in check && !check.pass) failed.push(`training ${r.network} ${norm}`);
    }
  for (const r of result.convLayers ?? []) if ('pass' in r.check && !r.check.pass) failed.push(`conv ${r.case.name}`);
  for (const r of result.lstm ?? []) if (r.check && 'pass' in r.check && !r.check.pass) failed.push(`lstm ${r.case.name}`);
  for (const r of result.vocoder ?? []) if ('pass' in r.check && !r.check.pass) failed.push(`vocoder ${r.task} ${r.variant}`);
  return failed;
}

/** The conv suite's goal: the weight-normalized layer's step within CONV_RATIO_GOAL of the plain layer's (every shape). */
export function evaluateConvGoal(suites: readonly Suite[], rows: readonly ConvLayerRow[]): SuiteGoal[] {
  const name = `weight-normalized conv layers fwd+bwd ≤ ${CONV_RATIO_GOAL.toFixed(2)}× the plain layer (every shape)`;
  if (!suites.includes('conv')) return [];
  if (rows.length === 0) return [{ name, status: 'unavailable', detail: 'not measured' }];
  const missing = rows.filter((r) => r.ratio === null);
  const misses = rows.filter((r) => r.ratio !== null && r.ratio > CONV_RATIO_GOAL);
  const figures = rows.map((r) => `${r.case.name} ${r.ratio === null ? 'n/a' : `${r.ratio.toFixed(3)}×`}`).join(', ');
  return [{ name, status: missing.length ? 'unavailable' : misses.length ? 'not met' : 'met', detail: figures }];
}

/**
 * The training suite's goals: the CNN step at least TRAINING_VS_TORCH_GOAL × as fast as torch's (plain and weight
 * norm), and the weight-normalized step within TRAINING_WN_GOAL of the plain one (ours, CNN and MLP).
 */
export function evaluateTrainingGoals(suites: readonly Suite[], rows: readonly TrainingRow[]): SuiteGoal[] {
  if (!suites.includes('training')) return [];
  const figure = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(3)}×`);
  // Each value: its label, the ratio, and the spread of the per-round ratios behind it.
  type Value = [string, number | null, number | null | undefined];
  const goal = (name: string, values: Value[], met: (x: number) => boolean, limit: number): SuiteGoal => {
    const detail = values.map(([label, x]) => `${label} ${figure(x)}`).join(', ');
    if (values.length === 0) return { name, status: 'unavailable', detail: 'not measured' };
    if (values.some(([, x]) => x === null)) return { name, status: 'unavailable', detail };
    const noisy = values.flatMap(([label, , spread]) => (noisyRatio(spread, limit) ? [`${label}: ${noisyRatio(spread, limit)}`] : []));
    if (noisy.length)
      return {
        name,
        status: 'noisy',
        detail: `${detail}; not judged: the middle half of the per-round ratios more than ${(100 * limit).toFixed(0)}% apart (${noisy.join(', ')})`,
      };
    return { name, status: values.every(([, x]) => met(x!)) ? 'met' : 'not met', detail };
  };
  const cnn = rows.filter((r) => r.network === 'cnn');
  return [
    goal(
      `CNN training step (batch ${TRAINING_BATCH}) ≥ ${TRAINING_VS_TORCH_GOAL.toFixed(1)}× PyTorch eager (torch ms / ours, plain and WN)`,
      cnn.flatMap((r) => [
        ['plain', r.vsTorch.plain, r.ratioSpread?.vsTorch.plain],
        ['WN', r.vsTorch.wn, r.ratioSpread?.vsTorch.wn],
      ] as Value[]),
      (x) => x >= TRAINING_VS_TORCH_GOAL,
      TRAINING_MAX_SPREAD,
    ),
    goal(
      `weight-normalized training step ≤ ${TRAINING_WN_GOAL.toFixed(2)}× the plain one (ours, CNN and MLP)`,
      rows.map((r) => [r.network.toUpperCase(), r.wnOverPlain.ours, r.ratioSpread?.wnOverPlain.ours] as Value),
      (x) => x <= TRAINING_WN_GOAL,
      TRAINING_WN_MAX_SPREAD,
    ),
  ];
}
