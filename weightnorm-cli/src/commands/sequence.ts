// `weightnorm sequence`: the two settings where the paper argues weight norm matters most because batch norm does not
// fit them, at a size a small CPU finishes in minutes:
//  (a) rows: sequential MNIST, each 28×28 digit read row by row as 28 steps of 28 pixels by an LSTM whose last
//      hidden state feeds a linear classifier; plain vs weight-normalized LSTM (same seed, same initial directions,
//      the classifier gets data-dependent init in both);
//  (b) online: a small MLP trained one example at a time (batch size 1): plain, weight norm, batch norm (which cannot
//      compute batch statistics from one example: the library's error is reported) and WN + mean-only BN (which
//      runs, but subtracts the example itself: what it learns is reported as it comes out).
// Writes <out>/sequence-rows.{md,json,svg,png} and <out>/sequence-online.{md,json,svg,png} (sequence-rows-fashion-mnist…
// on Fashion-MNIST).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';

import { data, type Device, evaluate, init, manualSeed, nn, noGrad, optim, type Tensor, tensor, tidy, trainStep } from 'weightnorm';
import {
  applyThreads,
  CommandError,
  DATASET_TEXT,
  deviceName,
  environment,
  INIT_EXAMPLES,
  loadDataset,
  markdownTable,
  reportName,
  resolveDevice,
  subset,
  windowMean,
} from './common.js';
import type { DatasetKind, DeviceChoice } from './options.js';
import { CHART_FONT, writeChart } from './plot.js';

const { IMAGE_SIZE, PIXELS, CLASSES, batches } = data;

export const SEQUENCE_EXPERIMENTS = ['rows', 'online'] as const;
export type SequenceExperiment = (typeof SEQUENCE_EXPERIMENTS)[number];

export interface SequenceOptions {
  experiments: SequenceExperiment[];
  hidden: number;
  epochs: number;
  batch: number;
  lr: number;
  trainSize?: number;
  onlineSteps: number;
  onlineHidden: number;
  onlineLr: number;
  evalEvery: number;
  smooth: number;
  seed: number;
  device: DeviceChoice;
  threads?: number;
  out: string;
  dataset: DatasetKind;
}

/** An LSTM reading a digit row by row ([N, 784] -> [N, 28 steps, 28 pixels]) and a linear classifier on its last h. */
class RowClassifier extends nn.Module {
  readonly lstm: nn.LSTM;
  readonly head: nn.Sequential;

  constructor(hidden: number, weightNorm: boolean) {
    super();
    this.lstm = this.registerModule('lstm', new nn.LSTM(IMAGE_SIZE, hidden, { batchFirst: true, weightNorm }));
    this.head = this.registerModule('head', new nn.Sequential(new nn.Linear(hidden, CLASSES, { weightNorm })));
  }

  /** The last step's hidden state [N, H]. */
  features(x: Tensor): Tensor {
    const rows = nn.functional.reshape(x, [x.shape[0]!, IMAGE_SIZE, IMAGE_SIZE]);
    const { h } = this.lstm.forward(rows);
    return nn.functional.reshape(h, [x.shape[0]!, this.lstm.hiddenSize]);
  }

  forward(x: Tensor): Tensor {
    return this.head.forward(this.features(x));
  }
}

interface Curve {
  label: string;
  losses: number[];
  heldOut: { step: number; accuracy: number; loss: number }[];
  /** Training steps only (forward, backward, update), evaluations excluded. */
  seconds: number;
  note?: string;
  error?: string;
}

function chart(curves: Curve[], title: string, subtitle: string[], smooth: number): TopLevelSpec {
  const values = curves.flatMap((c) => windowMean(c.losses, smooth).map((loss, i) => ({ variant: c.label, step: i + 1, loss })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title, subtitle },
    width: 560,
    height: 300,
    data: { values },
    mark: { type: 'line', strokeWidth: 1.5 },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'iteration' },
      y: { field: 'loss', type: 'quantitative', title: `training loss (moving mean of ${smooth})` },
      color: { field: 'variant', type: 'nominal', title: null },
    },
    config: { font: CHART_FONT, legend: { orient: 'top-right', labelLimit: 320 } },
  };
}

function lossAt(losses: number[], step: number, smooth: number): string {
  const mean = windowMean(losses, smooth);
  const value = mean[Math.min(step, mean.length) - 1];
  return value === undefined ? '–' : value.toFixed(3);
}

async function writeReport(base: string, title: string, intro: string[], curves: Curve[], smooth: number, options: SequenceOptions, device: Device): Promise<string> {
  const longest = Math.max(1, ...curves.map((c) => c.losses.length));
  const ks = [...new Set([Math.round(longest / 8), Math.round(longest / 4), Math.round(longest / 2), longest].filter((k) => k >= 1))];
  const chartFiles = await writeChart(chart(curves.filter((c) => c.losses.length > 0), title, [intro[0]!], smooth), base);
  const env = environment(device);
  const rows = curves.map((c) => [
    c.label,
    ...ks.map((k) => (c.losses.length >= k ? lossAt(c.losses, k, smooth) : '–')),
    c.heldOut.length ? `${(c.heldOut.at(-1)!.accuracy * 100).toFixed(2)}%` : '–',
    c.heldOut.length ? c.heldOut.at(-1)!.loss.toFixed(3) : '–',
    c.losses.length ? `${((c.seconds * 1000) / c.losses.length).toFixed(1)}` : '–',
    c.error ?? c.note ?? '',
  ]);
  const lines = [
    `# ${title}`,
    '',
    ...intro.map((line) => `- ${line}`),
    `- machine: ${env.device}; ${env.node}; load average at the end ${env.loadAverage}; ${env.date.slice(0, 10)}`,
    `- command: \`weightnorm ${process.argv.slice(2).join(' ')}\``,
    '',
    markdownTable(
      ['variant', ...ks.map((k) => `loss @ ${k}`), 'held-out accuracy', 'held-out loss', 'ms / iteration (training only)', 'note'],
      rows,
    ),
    '',
    `![training loss vs iteration](${relative(join(base, '..'), chartFiles.png ?? chartFiles.svg)})`,
    '',
    'Held-out accuracy over training:',
    '',
    markdownTable(
      ['variant', ...(curves.find((c) => c.heldOut.length)?.heldOut.map((h) => `step ${h.step}`) ?? [])],
      curves.filter((c) => c.heldOut.length).map((c) => [c.label, ...c.heldOut.map((h) => `${(h.accuracy * 100).toFixed(2)}%`)]),
    ),
    '',
  ];
  writeFileSync(`${base}.md`, lines.join('\n'));
  writeFileSync(`${base}.json`, JSON.stringify({ options, curves }, null, 1));
  return `${base}.md`;
}

// ---------------------------------------------------------------------------------------------------------------
// (a) Sequential MNIST, row by row.

async function runRows(options: SequenceOptions, device: Device, train: data.MnistSplit, test: data.MnistSplit): Promise<string> {
  const curves: Curve[] = [];
  for (const weightNorm of [false, true]) {
    const label = weightNorm ? 'LSTM, weight norm' : 'LSTM, plain';
    manualSeed(options.seed);
    const model = new RowClassifier(options.hidden, weightNorm).to(device);
    // Data-dependent init of the classifier on the LSTM's features of the first digits (for both variants).
    const count = Math.min(INIT_EXAMPLES, train.count);
    noGrad(() =>
      tidy(() => {
        const features = model.features(tensor(train.images.slice(0, count * PIXELS), [count, PIXELS], { device }));
        manualSeed(options.seed);
        init.dataDependent(model.head, features);
      }),
    );
    const optimizer = new optim.Adam(model.parameters(), { lr: options.lr });
    const curve: Curve = { label, losses: [], heldOut: [], seconds: 0 };
    for (let epoch = 0; epoch < options.epochs; epoch++) {
      for (const [x, labels] of batches(train, { batchSize: options.batch, seed: options.seed, epoch, device, dropLast: true })) {
        const start = performance.now();
        try {
          curve.losses.push(trainStep(model, optimizer, x, labels));
        } finally {
          x.dispose();
        }
        curve.seconds += (performance.now() - start) / 1000;
      }
      const held = evaluate(model, test, { batchSize: 500, device, layout: 'flat' });
      curve.heldOut.push({ step: curve.losses.length, accuracy: held.accuracy, loss: held.loss });
      console.log(`rows ${label} epoch ${epoch + 1}/${options.epochs}: held-out accuracy ${(held.accuracy * 100).toFixed(2)}%`);
    }
    curves.push(curve);
    model.dispose();
  }
  const base = join(options.out, reportName('sequence-rows', options.dataset));
  return writeReport(
    base,
    `Sequential ${DATASET_TEXT[options.dataset].name}, row by row: plain vs weight-normalized LSTM`,
    [
      `each digit read as 28 steps of 28 pixels by nn.LSTM(28, ${options.hidden}, { batchFirst: true }); nn.Linear(${options.hidden}, 10) on the last hidden state`,
      `both variants from the same seed (${options.seed}): the same initial directions (weight norm starts at w = v, g = ‖v‖); the classifier gets data-dependent init on the LSTM features of the first ${INIT_EXAMPLES} digits in both; the LSTM itself has no data-dependent init (it is defined for Linear and Conv2d layers)`,
      `data: ${DATASET_TEXT[options.dataset].name}, ${train.count} training ${DATASET_TEXT[options.dataset].examples}, ${test.count} held out; Adam lr ${options.lr}, batch ${options.batch}, ${options.epochs} epoch(s), the same minibatches for both`,
    ],
    curves,
    options.smooth,
    options,
    device,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// (b) Online learning, batch size 1.

type OnlineVariant = 'plain' | 'weight norm' | 'batch norm' | 'WN + mean-only BN';

function onlineModel(variant: OnlineVariant, hidden: number): nn.Sequential {
  const wn = variant === 'weight norm' || variant === 'WN + mean-only BN';
  const layers: nn.Module[] = [new nn.Linear(PIXELS, hidden, { weightNorm: wn })];
  if (variant === 'batch norm') layers.push(new nn.BatchNorm(hidden));
  if (variant === 'WN + mean-only BN') layers.push(new nn.MeanOnlyBatchNorm(hidden));
  layers.push(new nn.ReLU(), new nn.Linear(hidden, CLASSES, { weightNorm: wn }));
  return new nn.Sequential(...layers);
}

async function runOnline(options: SequenceOptions, device: Device, train: data.MnistSplit, test: data.MnistSplit): Promise<string> {
  const curves: Curve[] = [];
  const variants: OnlineVariant[] = ['plain', 'weight norm', 'batch norm', 'WN + mean-only BN'];
  const steps = Math.min(options.onlineSteps, train.count);
  for (const variant of variants) {
    manualSeed(options.seed);
    const model = onlineModel(variant, options.onlineHidden).to(device);
    const curve: Curve = { label: variant, losses: [], heldOut: [], seconds: 0 };
    const initBatch = tensor(train.images.slice(0, INIT_EXAMPLES * PIXELS), [INIT_EXAMPLES, PIXELS], { device });
    try {
      manualSeed(options.seed);
      init.dataDependent(model, initBatch); // on 500 digits: the one place this setting sees more than one example
    } finally {
      initBatch.dispose();
    }
    const optimizer = new optim.Adam(model.parameters(), { lr: options.onlineLr });
    try {
      for (const [x, labels] of batches(train, { batchSize: 1, seed: options.seed, device })) {
        if (curve.losses.length >= steps) {
          x.dispose();
          break;
        }
        const start = performance.now();
        try {
          curve.losses.push(trainStep(model, optimizer, x, labels));
        } finally {
          x.dispose();
          curve.seconds += (performance.now() - start) / 1000;
        }
        if (curve.losses.length % options.evalEvery === 0 || curve.losses.length === steps) {
          const held = evaluate(model, test, { batchSize: 500, device, layout: 'flat' });
          curve.heldOut.push({ step: curve.losses.length, accuracy: held.accuracy, loss: held.loss });
        }
      }
    } catch (error) {
      curve.error = `training step ${curve.losses.length + 1} threw ${(error as Error).name}: ${(error as Error).message}`;
    }
    if (variant === 'WN + mean-only BN') {
      curve.note =
        'runs, but in training mode each unit minus its mean over a batch of one is 0: the hidden layer outputs only its bias, the network cannot see the digit; evaluation uses the running mean instead';
    }
    console.log(`online ${variant}: ${curve.error ?? `${curve.losses.length} steps, held-out accuracy ${curve.heldOut.length ? (curve.heldOut.at(-1)!.accuracy * 100).toFixed(2) + '%' : '–'}`}`);
    curves.push(curve);
    model.dispose();
  }
  const base = join(options.out, reportName('sequence-online', options.dataset));
  return writeReport(
    base,
    'Online learning, one example per step: plain vs weight norm vs batch norm',
    [
      `MLP 784 → ${options.onlineHidden} → 10 (ReLU), trained on ${steps} ${DATASET_TEXT[options.dataset].counted} one at a time (batch size 1), Adam lr ${options.onlineLr}`,
      `every variant from the same seed (${options.seed}) with data-dependent init on the first ${INIT_EXAMPLES} training digits; the same example order; held-out accuracy on ${test.count} digits every ${options.evalEvery} steps`,
      'batch norm cannot compute batch statistics from one example: its first training step throws, and the report shows the message a user gets',
    ],
    curves,
    options.smooth,
    options,
    device,
  );
}

export async function runSequence(options: SequenceOptions): Promise<number> {
  const device = resolveDevice(options.device);
  applyThreads(options.threads);
  const start = performance.now();
  const { train: all, test } = loadDataset(options.dataset);
  const train = subset(all, options.trainSize);
  if (options.batch > train.count) throw new CommandError(`--batch ${options.batch} is larger than the ${train.count} training ${DATASET_TEXT[options.dataset].examples}`);
  mkdirSync(options.out, { recursive: true });
  const reports: string[] = [];
  if (options.experiments.includes('rows')) reports.push(await runRows(options, device, train, test));
  if (options.experiments.includes('online')) reports.push(await runOnline(options, device, train, test));
  console.log(`sequence took ${((performance.now() - start) / 1000).toFixed(0)} s on ${deviceName(device)}. Reports: ${reports.map((r) => relative(process.cwd(), r)).join(', ')}`);
  return 0;
}
