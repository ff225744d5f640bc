// The workload of test/determinism.test.ts: every kind of CPU op, run once per thread count, each result kept as
// float32 bytes. It receives the library as a parameter (type-only import) so that the same code runs inside vitest
// and, transpiled, in a child process started with another WEIGHTNORM_OPENBLAS setting.
import type * as Weightnorm from '../ts/index.js';

type Library = typeof Weightnorm;
type Tensor = Weightnorm.Tensor;

/** Named results of one run, in a fixed order. */
export type Results = [name: string, values: Float32Array][];

/** matmul shapes [m, n, k]: square, tall and skinny both ways, k much larger than the output, ragged. */
export const MATMUL_SHAPES: readonly (readonly [number, number, number])[] = [
  [256, 256, 256],
  [2000, 16, 96],
  [16, 2000, 96],
  [48, 40, 6000],
  [300, 200, 33],
  [1100, 600, 24],
];

/** Runs the workload with `threads` CPU threads; inputs depend on `seed` only. */
export function runWorkload(wn: Library, seed: number, threads: number): Results {
  const { nn, ops, optim, randn, tidy, keep } = wn;
  const F = nn.functional;
  wn.setNumThreads(threads);
  const results: Results = [];
  let next = seed;
  const random = (shape: readonly number[], std = 1): Tensor => randn(shape, { seed: next++, std });
  const save = (name: string, t: Tensor | null): void => {
    if (!t) throw new Error(`${name}: no tensor (a gradient that was not computed?)`);
    results.push([name, t.toArray()]);
  };
  // L = Σ y ⊙ r with a fixed random r: dL/dy = r, so every backward sees a dense, random output gradient.
  const probe = (y: Tensor): Tensor => F.sum(F.mul(y, random(y.shape)));
  const leaf = (shape: number[], std = 1): Tensor => {
    const t = keep(random(shape, std));
    t.requiresGrad = true;
    return t;
  };

  try {
    tidy(() => {
      for (const [m, n, k] of MATMUL_SHAPES) {
        for (const [transposeA, transposeB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
          const a = random(transposeA ? [k, m] : [m, k]);
          const b = random(transposeB ? [n, k] : [k, n]);
          save(`matmul ${m}x${n}x${k} ${transposeA ? 'T' : 'N'}${transposeB ? 'T' : 'N'}`, ops.matmul(a, b, { transposeA, transposeB }));
        }
      }
      {
        // The differentiable matmul: its backward runs the NT and TN products.
        const a = leaf([300, 130]);
        const b = leaf([130, 520]);
        probe(F.matmul(a, b)).backward();
        save('matmul backward da', a.grad);
        save('matmul backward db', b.grad);
      }
      for (const weightNorm of [false, true]) {
        const label = weightNorm ? 'Linear(weightNorm)' : 'Linear';
        wn.manualSeed(next++);
        const layer = new nn.Linear(200, 96, { weightNorm });
        const x = leaf([256, 200]);
        const y = layer.forward(x);
        save(`${label} forward`, y);
        probe(y).backward();
        save(`${label} dx`, x.grad);
        for (const [name, p] of layer.namedParameters()) save(`${label} d${name}`, p.grad);
      }
      for (const cell of ['LSTM', 'GRU'] as const) {
        for (const weightNorm of [false, true]) {
          // batch · hidden 48·40 and 520·256: a step's gate kernels on one thread and on all of them (cpu/rnn.cc,
          // kStepParallelMinUnits), each with the recurrent GEMMs and the backward through time around them.
          for (const [steps, batch, hidden] of [[5, 48, 40], [2, 520, 256]] as const) {
            const label = `${cell}${weightNorm ? '(weightNorm)' : ''} T${steps} N${batch} H${hidden}`;
            wn.manualSeed(next++);
            const layer = cell === 'LSTM' ? new nn.LSTM(16, hidden, { weightNorm }) : new nn.GRU(16, hidden, { weightNorm });
            const x = leaf([steps, batch, 16]);
            const { output } = layer.forward(x);
            save(`${label} output`, output);
            probe(output).backward();
            save(`${label} dx`, x.grad);
            for (const [name, p] of layer.namedParameters()) save(`${label} d${name}`, p.grad);
            layer.dispose();
          }
        }
      }
      for (const [stride, padding, kernel] of [[1, 1, 3], [2, 1, 3], [1, 0, 1]] as const) {
        const label = `conv2d k${kernel} s${stride} p${padding}`;
        const x = leaf([12, 16, 20, 20]);
        const w = leaf([24, 16, kernel, kernel], 0.2);
        const b = leaf([24]);
        const y = F.conv2d(x, w, b, { stride, padding });
        save(`${label} forward`, y);
        probe(y).backward();
        save(`${label} dx`, x.grad);
        save(`${label} dw`, w.grad);
        save(`${label} dbias`, b.grad);
      }
      for (const dim of [0, 1, null]) {
        const v = random([96, 300]);
        const g = random(dim === null ? [1] : [dim === 0 ? 96 : 300]);
        const { w, norm } = ops.weightNorm(v, g, { dim });
        save(`weightNorm dim ${dim} w`, w);
        save(`weightNorm dim ${dim} norm`, norm);
        const { dv, dg } = ops.weightNormBackward(random([96, 300]), v, g, norm, { dim });
        save(`weightNorm dim ${dim} dv`, dv);
        save(`weightNorm dim ${dim} dg`, dg);
      }
      {
        const x = leaf([32, 24, 12, 12]);
        const gamma = leaf([24]);
        const beta = leaf([24]);
        const { y, mean, variance } = F.batchNorm(x, gamma, beta, 1e-5);
        save('batchNorm forward', y);
        save('batchNorm mean', mean);
        save('batchNorm variance', variance);
        probe(y).backward();
        save('batchNorm dx', x.grad);
        save('batchNorm dgamma', gamma.grad);
        save('batchNorm dbeta', beta.grad);
      }
      for (const [kernel, stride] of [[2, 2], [3, 2]] as const) {
        const x = leaf([16, 24, 17, 17]);
        const y = F.maxPool2d(x, kernel, stride);
        save(`maxPool2d ${kernel}/${stride} forward`, y);
        probe(y).backward();
        save(`maxPool2d ${kernel}/${stride} dx`, x.grad);
      }
      {
        const x = leaf([16, 24, 13, 11]);
        const y = F.globalAvgPool2d(x);
        save('globalAvgPool2d forward', y);
        probe(y).backward();
        save('globalAvgPool2d dx', x.grad);
      }
      {
        const logits = leaf([512, 37]);
        const labels = Array.from({ length: 512 }, (_, i) => (i * 7919 + seed) % 37);
        const loss = F.crossEntropy(logits, labels);
        save('crossEntropy', loss);
        loss.backward();
        save('crossEntropy dlogits', logits.grad);
      }
      {
        const params = [leaf([300, 200]), leaf([200])];
        params.forEach((p) => (p.grad = keep(random(p.shape))));
        const adam = new optim.Adam(params, { lr: 0.01, weightDecay: 1e-4 });
        adam.step();
        adam.step();
        params.forEach((p, i) => save(`Adam step param ${i}`, p));
      }
    });
    // A few training steps of a small CNN (weight-normalized convs and Linear, batch norm, pooling, Adam): any
    // difference anywhere would grow step by step.
    wn.manualSeed(next++);
    const model = new nn.Sequential(
      new nn.Conv2d(1, 8, 3, { padding: 1, weightNorm: true }),
      new nn.ReLU(),
      new nn.MaxPool2d(2),
      new nn.Conv2d(8, 16, 3, { padding: 1, weightNorm: true }),
      new nn.BatchNorm(16),
      new nn.ReLU(),
      new nn.MaxPool2d(2),
      new nn.Flatten(),
      new nn.Linear(16 * 4 * 4, 10, { weightNorm: true }),
    );
    const adam = new optim.Adam(model.parameters(), { lr: 0.003 });
    const losses: number[] = [];
    for (let step = 0; step < 4; step++) {
      const x = random([32, 1, 16, 16]);
      const labels = Array.from({ length: 32 }, (_, i) => (i * 31 + step + seed) % 10);
      losses.push(wn.trainStep(model, adam, x, labels));
      x.dispose();
    }
    results.push(['small CNN losses', Float32Array.from(losses)]);
    for (const [name, p] of model.namedParameters()) save(`small CNN after 4 steps: ${name}`, p);
    model.dispose();
    return results;
  } finally {
    wn.setNumThreads(0);
  }
}
