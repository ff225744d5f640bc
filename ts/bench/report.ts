// Rendering of one backend's results: the terminal table, bench/results/<machine>.{json,md,svg}.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { OutputErrors } from './measure.js';
import { worst } from './measure.js';
import type { BackendResult, OpRow, Variant } from './results.js';

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

/** A plain fixed-width table for the terminal: text columns left-aligned, numbers right-aligned. */
export function terminalTable(result: BackendResult): string {
  const rows = tableRows(result);
  const widths = HEADERS.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j]!.length)));
  const line = (cells: string[]) =>
    cells.map((cell, j) => (j < 2 ? cell.padEnd(widths[j]!) : cell.padStart(widths[j]!))).join('  ');
  return [line(HEADERS), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function peerLine(result: BackendResult): string {
  const p = result.peer;
  if ('disabled' in p) return 'PyTorch peer: disabled (--no-peer)';
  if ('notInstalled' in p) return `PyTorch peer: not installed (${p.notInstalled.join('; ')})`;
  return `PyTorch peer: torch ${p.torch}, Python ${p.python} (${p.executable}), ${p.threads} threads; malloc: ${p.malloc}`;
}

export function summaryText(result: BackendResult): string {
  const lines = [
    `${result.machine}: ${result.deviceName}, ${result.device === 'cpu' ? `${result.threads} threads` : 'CUDA'}` +
      `${result.quick ? ' (quick)' : ''}, ${result.durationSeconds.toFixed(0)} s, ` +
      `load average ${result.loadAverage.start[0]!.toFixed(2)} → ${result.loadAverage.end[0]!.toFixed(2)}`,
    peerLine(result),
    'Targets:',
    ...result.targets.map((t) => `  ${t.met ? 'MET    ' : 'NOT MET'}  ${t.name}${t.met ? '' : `: ${t.misses.join(', ')}`}`),
  ];
  const noisy = result.cases.filter((c) => c.unstable.length > 0);
  if (noisy.length) {
    lines.push(`Noisy (rounds disagree by > 25%, after any retries; background load?): ` +
      noisy.map((c) => `${c.case.name} [${c.unstable.join(', ')}]`).join('; '));
  }
  const failed = result.cases.filter((c) => !c.check.pass).map((c) => c.case.name);
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
  return [
    `# weightnorm benchmark: ${result.machine}${result.quick ? ' (quick)' : ''}`,
    '',
    `- device: ${result.deviceName} (${result.device}), ${result.device === 'cpu' ? `${result.threads} threads` : 'CUDA events'}`,
    `- date: ${result.date}; node ${result.node}; weightnorm ${result.weightnorm}; run took ${result.durationSeconds.toFixed(0)} s; ` +
      `load average ${result.loadAverage.start.map((x) => x.toFixed(2)).join(' ')} before, ${result.loadAverage.end.map((x) => x.toFixed(2)).join(' ')} after`,
    `- ${peerLine(result)}`,
    `- ${result.repeats} timed runs per measurement in ${result.rounds} rounds, each after ≥ ${result.warmup} warm-up runs ` +
      '(at least one full rotation); the figure is the lowest per-round median (rounds alternate ours and ' +
      "torch's, so background load spoils a round of each rather than one side); " +
      `input sets rotated so one pass touches ≥ ${(result.rotationTargetBytes / 2 ** 20).toFixed(0)} MiB ` +
      `(3× the ${(result.cacheBytes / 2 ** 20).toFixed(0)} MiB last-level cache) where memory allows`,
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
    'copy GB/s is our roofline kernel; torch copy_ GB/s is `out.copy_(v)` on the same rotation, as a cross-check. ' +
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
  ].join('\n');
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

/** Writes <machine>.json, .md and .svg into `dir`; returns the paths. */
export async function writeResults(result: BackendResult, dir: string): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, result.machine);
  writeFileSync(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  writeFileSync(`${base}.md`, markdown(result));
  writeFileSync(`${base}.svg`, await chartSvg(result));
  return [`${base}.json`, `${base}.md`, `${base}.svg`];
}
