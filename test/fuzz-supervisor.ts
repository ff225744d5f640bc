// The crash-proof harness behind fuzz.test.ts. The fuzz worker (the test file itself, transpiled with the library
// and run by plain node) makes the calls in a child process and appends each call and its outcome to a journal, a
// tab-separated file, before and after making it. The supervisor (in vitest) runs the worker, restarts it after a
// crash just past the crashing call, skipping further calls of the same kind, and reads the journals into figures.
// A native crash is thereby counted and reported with the call that caused it instead of taking the runner down.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { transpileForNode, typeScriptFilesIn } from './transpile-for-node.js';

/** True in the child process the supervisor started: the test file then runs its calls instead of declaring tests. */
export const inFuzzWorker = process.env.WEIGHTNORM_FUZZ_WORKER === '1';

/** Flattens text to one journal field: tabs and line breaks would split it. */
export const oneLine = (text: string, limit = 2000): string => {
  const flat = text.replace(/[\t\n\r]+/g, ' ');
  return flat.length > limit ? `${flat.slice(0, limit)}…` : flat;
};

// ---------------------------------------------------------------------------------------------------------------
// The worker's side.

/** What the supervisor asks of one worker run. */
export interface WorkerSettings {
  seed: number;
  /** Index of the first call to make. */
  start: number;
  /** How many calls to make (skipped ones not counted). */
  calls: number;
  /** "op / tag" of the kinds of call that crashed an earlier run. */
  skip: Set<string>;
  /** An empty directory of the worker's own, for the files the io calls read. */
  files: string;
}

export function workerSettings(): WorkerSettings {
  return {
    seed: Number(process.env.FUZZ_SEED),
    start: Number(process.env.FUZZ_START),
    calls: Number(process.env.FUZZ_CALLS),
    skip: new Set(JSON.parse(process.env.FUZZ_SKIP ?? '[]') as string[]),
    files: process.env.FUZZ_DIR!,
  };
}

/** The worker's journal; each line is written at once (writeSync), so it survives a crash of the next call. */
export interface Journal {
  baseline(memory: string): void;
  skipped(index: number, op: string, tag: string): void;
  /** Before the call: the arguments, as fast-check prints them. */
  call(index: number, op: string, tag: string, args: string): void;
  violation(index: number, op: string, tag: string, category: 'contract' | 'leak', problem: string): void;
  /** After the call: how it ended ('returned' or the kind of error). */
  done(index: number, kind: string): void;
  final(memory: string, sameAsBaseline: boolean): void;
}

export function openJournal(): Journal {
  const file = openSync(process.env.FUZZ_JOURNAL!, 'a');
  const write = (...fields: (string | number)[]) => writeSync(file, `${fields.join('\t')}\n`);
  return {
    baseline: (memory) => write('baseline', memory),
    skipped: (index, op, tag) => write('skipped', index, op, tag),
    call: (index, op, tag, args) => write('call', index, op, tag, oneLine(args)),
    violation: (index, op, tag, category, problem) => write('violation', index, op, tag, category, oneLine(problem, 500)),
    done: (index, kind) => write('done', index, kind),
    final: (memory, sameAsBaseline) => write('final', memory, sameAsBaseline ? 'same' : 'different'),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The supervisor's side.

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Transpiles the library, the worker and the test helpers it imports for node; returns the worker's entry. */
async function transpileWorker(worker: string, directory: string): Promise<string> {
  await transpileForNode(directory, [
    join(root, worker),
    join(root, 'test', 'helpers.ts'),
    fileURLToPath(import.meta.url),
    join(root, 'test', 'transpile-for-node.ts'),
    ...typeScriptFilesIn(join(root, 'test', 'reference')),
  ]);
  return join(directory, worker).replace(/\.ts$/, '.js');
}

interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs the worker; kills it when its journal has not grown for `stallMs` (a call that hangs counts as a crash). */
function runWorker(entry: string, env: Record<string, string>, journal: string, stallMs: number): Promise<ChildExit> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [entry], { env: { ...process.env, ...env, WEIGHTNORM_FUZZ_WORKER: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr = (stderr + String(chunk)).slice(-4000)));
    let size = -1;
    let lastProgress = Date.now();
    const watchdog = setInterval(() => {
      const now = existsSync(journal) ? statSync(journal).size : 0;
      if (now !== size) {
        size = now;
        lastProgress = Date.now();
      } else if (Date.now() - lastProgress > stallMs) {
        stderr += `\n(no progress for ${stallMs / 1000} s: killed)`;
        child.kill('SIGKILL');
      }
    }, 500);
    child.on('exit', (code, signal) => {
      clearInterval(watchdog);
      done({ code, signal, stderr });
    });
  });
}

export interface Example {
  index: number;
  op: string;
  tag: string;
  problem: string;
  call: string;
}

export interface Figures {
  calls: number;
  returned: number;
  errors: Map<string, number>;
  skipped: number;
  crashes: Example[];
  /** By "category: op / tag": how many calls, and the first few. */
  violations: Map<string, { count: number; examples: Example[] }>;
  memory: string[];
}

/** Adds one journal to the figures; `last` is the call it started and did not finish (the crash), if any. */
function readJournal(path: string, figures: Figures): { last?: Example; finished: boolean } {
  const calls = new Map<number, Example>();
  let last: Example | undefined;
  let finished = false;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const [type, ...fields] = line.split('\t');
    if (type === 'call') {
      const [index, op, tag, call] = fields as [string, string, string, string];
      last = { index: Number(index), op, tag, problem: '', call };
      calls.set(last.index, last);
    } else if (type === 'done') {
      figures.calls += 1;
      const kind = fields[1]!;
      if (kind === 'returned') figures.returned += 1;
      else figures.errors.set(kind, (figures.errors.get(kind) ?? 0) + 1);
      last = undefined;
    } else if (type === 'violation') {
      const [index, op, tag, category, problem] = fields as [string, string, string, string, string];
      const key = `${category}: ${op} / ${tag}`;
      const entry = figures.violations.get(key) ?? { count: 0, examples: [] };
      entry.count += 1;
      if (entry.examples.length < 3) entry.examples.push({ index: Number(index), op, tag, problem, call: calls.get(Number(index))?.call ?? '' });
      figures.violations.set(key, entry);
    } else if (type === 'skipped') {
      figures.skipped += 1;
    } else if (type === 'baseline' || type === 'final') {
      figures.memory.push(`${type}: ${fields.join(' ')}`);
      if (type === 'final') finished = true;
    }
  }
  return { last, finished };
}

export interface SuperviseOptions {
  /** The worker's file, relative to the repository root (it must run its calls when `inFuzzWorker`). */
  worker: string;
  seed: number;
  /** Calls to make in all, crashed ones included. */
  runs: number;
  /** A worker whose journal has not grown for this long is killed, and its current call counted as a crash. */
  stallMs: number;
  /** Worker runs at most: each crash costs one. */
  attempts: number;
}

/** Runs the worker until `runs` calls are made, restarting it after each crash; the figures of all runs. */
export async function superviseFuzz(options: SuperviseOptions): Promise<Figures> {
  const { seed, runs } = options;
  const work = mkdtempSync(join(tmpdir(), 'weightnorm-fuzz-'));
  const figures: Figures = { calls: 0, returned: 0, errors: new Map(), skipped: 0, crashes: [], violations: new Map(), memory: [] };
  try {
    const entry = await transpileWorker(options.worker, join(work, 'lib'));
    const skip: string[] = [];
    let start = 0;
    for (let attempt = 0; figures.calls < runs && attempt < options.attempts; attempt++) {
      const files = join(work, `files-${attempt}`);
      mkdirSync(files);
      const journal = join(work, `journal-${attempt}.tsv`);
      const exit = await runWorker(
        entry,
        { FUZZ_SEED: String(seed), FUZZ_START: String(start), FUZZ_CALLS: String(runs - figures.calls), FUZZ_SKIP: JSON.stringify(skip), FUZZ_JOURNAL: journal, FUZZ_DIR: files },
        journal,
        options.stallMs,
      );
      const { last, finished } = existsSync(journal) ? readJournal(journal, figures) : { last: undefined, finished: false };
      if (finished && exit.code === 0) break;
      const how = exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
      if (!last) throw new Error(`the fuzz worker failed outside any call (${how}): ${exit.stderr}`);
      figures.crashes.push({ ...last, problem: `${how}; stderr: ${oneLine(exit.stderr, 600)}` });
      figures.calls += 1; // the crashing call was made
      skip.push(`${last.op} / ${last.tag}`);
      start = last.index + 1;
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return figures;
}

export function fuzzReport(figures: Figures, seed: number): string {
  const errors = [...figures.errors].sort((a, b) => b[1] - a[1]).map(([kind, n]) => `${kind} ${n}`).join(', ');
  const violationCount = [...figures.violations.values()].reduce((a, v) => a + v.count, 0);
  const lines = [
    `fuzz (seed ${seed}): ${figures.calls} calls made; ${figures.returned} returned a checked result; errors by kind: ${errors}; ` +
      `crashes: ${figures.crashes.length}; skipped after a crash: ${figures.skipped}; contract violations: ${violationCount} in ${figures.violations.size} kinds of call`,
    ...figures.memory.map((m) => `  memory ${m}`),
    ...figures.crashes.map((c) => `  CRASH at call ${c.index} ${c.op} / ${c.tag}: ${c.problem}\n    args: ${c.call}`),
    ...[...figures.violations].map(
      ([key, v]) => `  VIOLATION ×${v.count} ${key}: ${v.examples[0]!.problem}\n    args: ${oneLine(v.examples[0]!.call, 400)}`,
    ),
  ];
  return lines.join('\n');
}
