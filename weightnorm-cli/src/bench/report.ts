// Rendering of one backend's results: the terminal table, bench/results/<machine>.{json,md,svg}.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { OutputErrors } from './measure.js';
import { BF16_TOLERANCE, worst } from './measure.js';
import { type BackendResult, checksFailed, type ConvLayerRow, type GemmRow, type LinearRow, type LstmRow, type MnistRow, type OpRow, type TrainingRow, type Variant } from './results.js';
import { isUnavailable, type Measured } from './rounds.js';
import { noisyRatio, TRAINING_DESCRIPTIONS, TRAINING_MAX_SPREAD, TRAINING_VS_TORCH_GOAL, TRAINING_WN_GOAL, TRAINING_WN_MAX_SPREAD } from './training.js';
import { VOCODER_HEADERS, vocoderDescription, vocoderRows } from './vocoder.js';

const OP_LABEL = { forward: 'fwd', backward: 'bwd', 'forward+backward': 'fwd+bwd' } as const;

function ms(x: number): string {
  return x < 0.1 ? x.toFixed(4) : x < 1 ? x.toFixed(3) : x < 10 ? x.toFixed(2) : x.toFixed(1);
}
const pct = (x: number) => `${x.toFixed(0)}%`;
const times = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(2)}×`);
const err = (x: number) => x.toExponential(1);
const optMs = (v: Variant | null) => (v ? ms(v.ms) : 'n/a');
const optPct = (v: Variant | null) => (v ? pct(v.roofPct) : 'n/a');

const HEADERS = [
  'case', 'op', 'roof GB/s', 'fused ms', 'GB/s', '%roof', 'unfused ms', '%roof', 'fused×',
  'torch fused ms', '%roof', 'torch comp ms', '%roof', 'vs torch',
];

function tableRows(result: BackendResult): string[][] {
  const rows: string[][] = [];
  for (const c of result.cases) {
    c.rows.forEach((r: OpRow, i: number) => {
      rows.push([
        i === 0 ? c.case.name + (c.check.pass ? '' : ' (CHECK FAILED)') + (c.unstable.length ? ' (noisy)' : '') : '',
        OP_LABEL[r.op],
        i === 0 ? c.copy.gbps.toFixed(1) : '',
        ms(r.fused.ms),
        r.fused.gbps.toFixed(1),
        pct(r.fused.roofPct),
        ms(r.unfused.ms),
        pct(r.unfused.roofPct),
        times(r.fusedSpeedup),
        optMs(r.torchFused),
        optPct(r.torchFused),
        optMs(r.torchComposite),
        optPct(r.torchComposite),
        times(r.vsTorchFused),
      ]);
    });
  }
  return rows;
}

/** A plain fixed-width table: the first `textColumns` columns left-aligned, the rest (numbers) right-aligned. */
function fixedTable(headers: string[], rows: string[][], textColumns = 2): string {
  const widths = headers.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j]!.length)));
  const line = (cells: string[]) =>
    cells.map((cell, j) => (j < textColumns ? cell.padEnd(widths[j]!) : cell.padStart(widths[j]!))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

// --- side-by-side tables: bfloat16 weight norm, GEMM, weight-normalized Linear, MNIST step ----------------------

const BF16_HEADERS = ['case', 'op', 'ours ms', 'GB/s', '%roof', 'torch bf16 ms', 'GB/s', 'vs torch', 'check / why n/a'];
const GEMM_HEADERS = ['case', 'm×n×k', 'prec', 'ours ms', 'TFLOP/s', 'backend', 'torch ms', 'TFLOP/s', 'ours/torch', 'check / why n/a'];
const LINEAR_HEADERS = ['case', 'plain ms', 'WN ms', 'WN/plain', 'torch plain ms', 'torch WN ms', 'torch WN/plain', 'torch WN / our WN', 'check'];
const MNIST_HEADERS = ['batch', 'norm', 'ours ms/step', 'torch ms/step', 'torch/ours', 'check'];
const LSTM_HEADERS = ['case', 'plain ms/step', 'WN ms/step', 'WN/plain', 'torch plain ms', 'torch WN ms', 'torch/ours plain', 'torch/ours WN', 'WN check'];
const TRAINING_HEADERS = ['network', 'ratio', 'value', 'numerator ms/step', 'denominator ms/step', 'goal', 'check'];
const CONV_HEADERS = ['case', 'layer', 'plain ms', 'WN ms', 'WN/plain', 'check'];

const measuredMs = (m: Measured) => (isUnavailable(m) ? 'n/a' : ms(m.ms));
const shortText = (text: string, limit = 90) => (text.length > limit ? `${text.slice(0, limit - 1)}…` : text);
const whyNa = (m: Measured | { unavailable: string } | object) => ('unavailable' in m ? shortText(m.unavailable) : '');

function bf16Rows(result: BackendResult): string[][] {
  const rows: string[][] = [];
  for (const c of result.cases) {
    const check = c.bf16.check;
    const checkText = 'unavailable' in check ? `ours n/a: ${shortText(check.unavailable)}` : `${err(worst(check.errors))} ${check.pass ? 'pass' : 'FAIL'}`;
    c.bf16.rows.forEach((r, i) => {
      rows.push([
        i === 0 ? c.case.name : '',
        OP_LABEL[r.op],
        optMs(r.ours),
        r.ours ? r.ours.gbps.toFixed(1) : 'n/a',
        optPct(r.ours),
        optMs(r.torch),
        r.torch ? r.torch.gbps.toFixed(1) : 'n/a',
        times(r.vsTorch),
        i === 0 ? checkText + (c.bf16.torchNa && c.bf16.torchNa !== 'not requested' ? `; torch n/a: ${shortText(c.bf16.torchNa, 60)}` : '') : '',
      ]);
    });
  }
  return rows;
}

function gemmRows(rows: GemmRow[]): string[][] {
  return rows.map((r, i) => {
    const first = i === 0 || rows[i - 1]!.case.name !== r.case.name;
    const layout = `${r.case.transposeA ? 'T' : 'N'}${r.case.transposeB ? 'T' : 'N'}`;
    const ours = 'tflops' in r.ours ? r.ours : null;
    const torch = 'tflops' in r.torch ? r.torch : null;
    const why = [whyNa(r.ours) && `ours: ${whyNa(r.ours)}`, whyNa(r.torch) && `torch: ${whyNa(r.torch)}`].filter(Boolean).join('; ');
    return [
      first ? r.case.name : '',
      first ? `${r.case.m}×${r.case.n}×${r.case.k} ${layout}` : '',
      r.precision,
      ours ? ms(ours.ms) : 'n/a',
      ours ? ours.tflops.toFixed(2) : 'n/a',
      ours ? ours.backend : '',
      torch ? ms(torch.ms) : 'n/a',
      torch ? torch.tflops.toFixed(2) : 'n/a',
      r.ratio === null ? 'n/a' : `${(100 * r.ratio).toFixed(0)}%`,
      [r.check ? `${err(r.check.error)} ${r.check.pass ? 'pass' : 'FAIL'}` : '', why].filter(Boolean).join('; '),
    ];
  });
}

function layerCheck(check: LinearRow['check']): string {
  if ('skipped' in check) return `skipped: ${shortText(check.skipped, 60)}`;
  return `${err(Math.max(...Object.values(check.errors)))} ${check.pass ? 'pass' : 'FAIL'}`;
}

function linearRows(rows: LinearRow[]): string[][] {
  const ratio = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(3)}×`);
  return rows.map((r) => [
    r.case.name,
    measuredMs(r.plain),
    measuredMs(r.wn),
    ratio(r.ratio),
    measuredMs(r.torchPlain),
    measuredMs(r.torchWn),
    ratio(r.torchRatio),
    times(r.wnVsTorch),
    layerCheck(r.check) + (isUnavailable(r.torchWn) ? `; torch: ${shortText((r.torchWn as { unavailable: string }).unavailable, 50)}` : ''),
  ]);
}

function convRows(rows: readonly ConvLayerRow[]): string[][] {
  return rows.map((r) => [
    r.case.name,
    `${r.case.kind}(${r.case.in}, ${r.case.out}, ${r.case.kernel}) ${JSON.stringify(r.case.options)} x [${r.case.batch}, ${r.case.in}, ${r.case.size}${r.case.kind === 'Conv2d' ? `, ${r.case.size}` : ''}]`,
    measuredMs(r.plain),
    measuredMs(r.wn),
    r.ratio === null ? 'n/a' : `${r.ratio.toFixed(3)}×`,
    layerCheck(r.check),
  ]);
}

function mnistRows(rows: MnistRow[]): string[][] {
  return rows.map((r) => [
    String(r.batch),
    r.norm === 'wn' ? 'weight norm' : 'plain',
    measuredMs(r.ours) + (isUnavailable(r.ours) ? ` (${shortText((r.ours as { unavailable: string }).unavailable, 50)})` : ''),
    measuredMs(r.torch),
    times(r.vsTorch),
    layerCheck(r.check),
  ]);
}

/** How many rounds a training row's timing ran (our plain variant's round medians), or '?' when not measured. */
function roundsOf(row: TrainingRow): string {
  const ours = row.ours.plain;
  return isUnavailable(ours) ? '?' : String(ours.roundMedians.length);
}

/** Per network: torch/ours plain and WN, WN/plain ours and torch, each with its goal where the suite sets one. */
function trainingRows(rows: readonly TrainingRow[]): string[][] {
  const value = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(3)}×`);
  // A ratio whose per-round values spread too widely is not judged (evaluateTrainingGoals).
  const goal = (x: number | null, target: number, atLeast: boolean, spread: number | null | undefined, limit = TRAINING_MAX_SPREAD) => {
    const noisy = noisyRatio(spread, limit);
    return `${atLeast ? '≥' : '≤'} ${target.toFixed(2)}: ${x === null ? 'n/a' : noisy ? `noisy (${noisy})` : (atLeast ? x >= target : x <= target) ? 'met' : 'NOT MET'}`;
  };
  return rows.flatMap((r) => {
    const cnn = r.network === 'cnn';
    const vsTorchGoal = (norm: 'plain' | 'wn') =>
      cnn ? goal(r.vsTorch[norm], TRAINING_VS_TORCH_GOAL, true, r.ratioSpread?.vsTorch[norm]) : '';
    return [
      [r.network, 'torch / ours, plain', value(r.vsTorch.plain), measuredMs(r.torch.plain), measuredMs(r.ours.plain), vsTorchGoal('plain'), layerCheck(r.checks.plain)],
      ['', 'torch / ours, WN', value(r.vsTorch.wn), measuredMs(r.torch.wn), measuredMs(r.ours.wn), vsTorchGoal('wn'), layerCheck(r.checks.wn)],
      ['', 'WN / plain, ours', value(r.wnOverPlain.ours), measuredMs(r.ours.wn), measuredMs(r.ours.plain), goal(r.wnOverPlain.ours, TRAINING_WN_GOAL, false, r.ratioSpread?.wnOverPlain.ours, TRAINING_WN_MAX_SPREAD), ''],
      ['', 'WN / plain, torch', value(r.wnOverPlain.torch), measuredMs(r.torch.wn), measuredMs(r.torch.plain), '', ''],
    ];
  });
}

function lstmRows(rows: LstmRow[]): string[][] {
  const ratio = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(3)}×`);
  return rows.map((r) => [
    r.case.name,
    measuredMs(r.plain),
    measuredMs(r.wn),
    ratio(r.ratio),
    measuredMs(r.torchPlain),
    measuredMs(r.torchWn),
    times(r.plainVsTorch),
    times(r.wnVsTorch),
    r.check ? layerCheck(r.check) : 'n/a',
  ]);
}

function suiteGoalLines(result: BackendResult, markdownStyle: boolean): string[] {
  return result.suiteGoals.map((t) =>
    markdownStyle
      ? `- ${t.status === 'met' ? 'met' : `**${t.status}**`}: ${t.name} (${t.detail})`
      : `  ${t.status.toUpperCase().padEnd(11)}  ${t.name}: ${t.detail}`,
  );
}

/** A plain fixed-width table for the terminal: text columns left-aligned, numbers right-aligned. */
export function terminalTable(result: BackendResult): string {
  const parts: string[] = [];
  if (result.cases.length) {
    parts.push(fixedTable(HEADERS, tableRows(result)), '', 'bfloat16 weight norm:', fixedTable(BF16_HEADERS, bf16Rows(result)));
  }
  if (result.gemm.length) parts.push('', 'GEMM vs torch (cuBLAS on CUDA):', fixedTable(GEMM_HEADERS, gemmRows(result.gemm), 3));
  if (result.linear.length) parts.push('', 'Weight-normalized Linear vs plain (fwd+bwd per step):', fixedTable(LINEAR_HEADERS, linearRows(result.linear), 1));
  if (result.mnist.length) parts.push('', 'MNIST CNN training step:', fixedTable(MNIST_HEADERS, mnistRows(result.mnist), 2));
  if (result.training?.length) parts.push('', `Training steps, batch ${result.training[0]!.batch} (ratios: median over rounds of the in-round ratio):`, fixedTable(TRAINING_HEADERS, trainingRows(result.training), 2));
  if (result.lstm?.length) parts.push('', 'LSTM training step:', fixedTable(LSTM_HEADERS, lstmRows(result.lstm), 1));
  if (result.convLayers?.length) parts.push('', 'Weight-normalized conv layers vs plain (fwd+bwd per step):', fixedTable(CONV_HEADERS, convRows(result.convLayers), 2));
  if (result.vocoder?.length) parts.push('', 'HiFi-GAN V1 generator (RTF: audio s / compute s):', fixedTable(VOCODER_HEADERS, vocoderRows(result.vocoder), 2));
  return parts.join('\n');
}

function peerLine(result: BackendResult): string {
  const p = result.peer;
  if ('disabled' in p) return 'PyTorch peer: disabled (--no-peer)';
  if ('notInstalled' in p) return `PyTorch peer: not installed (${p.notInstalled.join('; ')})`;
  const blas = p.blas ? `; BLAS: ${p.blas}` : '';
  return `PyTorch peer: torch ${p.torch}, Python ${p.python} (${p.executable}), ${p.threads} threads (OMP_WAIT_POLICY=${p.ompWaitPolicy}); malloc: ${p.malloc}${blas}`;
}

/** Our side's CPU GEMM (as backend().cpu.gemm says it), as list items; none for CUDA runs and older results. */
function ourGemmLines(result: BackendResult): string[] {
  return result.cpuGemm ? [`- our CPU GEMM: ${result.cpuGemm}`] : [];
}

export function summaryText(result: BackendResult): string {
  const lines = [
    `${result.machine}: ${result.deviceName}, ${result.device === 'cpu' ? `${result.threads} threads` : 'CUDA'}` +
      `${result.quick ? ' (quick)' : ''}, ${result.durationSeconds.toFixed(0)} s, ` +
      `load average ${result.loadAverage.start[0]!.toFixed(2)} → ${result.loadAverage.end[0]!.toFixed(2)}`,
    peerLine(result),
    ...(result.cases.length
      ? ['Targets (weight norm):', ...result.targets.map((t) => `  ${t.met ? 'MET    ' : 'NOT MET'}  ${t.name}${t.met ? '' : `: ${t.misses.join(', ')}`}`)]
      : []),
    'Targets (side-by-side suites):',
    ...suiteGoalLines(result, false),
  ];
  const noisy = result.cases.filter((c) => c.unstable.length > 0);
  if (noisy.length) {
    lines.push(`Noisy (rounds disagree by > 25%, after any retries; background load?): ` +
      noisy.map((c) => `${c.case.name} [${c.unstable.join(', ')}]`).join('; '));
  }
  const failed = checksFailed(result);
  lines.push(failed.length ? `CHECKS FAILED: ${failed.join(', ')}` : 'Checks: all kernels agree with the references.');
  return lines.join('\n');
}

function minimalCopyBytes(c: { elements: number }): number {
  return 8 * c.elements;
}

function errorCells(e: OutputErrors | null): string {
  return e ? err(worst(e)) : 'n/a';
}

export function markdown(result: BackendResult): string {
  const rows = tableRows(result);
  const mdTable = (headers: string[], body: string[][]) =>
    [`| ${headers.join(' | ')} |`, `|${headers.map((_, j) => (j < 2 ? ' --- ' : ' ---: ')).join('|')}|`,
      ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  const checkRows = result.cases.map((c) => {
    const t = c.check.torch;
    return [
      c.case.name,
      `[${c.case.shape.join(', ')}]`,
      c.case.dim === null ? 'null' : String(c.case.dim),
      String(c.sets),
      (c.rotationBytes / 2 ** 20).toFixed(0),
      c.copy.gbps.toFixed(1),
      c.peer ? (minimalCopyBytes(c) / (c.peer.copy.ms * 1e6)).toFixed(1) : 'n/a',
      errorCells(c.check.fusedVsUnfused),
      'skipped' in t ? t.skipped : errorCells(t.fused),
      'skipped' in t ? '' : errorCells(t.composite),
      c.check.pass ? 'pass' : '**FAIL**',
    ];
  });
  const calls = new Map<string, string>();
  for (const c of result.cases) {
    const p = c.peer;
    if (p?.fused) calls.set(`fused, dim ${c.dim}`, `${p.calls.fused_forward}; ${p.calls.fused_backward}`);
    if (p?.fused_na) calls.set(`fused, dim ${c.dim}`, `n/a: ${p.fused_na}`);
    if (p) calls.set(`composite, dim ${c.dim}`, `${p.calls.composite_forward}; ${p.calls.composite_backward}`);
    if (c.peerError) calls.set(`error on ${c.case.name}`, c.peerError);
  }
  const weightNormPart = [
    `# weightnorm benchmark: ${result.machine}${result.quick ? ' (quick)' : ''}`,
    '',
    `- device: ${result.deviceName} (${result.device}), ${result.device === 'cpu' ? `${result.threads} threads` : 'CUDA events'}`,
    `- date: ${result.date}; node ${result.node}; weightnorm ${result.weightnorm}; run took ${result.durationSeconds.toFixed(0)} s; ` +
      `load average ${result.loadAverage.start.map((x) => x.toFixed(2)).join(' ')} before, ${result.loadAverage.end.map((x) => x.toFixed(2)).join(' ')} after`,
    `- ${peerLine(result)}`,
    ...ourGemmLines(result),
    `- ${result.repeats} timed runs per measurement in ${result.rounds} rounds, each after ≥ ${result.warmup} warm-up runs ` +
      '(at least one full rotation); the figure is the lowest per-round median (rounds alternate ours and ' +
      "torch's, so background load spoils a round of each rather than one side); " +
      `input sets rotated so one pass reads ≥ ${(result.rotationTargetBytes / 2 ** 20).toFixed(0)} MiB ` +
      `(3× the ${(result.cacheBytes / 2 ** 20).toFixed(0)} MiB last-level cache) where memory allows; ` +
      'the outputs are not rotated: every run of ours and of torch writes one output block per case (ours ' +
      "preallocated, torch's the block freed by the previous call), as a caching allocator serves a training step",
    '- GB/s over the minimal bytes: forward reads v, g and writes w, norm; backward reads dw, v, g, norm and ' +
      'writes dv, dg. Roofline: copy (out = 1·x, read N + write N) on the same element count, device and threads.',
    '- (noisy): the rounds of some variant still disagreed by > 25% after a retry (background load); see the JSON.',
    '- fwd+bwd is the sum of the forward and backward medians. fused× = unfused ms / fused ms; ' +
      'vs torch = torch fused ms / our fused ms (> 1: ours faster).',
    '',
    mdTable(HEADERS, rows),
    '',
    '## Targets',
    '',
    ...result.targets.map((t) => `- ${t.met ? 'met' : '**not met**'}: ${t.name}${t.met ? '' : ` (${t.misses.join(', ')})`}`),
    '',
    '## Rotation, roofline cross-check and correctness checks',
    '',
    'copy GB/s is our roofline kernel; torch copy_ GB/s is `out.copy_(v)` on the same rotation (one out per case), as a cross-check. ' +
      'Note copy moves reads and writes 1:1; the backward reads twice what it writes, and reads are cheaper than ' +
      'writes (no write-allocate), so a backward can exceed 100% of the copy roofline.',
    '',
    `Errors are max |a − b| / max |b| over w, norm, dv, dg; tolerance ${result.cases[0]?.check.tolerance ?? ''}. ` +
      'Torch is compared on a smaller shape with the same rank and dim (see the JSON for the shapes).',
    '',
    mdTable(['case', 'shape', 'dim', 'sets', 'rotation MiB', 'copy GB/s', 'torch copy_ GB/s', 'fused vs unfused', 'vs torch fused', 'vs torch composite', 'result'], checkRows),
    '',
    '## PyTorch calls',
    '',
    ...(calls.size ? [...calls].map(([k, v]) => `- ${k}: \`${v}\``) : ['- none']),
    '',
  ];
  const suiteGoalPart = [
    '## Side-by-side suites: targets',
    '',
    ...suiteGoalLines(result, true),
    '',
    ...(result.cases.length
      ? [
          '## bfloat16 weight norm',
          '',
          'v, w, dw, dv in bfloat16; g, norm, dg float32 (the bytes count 2 per element and 4 per channel value); ' +
            '%roof against the float32 copy roofline above. Checked against our float32 fused kernel on the same ' +
            `bfloat16-rounded inputs (tolerance ${BF16_TOLERANCE}). ` +
            "torch: `torch._weight_norm` and `_weight_norm_interface_backward` on bfloat16 v and g (dim 0 and the last dim only).",
          '',
          mdTable(BF16_HEADERS, bf16Rows(result)),
          '',
        ]
      : []),
    ...(result.gemm.length
      ? [
          '## GEMM vs cuBLAS (through torch)',
          '',
          'out[m, n] = op(a)·op(b), layout N/T per operand; TFLOP/s = 2mnk / time. Ours: the float32 GEMM (SIMT), the ' +
            'same with the TF32 precision setting (tensor cores), the bfloat16 overload (float32 accumulation); timed ' +
            "natively (CUDA events / steady clock). torch: `torch.mm` on views carrying the transposes, FP32 with " +
            '`allow_tf32 = False`, TF32 with `True`, bf16 (defaults otherwise). Each of our outputs is checked on ' +
            `${result.gemm.find((r) => r.check)?.check?.samples ?? 384} sampled entries against a float64 reference ` +
            '(bf16: from the bf16-rounded operands) before it is timed; lowest per-round median of alternating rounds.',
          '',
          mdTable(GEMM_HEADERS, gemmRows(result.gemm)),
          '',
        ]
      : []),
    ...(result.linear.length
      ? [
          '## Weight-normalized Linear vs plain Linear',
          '',
          'One step = clear the gradients, y = layer(x), sum(y).backward() with x requiring its gradient (dx, dW or ' +
            'dv/dg, db: the three products of a hidden layer), then a device synchronize; wall clock per step, both ' +
            'sides alike. Ours: `nn.Linear(in, out, { weightNorm: true })` against `nn.Linear(in, out)`; the norm is ' +
            'cached between steps (an optimizer step refreshes it in its fused update), as in training. torch: ' +
            `${result.linear.find((r) => r.calls.wn)?.calls.wn ?? 'n/a'}. Checked before timing: y, dx, dv, dg, db against ` +
            'the plain Linear on the effective weight followed by the unfused weight-norm backward.',
          '',
          mdTable(LINEAR_HEADERS, linearRows(result.linear)),
          '',
        ]
      : []),
    ...(result.mnist.length
      ? [
          '## MNIST CNN training step',
          '',
          "The CLI's `train --model cnn` network (conv 1→16, ReLU, pool, conv 16→32, ReLU, pool, linear 1568→10), " +
            '`trainStep()` with Adam (lr 3e-3): forward, loss read back, zero grads, backward, update, then a ' +
            `synchronize; random digits-like inputs. torch: ${result.mnist.find((r) => r.call)?.call ?? 'n/a'}. Checked ` +
            "before timing: loss and every parameter's gradient against torch with our weights and batch.",
          '',
          mdTable(MNIST_HEADERS, mnistRows(result.mnist)),
          '',
        ]
      : []),
    ...(result.training?.length
      ? [
          '## Training steps: CNN and the demo MLP vs PyTorch eager',
          '',
          `Batch ${result.training[0]!.batch}; ${result.training.map((r) => `${r.network}: ${TRAINING_DESCRIPTIONS[r.network]}`).join('; ')}. ` +
            'Plain, and weight-normalized (weight norm over dim 0 on every conv and Linear, as ' +
            '`torch.nn.utils.weight_norm`). One step = `trainStep()`: forward, cross-entropy, loss read back, zero ' +
            'grads, backward, Adam (lr 1e-3) update, then a synchronize; wall clock per step, the same on both sides. ' +
            `torch: ${result.training.find((r) => r.calls.plain)?.calls.plain ?? 'n/a'}; WN: ${result.training.find((r) => r.calls.wn)?.calls.wn ?? 'n/a'}. ` +
            "Checked before timing: the loss and every parameter's gradient against torch on our weights and batch. " +
            `Rounds: ${result.training.map((r) => `${r.network} ${roundsOf(r)}`).join(', ')} (the MLP's step is short and its weight-norm ratio close to its goal: more rounds). ` +
            'ms/step: the lowest per-round median; ratios: the median over rounds of the ratio within a round ' +
            '(ours and torch alternate round by round, so load that spoils a round spoils both sides of its ratio; our two variants ' +
            'run in reverse order every other round). ' +
            `A goal is not judged ("noisy") when the middle half of the per-round ratios behind it (all of them below 4 rounds) ` +
            `spans more than ${(100 * TRAINING_MAX_SPREAD).toFixed(0)}%, ${(100 * TRAINING_WN_MAX_SPREAD).toFixed(0)}% for the weight-norm goal ` +
            '(the load changed within rounds, slowing one side and not the other: even the paired median is noise then).',
          '',
          mdTable(TRAINING_HEADERS, trainingRows(result.training)),
          '',
        ]
      : []),
    ...(result.lstm?.length
      ? [
          '## LSTM training step',
          '',
          '`nn.LSTM(input, 256)` (one layer, time-major), plain and `{ weightNorm: true }` (both matrices, one norm per ' +
            'gate row): zero grads, forward over the whole sequence, loss = sum(output), backward through time, Adam ' +
            `(lr 1e-3), then a synchronize; wall clock per step. torch: ${result.lstm.find((r) => r.calls.wn)?.calls.wn ?? 'n/a'}. ` +
            'Checked before timing: output, final states, dx, dv, dg and db of the weight-normalized LSTM against the plain ' +
            'LSTM on its effective weights followed by the unfused weight-norm backward (test/rnn.test.ts checks against ' +
            'torch in float64).',
          '',
          mdTable(LSTM_HEADERS, lstmRows(result.lstm)),
          '',
        ]
      : []),
    ...(result.convLayers?.length
      ? [
          '## Weight-normalized conv layers vs plain',
          '',
          'One step = clear the gradients, y = layer(x), sum(y).backward() with x requiring its gradient, then a ' +
            'synchronize. Direct convolutions with weight norm over dim 0 scale the GEMM output in its epilogue and ' +
            'get dv from the weight-gradient GEMM epilogue; the transposed convolution materializes w. Checked before ' +
            'timing against the plain convolution on the effective weight and the unfused weight-norm backward.',
          '',
          mdTable(CONV_HEADERS, convRows(result.convLayers)),
          '',
        ]
      : []),
    ...(result.vocoder?.length
      ? ['## HiFi-GAN V1 generator', '', vocoderDescription(result.vocoder), '', mdTable(VOCODER_HEADERS, vocoderRows(result.vocoder)), '']
      : []),
  ];
  return [...(result.cases.length ? weightNormPart : [`# weightnorm benchmark: ${result.machine}${result.quick ? ' (quick)' : ''}`, '', `- device: ${result.deviceName} (${result.device}); date: ${result.date}; run took ${result.durationSeconds.toFixed(0)} s`, `- ${peerLine(result)}`, ...ourGemmLines(result), '']), ...suiteGoalPart].join('\n');
}

/** Bar chart of % of roofline per case, forward and backward, for our fused, our unfused and torch fused. */
export async function chartSvg(result: BackendResult): Promise<string> {
  const values: { case: string; op: string; series: string; roofPct: number }[] = [];
  for (const c of result.cases) {
    for (const r of c.rows) {
      if (r.op === 'forward+backward') continue;
      const add = (series: string, v: Variant | null) => {
        if (v) values.push({ case: c.case.name, op: r.op, series, roofPct: Number(v.roofPct.toFixed(1)) });
      };
      add('weightnorm fused', r.fused);
      add('weightnorm unfused', r.unfused);
      add('PyTorch fused', r.torchFused);
    }
  }
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: `Weight norm, % of memory roofline (copy): ${result.deviceName}`,
      subtitle: `${result.machine}${result.quick ? ' (quick)' : ''}, ${result.date.slice(0, 10)}; 100% = measured copy bandwidth`,
    },
    data: { values },
    facet: { column: { field: 'op', type: 'nominal', title: null, sort: ['forward', 'backward'] } },
    spec: {
      width: 300,
      height: { step: 9 },
      layer: [
        {
          mark: 'bar',
          encoding: {
            y: { field: 'case', type: 'nominal', sort: result.cases.map((c) => c.case.name), title: null, axis: { labelLimit: 260 } },
            yOffset: { field: 'series', type: 'nominal', sort: ['weightnorm fused', 'weightnorm unfused', 'PyTorch fused'] },
            x: { field: 'roofPct', type: 'quantitative', title: '% of roofline' },
            color: {
              field: 'series',
              type: 'nominal',
              title: null,
              sort: ['weightnorm fused', 'weightnorm unfused', 'PyTorch fused'],
              scale: { range: ['#1f77b4', '#9ecae1', '#ff7f0e'] },
            },
            tooltip: [{ field: 'case' }, { field: 'series' }, { field: 'roofPct' }],
          },
        },
        { mark: { type: 'rule', strokeDash: [4, 3], color: '#555' }, encoding: { x: { datum: 100 } } },
      ],
    },
    config: { legend: { orient: 'top' } },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

/** Bar chart of ms per training step, ours against torch, per network and variant (the training suite). */
export async function trainingChartSvg(result: BackendResult): Promise<string> {
  const values: { step: string; series: string; ms: number }[] = [];
  for (const r of result.training ?? []) {
    for (const norm of ['plain', 'wn'] as const) {
      const step = `${r.network.toUpperCase()} ${norm === 'wn' ? 'WN' : 'plain'}`;
      if (!isUnavailable(r.ours[norm])) values.push({ step, series: 'weightnorm', ms: Number((r.ours[norm] as { ms: number }).ms.toFixed(3)) });
      if (!isUnavailable(r.torch[norm])) values.push({ step, series: 'PyTorch eager', ms: Number((r.torch[norm] as { ms: number }).ms.toFixed(3)) });
    }
  }
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: `Training step, batch ${result.training?.[0]?.batch ?? ''}: ${result.deviceName}`,
      subtitle: `${result.machine}${result.quick ? ' (quick)' : ''}, ${result.threads} threads, ${result.date.slice(0, 10)}; ms per step (lower is better)`,
    },
    data: { values },
    width: 360,
    height: { step: 14 },
    mark: 'bar',
    encoding: {
      y: { field: 'step', type: 'nominal', title: null, sort: null },
      yOffset: { field: 'series', type: 'nominal', sort: ['weightnorm', 'PyTorch eager'] },
      x: { field: 'ms', type: 'quantitative', title: 'ms per step' },
      color: { field: 'series', type: 'nominal', title: null, sort: ['weightnorm', 'PyTorch eager'], scale: { range: ['#1f77b4', '#ff7f0e'] } },
      tooltip: [{ field: 'step' }, { field: 'series' }, { field: 'ms' }],
    },
    config: { legend: { orient: 'top' } },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

/** Writes <machine>.json, .md and (with `chart`) .svg into `dir`; returns the paths. */
export async function writeResults(result: BackendResult, dir: string, chart = true): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, result.machine);
  writeFileSync(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  writeFileSync(`${base}.md`, markdown(result));
  // The chart is of the weight-norm cases, or of the training steps when only that suite ran.
  const trainingOnly = result.cases.length === 0 && (result.training?.length ?? 0) > 0;
  if (!chart || (result.cases.length === 0 && !trainingOnly)) return [`${base}.json`, `${base}.md`];
  writeFileSync(`${base}.svg`, trainingOnly ? await trainingChartSvg(result) : await chartSvg(result));
  return [`${base}.json`, `${base}.md`, `${base}.svg`];
}
