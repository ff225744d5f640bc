// `weightnorm bench`: fused vs unfused weight norm against the measured copy roofline and PyTorch, per backend.
// Per case: build rotated input sets, check fused against unfused (and ours against torch), then time copy,
// forward and backward natively, then let the torch peer time the same shape with the same rotation.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, freemem, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import { type Device, native } from '../native.js';
import { type BenchCase, CASES, channelsOf, checkShape, elementsOf, minimalBytes, normalizeDim } from './cases.js';
import {
  CaseInputs,
  checkFusedAgainstUnfused,
  cpuLastLevelCacheBytes,
  type OutputErrors,
  ourOutputs,
  relativeError,
  rotationSets,
  worst,
} from './measure.js';
import { pythonCandidates, TorchPeer } from './peer.js';
import { summaryText, terminalTable, writeResults } from './report.js';
import { type BackendResult, type CaseResult, type CheckResult, evaluateTargets, opRows } from './results.js';

export interface BenchOptions {
  device: 'cpu' | 'cuda' | 'all';
  /** CPU threads for our kernels and torch (default: every core). */
  threads?: number;
  /** Timed runs per measurement (default: CPU 100, CUDA 300; --quick: 25 / 100). */
  repeats?: number;
  /** Warm-up runs (at least one full rotation is always added). */
  warmup: number;
  quick: boolean;
  /** Results folder (default bench/results in the package). */
  out?: string;
  peer: boolean;
  python?: string;
  /** Only the cases whose name contains one of these. */
  cases?: string[];
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

const STEPS_PER_CASE = 9;
const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/\((r|tm)\)/g, '')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
}

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
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

  constructor(total: number) {
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

  advanceTo(value: number): void {
    this.value = Math.max(this.value, value);
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
    writeF32(join(dir, 'v.bin'), v.toArray());
    writeF32(join(dir, 'g.bin'), g.toArray());
    writeF32(join(dir, 'dw.bin'), dw.toArray());
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

async function benchCase(
  benchCase: BenchCase,
  index: number,
  plan: DevicePlan,
  peer: TorchPeer | null,
  peerSkip: string,
  warmup: number,
  repeats: number,
  progress: Progress,
): Promise<CaseResult> {
  const elements = elementsOf(benchCase.shape);
  const channels = channelsOf(benchCase);
  const sets = rotationSets(elements, 3 * plan.cacheBytes, plan.capBytes);
  const seed = 1000 * (index + 1);
  const label = `${plan.device} ${benchCase.name}`;

  progress.task(`${label}: allocating ${sets} input sets`, true);
  const inputs = new CaseInputs(benchCase, plan.device, sets, seed);
  let timings: CaseResult['timings'];
  let copy;
  let fusedVsUnfused: OutputErrors;
  try {
    progress.step();
    progress.task(`${label}: checking fused against unfused`);
    fusedVsUnfused = checkFusedAgainstUnfused(inputs, seed + 7);
    progress.step();
    progress.task(`${label}: copy (roofline)`);
    copy = inputs.time('copy', true, warmup, repeats);
    progress.step();
    const run = (op: 'forward' | 'backward', fused: boolean) => {
      progress.task(`${label}: ${op} ${fused ? 'fused' : 'unfused'}`);
      const t = inputs.time(op, fused, warmup, repeats);
      progress.step();
      return t;
    };
    timings = {
      forward: { fused: run('forward', true), unfused: run('forward', false) },
      backward: { fused: run('backward', true), unfused: run('backward', false) },
    };
  } finally {
    inputs.dispose(); // before torch allocates its own sets
    if (plan.device === 'cuda') native.releaseCachedMemory();
  }

  let torchCheck: CheckResult['torch'] = { skipped: peerSkip };
  let peerResult: CaseResult['peer'] = null;
  let peerError: string | null = null;
  if (peer) {
    try {
      progress.task(`${label}: checking against torch`);
      torchCheck = await checkAgainstTorch(peer, benchCase, plan.device, seed + 20);
      progress.step();
      progress.task(`${label}: torch`);
      peerResult = await peer.time(benchCase.shape, inputs.dim, sets, Math.max(warmup, sets), repeats);
    } catch (error) {
      peerError = (error as Error).message;
      if (!('shape' in torchCheck)) torchCheck = { skipped: peerError };
      progress.log(`${label}: torch peer failed: ${peerError}`);
    }
  }
  const checkErrors = [worst(fusedVsUnfused)];
  if ('shape' in torchCheck) {
    checkErrors.push(worst(torchCheck.composite));
    if (torchCheck.fused) checkErrors.push(worst(torchCheck.fused));
  }
  const pass = checkErrors.every((e) => e <= CHECK_TOLERANCE);
  if (!pass) progress.log(`${label}: CHECK FAILED (max relative error ${Math.max(...checkErrors).toExponential(2)})`);

  const copyGbps = minimalBytes('copy', elements, channels) / (copy.ms * 1e6);
  const bytes = { forward: minimalBytes('forward', elements, channels), backward: minimalBytes('backward', elements, channels) };
  return {
    case: benchCase,
    dim: inputs.dim,
    elements,
    channels,
    sets,
    rotationBytes: sets * 8 * elements,
    copy: { ...copy, gbps: copyGbps },
    timings,
    peer: peerResult,
    peerError,
    rows: opRows(bytes, timings, peerResult, copyGbps),
    check: { fusedVsUnfused, torch: torchCheck, tolerance: CHECK_TOLERANCE, pass },
  };
}

async function benchDevice(plan: DevicePlan, options: BenchOptions, threads: number, cases: BenchCase[]): Promise<BackendResult> {
  const started = Date.now();
  const loadAtStart = loadavg();
  if (plan.device === 'cpu' && loadAtStart[0]! > 0.5) {
    process.stderr.write(`cpu: load average ${loadAtStart[0]!.toFixed(2)} before starting: other work may disturb the timings\n`);
  }
  const repeats = options.repeats ?? (plan.device === 'cuda' ? (options.quick ? 100 : 300) : options.quick ? 25 : 100);
  native.setNumThreads(threads);

  let peer: TorchPeer | null = null;
  let peerInfo: BackendResult['peer'] = { disabled: true };
  let peerSkip = 'peer disabled (--no-peer)';
  if (options.peer) {
    process.stderr.write(`${plan.device}: starting the PyTorch peer...\n`);
    const started = await TorchPeer.start(join(packageRoot, 'bench', 'peer_torch.py'), plan.device, threads, pythonCandidates(options.python));
    if ('peer' in started) {
      peer = started.peer;
      peerInfo = peer.info;
    } else {
      peerInfo = { notInstalled: started.reasons };
      peerSkip = 'peer not installed';
      process.stderr.write(`${plan.device}: PyTorch peer not installed (${started.reasons.join('; ')})\n`);
    }
  }

  const progress = new Progress(cases.length * STEPS_PER_CASE);
  const results: CaseResult[] = [];
  try {
    for (const [i, c] of cases.entries()) {
      results.push(await benchCase(c, CASES.indexOf(c), plan, peer, peerSkip, options.warmup, repeats, progress));
      progress.advanceTo((i + 1) * STEPS_PER_CASE); // steps skipped without a peer still count
    }
  } finally {
    progress.stop();
    peer?.close();
  }

  return {
    machine: plan.machine,
    device: plan.device,
    deviceName: plan.deviceName,
    threads,
    date: new Date().toISOString(),
    node: process.version,
    weightnorm: packageVersion(),
    quick: options.quick,
    warmup: options.warmup,
    repeats,
    cacheBytes: plan.cacheBytes,
    rotationTargetBytes: 3 * plan.cacheBytes,
    peer: peerInfo,
    cases: results,
    targets: evaluateTargets(results),
    durationSeconds: (Date.now() - started) / 1000,
    loadAverage: { start: loadAtStart, end: loadavg() },
  };
}

/** Runs the benchmark; resolves to the process exit code (1 when a kernel failed its check or a device is missing). */
export async function runBench(options: BenchOptions): Promise<number> {
  const threads = options.threads ?? availableParallelism();
  const cases = CASES.filter((c) => (options.quick ? c.quick : true)).filter(
    (c) => !options.cases?.length || options.cases.some((name) => c.name.includes(name)),
  );
  if (cases.length === 0) {
    process.stderr.write(`no case matches ${options.cases?.join(', ')}; cases: ${CASES.map((c) => c.name).join(', ')}\n`);
    return 1;
  }
  const devices: Device[] = options.device === 'all' ? ['cpu', 'cuda'] : [options.device];
  const outDir = resolve(options.out ?? join(packageRoot, 'bench', 'results'));
  let exitCode = 0;
  for (const device of devices) {
    const plan = planDevice(device, options, threads);
    if (typeof plan === 'string') {
      process.stderr.write(`${device}: skipped (${plan})\n`);
      if (options.device !== 'all') exitCode = 1; // asked for explicitly and not there
      continue;
    }
    const result = await benchDevice(plan, options, threads, cases);
    process.stdout.write(`\n${terminalTable(result)}\n\n${summaryText(result)}\n`);
    const files = await writeResults(result, outDir);
    process.stdout.write(`Wrote ${files.join(', ')}\n`);
    if (result.cases.some((c) => !c.check.pass)) exitCode = 1;
  }
  return exitCode;
}
