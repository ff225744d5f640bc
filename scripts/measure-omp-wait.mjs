#!/usr/bin/env node
// Time per training step of a small MLP (784-256-256-10, batch 100, Adam) with the CPU kernels' OpenMP threads
// waiting passively (sleep at once) vs libgomp's default (spin up to 300,000 iterations, then sleep), each with a
// busy process per core running beside it, as on a machine whose cores other work shares. Each setting runs in its
// own process (libgomp reads its environment once, when the addon loads), the settings alternate, and each
// process reports the median of its steps. Usage: node scripts/measure-omp-wait.mjs [rounds] [busy processes]
// (needs the built package: npm run build). Prints one line per run and the medians per setting.
import { spawn, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';

import { timeMlpSteps } from './mlp-step-timing.mjs';

if (process.argv[2] === '--child') {
  const { times, threads } = await timeMlpSteps({ threads: Number(process.argv[3]), steps: 50, warmup: 10 });
  console.log(JSON.stringify({ median: times[times.length >> 1], threads }));
  process.exit(0);
}

const rounds = Number(process.argv[2] ?? 3);
const busyCount = Number(process.argv[3] ?? cpus().length);
const settings = {
  passive: { OMP_WAIT_POLICY: 'PASSIVE' },
  'libgomp default': { WEIGHTNORM_OMP_WAIT_POLICY: 'default' },
};
const busy = Array.from({ length: busyCount }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
const results = Object.fromEntries(Object.keys(settings).map((k) => [k, []]));
try {
  for (let round = 0; round < rounds; round++) {
    for (const [name, env] of Object.entries(settings)) {
      const clean = { ...process.env };
      delete clean.OMP_WAIT_POLICY;
      delete clean.GOMP_SPINCOUNT;
      delete clean.WEIGHTNORM_OMP_WAIT_POLICY;
      const child = spawnSync(process.execPath, [new URL(import.meta.url).pathname, '--child', String(cpus().length)], { env: { ...clean, ...env }, encoding: 'utf8' });
      if (child.status !== 0) throw new Error(child.stderr);
      const { median } = JSON.parse(child.stdout.trim().split('\n').pop());
      results[name].push(median);
      console.log(`round ${round + 1}, ${name}: ${median.toFixed(2)} ms/step (${cpus().length} threads, ${busyCount} busy processes)`);
    }
  }
} finally {
  for (const p of busy) p.kill();
}
for (const [name, values] of Object.entries(results)) {
  const sorted = [...values].sort((a, b) => a - b);
  console.log(`${name}: median ${sorted[sorted.length >> 1].toFixed(2)} ms/step over ${values.length} runs (${values.map((v) => v.toFixed(1)).join(', ')})`);
}
