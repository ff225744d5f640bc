// `weightnorm train`: one network, one normalization, one optimizer on the MNIST digits; a progress bar, held-out
// accuracy per epoch, OUT/log.json (every step: step, loss, time) and OUT/checkpoint.safetensors at the end.
// --distributed (under `weightnorm launch`): data-parallel, each rank on its shard of every epoch; rank 0 alone
// initializes from data (then broadcast), prints the progress and writes the log and the checkpoint.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { io, optim } from 'weightnorm';
import {
  applyThreads,
  DATASET_TEXT,
  environment,
  loadDataset,
  formatLr,
  initializedModel,
  initializedReplica,
  withProcessGroup,
  type DataParallelRun,
  median,
  NORM_LABELS,
  parameterFingerprint,
  resolveDevice,
  threadsText,
  runTraining,
  type RunResult,
  subset,
} from './common.js';
import type { DatasetKind, DeviceChoice, ModelKind, NormKind, OptimizerKind } from './options.js';
import { prepareOutDir } from './out-dir.js';

export interface TrainOptions {
  model: ModelKind;
  norm: NormKind;
  optimizer: OptimizerKind;
  /** Default: 3e-3 for Adam (the paper's best for WN and BN on CIFAR-10), 0.1 for SGD. */
  lr?: number;
  momentum: number;
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
  /** Data-parallel under `weightnorm launch` (see the file's comment). */
  distributed?: boolean;
}

export const DEFAULT_LR: Record<OptimizerKind, number> = { adam: 3e-3, sgd: 0.1 };

export function runTrain(options: TrainOptions): Promise<number> {
  return withProcessGroup(options.distributed, (run) => trainAndReport(options, run));
}

async function trainAndReport(options: TrainOptions, run: DataParallelRun | null): Promise<number> {
  const device = resolveDevice(options.device);
  const threads = applyThreads(options.threads);
  const out = prepareOutDir(options.out);
  const lr = options.lr ?? DEFAULT_LR[options.optimizer];
  const data = loadDataset(options.dataset); // the same split for every seed: held-out accuracies stay comparable
  const train = subset(data.train, options.trainSize);
  const modelOptions = { seed: options.seed, device, train, hidden: options.hidden };
  const replica = run ? await initializedReplica(options.model, options.norm, modelOptions, run) : null;
  const { model, layout } = replica ?? initializedModel(options.model, options.norm, modelOptions);
  // Only rank 0 speaks and writes; the others print one line at the end (their fingerprint, to compare).
  const lead = !run || run.rank === 0;
  const optimizer =
    options.optimizer === 'adam'
      ? new optim.Adam(model.parameters(), { lr })
      : new optim.SGD(model.parameters(), { lr, momentum: options.momentum });
  const parameterCount = model.parameters().reduce((n, p) => n + p.size, 0);
  const ranksText = run ? `, data-parallel over ${run.worldSize} ranks (batch ${options.batch} per rank)` : '';
  if (lead) console.log(
    `train ${options.model} with ${NORM_LABELS[options.norm]}, ${options.optimizer} lr ${formatLr(lr)}` +
      `${options.optimizer === 'sgd' ? ` momentum ${options.momentum}` : ''}, batch ${options.batch}, ` +
      `${DATASET_TEXT[options.dataset].name}: ${train.count} training / ${data.test.count} held-out ${DATASET_TEXT[options.dataset].examples}, ${parameterCount} parameters, ` +
      `on ${device}${device === 'cpu' ? ` (${threadsText(threads)})` : ''}, seed ${options.seed}${ranksText}`,
  );

  const config = {
    ...options, lr, device, threads, trainSize: train.count, heldOut: data.test.count, parameters: parameterCount,
    worldSize: run?.worldSize ?? 1,
  };
  const logPath = join(out, 'log.json');
  const writeLog = (result: RunResult, extra: Record<string, unknown> = {}) => {
    if (lead) writeFileSync(logPath, JSON.stringify({ command: 'train', config, environment: environment(device), ...result, ...extra }) + '\n');
  };

  const result = await runTraining({
    model,
    optimizer,
    layout,
    train,
    test: data.test,
    epochs: options.epochs,
    maxSteps: options.steps,
    batchSize: options.batch,
    seed: options.seed,
    device,
    label: `${options.model}/${options.norm}`,
    progress: options.progress && lead,
    epochLines: lead,
    onEpoch: (partial) => writeLog(partial),
    dataParallel: replica && run ? { wrapper: replica.dataParallel, run } : undefined,
  });

  if (result.diverged) {
    writeLog(result, { checkpoint: null });
    if (lead) console.error(
      `error: training diverged: the loss is ${result.diverged.loss} at step ${result.diverged.step} ` +
        `(lower --lr; no checkpoint written). Steps up to then: ${logPath}`,
    );
    return 1;
  }
  const last = result.epochs[result.epochs.length - 1];
  const fingerprint = run ? `; parameters ${parameterFingerprint(model)}` : '';
  if (!lead) {
    console.log(
      `rank ${run!.rank}: done, ${result.steps.length} steps, held-out accuracy ` +
        `${last?.heldOut ? (last.heldOut.accuracy * 100).toFixed(2) + '%' : 'n/a'}${fingerprint}`,
    );
    return 0;
  }
  const checkpoint = join(out, 'checkpoint.safetensors');
  io.save({ model, optimizer }, checkpoint, {
    metadata: {
      model: options.model,
      norm: options.norm,
      hidden: String(options.hidden),
      optimizer: options.optimizer,
      lr: String(lr),
      epoch: String(last?.epoch ?? 0),
      step: String(result.steps.length),
      seed: String(options.seed),
      dataset: options.dataset,
      heldOutAccuracy: String(last?.heldOut?.accuracy ?? ''),
    },
  });
  writeLog(result, { checkpoint });
  const steps = result.steps.length;
  console.log(
    `done: ${steps} steps in ${result.seconds.toFixed(1)} s (${median(result.steps.map((s) => s.ms)).toFixed(2)} ms per training step, median); ` +
      `held-out accuracy ${last?.heldOut ? (last.heldOut.accuracy * 100).toFixed(2) + '%' : 'n/a'}${fingerprint}`,
  );
  console.log(`log: ${logPath}\ncheckpoint: ${checkpoint}`);
  return 0;
}
