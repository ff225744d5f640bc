// `weightnorm lr-sweep`: learning-rate robustness (Salimans & Kingma, 2016, §2). The same MLP, plain vs
// weight-normalized, trained with plain SGD (no momentum) at learning rates from 0.01 to 10; the final training loss
// per lr, with diverged runs (a NaN or infinite loss) reported as such. Under plain SGD ‖v‖ grows with every step, so
// the effective step g/‖v‖ of a weight-normalized layer shrinks on its own: the growth is reported too.
import { writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';

import { evaluate, type Evaluation, nn, optim } from 'weightnorm';
import {
  DATASET_TEXT,
  prepareRace,
  type RaceOptions,
  applyThreads,
  deviceName,
  environment,
  formatLoss,
  formatLr,
  initializedModel,
  markdownTable,
  mean,
  NORM_LABELS,
  reportName,
  resolveDevice,
  threadsText,
  runTraining,
  stepsPerEpoch,
  subset,
} from './common.js';
import type { NormKind } from './options.js';
import { CHART_FONT, writeChart } from './plot.js';

export type LrSweepOptions = RaceOptions;

interface SweepRun {
  norm: NormKind;
  lr: number;
  steps: number;
  divergedAt: number | null;
  /** Loss and accuracy over the whole training set after the last step (null when diverged). */
  train: Evaluation | null;
  heldOut: Evaluation | null;
  /** Mean loss of the last 10% of the minibatches seen (the running training loss). */
  lastLosses: number | null;
  /** Per weight-normalized layer: mean over its units of ‖v‖ after training / ‖v‖ after init. */
  normGrowth: number[] | null;
  seconds: number;
}

function rowNorms(layer: nn.Linear | nn.Conv2d): Float64Array {
  const v = layer.v!;
  const values = v.toArray();
  const rows = v.shape[0]!;
  const rest = values.length / rows;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let i = 0; i < rest; i++) sum += values[r * rest + i]! ** 2;
    out[r] = Math.sqrt(sum);
  }
  return out;
}

function weightNormLayers(model: nn.Module): (nn.Linear | nn.Conv2d)[] {
  const layers: nn.Module[] = model instanceof nn.Sequential ? [...model.layers] : [model];
  return layers.filter((l): l is nn.Linear | nn.Conv2d => (l instanceof nn.Linear || l instanceof nn.Conv2d) && l.isWeightNormalized);
}

export async function runLrSweep(options: LrSweepOptions): Promise<number> {
  const { device, threads, out, train, test, perEpoch, total, started } = prepareRace(options);
  console.log(
    `lr-sweep ${options.model}: ${options.variants.map((v) => NORM_LABELS[v]).join(' vs ')}, plain SGD (no momentum), ` +
      `lr ${options.lrs.map(formatLr).join(', ')}; batch ${options.batch}, ${total} steps each, on ${device}` +
      `${device === 'cpu' ? ` (${threadsText(threads)})` : ''}, seed ${options.seed}`,
  );
  const runs: SweepRun[] = [];
  for (const norm of options.variants) {
    for (const lr of options.lrs) {
      const { model, layout } = initializedModel(options.model, norm, { seed: options.seed, device, train, hidden: options.hidden });
      const wnLayers = weightNormLayers(model);
      const initialNorms = wnLayers.map(rowNorms);
      const optimizer = new optim.SGD(model.parameters(), { lr, momentum: 0 });
      const run = await runTraining({
        model, optimizer, layout, train, epochs: options.epochs, maxSteps: options.steps, batchSize: options.batch,
        seed: options.seed, device, label: `${NORM_LABELS[norm]} lr ${formatLr(lr)}`, progress: options.progress, epochLines: false,
      });
      optimizer.dispose();
      const losses = run.steps.map((s) => s.loss);
      const diverged = run.diverged !== null;
      const evalOptions = { batchSize: 500, device, layout } as const;
      const trainEval = diverged ? null : evaluate(model, train, evalOptions);
      const result: SweepRun = {
        norm,
        lr,
        steps: run.steps.length,
        divergedAt: run.diverged?.step ?? null,
        train: trainEval && Number.isFinite(trainEval.loss) ? trainEval : trainEval ? { ...trainEval, loss: Infinity } : null,
        heldOut: diverged ? null : evaluate(model, test, evalOptions),
        lastLosses: losses.length ? mean(losses.slice(-Math.max(1, Math.floor(losses.length / 10)))) : null,
        normGrowth: wnLayers.length && !diverged
          ? wnLayers.map((layer, i) => mean([...rowNorms(layer)].map((n, r) => n / initialNorms[i]![r]!)))
          : null,
        seconds: run.seconds,
      };
      runs.push(result);
      console.log(
        `${NORM_LABELS[norm]} lr ${formatLr(lr)}: ` +
          (result.divergedAt !== null
            ? `diverged at step ${result.divergedAt}`
            : `training loss ${formatLoss(result.train!.loss)}, held-out accuracy ${(result.heldOut!.accuracy * 100).toFixed(2)}%` +
              (result.normGrowth ? `, ‖v‖ growth ${result.normGrowth.map((g) => g.toFixed(2)).join(' / ')}` : '')) +
          ` (${result.seconds.toFixed(1)} s)`,
      );
    }
  }
  const files = await writeSweepReport(options, { runs, device, threads, trainCount: train.count, testCount: test.count, total, out });
  console.log(
    `lr-sweep took ${((performance.now() - started) / 1000).toFixed(0)} s. Report: ${relative(process.cwd(), files.report)}; ` +
      `plot: ${relative(process.cwd(), files.png ?? files.svg)}`,
  );
  return 0;
}

/** Finite losses above this are drawn at it (a training loss of 10 is far above chance, ln 10 ≈ 2.3); diverged runs above it. */
const PLOT_CEILING = 10;

function sweepChart(runs: SweepRun[], options: LrSweepOptions, total: number, title: string, subtitle: string): TopLevelSpec {
  const order = options.variants.map((v) => NORM_LABELS[v]);
  const clipped = `loss > ${PLOT_CEILING} (drawn at ${PLOT_CEILING})`;
  const diverged = 'diverged: NaN or ∞ (drawn above)';
  const values = options.variants.flatMap((norm, i) => {
    // A line stops at a diverged run and starts again after it; diverged runs of each variant get their own row.
    let segment = 0;
    return runs
      .filter((r) => r.norm === norm)
      .sort((a, b) => a.lr - b.lr)
      .map((r) => {
        const finite = r.train !== null && Number.isFinite(r.train.loss);
        if (!finite) segment += 1;
        const loss = finite ? Math.min(r.train!.loss, PLOT_CEILING) : PLOT_CEILING * 1.4 ** (i + 1);
        const status = !finite ? diverged : r.train!.loss > PLOT_CEILING ? clipped : 'trained';
        return {
          variant: NORM_LABELS[norm],
          segment: `${norm}-${segment}`,
          lr: r.lr,
          loss: Number(loss.toPrecision(5)),
          status,
          note: !finite ? (r.divergedAt !== null ? `step ${r.divergedAt}` : 'loss not finite') : status === clipped ? formatLoss(r.train!.loss) : '',
        };
      });
  });
  const x = { field: 'lr', type: 'quantitative', scale: { type: 'log' }, title: 'learning rate (plain SGD, no momentum)', axis: { format: '~g' } } as const;
  const y = {
    field: 'loss',
    type: 'quantitative',
    scale: { type: 'log' },
    axis: { format: '~g' },
    title: `training loss after ${total} steps (whole training set)`,
  } as const;
  const color = { field: 'variant', type: 'nominal', sort: order, title: null, scale: { range: ['#7f7f7f', '#1f77b4', '#ff7f0e', '#2ca02c'] } } as const;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle },
    width: 520,
    height: 320,
    background: 'white',
    layer: [
      {
        data: { values: values.filter((v) => v.status === 'trained') },
        mark: { type: 'line', strokeWidth: 2 },
        encoding: { x, y, color, detail: { field: 'segment', type: 'nominal' } },
      },
      {
        data: { values },
        mark: { type: 'point', size: 90, filled: true, strokeWidth: 2, opacity: 1 },
        encoding: {
          x,
          y,
          color,
          shape: { field: 'status', type: 'nominal', title: null, scale: { domain: ['trained', clipped, diverged], range: ['circle', 'triangle-up', 'cross'] } },
          tooltip: [{ field: 'variant' }, { field: 'lr' }, { field: 'loss' }, { field: 'status' }, { field: 'note' }],
        },
      },
      {
        data: { values: values.filter((v) => v.note !== '') },
        mark: { type: 'text', align: 'left', dx: 8, fontSize: 10 },
        encoding: { x, y, color, text: { field: 'note' } },
      },
      {
        data: { values: [{ chance: Math.log(10), label: 'chance: ln 10' }] },
        layer: [
          { mark: { type: 'rule', strokeDash: [4, 3], color: '#999' }, encoding: { y: { field: 'chance', type: 'quantitative' } } },
          {
            mark: { type: 'text', align: 'left', dx: 4, dy: -6, color: '#777' },
            encoding: { y: { field: 'chance', type: 'quantitative' }, x: { datum: options.lrs[0]! }, text: { field: 'label' } },
          },
        ],
      },
    ],
    config: { font: CHART_FONT, legend: { orient: 'right', labelLimit: 400, offset: 56 } },
  };
}

async function writeSweepReport(
  options: LrSweepOptions,
  ctx: { runs: SweepRun[]; device: 'cpu' | 'cuda'; threads: number; trainCount: number; testCount: number; total: number; out: string },
): Promise<{ report: string; svg: string; png: string | null }> {
  const { runs, device, out } = ctx;
  const name = reportName(`lr-sweep-${options.model}`, options.dataset);
  const base = join(out, name);
  const env = environment(device);
  const modelText = options.model === 'mlp' ? `MLP 784 → ${options.hidden} → ${options.hidden} → 10, ReLU` : 'the small CNN';
  const chart = await writeChart(
    sweepChart(runs, options, ctx.total, `Learning-rate robustness: ${modelText}, ${DATASET_TEXT[options.dataset].name}`, `plain SGD, batch ${options.batch}, ${ctx.total} steps; ${deviceName(device)}`),
    base,
  );
  const byLr = (norm: NormKind, lr: number) => runs.find((r) => r.norm === norm && r.lr === lr)!;
  const cell = (r: SweepRun) =>
    r.divergedAt !== null
      ? `diverged (step ${r.divergedAt})`
      : `${formatLoss(r.train!.loss)} / ${(r.heldOut!.accuracy * 100).toFixed(1)}%${r.heldOut!.accuracy < 0.2 ? ' (chance level: nothing learned)' : ''}`;
  const wide = (norm: NormKind) => {
    const ok = runs.filter((r) => r.norm === norm && r.divergedAt === null && r.train!.loss < Math.log(10) / 2);
    return ok.length ? `${formatLr(Math.min(...ok.map((r) => r.lr)))} – ${formatLr(Math.max(...ok.map((r) => r.lr)))} (${ok.length} of ${options.lrs.length})` : 'none';
  };
  const growthRows = runs
    .filter((r) => r.normGrowth)
    .map((r) => [`${NORM_LABELS[r.norm]}, lr ${formatLr(r.lr)}`, ...r.normGrowth!.map((g) => g.toFixed(3))]);
  const command = `weightnorm ${process.argv.slice(2).join(' ')}`;
  const lines = [
    `# Learning-rate robustness: ${options.model.toUpperCase()} on ${DATASET_TEXT[options.dataset].name}, plain SGD`,
    '',
    `Salimans & Kingma (2016, §2): under plain SGD (no momentum) the norm of a weight-normalized direction grows, ‖v_{t+1}‖² = ‖v_t‖² + η²‖∇v‖², ` +
      'so the effective step size g/‖v‖ shrinks by itself when the learning rate is too large.',
    '',
    `- model: ${modelText}; data-dependent init on the first 500 training digits, seed ${options.seed}, the same for every run`,
    `- data: ${DATASET_TEXT[options.dataset].name}, ${ctx.trainCount} training ${DATASET_TEXT[options.dataset].examples}, ${ctx.testCount} held out; batch ${options.batch}; ${ctx.total} steps per run, the same minibatches for every run`,
    '- final training loss: cross-entropy over the whole training set after the last step (evaluation mode); a run whose ' +
      'minibatch loss became NaN or infinite is reported as diverged at that step (and drawn at the top of the plot)',
    `- machine: ${env.device}; ${env.node}; ${env.date.slice(0, 10)}`,
    `- command: \`${command}\``,
    '',
    '## Final training loss / held-out accuracy',
    '',
    markdownTable(
      ['lr', ...options.variants.map((v) => NORM_LABELS[v])],
      options.lrs.map((lr) => [formatLr(lr), ...options.variants.map((v) => cell(byLr(v, lr)))]),
    ),
    '',
    `![final training loss vs learning rate](${name}.${chart.png ? 'png' : 'svg'})`,
    '',
    `Learning rates that trained to a loss below half of chance (ln 10 / 2 ≈ 1.15): ` +
      options.variants.map((v) => `${NORM_LABELS[v]} ${wide(v)}`).join('; ') + '.',
    '',
  ];
  if (growthRows.length) {
    const layers = growthRows[0]!.length - 1;
    lines.push(
      '## Growth of ‖v‖ (weight-normalized runs)',
      '',
      'Mean over the units of each layer of ‖v‖ after training / ‖v‖ after init. At a fixed g, an SGD step moves w by ' +
        'lr · (g/‖v‖)² times the projected gradient, so the effective learning rate falls by the square of this factor.',
      '',
      markdownTable(['run', ...Array.from({ length: layers }, (_, i) => `layer ${i + 1}`)], growthRows),
      '',
    );
  }
  lines.push(`Per-run details (running loss, seconds): \`${name}.json\`.`, '');
  const report = `${base}.md`;
  writeFileSync(report, lines.join('\n'));
  writeFileSync(
    `${base}.json`,
    JSON.stringify({ command: 'lr-sweep', config: { ...options, device, threads: ctx.threads }, environment: env, runs }, null, 1) + '\n',
  );
  return { report, svg: chart.svg, png: chart.png };
}
