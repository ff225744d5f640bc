// `weightnorm compare`: the paper's convergence race (Salimans & Kingma, 2016, §4 and §5) on one network: plain,
// weight norm, batch norm and WN + mean-only BN, each with data-dependent init, Adam, and its best learning rate
// from a short pilot over a grid; the same seed, init batch and minibatches for all. Writes
// <out>/compare-<model>.{md,json,svg,png}. --distributed (under `weightnorm launch`): the pilot and the race are
// data-parallel (each rank on its shard of every epoch, rank 0's data-dependent init broadcast); rank 0 alone
// prints and writes the report; the single-process timing section is skipped.
import { writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';

import { data, NonFiniteLossError, optim, type Tensor, trainStep } from 'weightnorm';
import {
  DATASET_TEXT,
  prepareRace,
  type RaceOptions,
  applyThreads,
  DEFAULT_HIDDEN,
  deviceName,
  environment,
  formatLoss,
  formatLr,
  initializedModel,
  initializedReplica,
  withProcessGroup,
  type DataParallelRun,
  markdownTable,
  mean,
  median,
  NORM_LABELS,
  parameterFingerprint,
  reportName,
  resolveDevice,
  threadsText,
  runTraining,
  type RunResult,
  stepsPerEpoch,
  subset,
  thinIndices,
  windowMean,
} from './common.js';
import type { NormKind } from './options.js';
import { CHART_FONT, writeChart } from './plot.js';
import { DEFAULT_MAX_SPREAD, judgeTiming } from './timing.js';

const { batches, loadMnist } = data;

/** lrs is the pilot's learning-rate grid. */
export interface CompareOptions extends RaceOptions {
  /** One learning rate for every variant: skips the pilot. */
  lr?: number;
  pilotSteps: number;
  /** Iterations to reach this (smoothed) training loss are reported. */
  targetLoss: number;
  /** Window of the moving average applied to the training loss in the tables and the plot. */
  smooth: number;
  timingRounds: number;
  timingSteps: number;
  /** The timing comparison is reported untrustworthy when a variant's slowest round median exceeds its fastest by more (default 0.25). */
  maxTimingSpread?: number;
  /** Data-parallel under `weightnorm launch` (see the file's comment). */
  distributed?: boolean;
}

interface PilotScore {
  lr: number;
  /** Mean training loss over the pilot's last quarter of steps; null when it diverged. */
  score: number | null;
  divergedAt: number | null;
}

interface Timing {
  /** The lowest round median: the least disturbed by background load. */
  msPerStep: number | null;
  /** Per round, the median step time (NaN for a round it did not run in: it diverged). */
  roundMedians: number[];
  /** Median over rounds of (this variant's round median / plain's in the same round) − 1; null for plain or without it. */
  vsPlain: number | null;
  /** Lowest and highest of those per-round ratios − 1. */
  vsPlainRange: [number, number] | null;
}

const NO_TIMING: Timing = { msPerStep: null, roundMedians: [], vsPlain: null, vsPlainRange: null };

interface VariantResult {
  norm: NormKind;
  label: string;
  lr: number;
  pilot: PilotScore[];
  run: RunResult;
  timing: Timing;
}

/**
 * The order of `count` variants in timing round `round` (see measureStepTimes): rounds 2j and 2j + 1 both start
 * with variant j mod count, the first going forwards from it and the second backwards, so over 2 × count rounds
 * every variant starts equally often and follows two different ones.
 */
export function timingOrder(count: number, round: number): number[] {
  const start = Math.floor(round / 2) % count, step = round % 2 === 0 ? 1 : count - 1;
  return Array.from({ length: count }, (_, k) => (start + k * step) % count);
}

/**
 * Median step time per round, the variants one after the other within each round (the order rotates) so that
 * background load that varies over seconds hits all of them alike: the ratio of two variants in the same round is
 * a paired measurement. Every other round runs the rotated order backwards: a rotation alone keeps each variant
 * behind the same one in every round, and a variant runs in the caches and the garbage its predecessor left.
 */
function measureStepTimes(options: CompareOptions, variants: { norm: NormKind; lr: number }[], deps: TimingDeps): Map<NormKind, number[]> {
  const { device, train } = deps;
  const models = variants.map(({ norm, lr }) => {
    const { model, layout } = initializedModel(options.model, norm, { seed: options.seed, device, train, hidden: options.hidden });
    return { norm, model, layout, optimizer: new optim.Adam(model.parameters(), { lr }), failed: false };
  });
  const layout = models[0]!.layout;
  const fixed: [Tensor, Int32Array][] = [];
  for (const batch of batches(train, { batchSize: options.batch, seed: options.seed, device, layout, dropLast: true })) {
    fixed.push(batch);
    if (fixed.length === options.timingSteps + 1) break;
  }
  const rounds = new Map<NormKind, number[]>(variants.map((v) => [v.norm, Array<number>(options.timingRounds).fill(NaN)]));
  try {
    for (let round = 0; round < options.timingRounds; round++) {
      for (const index of timingOrder(models.length, round)) {
        const entry = models[index]!;
        if (entry.failed) continue;
        const times: number[] = [];
        try {
          fixed.forEach(([x, labels], i) => {
            const t0 = performance.now();
            trainStep(entry.model, entry.optimizer, x, labels);
            if (i > 0) times.push(performance.now() - t0); // the first step of a round warms the caches up
          });
          rounds.get(entry.norm)![round] = median(times);
        } catch (error) {
          if (!(error instanceof NonFiniteLossError)) throw error;
          entry.failed = true;
        }
      }
    }
  } finally {
    for (const [x] of fixed) x.dispose();
    for (const m of models) m.optimizer.dispose();
  }
  return rounds;
}

interface TimingDeps {
  device: 'cpu' | 'cuda';
  train: ReturnType<typeof loadMnist>['train'];
}

function smoothedAt(losses: readonly number[], step: number, window: number): number | null {
  if (step < 1 || step > losses.length) return null;
  return mean(losses.slice(Math.max(0, step - window), step));
}

function stepsToReach(smoothed: readonly number[], target: number): number | null {
  const i = smoothed.findIndex((x) => x <= target);
  return i < 0 ? null : i + 1;
}

/** Milestones for the "loss after k iterations" columns: an eighth, a quarter, half and all of the run. */
function milestones(total: number): number[] {
  return [...new Set([Math.round(total / 8), Math.round(total / 4), Math.round(total / 2), total])].filter((k) => k >= 1);
}

export function runCompare(options: CompareOptions): Promise<number> {
  return withProcessGroup(options.distributed, (run) => race(options, run));
}

async function race(requested: CompareOptions, run: DataParallelRun | null): Promise<number> {
  // The timing section times one process's steps: under --distributed it would time each rank alone, so it is skipped.
  const options = run ? { ...requested, timingRounds: 0 } : requested;
  const { device, threads, out, train, test, perEpoch, total, started } = prepareRace(options);
  // Only rank 0 speaks and writes; the others print one line per variant at the end (their fingerprints).
  const lead = !run || run.rank === 0;
  const log = (line: string) => {
    if (lead) console.log(line);
  };
  log(
    `compare ${options.model}: ${options.variants.map((v) => NORM_LABELS[v]).join(', ')}; Adam, batch ${options.batch}, ` +
      `${total} steps (${(total / perEpoch).toFixed(2)} epochs of ${train.count} ${DATASET_TEXT[options.dataset].counted}), on ${device}` +
      `${device === 'cpu' ? ` (${threadsText(threads)})` : ''}, seed ${options.seed}`,
  );
  const common = { seed: options.seed, device, train, hidden: options.hidden };
  const replica = async (norm: NormKind) => {
    if (!run) return { ...initializedModel(options.model, norm, common), dataParallel: undefined };
    const { model, layout, dataParallel } = await initializedReplica(options.model, norm, common, run);
    return { model, layout, dataParallel: { wrapper: dataParallel, run } };
  };
  const fingerprints: string[] = [];

  // 1. Pilot: the best learning rate of the grid per variant, by training loss.
  const pilots = new Map<NormKind, PilotScore[]>();
  const chosen = new Map<NormKind, number>();
  for (const norm of options.variants) {
    if (options.lr !== undefined) {
      chosen.set(norm, options.lr);
      pilots.set(norm, []);
      continue;
    }
    const scores: PilotScore[] = [];
    for (const lr of options.lrs) {
      const { model, layout, dataParallel } = await replica(norm);
      const optimizer = new optim.Adam(model.parameters(), { lr });
      const pilot = await runTraining({
        model, optimizer, layout, train, epochs: Infinity, maxSteps: options.pilotSteps, batchSize: options.batch,
        seed: options.seed, device, label: `pilot ${norm} lr ${formatLr(lr)}`, progress: options.progress && lead, epochLines: false,
        dataParallel,
      });
      optimizer.dispose();
      const losses = pilot.steps.map((s) => s.loss);
      const score = pilot.diverged ? null : mean(losses.slice(-Math.max(1, Math.floor(losses.length / 4))));
      scores.push({ lr, score, divergedAt: pilot.diverged?.step ?? null });
    }
    const finite = scores.filter((s) => s.score !== null);
    const best = finite.length ? finite.reduce((a, b) => (b.score! < a.score! ? b : a)) : scores[0]!;
    chosen.set(norm, best.lr);
    pilots.set(norm, scores);
    log(
      `pilot ${NORM_LABELS[norm]}: ` +
        scores.map((s) => `lr ${formatLr(s.lr)} → ${s.score === null ? `diverged at step ${s.divergedAt}` : s.score.toFixed(4)}`).join(', ') +
        `; best lr ${formatLr(best.lr)}`,
    );
  }

  // 2. The race: every variant from the same init, on the same minibatches, with its learning rate.
  const results: VariantResult[] = [];
  for (const norm of options.variants) {
    const lr = chosen.get(norm)!;
    const { model, layout, dataParallel } = await replica(norm);
    const optimizer = new optim.Adam(model.parameters(), { lr });
    const result = await runTraining({
      model, optimizer, layout, train, test: test, epochs: options.epochs, maxSteps: options.steps, batchSize: options.batch,
      seed: options.seed, device, label: `${NORM_LABELS[norm]} (lr ${formatLr(lr)})`, progress: options.progress && lead,
      epochLines: lead, dataParallel,
    });
    optimizer.dispose();
    if (run) fingerprints.push(`${norm} ${parameterFingerprint(model)}`);
    results.push({ norm, label: NORM_LABELS[norm], lr, pilot: pilots.get(norm)!, run: result, timing: NO_TIMING });
  }
  if (run && !lead) {
    console.log(`rank ${run.rank}: done; parameters ${fingerprints.join(', ')}`);
    return 0;
  }

  // 3. Time per iteration, measured apart from the race with the variants interleaved.
  if (options.timingRounds > 0) {
    console.log(`timing: ${options.timingRounds} rounds × ${options.timingSteps} steps per variant, interleaved`);
    const rounds = measureStepTimes(options, results.map((r) => ({ norm: r.norm, lr: r.lr })), { device, train });
    const plainRounds = rounds.get('none');
    for (const r of results) {
      const medians = rounds.get(r.norm)!;
      const measured = medians.filter((x) => !Number.isNaN(x));
      const ratios = plainRounds && r.norm !== 'none'
        ? medians.map((x, i) => x / plainRounds[i]! - 1).filter((x) => !Number.isNaN(x))
        : [];
      r.timing = {
        msPerStep: measured.length ? Math.min(...measured) : null,
        roundMedians: medians,
        vsPlain: ratios.length ? median(ratios) : null,
        vsPlainRange: ratios.length ? [Math.min(...ratios), Math.max(...ratios)] : null,
      };
    }
  }

  const files = await writeCompareReport(options, { results, device, threads, trainCount: train.count, testCount: test.count, total, out });
  const seconds = (performance.now() - started) / 1000;
  console.log(`\n${summaryTable(results, options)}\n`);
  if (options.timingRounds > 0 && !files.timingTrustworthy) {
    console.log('The timing comparison is not trustworthy (round medians spread too widely under background load): see the report.');
  }
  if (run) console.log(`data-parallel over ${run.worldSize} ranks; parameters ${fingerprints.join(', ')}`);
  console.log(`compare took ${seconds.toFixed(0)} s. Report: ${relative(process.cwd(), files.report)}; plot: ${relative(process.cwd(), files.png ?? files.svg)}`);
  return 0;
}

function signedPercent(ratio: number): string {
  const pct = ratio * 100;
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(1)}%`;
}

function overheadText(r: VariantResult, plain: VariantResult | undefined): string {
  if (!plain || r === plain || r.timing.vsPlain === null) return '';
  return ` (${signedPercent(r.timing.vsPlain)})`;
}

function summaryRows(results: VariantResult[], options: CompareOptions, ks: number[]): string[][] {
  const plain = results.find((r) => r.norm === 'none');
  return results.map((r) => {
    const losses = r.run.steps.map((s) => s.loss);
    const smoothed = windowMean(losses, options.smooth);
    const last = r.run.epochs[r.run.epochs.length - 1];
    const reach = stepsToReach(smoothed, options.targetLoss);
    const diverged = r.run.diverged ? ` (diverged at step ${r.run.diverged.step})` : '';
    return [
      r.label + diverged,
      formatLr(r.lr),
      last?.heldOut ? `${(last.heldOut.accuracy * 100).toFixed(2)}%` : 'n/a',
      last?.heldOut ? formatLoss(last.heldOut.loss) : 'n/a',
      ...ks.map((k) => formatLoss(smoothedAt(losses, k, options.smooth))),
      reach === null ? 'not reached' : String(reach),
      r.timing.msPerStep === null ? 'n/a' : `${r.timing.msPerStep.toFixed(2)}${overheadText(r, plain)}`,
    ];
  });
}

function summaryHeaders(options: CompareOptions, ks: number[]): string[] {
  return [
    'variant', 'lr', 'held-out accuracy', 'held-out loss',
    ...ks.map((k) => `train loss @${k}`),
    `iterations to loss ≤ ${options.targetLoss}`,
    'ms / iteration (vs plain)',
  ];
}

function summaryTable(results: VariantResult[], options: CompareOptions): string {
  const total = Math.max(...results.map((r) => r.run.steps.length));
  const ks = milestones(total);
  const headers = summaryHeaders(options, ks);
  const rows = summaryRows(results, options, ks);
  const widths = headers.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j]!.length)));
  const line = (cells: string[]) => cells.map((c, j) => (j === 0 ? c.padEnd(widths[j]!) : c.padStart(widths[j]!))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n');
}

function lossChart(results: VariantResult[], options: CompareOptions, title: string, subtitle: string[]): TopLevelSpec {
  const values: { variant: string; iteration: number; loss: number }[] = [];
  const order = results.map((r) => `${r.label} (lr ${formatLr(r.lr)})`);
  results.forEach((r, i) => {
    const smoothed = windowMean(r.run.steps.map((s) => s.loss), options.smooth);
    for (const j of thinIndices(smoothed.length, 800)) {
      values.push({ variant: order[i]!, iteration: j + 1, loss: Number(smoothed[j]!.toPrecision(5)) });
    }
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle },
    width: 560,
    height: 320,
    background: 'white',
    layer: [
      {
        data: { values },
        mark: { type: 'line', strokeWidth: 2 },
        encoding: {
          x: { field: 'iteration', type: 'quantitative', title: 'iteration (minibatch of ' + options.batch + ')' },
          y: { field: 'loss', type: 'quantitative', scale: { type: 'log' }, title: `training loss (mean of last ${options.smooth} minibatches)` },
          color: { field: 'variant', type: 'nominal', sort: order, title: null, scale: { range: ['#7f7f7f', '#1f77b4', '#ff7f0e', '#2ca02c'] } },
        },
      },
      {
        data: { values: [{ target: options.targetLoss }] },
        mark: { type: 'rule', strokeDash: [4, 3], color: '#999' },
        encoding: { y: { field: 'target', type: 'quantitative' } },
      },
    ],
    config: { font: CHART_FONT, legend: { orient: 'top-right', labelLimit: 320 } },
  };
}

async function writeCompareReport(
  options: CompareOptions,
  ctx: { results: VariantResult[]; device: 'cpu' | 'cuda'; threads: number; trainCount: number; testCount: number; total: number; out: string },
): Promise<{ report: string; svg: string; png: string | null; timingTrustworthy: boolean }> {
  const { results, device, out } = ctx;
  const name = reportName(`compare-${options.model}`, options.dataset);
  const base = join(out, name);
  const env = environment(device);
  const modelText =
    options.model === 'mlp'
      ? `MLP 784 → ${options.hidden} → ${options.hidden} → 10, ReLU`
      : 'CNN: conv 1→16 3×3, ReLU, maxpool 2, conv 16→32 3×3, ReLU, maxpool 2, linear 1568 → 10';
  const chart = await writeChart(
    lossChart(results, options, `Training loss on ${DATASET_TEXT[options.dataset].name}, ${options.model.toUpperCase()}`, [
      modelText,
      `Adam, batch ${options.batch}, each variant at its best lr; ${deviceName(device)}; dashed: loss ${options.targetLoss}`,
    ]),
    base,
  );
  const ks = milestones(Math.max(...results.map((r) => r.run.steps.length)));
  const plain = results.find((r) => r.norm === 'none');
  const wn = results.find((r) => r.norm === 'wn');
  const overhead = wn?.timing.vsPlain ?? null;
  const pilotRows = results
    .filter((r) => r.pilot.length > 0)
    .map((r) => [r.label, ...r.pilot.map((p) => (p.score === null ? `diverged (step ${p.divergedAt})` : p.score.toFixed(4))), formatLr(r.lr)]);
  const lrGrid = results.find((r) => r.pilot.length > 0)?.pilot.map((p) => p.lr) ?? [];
  const command = `weightnorm ${process.argv.slice(2).join(' ')}`;
  const lines = [
    `# Convergence race: ${options.model.toUpperCase()} on ${DATASET_TEXT[options.dataset].name}`,
    '',
    `Plain vs weight norm vs batch norm vs weight norm + mean-only batch norm (Salimans & Kingma, 2016, §4 and §5), ${options.dataset === 'mnist' || options.trainSize !== undefined ? 'at small scale' : `on the full training set (${ctx.trainCount} ${DATASET_TEXT[options.dataset].examples})`}.`,
    '',
    `- model: ${modelText}; every variant gets data-dependent init on the first 500 training ${DATASET_TEXT[options.dataset].examples}, from the same seed (${options.seed})`,
    `- data: ${DATASET_TEXT[options.dataset].name}, ${ctx.trainCount} training ${DATASET_TEXT[options.dataset].examples}, ${ctx.testCount} held out (${DATASET_TEXT[options.dataset].source}); the same minibatches in the same order for every variant`,
    `- training: Adam, batch ${options.batch}, ${ctx.total} iterations (${(ctx.total / stepsPerEpoch(ctx.trainCount, options.batch)).toFixed(2)} epochs), constant lr`,
    options.lr !== undefined
      ? `- learning rate: ${formatLr(options.lr)} for every variant (--lr; no pilot)`
      : `- learning rate: per variant, the best of {${lrGrid.map(formatLr).join(', ')}} by a pilot of ${options.pilotSteps} iterations from the same init; ` +
        'best = lowest mean training loss over the pilot\'s last quarter of iterations (a diverged pilot is out)',
    `- training loss columns: mean over the ${options.smooth} minibatches up to that iteration; "iterations to loss ≤ ${options.targetLoss}" uses the same moving average`,
    `- time per iteration (forward, backward, Adam update of one minibatch): measured apart from the race, ${options.timingRounds} rounds × ${options.timingSteps} iterations per variant with the variants one after the other in each round (order rotated, and reversed every other round); ms = the lowest round median; "vs plain" = the median over rounds of the ratio to plain in the same round (paired, so slow background load cancels)`,
    `- machine: ${env.device}; ${env.node}; load average at the end ${env.loadAverage}; ${env.date.slice(0, 10)}`,
    `- command: \`${command}\``,
    '',
    markdownTable(summaryHeaders(options, ks), summaryRows(results, options, ks)),
    '',
    `![training loss vs iteration](${chart.png ? `${name}.png` : `${name}.svg`})`,
    '',
  ];
  const trust = judgeTiming(Object.fromEntries(results.map((r) => [r.label, r.timing.roundMedians])), options.maxTimingSpread ?? DEFAULT_MAX_SPREAD);
  const spreadText = Object.entries(trust.spreads)
    .map(([label, spread]) => `${label} ${spread === null ? 'n/a (fewer than 2 rounds)' : `${(spread * 100).toFixed(0)}%`}`)
    .join(', ');
  if (overhead !== null) {
    const [low, high] = wn!.timing.vsPlainRange!;
    const rounds = (r: VariantResult) => r.timing.roundMedians.map((x) => (Number.isNaN(x) ? 'n/a' : x.toFixed(3))).join(', ');
    const verdict = trust.trustworthy
      ? `goal ≤ 5%: ${overhead <= 0.05 ? 'met' : '**not met**'}`
      : 'goal ≤ 5%: **not judged, the timing is not trustworthy** (see below)';
    lines.push(
      `**Weight norm overhead per iteration:** ${signedPercent(overhead)} vs plain on ${device}, ${deviceName(device)} ` +
        `(per-round ratios from ${signedPercent(low)} to ${signedPercent(high)}; ${verdict}). ` +
        `Round medians, ms: plain ${rounds(plain!)}; WN ${rounds(wn!)}.`,
      '',
    );
  }
  if (options.timingRounds > 0) {
    lines.push(
      trust.trustworthy
        ? `Timing spread (slowest round median / fastest − 1, per variant): ${spreadText}; all within ${(trust.maxSpread * 100).toFixed(0)}%, so the timing comparison stands.`
        : `**The timing comparison is not trustworthy:** the round medians of ${trust.offenders.join(', ')} spread by more than ` +
            `${(trust.maxSpread * 100).toFixed(0)}% (slowest round / fastest − 1: ${spreadText}; load average at the end ${env.loadAverage}): ` +
            `other work on the machine changed the speed within the measurement. Rerun on an idle machine${ctx.threads > 1 ? ' (or with --threads 1)' : ''} before drawing conclusions from the ms columns.`,
      '',
    );
  }
  const atEdge = results.filter((r) => r.pilot.length > 1 && (r.lr === lrGrid[0] || r.lr === lrGrid[lrGrid.length - 1]));
  if (atEdge.length) {
    lines.push(
      `The pilot chose an lr at the edge of the grid for ${atEdge.map((r) => `${r.label} (${formatLr(r.lr)})`).join(', ')}: ` +
        'a learning rate outside the grid may be better (widen --lrs).',
      '',
    );
  }
  if (pilotRows.length) {
    lines.push(
      '## Pilot: mean training loss over the last quarter of the pilot, per learning rate',
      '',
      markdownTable(['variant', ...lrGrid.map((lr) => `lr ${formatLr(lr)}`), 'chosen'], pilotRows),
      '',
    );
  }
  lines.push(
    '## Held-out accuracy per epoch',
    '',
    markdownTable(
      ['variant', ...(results[0]?.run.epochs.map((e) => `epoch ${e.epoch}`) ?? [])],
      results.map((r) => [r.label, ...r.run.epochs.map((e) => (e.heldOut ? `${(e.heldOut.accuracy * 100).toFixed(2)}%` : 'n/a'))]),
    ),
    '',
    `Raw per-iteration losses: \`${name}.json\`.`,
    '',
  );
  const report = `${base}.md`;
  writeFileSync(report, lines.join('\n'));
  writeFileSync(
    `${base}.json`,
    JSON.stringify({
      command: 'compare',
      config: { ...options, device, threads: ctx.threads, trainSize: ctx.trainCount, heldOut: ctx.testCount, hidden: options.hidden ?? DEFAULT_HIDDEN },
      environment: env,
      timingTrust: trust,
      variants: results.map((r) => ({
        norm: r.norm,
        lr: r.lr,
        pilot: r.pilot,
        timing: r.timing,
        diverged: r.run.diverged,
        seconds: r.run.seconds,
        epochs: r.run.epochs,
        loss: r.run.steps.map((s) => Number(s.loss.toPrecision(6))),
      })),
    }) + '\n',
  );
  return { report, svg: chart.svg, png: chart.png, timingTrustworthy: trust.trustworthy };
}
