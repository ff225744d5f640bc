// One rank of the distributed tests (test/distributed.test.ts starts 2 or 4 of these, directly or through
// `weightnorm launch`). RANK, WORLD_SIZE, MASTER_PORT come from the environment; argv[2] is the mode. Each prints one
// line "RESULT <json>" that the test checks.
import { distributed, manualSeed, nn, optim, randn, tensor, tidy } from 'weightnorm';

const mode = process.argv[2];
const timeoutMs = Number(process.env.TEST_TIMEOUT_MS ?? 20000);
const info = await distributed.init({ timeoutMs });
const { rank, worldSize } = info;
const report = (result) => console.log(`RESULT ${JSON.stringify({ rank, worldSize, ...result })}`);

// A value of rank r at index i: small multiples of 1/4, so sums over ranks are exact in float32 and int32 alike.
const valueAt = (r, i) => (((i * 7 + r * 13) % 61) - 30) * 0.25 * (r + 1);

async function collectives() {
  const failures = [];
  // 2,097,155 float32 = 8 MB: many of Gloo's ring segments, and an odd size that does not split evenly.
  for (const size of [1, 5, 1000, 65537, 2_097_155]) {
    for (const dtype of ['float32', 'int32']) {
      for (const op of dtype === 'float32' ? ['sum', 'mean', 'max', 'min'] : ['sum', 'max', 'min']) {
        const scale = dtype === 'int32' ? 4 : 1; // int32: the same values times 4 (integers)
        const Array_ = dtype === 'int32' ? Int32Array : Float32Array;
        const x = tensor(Array_.from({ length: size }, (_, i) => valueAt(rank, i) * scale), [size], { dtype });
        await distributed.allReduce(x, { op });
        const got = x.toArray();
        let bad = 0;
        for (let i = 0; i < size; i++) {
          let sum = 0;
          let max = -Infinity;
          let min = Infinity;
          for (let r = 0; r < worldSize; r++) {
            const v = valueAt(r, i) * scale;
            sum += v;
            max = Math.max(max, v);
            min = Math.min(min, v);
          }
          const expected = op === 'sum' ? sum : op === 'mean' ? Math.fround(sum / worldSize) : op === 'max' ? max : min;
          if (got[i] !== expected) bad++;
        }
        if (bad) failures.push(`allReduce ${op} ${dtype} size ${size}: ${bad} wrong`);
        x.dispose();
      }
    }
  }
  for (const size of [1, 4097, 1_000_000]) {
    const root = worldSize - 1;
    const x = tensor(Float32Array.from({ length: size }, (_, i) => valueAt(rank, i)), [size]);
    await distributed.broadcast(x, root);
    const got = x.toArray();
    let bad = 0;
    for (let i = 0; i < size; i++) if (got[i] !== valueAt(root, i)) bad++;
    if (bad) failures.push(`broadcast float32 size ${size} from ${root}: ${bad} wrong`);
  }
  const flags = tensor(Int32Array.from({ length: 9 }, (_, i) => i * (rank + 1)), [9], { dtype: 'int32' });
  await distributed.broadcast(flags, 0);
  if (flags.toArray().some((v, i) => v !== i)) failures.push('broadcast int32 from 0: wrong');
  await distributed.barrier();
  report({ failures });
}

// FNV-1a over the bytes of every tensor: equal hashes mean bit-identical values.
function hashOf(tensors) {
  let h = 0x811c9dc5;
  for (const t of tensors) {
    const bytes = new Uint8Array(t.toArray().buffer.slice(0));
    for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

const buildModel = (seed) => {
  manualSeed(seed);
  return new nn.Sequential(
    new nn.Linear(12, 16, { weightNorm: true }), new nn.Tanh(),
    new nn.Linear(16, 16, { weightNorm: true }), new nn.Tanh(),
    new nn.Linear(16, 5, { weightNorm: true }),
  );
};

async function dataParallel() {
  const perRank = 6;
  const steps = Number(process.argv[3] ?? 5);
  const bucketBytes = Number(process.argv[4] ?? 1024); // small: several buckets for a small model
  const globalBatch = perRank * worldSize;
  const x = randn([globalBatch, 12], { seed: 7 }).toArray();
  const labels = Int32Array.from({ length: globalBatch }, (_, i) => (i * 3 + 1) % 5);

  // Each rank starts from different weights: DataParallel must make them rank 0's.
  const model = buildModel(100 + rank);
  const dp = await distributed.wrapDataParallel(model, { bucketBytes });
  const startHash = hashOf(model.parameters());
  const optimizer = new optim.SGD(model.parameters(), { lr: 0.2, momentum: 0.9 });
  const rows = x.subarray(rank * perRank * 12, (rank + 1) * perRank * 12);
  const ownLabels = labels.subarray(rank * perRank, (rank + 1) * perRank);
  let overlapped = 0; // buckets whose all-reduce started before backward() returned
  for (let step = 0; step < steps; step++) {
    tidy(() => {
      optimizer.zeroGrad();
      nn.crossEntropy(dp.forward(tensor(rows, [perRank, 12])), ownLabels).backward();
    });
    overlapped += dp.bucketsStarted;
    await dp.synchronize();
    optimizer.step();
  }

  // The same training without overlap (every bucket sent by synchronize(), after backward()): the same all-reduces
  // on the same gradients, so bit-identical parameters.
  const sequential = buildModel(100 + rank);
  const sequentialDp = await distributed.wrapDataParallel(sequential, { bucketBytes, overlap: false });
  const sequentialOptimizer = new optim.SGD(sequential.parameters(), { lr: 0.2, momentum: 0.9 });
  let startedDuringBackward = 0;
  for (let step = 0; step < steps; step++) {
    tidy(() => {
      sequentialOptimizer.zeroGrad();
      nn.crossEntropy(sequentialDp.forward(tensor(rows, [perRank, 12])), ownLabels).backward();
    });
    startedDuringBackward += sequentialDp.bucketsStarted;
    await sequentialDp.step(sequentialOptimizer);
  }

  // The single-process reference: rank 0's initial weights, the global batch, the same optimizer.
  const reference = buildModel(100);
  const referenceOptimizer = new optim.SGD(reference.parameters(), { lr: 0.2, momentum: 0.9 });
  for (let step = 0; step < steps; step++) {
    tidy(() => {
      referenceOptimizer.zeroGrad();
      nn.crossEntropy(reference.forward(tensor(x, [globalBatch, 12])), labels).backward();
    });
    referenceOptimizer.step();
  }
  let maxDifference = 0;
  let maxMagnitude = 0;
  const mine = model.parameters();
  reference.parameters().forEach((p, i) => {
    const a = mine[i].toArray();
    const b = p.toArray();
    for (let j = 0; j < a.length; j++) {
      maxDifference = Math.max(maxDifference, Math.abs(a[j] - b[j]));
      maxMagnitude = Math.max(maxMagnitude, Math.abs(b[j]));
    }
  });
  // The effective weights w = g·v/‖v‖ each rank computes locally show up in the outputs: they must agree too.
  const outputHash = tidy(() => hashOf([model.forward(tensor(x, [globalBatch, 12]))]));
  report({
    startHash,
    startHashOfRank0Seed: hashOf(buildModel(100).parameters()),
    paramsHash: hashOf(model.parameters()),
    sequentialHash: hashOf(sequential.parameters()),
    overlapped,
    startedDuringBackward,
    outputHash,
    maxDifference,
    maxMagnitude,
    buckets: dp.bucketSizes.length,
  });
}

// Misuse of DataParallel must give an error, never a step on this rank's own (un-averaged) gradients. Also: a
// parameter that only some ranks use (its gradient is missing elsewhere) must not desynchronize the buckets.
async function guards() {
  const errors = {};
  const attempt = async (name, fn) => {
    try {
      await fn();
      errors[name] = null;
    } catch (error) {
      errors[name] = error.message;
    }
  };
  const model = buildModel(100 + rank);
  const dp = await distributed.wrapDataParallel(model, { bucketBytes: 256 });
  const optimizer = new optim.SGD(model.parameters(), { lr: 0.1 });
  const x = randn([4, 12], { seed: 11 + rank });
  const lossOf = () => nn.crossEntropy(dp.forward(x), new Int32Array([0, 1, 2, 3]));
  const backward = () => tidy(() => lossOf().backward());

  optimizer.zeroGrad();
  backward();
  await attempt('forwardBeforeSynchronize', () => tidy(() => dp.forward(x)));
  await dp.synchronize();

  optimizer.zeroGrad();
  backward();
  optimizer.step(); // too early: the step used this rank's own gradients
  await attempt('stepBeforeSynchronize', () => dp.synchronize());

  // A second backward() through the same graph (the next forward() would already refuse): the hooks refuse it.
  optimizer.zeroGrad();
  await attempt('secondBackward', () =>
    tidy(() => {
      const loss = lossOf();
      loss.backward({ retainGraph: true });
      loss.backward();
    }),
  );
  await dp.synchronize();

  optimizer.zeroGrad();
  backward();
  optimizer.zeroGrad(); // the gradients that were sent are gone
  await attempt('zeroGradBeforeSynchronize', () => dp.synchronize());

  // noSync: two accumulated backward passes, then one averaged: the mean over ranks of each rank's sum of three.
  optimizer.zeroGrad();
  dp.noSync(() => {
    backward();
    backward();
  });
  backward();
  const local = model.parameters().map((p) => Float32Array.from(p.grad.toArray()));
  await dp.synchronize();
  const sums = model.parameters().map((p, i) => tensor(local[i], [...p.shape]));
  for (const t of sums) await distributed.allReduce(t, { op: 'mean' });
  let noSyncDifference = 0;
  model.parameters().forEach((p, i) => {
    const got = p.grad.toArray();
    const want = sums[i].toArray();
    for (let j = 0; j < got.length; j++) noSyncDifference = Math.max(noSyncDifference, Math.abs(got[j] - want[j]));
  });

  // Rank 0 leaves out the last layer's bias (no gradient there), the others use it: buckets still match up.
  const branchModel = buildModel(200);
  const branchDp = await distributed.wrapDataParallel(branchModel, { bucketBytes: 64 });
  const lastBias = branchModel.parameters().at(-1);
  tidy(() => {
    const out = branchDp.forward(x);
    const loss = rank === 0 ? nn.functional.sum(nn.functional.mul(out, out)) : nn.functional.sum(out);
    if (rank === 0) lastBias.requiresGrad = false;
    loss.backward();
    lastBias.requiresGrad = true;
  });
  await branchDp.synchronize();
  report({ errors, noSyncDifference, branchGradHash: hashOf(branchModel.parameters().map((p) => p.grad)) });
}

async function failure(kind) {
  const victim = Number(process.env.VICTIM);
  const x = tensor(new Float32Array(1000).fill(1), [1000]);
  await distributed.allReduce(x);
  if (rank === victim) {
    if (kind === 'die') process.exit(3);
    // Alive but never joins the next collective.
    await new Promise((done) => setTimeout(done, Number(process.env.HANG_MS ?? timeoutMs * 3)));
    process.exit(0);
  }
  const start = Date.now();
  try {
    await distributed.allReduce(x);
    report({ error: null });
  } catch (error) {
    report({ error: error.message, name: error.name, elapsedMs: Date.now() - start });
  }
  process.exit(1);
}

if (mode === 'collectives') await collectives();
else if (mode === 'dataparallel') await dataParallel();
else if (mode === 'guards') await guards();
else if (mode === 'die' || mode === 'hang') await failure(mode);
else throw new Error(`distributed-worker: unknown mode ${mode}`);
await distributed.destroy();
