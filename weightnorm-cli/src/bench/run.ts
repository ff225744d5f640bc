// `weightnorm bench`: fused vs unfused weight norm against the measured copy roofline and PyTorch, per backend.
// Per case: build rotated input sets (ours and the torch peer's), check fused against unfused and ours against
// torch, then time in rounds that alternate ours (copy, forward and backward, fused and unfused) and torch's.
// A case whose rounds disagree (background load on a shared machine) is measured again.
import { floats } from './floats.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, freemem, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import { type Device, native } from 'weightnorm/native';
import { type BenchCase, CASES, channelsOf, checkShape, elementsOf, minimalBytes, normalizeDim } from './cases.js';
import {
  BENCH_EPS,
  type Bf16Check,
  CaseInputs,
  checkBf16,
  checkFusedAgainstUnfused,
  cpuLastLevelCacheBytes,
  median,
  type OutputErrors,
  ourOutputs,
  relativeError,
  ROTATED_BYTES_PER_ELEMENT,
  rotationSets,
  summarizeRounds,
  worst,
} from './measure.js';
import { benchmarkHarness, timeWeightNormBf16, weightNormBf16Outputs } from './native-bench.js';
import { type PeerPrepared, type PeerVariant, pythonCandidates, TorchPeer } from './peer.js';
import { roundToBfloat16 } from './rounds.js';
import { summaryText, terminalTable, writeResults } from './report.js';
import {
  type BackendResult,
  type Bf16Result,
  type Bf16Row,
  type CaseResult,
  type CheckResult,
  checksFailed,
  evaluateConvGoal,
  evaluateTrainingGoals,
  evaluateSuiteGoals,
  evaluateTargets,
  type GemmRow,
  type LinearRow,
  type MnistRow,
  opRows,
  type PeerResult,
  type TrainingRow,
  type Suite,
  SUITES,
} from './results.js';
import { GEMM_CASES, runGemmSuite } from './gemm.js';
import type { RoundPlan } from './rounds.js';
import { CONV_LAYER_CASES, type ConvLayerRow, runConvLayerSuite } from './conv-layers.js';
import { LINEAR_CASES, MNIST_BATCHES, runLinearSuite, runMnistSuite, runTrainingSuite } from './training.js';
import { LSTM_CASES, type LstmRow, runLstmSuite } from './lstm.js';
import { prepareOutDir } from '../commands/out-dir.js';
import { runVocoderSuite, type VocoderRow } from './vocoder.js';

export interface BenchOptions {
  device: 'cpu' | 'cuda' | 'all';
  /** CPU threads for our kernels and torch (default: every core). */
  threads?: number;
  /** Timed runs per measurement in all rounds together (default: CPU 100, CUDA 300; --quick: 20 / 100). */
  repeats?: number;
  /** Rounds the repeats are split into, alternating ours and the peer's (default 5; --quick 2). */
  rounds?: number;
  /** Times a case whose rounds disagree is measured again (default 1; --quick 0). */
  retries?: number;
  /** Warm-up runs (at least one full rotation is always added). */
  warmup: number;
  quick: boolean;
  /** Results folder (default bench/results in the package). */
  out?: string;
  peer: boolean;
  python?: string;
  /** Let torch allocate with glibc's defaults (fresh pages for every large output) instead of reusing memory. */
  peerDefaultMalloc: boolean;
  /** Only the weight-norm cases whose name contains one of these. */
  cases?: string[];
  /** The suites to run (default: all of SUITES). */
  suites?: Suite[];
  /** Last-level cache size to defeat (default: CPU from sysfs, CUDA 128 MiB, above any current GPU's L2 but B200's). */
  cacheMb?: number;
  /** Memory the rotated sets may take (default: CPU min(4 GiB, 30% of free), CUDA min(8 GiB, 25% of the GPU)). */
  memoryMb?: number;
}

/**
 * Relative error (max |a − b| / max |b|) allowed between two float32 implementations: they sum squares in different
 * orders over up to 16M elements, which moves the norm by ~1e-6 relative; 1e-4 leaves room and still catches any
 * real bug (a wrong axis or a missing term is an O(1) error).
 */
export const CHECK_TOLERANCE = 1e-4;

// This package's folder (dist/bench/ -> ..): the PyTorch peer script lives there; results default to the
// repository's bench/results beside it.
const cliRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/\((r|tm)\)/g, '')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
}

function packageVersion(): string {
  try {
    // The library's version: it is what the figures measure.
    const manifest = createRequire(import.meta.url).resolve('weightnorm/package.json');
    return (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function writeF32(path: string, data: Float32Array): void {
  writeFileSync(path, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
}

function readF32(path: string): Float32Array {
  const bytes = readFileSync(path);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** Progress on stderr: a bar on a terminal, one line per case otherwise (logs, CI). */
class Progress {
  private readonly bar: cliProgress.SingleBar | null;
  private value = 0;
  private caseEnd = 0;
  private total: number;

  constructor(
    total: number,
    private readonly perCase: number,
  ) {
    this.total = total;
    this.bar = process.stderr.isTTY
      ? new cliProgress.SingleBar(
          {
            format: '{bar} {percentage}% | {value}/{total} | ETA {eta_formatted} | {task}',
            stream: process.stderr,
            hideCursor: true,
            clearOnComplete: true,
            etaBuffer: 20,
          },
          cliProgress.Presets.shades_classic,
        )
      : null;
    this.bar?.start(total, 0, { task: 'starting' });
  }

  task(task: string, logLine = false): void {
    if (this.bar) this.bar.update(this.value, { task });
    else if (logLine) process.stderr.write(`  ${task}\n`);
  }

  step(): void {
    this.value++;
    this.bar?.update(this.value);
  }

  /** Adds steps (a case measured again). */
  grow(steps: number): void {
    this.total += steps;
    this.caseEnd += steps;
    this.bar?.setTotal(this.total);
  }

  /** Marks the case done: its skipped steps (no peer) count as done. */
  endCase(): void {
    this.caseEnd += this.perCase;
    this.value = Math.max(this.value, this.caseEnd);
    this.bar?.update(this.value);
  }

  log(line: string): void {
    if (this.bar) this.bar.stop();
    process.stderr.write(line + '\n');
    if (this.bar) this.bar.start(this.bar.getTotal(), this.value);
  }

  stop(): void {
    this.bar?.stop();
  }
}

interface DevicePlan {
  device: Device;
  deviceName: string;
  machine: string;
  cacheBytes: number;
  capBytes: number;
}

function planDevice(device: Device, options: BenchOptions, threads: number): DevicePlan | string {
  const info = native.backend();
  const quick = options.quick ? '-quick' : '';
  if (device === 'cuda') {
    if (!info.cuda.usable || !info.cuda.device) return `cuda not usable: ${info.cuda.reason ?? 'not compiled in'}`;
    const gpu = info.cuda.device;
    return {
      device,
      deviceName: `${gpu.name} (sm_${gpu.computeCapability.replace('.', '')}, ${gpu.multiprocessors} SMs)`,
      machine: `${slug(gpu.name)}${quick}`,
      cacheBytes: (options.cacheMb ?? 128) * 2 ** 20,
      capBytes: options.memoryMb !== undefined ? options.memoryMb * 2 ** 20 : Math.min(8 * 2 ** 30, 0.25 * gpu.totalBytes),
    };
  }
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  return {
    device,
    deviceName: model,
    machine: `cpu-${slug(model)}-${threads}t${quick}`,
    cacheBytes: (options.cacheMb ?? (cpuLastLevelCacheBytes() ?? 32 * 2 ** 20) / 2 ** 20) * 2 ** 20,
    capBytes: options.memoryMb !== undefined ? options.memoryMb * 2 ** 20 : Math.min(4 * 2 ** 30, 0.3 * freemem()),
  };
}

/** Ours (fused) against torch's fused and composite results on a small input with the case's rank and dim. */
async function checkAgainstTorch(
  peer: TorchPeer,
  benchCase: BenchCase,
  device: Device,
  seed: number,
): Promise<CheckResult['torch']> {
  const shape = checkShape(benchCase.shape);
  const dim = normalizeDim(benchCase.dim, shape.length);
  const channels = dim === null ? 1 : shape[dim]!;
  const dir = mkdtempSync(join(tmpdir(), 'weightnorm-bench-'));
  try {
    const v = native.randn(shape, seed, device, 0, 1);
    const g = native.randn([channels], seed + 1, device, 1, 0.25);
    const dw = native.randn(shape, seed + 2, device, 0, 1);
    writeF32(join(dir, 'v.bin'), floats(v.toArray()));
    writeF32(join(dir, 'g.bin'), floats(g.toArray()));
    writeF32(join(dir, 'dw.bin'), floats(dw.toArray()));
    const ours = ourOutputs(v, g, dw, dim, true);
    for (const t of [v, g, dw]) t.dispose();
    const answer = await peer.check(shape, dim, dir);
    const compare = (variant: string): OutputErrors => ({
      w: relativeError(ours.w, readF32(join(dir, `${variant}_w.bin`))),
      norm: relativeError(ours.norm, readF32(join(dir, `${variant}_norm.bin`))),
      dv: relativeError(ours.dv, readF32(join(dir, `${variant}_dv.bin`))),
      dg: relativeError(ours.dg, readF32(join(dir, `${variant}_dg.bin`))),
    });
    return {
      shape,
      fused: answer.variants.includes('fused') ? compare('fused') : null,
      composite: compare('composite'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

type NativeVariant = 'copy' | 'forward fused' | 'forward unfused' | 'backward fused' | 'backward unfused' | 'forward bf16' | 'backward bf16';
const NATIVE_VARIANTS: readonly [NativeVariant, 'copy' | 'forward' | 'backward', boolean][] = [
  ['copy', 'copy', true],
  ['forward fused', 'forward', true],
  ['forward unfused', 'forward', false],
  ['backward fused', 'backward', true],
  ['backward unfused', 'backward', false],
];

const BF16_VARIANTS: readonly [NativeVariant, 'forward' | 'backward'][] = [
  ['forward bf16', 'forward'],
  ['backward bf16', 'backward'],
];

/** Progress steps of one attempt at a case: inputs, our checks, torch's check, torch's inputs, then 7 + 1 per round. */
function stepsPerCase(rounds: number): number {
  return 4 + 8 * rounds;
}

function bf16Usable(check: Bf16Check | null): boolean {
  return check !== null && 'pass' in check && check.pass;
}

/**
 * A case is measured again when its rounds disagree: the second-best round median more than this factor above the
 * best, for any variant, means background load hit part of the measurement (a shared 2-core machine).
 */
const UNSTABLE_RATIO = 1.25;

interface Schedule {
  warmup: number;
  repeats: number;
  rounds: number;
}

/** Everything measured for one case, accumulated over attempts (a retry adds rounds). */
interface RawCase {
  benchCase: BenchCase;
  dim: number | null;
  sets: number;
  ours: Map<NativeVariant, number[][]>;
  theirs: Map<PeerVariant, number[][]>;
  prepared: PeerPrepared | null;
  peerError: string | null;
  fusedVsUnfused: OutputErrors | null;
  /** CUDA: the route the fused kernels took on this shape (weightNormRoute() after the check); null on the CPU. */
  route: string | null;
  bf16Check: Bf16Check | null;
  torchCheck: CheckResult['torch'];
  attempts: number;
  loadAverage: number[][];
}

async function measureCase(
  benchCase: BenchCase,
  index: number,
  plan: DevicePlan,
  peer: TorchPeer | null,
  peerSkip: string,
  schedule: Schedule,
  progress: Progress,
  raw?: RawCase,
): Promise<RawCase> {
  const elements = elementsOf(benchCase.shape);
  const sets = rotationSets(elements, 3 * plan.cacheBytes, plan.capBytes);
  const seed = 1000 * (index + 1);
  const label = `${plan.device} ${benchCase.name}${raw ? ` (again: its rounds disagreed)` : ''}`;
  const perRound = Math.ceil(schedule.repeats / schedule.rounds);
  const warmup = Math.max(schedule.warmup, sets);
  const r: RawCase = raw ?? {
    benchCase,
    dim: normalizeDim(benchCase.dim, benchCase.shape.length),
    sets,
    ours: new Map([...NATIVE_VARIANTS, ...BF16_VARIANTS].map(([name]) => [name, []])),
    theirs: new Map(),
    prepared: null,
    peerError: null,
    fusedVsUnfused: null,
    route: null,
    bf16Check: null,
    torchCheck: { skipped: peerSkip },
    attempts: 0,
    loadAverage: [],
  };
  r.attempts++;
  r.loadAverage.push(loadavg());
  const usePeer = peer !== null && r.peerError === null;
  const peerFailed = (error: unknown) => {
    r.peerError = (error as Error).message;
    if (!('shape' in r.torchCheck)) r.torchCheck = { skipped: r.peerError };
    progress.log(`${label}: torch peer failed: ${r.peerError}`);
  };

  progress.task(`${label}: allocating ${sets} input sets`, true);
  const inputs = new CaseInputs(benchCase, plan.device, sets, seed);
  let peerPrepared = false;
  try {
    progress.step();
    if (!r.fusedVsUnfused) {
      progress.task(`${label}: checking fused against unfused`);
      r.fusedVsUnfused = checkFusedAgainstUnfused(inputs, seed + 7);
      if (plan.device === 'cuda') r.route = native.weightNormRoute();
    }
    if (!r.bf16Check) {
      progress.task(`${label}: checking bfloat16 against float32`);
      r.bf16Check = checkBf16(inputs, seed + 11, roundToBfloat16, (op, set) => weightNormBf16Outputs(op, set, inputs.dim, BENCH_EPS));
      if ('unavailable' in r.bf16Check && r.attempts === 1) progress.log(`${label}: bfloat16 unavailable: ${r.bf16Check.unavailable}`);
    }
    progress.step();
    if (usePeer) {
      try {
        if (!('shape' in r.torchCheck)) {
          progress.task(`${label}: checking against torch`);
          r.torchCheck = await checkAgainstTorch(peer, benchCase, plan.device, seed + 20);
        }
        progress.step();
        progress.task(`${label}: torch allocating ${sets} input sets`);
        r.prepared = await peer.prepare(benchCase.shape, r.dim, sets, seed, true);
        peerPrepared = true;
        progress.step();
      } catch (error) {
        peerFailed(error);
      }
    }
    for (let round = 0; round < schedule.rounds; round++) {
      for (const [name, op, fused] of NATIVE_VARIANTS) {
        progress.task(`${label}: round ${round + 1}/${schedule.rounds}, ${name}`);
        r.ours.get(name)!.push(inputs.time(op, fused, warmup, perRound));
        progress.step();
      }
      if (bf16Usable(r.bf16Check)) {
        for (const [name, op] of BF16_VARIANTS) {
          progress.task(`${label}: round ${round + 1}/${schedule.rounds}, ${name}`);
          try {
            r.ours.get(name)!.push(timeWeightNormBf16(op, inputs.setsFor(op), inputs.dim, BENCH_EPS, warmup, perRound));
          } catch (error) {
            r.bf16Check = { unavailable: `timing failed: ${(error as Error).message}` };
          }
          progress.step();
        }
      }
      if (peerPrepared && r.peerError === null) {
        progress.task(`${label}: round ${round + 1}/${schedule.rounds}, torch`);
        try {
          const times = await peer!.round(warmup, perRound);
          for (const [name, runs] of Object.entries(times) as [PeerVariant, number[]][]) {
            if (!r.theirs.has(name)) r.theirs.set(name, []);
            r.theirs.get(name)!.push(runs);
          }
        } catch (error) {
          peerFailed(error);
        }
        progress.step();
      }
    }
  } finally {
    inputs.dispose();
    if (peerPrepared) await peer!.release().catch(() => undefined);
    if (plan.device === 'cuda') native.releaseCachedMemory();
  }
  return r;
}

/** The variants whose two best round medians differ by more than UNSTABLE_RATIO. */
function unstableVariants(r: RawCase): string[] {
  const all: [string, number[][]][] = [...r.ours, ...r.theirs].filter(([, rounds]) => rounds.length > 0);
  return all
    .filter(([, rounds]) => {
      const medians = rounds.map(median).sort((a, b) => a - b);
      return medians.length >= 2 && medians[1]! > UNSTABLE_RATIO * medians[0]!;
    })
    .map(([name]) => name);
}

function caseResult(r: RawCase): CaseResult {
  const { benchCase } = r;
  const elements = elementsOf(benchCase.shape);
  const channels = channelsOf(benchCase);
  const fusedVsUnfused = r.fusedVsUnfused!;
  const checkErrors = [worst(fusedVsUnfused)];
  if ('shape' in r.torchCheck) {
    checkErrors.push(worst(r.torchCheck.composite));
    if (r.torchCheck.fused) checkErrors.push(worst(r.torchCheck.fused));
  }
  // A bfloat16 kernel that runs must pass its check (its own tolerance); one that is not implemented is reported.
  const bf16Failed = r.bf16Check !== null && 'pass' in r.bf16Check && !r.bf16Check.pass;
  const pass = checkErrors.every((e) => e <= CHECK_TOLERANCE) && !bf16Failed;

  const timing = (name: NativeVariant) => summarizeRounds(r.ours.get(name)!);
  const timings: CaseResult['timings'] = {
    forward: { fused: timing('forward fused'), unfused: timing('forward unfused') },
    backward: { fused: timing('backward fused'), unfused: timing('backward unfused') },
  };
  let peer: PeerResult | null = null;
  const theirs = (name: PeerVariant) => (r.theirs.has(name) ? summarizeRounds(r.theirs.get(name)!) : null);
  if (r.prepared && r.peerError === null && r.theirs.has('copy') && r.theirs.has('composite_forward')) {
    const fusedForward = theirs('fused_forward');
    const fusedBackward = theirs('fused_backward');
    peer = {
      ...r.prepared,
      copy: theirs('copy')!,
      fused: fusedForward && fusedBackward ? { forward: fusedForward, backward: fusedBackward } : null,
      composite: { forward: theirs('composite_forward')!, backward: theirs('composite_backward')! },
    };
  }
  const copy = timing('copy');
  const copyGbps = minimalBytes('copy', elements, channels) / (copy.ms * 1e6);
  const bytes = { forward: minimalBytes('forward', elements, channels), backward: minimalBytes('backward', elements, channels) };
  return {
    case: benchCase,
    dim: r.dim,
    elements,
    channels,
    sets: r.sets,
    rotationBytes: r.sets * ROTATED_BYTES_PER_ELEMENT * elements,
    copy: { ...copy, gbps: copyGbps },
    timings,
    peer,
    peerError: r.peerError,
    rows: opRows(bytes, timings, peer, copyGbps),
    bf16: bf16Result(r, elements, channels, copyGbps),
    check: { fusedVsUnfused, torch: r.torchCheck, tolerance: CHECK_TOLERANCE, pass },
    route: r.route,
    attempts: r.attempts,
    unstable: unstableVariants(r),
    loadAverage: r.loadAverage,
  };
}

/** The bfloat16 rows of a case: ours (when it runs and passed its check) and torch's bfloat16 weight norm. */
function bf16Result(r: RawCase, elements: number, channels: number, copyGbps: number): Bf16Result {
  const rows = BF16_VARIANTS.map(([name, op]): Bf16Row => {
    const bytes = minimalBytes(op, elements, channels, 'bf16');
    const rounds = r.ours.get(name)!;
    const oursMs = bf16Usable(r.bf16Check) && rounds.length > 0 ? summarizeRounds(rounds).ms : null;
    const torchRounds = r.peerError === null ? r.theirs.get(`bf16_${op}` as PeerVariant) : undefined;
    const torchMs = torchRounds && torchRounds.length > 0 ? summarizeRounds(torchRounds).ms : null;
    const variant = (ms: number | null) => (ms === null ? null : { ms, gbps: bytes / (ms * 1e6), roofPct: (100 * bytes) / (ms * 1e6) / copyGbps });
    return { op, bytes, ours: variant(oursMs), torch: variant(torchMs), vsTorch: oursMs !== null && torchMs !== null ? torchMs / oursMs : null };
  });
  const torchNa = r.peerError ?? (r.prepared ? (r.prepared.bf16_na ?? null) : 'no torch peer');
  return { check: r.bf16Check ?? { unavailable: 'not checked' }, rows, torchNa };
}

/** Rounds, warm-up and timed runs per round of the side-by-side suites (GEMM, Linear, MNIST), per device (GEMM runs are long on a CPU). */
function suitePlans(device: Device, quick: boolean): Record<'gemm' | 'linear' | 'mnist' | 'training' | 'vocoder', RoundPlan> {
  if (device === 'cuda') {
    return quick
      ? { gemm: { rounds: 2, warmup: 2, repeats: 5 }, linear: { rounds: 2, warmup: 3, repeats: 10 }, mnist: { rounds: 2, warmup: 5, repeats: 10 }, training: { rounds: 4, warmup: 5, repeats: 10 }, vocoder: { rounds: 2, warmup: 3, repeats: 5 } }
      : { gemm: { rounds: 3, warmup: 2, repeats: 10 }, linear: { rounds: 3, warmup: 3, repeats: 20 }, mnist: { rounds: 3, warmup: 5, repeats: 20 }, training: { rounds: 6, warmup: 5, repeats: 20 }, vocoder: { rounds: 3, warmup: 5, repeats: 10 } };
  }
  // A full-width HiFi-GAN step is ~0.5-2 s on a few cores: few runs. The training suite's steps are 1-20 ms and its
  // goals are ratios, one of them 5% wide: many short rounds, so that a burst of load spoils few of the paired round
  // ratios and the median has many to choose from (9 rounds of 10 steps left the MLP's weight-norm ratio anywhere
  // in 0.94-1.13 from run to run on a 2-core VM).
  return quick
    ? { gemm: { rounds: 2, warmup: 1, repeats: 3 }, linear: { rounds: 2, warmup: 2, repeats: 5 }, mnist: { rounds: 2, warmup: 2, repeats: 5 }, training: { rounds: 5, warmup: 3, repeats: 5 }, vocoder: { rounds: 2, warmup: 1, repeats: 2 } }
    : { gemm: { rounds: 3, warmup: 1, repeats: 5 }, linear: { rounds: 3, warmup: 2, repeats: 10 }, mnist: { rounds: 3, warmup: 3, repeats: 10 }, training: { rounds: 25, warmup: 3, repeats: 6 }, vocoder: { rounds: 3, warmup: 1, repeats: 3 } };
}

async function benchDevice(
  plan: DevicePlan,
  options: BenchOptions,
  threads: number,
  cases: BenchCase[],
  checkpoint?: (partial: BackendResult) => Promise<unknown>,
): Promise<BackendResult> {
  const started = Date.now();
  const loadAtStart = loadavg();
  if (plan.device === 'cpu' && loadAtStart[0]! > 0.5) {
    process.stderr.write(`cpu: load average ${loadAtStart[0]!.toFixed(2)} before starting: other work may disturb the timings\n`);
  }
  const repeats = options.repeats ?? (plan.device === 'cuda' ? (options.quick ? 100 : 300) : options.quick ? 20 : 100);
  const rounds = Math.min(repeats, options.rounds ?? (options.quick ? 2 : 5));
  const retries = options.retries ?? (options.quick ? 0 : 1);
  const schedule: Schedule = { warmup: options.warmup, repeats, rounds };
  native.setNumThreads(threads);

  let peer: TorchPeer | null = null;
  let peerInfo: BackendResult['peer'] = { disabled: true };
  let peerSkip = 'peer disabled (--no-peer)';
  if (options.peer) {
    process.stderr.write(`${plan.device}: starting the PyTorch peer...\n`);
    const started = await TorchPeer.start(join(cliRoot, 'peer_torch.py'), plan.device, threads, pythonCandidates(options.python), options.peerDefaultMalloc);
    if ('peer' in started) {
      peer = started.peer;
      peerInfo = peer.info;
    } else {
      peerInfo = { notInstalled: started.reasons };
      peerSkip = 'peer not installed';
      process.stderr.write(`${plan.device}: PyTorch peer not installed (${started.reasons.join('; ')})\n`);
    }
  }

  const suites = options.suites ?? [...SUITES];
  const progress = new Progress(suites.includes('weightnorm') ? cases.length * stepsPerCase(rounds) : 0, stepsPerCase(rounds));
  const results: CaseResult[] = [];
  let gemm: GemmRow[] = [];
  let linear: LinearRow[] = [];
  let mnist: MnistRow[] = [];
  let training: TrainingRow[] = [];
  let lstm: LstmRow[] = [];
  let convLayers: ConvLayerRow[] = [];
  let vocoder: VocoderRow[] = [];
  // The result as measured so far (the suites not run yet read as 'not measured').
  const assemble = (): BackendResult => ({
    machine: plan.machine,
    device: plan.device,
    deviceName: plan.deviceName,
    threads,
    date: new Date().toISOString(),
    node: process.version,
    weightnorm: packageVersion(),
    ...(plan.device === 'cpu' ? { cpuGemm: native.backend().cpu.gemm } : {}),
    quick: options.quick,
    warmup: options.warmup,
    repeats: rounds * Math.ceil(repeats / rounds),
    rounds,
    cacheBytes: plan.cacheBytes,
    rotationTargetBytes: 3 * plan.cacheBytes,
    peer: peerInfo,
    suites,
    cases: results,
    targets: evaluateTargets(results),
    gemm,
    linear,
    mnist,
    training,
    lstm,
    convLayers,
    vocoder,
    suiteGoals: [...evaluateSuiteGoals(plan.device, suites, gemm, linear, mnist), ...evaluateTrainingGoals(suites, training), ...evaluateConvGoal(suites, convLayers)],
    durationSeconds: (Date.now() - started) / 1000,
    loadAverage: { start: loadAtStart, end: loadavg() },
  });
  try {
    for (const c of suites.includes('weightnorm') ? cases : []) {
      let raw = await measureCase(c, CASES.indexOf(c), plan, peer, peerSkip, schedule, progress);
      for (let retry = 0; retry < retries && unstableVariants(raw).length > 0; retry++) {
        progress.log(`${plan.device} ${c.name}: rounds disagree (${unstableVariants(raw).join(', ')}); measuring again`);
        progress.grow(stepsPerCase(rounds));
        raw = await measureCase(c, CASES.indexOf(c), plan, peer, peerSkip, schedule, progress, raw);
      }
      const result = caseResult(raw);
      if (!result.check.pass) progress.log(`${plan.device} ${c.name}: CHECK FAILED (see the checks table)`);
      results.push(result);
      progress.endCase(); // steps skipped without a peer still count
    }
    progress.stop();
    // What is measured so far is written after each suite: a later suite that runs out of time (or a new kernel
    // that crashes the process) does not lose the earlier ones.
    await checkpoint?.(assemble());
    const plans = suitePlans(plan.device, options.quick);
    const log = (line: string) => process.stderr.write(`  ${line}\n`);
    const pick = <T extends { quick: boolean }>(list: readonly T[]) => list.filter((c) => !options.quick || c.quick);
    if (suites.includes('gemm')) {
      process.stderr.write(`${plan.device}: GEMM vs torch\n`);
      gemm = await runGemmSuite(pick(GEMM_CASES), peer, { device: plan.device, plan: plans.gemm, seed: 70_000, log });
      await checkpoint?.(assemble());
    }
    if (suites.includes('linear')) {
      process.stderr.write(`${plan.device}: weight-normalized Linear vs plain Linear\n`);
      linear = await runLinearSuite(pick(LINEAR_CASES), peer, { device: plan.device, plan: plans.linear, seed: 71_000, log });
      await checkpoint?.(assemble());
    }
    if (suites.includes('mnist')) {
      process.stderr.write(`${plan.device}: MNIST CNN training step vs torch\n`);
      mnist = await runMnistSuite(MNIST_BATCHES, peer, { device: plan.device, plan: plans.mnist, seed: 72_000, log });
      await checkpoint?.(assemble());
    }
    if (suites.includes('training')) {
      process.stderr.write(`${plan.device}: CNN and MLP training steps (plain and weight norm) vs torch\n`);
      training = await runTrainingSuite(peer, { device: plan.device, plan: plans.training, seed: 76_000, log });
      await checkpoint?.(assemble());
    }
    if (suites.includes('lstm')) {
      process.stderr.write(`${plan.device}: LSTM training step (plain and weight norm) vs torch\n`);
      lstm = await runLstmSuite(LSTM_CASES, peer, { device: plan.device, plan: plans.mnist, seed: 73_000, log });
    }
    if (suites.includes('conv')) {
      process.stderr.write(`${plan.device}: weight-normalized conv layers vs plain\n`);
      convLayers = await runConvLayerSuite(pick(CONV_LAYER_CASES), { device: plan.device, plan: plans.linear, seed: 74_000, log });
      await checkpoint?.(assemble());
    }
    if (suites.includes('vocoder')) {
      process.stderr.write(`${plan.device}: HiFi-GAN V1 generator vs torch (inference RTF, WN vs plain training step)\n`);
      vocoder = await runVocoderSuite(peer, { device: plan.device, plan: plans.vocoder, seed: 75_000, log });
    }
  } finally {
    progress.stop();
    peer?.close();
  }

  return assemble();
}

/** Runs the benchmark; resolves to the process exit code (1 when a kernel failed its check or a device is missing). */
export async function runBench(options: BenchOptions): Promise<number> {
  try {
    benchmarkHarness();
  } catch (error) {
    process.stderr.write(`weightnorm bench: ${(error as Error).message}\n`);
    return 2;
  }
  const threads = options.threads ?? availableParallelism();
  const cases = CASES.filter((c) => (options.quick ? c.quick : true)).filter(
    (c) => !options.cases?.length || options.cases.some((name) => c.name.includes(name)),
  );
  if (cases.length === 0 && (options.suites ?? SUITES).includes('weightnorm')) {
    process.stderr.write(`no case matches ${options.cases?.join(', ')}; cases: ${CASES.map((c) => c.name).join(', ')}\n`);
    return 1;
  }
  const devices: Device[] = options.device === 'all' ? ['cpu', 'cuda'] : [options.device];
  let outDir: string;
  try {
    outDir = prepareOutDir(options.out ?? join(cliRoot, '..', 'bench', 'results'));
  } catch (error) {
    process.stderr.write(`weightnorm bench: ${(error as Error).message}\n`);
    return 2;
  }
  let exitCode = 0;
  for (const device of devices) {
    const plan = planDevice(device, options, threads);
    if (typeof plan === 'string') {
      process.stderr.write(`${device}: skipped (${plan})\n`);
      if (options.device !== 'all') exitCode = 1; // asked for explicitly and not there
      continue;
    }
    const result = await benchDevice(plan, options, threads, cases, (partial) => writeResults(partial, outDir, false));
    process.stdout.write(`\n${terminalTable(result)}\n\n${summaryText(result)}\n`);
    const files = await writeResults(result, outDir);
    process.stdout.write(`Wrote ${files.join(', ')}\n`);
    if (checksFailed(result).length > 0) exitCode = 1;
  }
  return exitCode;
}
