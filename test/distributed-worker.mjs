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
  for (let step = 0; step < steps; step++) {
    tidy(() => {
      optimizer.zeroGrad();
      nn.crossEntropy(dp.forward(tensor(rows, [perRank, 12])), ownLabels).backward();
    });
    await dp.synchronize();
    optimizer.step();
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
    outputHash,
    maxDifference,
    maxMagnitude,
    buckets: dp.bucketSizes.length,
  });
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
else if (mode === 'die' || mode === 'hang') await failure(mode);
else throw new Error(`distributed-worker: unknown mode ${mode}`);
await distributed.destroy();
