// The README's "Training" loop, as written there (CPU, the same model, init at batch 500, Adam, batch 100, tidy()
// per step, never yielding to the event loop), run for a given number of steps over as many epochs of the
// 8,000-image split as that takes, measuring resident memory from /proc/self/status. Run by
// test/memory-soak.test.ts in a child process (so its numbers are this program's alone); by hand:
//   node test/memory-soak-child.mjs [steps = 5000] [path to the library's dist/index.js]
// Prints one JSON line: the peak resident memory of the loading and init, and of the loop (VmHWM, reset when the
// loop starts), the time, VmRSS and memory().cpu every `sampleEvery` steps, the mean loss of the first and last 80 steps (one
// epoch), seconds (wall and CPU) and page faults.
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const steps = Number(process.argv[2] ?? 5000);
const library = process.argv[3] ? pathToFileURL(resolve(process.argv[3])).href : new URL('../dist/index.js', import.meta.url).href;
const sampleEvery = 50;
const { data, init, memory, nn, optim, tidy } = await import(library);

function residentMiB() {
  const status = readFileSync('/proc/self/status', 'utf8');
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)[1]) / 1024;
  return { rss: field('VmRSS'), peak: field('VmHWM') };
}

const started = performance.now();
// ---- The README's program, CPU ----
const device = 'cpu';
const { train } = data.loadMnist({ heldOut: 2000, seed: 0 });
const model = new nn.Sequential(
  new nn.Conv2d(1, 32, 3, { padding: 1, weightNorm: true }), new nn.ReLU(), new nn.MaxPool2d(2),
  new nn.Flatten(), new nn.Linear(32 * 14 * 14, 10, { weightNorm: true }),
).to(device);
const [xInit] = data.batches(train, { batchSize: 500, layout: 'image', device }).next().value;
init.dataDependent(model, xInit);
const opt = new optim.Adam(model.parameters(), { lr: 3e-3 });

const setup = residentMiB();
// Linux >= 4.0: writing 5 resets VmHWM to the current VmRSS, so the peak read at the end is the loop's own.
let peakReset = true;
try {
  writeFileSync('/proc/self/clear_refs', '5');
} catch {
  peakReset = false;  // the sampled VmRSS still bounds the loop (between samples only)
}
const samples = [];
const window = 80;  // steps averaged for the first and last loss: one epoch of 8,000 images
let first = 0;
let last = 0;
const loopStarted = performance.now();
let step = 0;
for (let epoch = 0; step < steps; epoch++) {
  for (const [x, y] of data.batches(train, { batchSize: 100, seed: 1, epoch, layout: 'image', device })) {
    tidy(() => {                               // frees every intermediate of the step (x too)
      const loss = nn.crossEntropy(model.forward(x), y);
      opt.zeroGrad(); loss.backward(); opt.step();
      x.dispose();
      if (step < window) first += loss.toArray()[0] / window;
      if (step >= steps - window) last += loss.toArray()[0] / window;
    });
    step += 1;
    if (step % sampleEvery === 0) {
      samples.push({ step, seconds: (performance.now() - loopStarted) / 1000, ...residentMiB(), cpu: memory().cpu });
    }
    if (step === steps) break;
  }
}
const loopSeconds = (performance.now() - loopStarted) / 1000;
console.log(JSON.stringify({
  steps,
  setupPeakMiB: setup.peak,
  setupRssMiB: setup.rss,
  peakReset,
  loopPeakMiB: residentMiB().peak,
  samples,
  firstLoss: first,
  lastLoss: last,
  loopSeconds,
  totalSeconds: (performance.now() - started) / 1000,
  cpuSeconds: (process.resourceUsage().userCPUTime + process.resourceUsage().systemCPUTime) / 1e6,
  majorPageFaults: process.resourceUsage().majorPageFault,
  minorPageFaults: process.resourceUsage().minorPageFault,
}));
