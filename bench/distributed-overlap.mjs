// How much of the gradient all-reduce DataParallel hides behind backward():
//   npx weightnorm launch --nproc 2 bench/distributed-overlap.mjs [--rounds 4] [--steps 5] [--hidden 1024] [--batch 512]
// One weight-normalized MLP per mode, same weights: 'sequential' (overlap: false: every bucket is sent after
// backward() returns) and 'overlapped' (the default: a bucket is sent as soon as its gradients are final). A step's
// time is backward() + synchronize(); 'backward only' is the same backward() without the data-parallel wrapper
// (no communication). Rounds alternate the modes (the host is shared: its load drifts), and each mode's figure is
// the median over all its steps. Hidden = (sequential - overlapped) / (sequential - backward only): the share of the
// communication time that overlap removed from the step.
import { distributed, manualSeed, nn, optim, randn, tidy } from 'weightnorm';
import { loadavg } from 'node:os';

const option = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
};
const rounds = option('rounds', 4);
const steps = option('steps', 5);
const hidden = option('hidden', 1024);
const batch = option('batch', 512); // per rank: enough work in backward() to hide communication behind

const { rank, worldSize } = await distributed.init();
const build = () => {
  manualSeed(1);
  return new nn.Sequential(
    new nn.Linear(784, hidden, { weightNorm: true }), new nn.ReLU(),
    new nn.Linear(hidden, hidden, { weightNorm: true }), new nn.ReLU(),
    new nn.Linear(hidden, hidden, { weightNorm: true }), new nn.ReLU(),
    new nn.Linear(hidden, hidden, { weightNorm: true }), new nn.ReLU(),
    new nn.Linear(hidden, 10, { weightNorm: true }),
  );
};
// 4 MiB buckets: several per model, so that the first ones can go while the lower layers are still in backward().
const modes = {
  sequential: await distributed.wrapDataParallel(build(), { overlap: false, bucketBytes: 4 * 2 ** 20 }),
  overlapped: await distributed.wrapDataParallel(build(), { overlap: true, bucketBytes: 4 * 2 ** 20 }),
};
const plain = build();
const x = randn([batch, 784], { seed: 2 + rank });
const labels = Int32Array.from({ length: batch }, (_, i) => i % 10);
const parameters = plain.parameters().reduce((n, p) => n + p.size, 0);

const times = { 'backward only': [], sequential: [], overlapped: [] };
async function step(name) {
  const model = name === 'backward only' ? plain : modes[name].module;
  const optimizer = new optim.SGD(model.parameters(), { lr: 0 });
  optimizer.zeroGrad();
  await distributed.barrier(); // every rank starts the step together
  let start = 0;
  tidy(() => {
    const loss = nn.crossEntropy((name === 'backward only' ? plain : modes[name]).forward(x), labels);
    start = performance.now();
    loss.backward(); // with overlap, the first buckets are sent from in here
  });
  if (name !== 'backward only') await modes[name].synchronize();
  return performance.now() - start;
}

for (const name of Object.keys(times)) await step(name); // warm-up: caches, thread pools, Gloo's buffers
const load = [loadavg()[0]];
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? Object.keys(times) : Object.keys(times).reverse();
  for (const name of order) for (let s = 0; s < steps; s++) times[name].push(await step(name));
  load.push(loadavg()[0]);
}
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
if (rank === 0) {
  const [backwardOnly, sequential, overlapped] = Object.values(times).map(median);
  const communication = sequential - backwardOnly;
  console.log(
    `${worldSize} ranks, batch ${batch} per rank, ${(parameters / 1e6).toFixed(2)}M parameters (${((parameters * 4) / 2 ** 20).toFixed(1)} MiB of ` +
      `gradients in ${modes.overlapped.bucketSizes.length} buckets), ${rounds} rounds x ${steps} steps per mode, ` +
      `load average ${Math.min(...load).toFixed(1)}-${Math.max(...load).toFixed(1)}`,
  );
  console.log(`backward only ${backwardOnly.toFixed(1)} ms; backward + all-reduce: sequential ${sequential.toFixed(1)} ms, ` +
    `overlapped ${overlapped.toFixed(1)} ms`);
  console.log(`communication ${communication.toFixed(1)} ms, of which overlap hid ${(sequential - overlapped).toFixed(1)} ms ` +
    `(${((100 * (sequential - overlapped)) / communication).toFixed(0)}%)`);
}
await distributed.destroy();
