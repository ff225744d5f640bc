#!/usr/bin/env node
// Time per training step of a small weight-normalized MLP (784-256-256-10, batch 100, Adam) on a fixed thread count
// of every core, on a fixed 1 thread, and on the automatic choice (cpu/threads.h), with busy processes beside it, as
// on a machine whose cores other work shares. Each setting runs in its own process, the settings alternate round by
// round, and each process reports the median and 90th percentile of its steps and the thread counts it ran on.
// Usage: node scripts/measure-cpu-threads.mjs [--rounds R] [--busy N] [--duty D] [--steps S]
//   --busy N  busy processes beside it (default: one per core; 0 for a quiet machine)
//   --duty D  each busy process computes for D of every 10 ms and sleeps the rest (default 1: always busy)
// Needs the built package (npm run build).
import { spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';

import { timeMlpSteps } from './mlp-step-timing.mjs';

if (process.argv[2] === '--child') {
  const [threads, steps] = process.argv.slice(3).map(Number);
  const { times, threadSteps } = await timeMlpSteps({ threads, steps, warmup: 50 });
  console.log(JSON.stringify({ median: times[times.length >> 1], p90: times[Math.floor(times.length * 0.9)], threadSteps }));
  process.exit(0);
}

const { values: options } = parseArgs({
  options: { rounds: { type: 'string', default: '3' }, busy: { type: 'string' }, duty: { type: 'string', default: '1' }, steps: { type: 'string', default: '1000' } },
});
const cores = availableParallelism();
const rounds = Number(options.rounds), busyCount = Number(options.busy ?? cores), duty = Number(options.duty), steps = Number(options.steps);
for (const [name, value, ok] of [['--rounds', rounds, rounds >= 1], ['--busy', busyCount, busyCount >= 0], ['--duty', duty, duty > 0 && duty <= 1], ['--steps', steps, steps >= 10]]) {
  if (!Number.isInteger(value) && name !== '--duty') throw new RangeError(`${name}: expected an integer, received ${value}`);
  if (!ok) throw new RangeError(`${name}: out of range: ${value}`);
}
const settings = { [`${cores} threads (set)`]: cores, '1 thread (set)': 1, automatic: 0 };
const burn = `const duty = ${duty}; for (;;) { const t = Date.now(); while (Date.now() - t < 10 * duty) {} if (duty < 1) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10 * (1 - duty)); }`;
const busy = Array.from({ length: busyCount }, () => spawn(process.execPath, ['-e', burn], { stdio: 'ignore' }));
const results = Object.fromEntries(Object.keys(settings).map((k) => [k, []]));
const load = `${busyCount} busy process${busyCount === 1 ? '' : 'es'}${busyCount && duty < 1 ? ` at ${Math.round(duty * 100)}% duty` : ''}`;
try {
  for (let round = 0; round < rounds; round++) {
    for (const [name, threads] of Object.entries(settings)) {
      const env = { ...process.env };
      delete env.OMP_NUM_THREADS;
      const child = spawnSync(process.execPath, [new URL(import.meta.url).pathname, '--child', String(threads), String(steps)], { env, encoding: 'utf8' });
      if (child.status !== 0) throw new Error(child.stderr);
      const run = JSON.parse(child.stdout.trim().split('\n').pop());
      results[name].push(run);
      console.log(`round ${round + 1}, ${name}: median ${run.median.toFixed(2)} ms/step, p90 ${run.p90.toFixed(2)} (steps per thread count ${JSON.stringify(run.threadSteps)}; ${load})`);
    }
  }
} finally {
  for (const p of busy) p.kill();
}
const median = (values) => [...values].sort((a, b) => a - b)[values.length >> 1];
for (const [name, runs] of Object.entries(results)) {
  console.log(`${name}: median ${median(runs.map((r) => r.median)).toFixed(2)} ms/step, p90 ${median(runs.map((r) => r.p90)).toFixed(2)} over ${runs.length} runs (${load}, ${cores} cores)`);
}
