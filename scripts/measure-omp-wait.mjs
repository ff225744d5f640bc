#!/usr/bin/env node
// Time per training step of a small MLP (784-256-256-10, batch 100, Adam) on every core, under each wait policy of
// the CPU kernels' thread pool (cpu/threads.h, WEIGHTNORM_OMP_WAIT_POLICY): passive (sleep at once), adaptive (the
// default: spin up to 200 us between regions while no other process uses the cores) and active (always spin), with
// busy processes beside it, as on a machine whose cores other work shares (0 for a quiet machine). Each setting runs
// in its own process (the pool reads the policy once, when it starts), the settings alternate, and each process
// reports the median of its steps. Usage: node scripts/measure-omp-wait.mjs [rounds] [busy processes] [steps]
// (needs the built package: npm run build). Prints one line per run and the medians per setting.
import { spawn, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';

import { timeMlpSteps } from './mlp-step-timing.mjs';

if (process.argv[2] === '--child') {
  const { times, threads } = await timeMlpSteps({ threads: Number(process.argv[3]), steps: Number(process.argv[4]), warmup: 10 });
  console.log(JSON.stringify({ median: times[times.length >> 1], threads }));
  process.exit(0);
}

const rounds = Number(process.argv[2] ?? 3);
const busyCount = Number(process.argv[3] ?? cpus().length);
const steps = Number(process.argv[4] ?? 200);
const settings = {
  passive: { WEIGHTNORM_OMP_WAIT_POLICY: 'passive' },
  adaptive: {},
  active: { WEIGHTNORM_OMP_WAIT_POLICY: 'active' },
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
      const child = spawnSync(process.execPath, [new URL(import.meta.url).pathname, '--child', String(cpus().length), String(steps)], { env: { ...clean, ...env }, encoding: 'utf8' });
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
