// The training stack end to end: layers, optimizers, data-dependent init, tidy(), on every available backend.
import { describe, expect, it } from 'vitest';

import { backend, init, manualSeed, memory, nn, noGrad, optim, tensor, tidy, type Tensor } from '../ts/index.js';
import { normals, relativeError, reproduce, runSeed } from './helpers.js';

const F = nn.functional;
const cudaUsable = backend().cuda.usable;
const devices = ['cpu', ...(cudaUsable ? ['cuda'] : [])] as const;

function batchOf(seed: number, shape: number[], device: 'cpu' | 'cuda'): Tensor {
  return tensor(Float32Array.from(normals(shape.reduce((a, b) => a * b, 1), seed)), shape, { device });
}

function rowSquaredNorms(values: Float32Array, rows: number): Float64Array {
  const rest = values.length / rows;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) for (let i = 0; i < rest; i++) out[r] += values[r * rest + i]! ** 2;
  return out;
}

describe.each(devices)('training stack on %s', (device) => {
  it('plain SGD grows ‖v‖ exactly as ‖v_{t+1}‖² = ‖v_t‖² + η²‖∇v‖² (per output unit), at every step', () => {
    const seed = runSeed();
    manualSeed(seed);
    const layer = new nn.Linear(12, 5, { weightNorm: true }).to(device);
    const opt = new optim.SGD(layer.parameters(), { lr: 0.5 });
    const x = batchOf(seed, [16, 12], device);
    const labels = Array.from({ length: 16 }, (_, i) => i % 5);
    for (let step = 0; step < 5; step++) {
      tidy(() => {
        const before = rowSquaredNorms(layer.v!.toArray(), 5);
        opt.zeroGrad();
        F.crossEntropy(layer.forward(x), labels).backward();
        const gradSq = rowSquaredNorms(layer.v!.grad!.toArray(), 5);
        opt.step();
        const after = rowSquaredNorms(layer.v!.toArray(), 5);
        const predicted = before.map((b, r) => b + 0.25 * gradSq[r]!);
        // float32 rounding of ~60 squared terms: relative 1e-5 is ample; a missing projection is off by O(1).
        expect(relativeError(Float64Array.from(after), predicted), `step ${step} (${reproduce(seed)})`).toBeLessThan(1e-5);
        // The optimizer's fused norm output is the new ‖v‖.
        const fusedNorm = layer.weightNorm!.norm!.toArray();
        expect(relativeError(fusedNorm, after.map(Math.sqrt))).toBeLessThan(1e-5);
      });
    }
  });

  it('data-dependent init gives each layer zero-mean, unit-variance pre-activations on the init batch', () => {
    const seed = runSeed();
    manualSeed(seed);
    const layers = [
      new nn.Conv2d(2, 4, 3, { padding: 1, weightNorm: true }),
      new nn.ReLU(),
      new nn.Flatten(),
      new nn.Linear(4 * 6 * 6, 10, { weightNorm: true }),
      new nn.ReLU(),
      new nn.Linear(10, 3), // plain: initialized in terms of v and g too
    ];
    const model = new nn.Sequential(...layers).to(device);
    const x = batchOf(seed, [32, 2, 6, 6], device);
    init.dataDependent(model, x);
    noGrad(() =>
      tidy(() => {
        let h = x;
        for (const layer of layers) {
          h = layer.forward(h);
          if (layer instanceof nn.Linear || layer instanceof nn.Conv2d) {
            const [batch = 1, channels = 1, ...rest] = h.shape;
            const inner = rest.reduce((a, b) => a * b, 1);
            const values = h.toArray();
            for (let c = 0; c < channels; c++) {
              let mean = 0;
              let square = 0;
              for (let b = 0; b < batch; b++) for (let i = 0; i < inner; i++) mean += values[(b * channels + c) * inner + i]!;
              mean /= batch * inner;
              for (let b = 0; b < batch; b++) for (let i = 0; i < inner; i++) square += (values[(b * channels + c) * inner + i]! - mean) ** 2;
              const std = Math.sqrt(square / (batch * inner));
              expect(Math.abs(mean), `${layer.constructor.name} channel ${c} mean (${reproduce(seed)})`).toBeLessThan(1e-4);
              expect(Math.abs(std - 1), `${layer.constructor.name} channel ${c} std (${reproduce(seed)})`).toBeLessThan(1e-4);
            }
          }
        }
      }),
    );
  });

  it('a small MLP and a small CNN reduce their loss on a fixed batch', () => {
    const seed = runSeed();
    manualSeed(seed);
    const labels = Array.from({ length: 32 }, (_, i) => (i * 7) % 4);
    const cases: [string, nn.Module, Tensor][] = [
      ['mlp', new nn.Sequential(new nn.Linear(20, 16, { weightNorm: true }), new nn.ReLU(), new nn.Linear(16, 4, { weightNorm: true })), batchOf(seed, [32, 20], device)],
      [
        'cnn',
        new nn.Sequential(
          new nn.Conv2d(1, 6, 3, { padding: 1, weightNorm: true }),
          new nn.ReLU(),
          new nn.MaxPool2d(2),
          new nn.Flatten(),
          new nn.Linear(6 * 4 * 4, 4, { weightNorm: true }),
        ),
        batchOf(seed, [32, 1, 8, 8], device),
      ],
    ];
    for (const [name, model, x] of cases) {
      model.to(device);
      init.dataDependent(model, x);
      const opt = new optim.Adam(model.parameters(), { lr: 1e-2 });
      const losses: number[] = [];
      for (let step = 0; step < 30; step++) {
        losses.push(
          tidy(() => {
            const loss = F.crossEntropy(model.forward(x), labels);
            opt.zeroGrad();
            loss.backward();
            opt.step();
            return loss.item();
          }),
        );
      }
      // 30 Adam steps on one batch of 32 memorize it well: the loss at least halves (it starts near ln 4 ≈ 1.39).
      expect(losses.at(-1)!, `${name}: ${losses.map((l) => l.toFixed(3)).join(' ')} (${reproduce(seed)})`).toBeLessThan(losses[0]! / 2);
    }
  });

  it('memory() after 1000 tidy training steps is what it was after 10', () => {
    manualSeed(7);
    const model = new nn.Sequential(
      new nn.Linear(8, 8, { weightNorm: true }),
      new nn.MeanOnlyBatchNorm(8),
      new nn.ReLU(),
      new nn.Dropout(0.1),
      new nn.Linear(8, 3),
    ).to(device);
    const opt = new optim.Adamax(model.parameters());
    const x = batchOf(3, [16, 8], device);
    const labels = Array.from({ length: 16 }, (_, i) => i % 3);
    const step = () =>
      tidy(() => {
        const loss = F.crossEntropy(model.forward(x), labels);
        opt.zeroGrad();
        loss.backward();
        opt.step();
      });
    for (let i = 0; i < 10; i++) step();
    const after10 = memory()[device];
    for (let i = 0; i < 990; i++) step();
    const after1000 = memory()[device];
    expect(after1000.tensors).toBe(after10.tensors);
    expect(after1000.bytes).toBe(after10.bytes);
  });

  it('removeWeightNorm folds (v, g) into a plain weight with the same outputs', () => {
    const seed = runSeed();
    manualSeed(seed);
    for (const layer of [new nn.Linear(6, 4, { weightNorm: true }), new nn.Conv2d(2, 3, 3, { weightNorm: true })]) {
      layer.to(device);
      const x = layer instanceof nn.Linear ? batchOf(seed, [5, 6], device) : batchOf(seed, [2, 2, 5, 5], device);
      const before = noGrad(() => layer.forward(x)).toArray();
      nn.removeWeightNorm(layer);
      expect(layer.isWeightNormalized).toBe(false);
      expect(layer.parameters().length).toBe(2);
      const after = noGrad(() => layer.forward(x)).toArray();
      expect(relativeError(after, Float64Array.from(before))).toBeLessThan(1e-5);
    }
  });

  it('BatchNorm and MeanOnlyBatchNorm keep running statistics (0.9/0.1) and use them in eval()', () => {
    const x = batchOf(11, [64, 3], device);
    const mobn = new nn.MeanOnlyBatchNorm(3).to(device);
    noGrad(() => mobn.forward(x));
    const values = x.toArray();
    const mean = [0, 1, 2].map((c) => values.filter((_, i) => i % 3 === c).reduce((a, b) => a + b, 0) / 64);
    expect(relativeError(mobn.runningMean.toArray(), Float64Array.from(mean.map((m) => 0.1 * m)))).toBeLessThan(1e-5);
    mobn.eval();
    const y = noGrad(() => mobn.forward(x)).toArray();
    expect(y[0]).toBeCloseTo(values[0]! - 0.1 * mean[0]!, 5);

    const bn = new nn.BatchNorm(3).to(device);
    noGrad(() => bn.forward(x));
    expect(relativeError(bn.runningMean.toArray(), Float64Array.from(mean.map((m) => 0.1 * m)))).toBeLessThan(1e-5);
  });

  it('bad input throws clear errors', () => {
    const a = batchOf(1, [3, 4], device);
    expect(() => F.matmul(a, batchOf(2, [5, 2], device))).toThrow(/matmul: expected \[m, k\] and \[k, n\], received \[3, 4\] and \[5, 2\]/);
    expect(() => new nn.Linear(5, 2).to(device).forward(a)).toThrow(/linear: x: expected \[batch, 5\], received \[3, 4\]/);
    expect(() => F.conv2d(batchOf(1, [1, 2, 5, 5], device), batchOf(2, [3, 4, 3, 3], device))).toThrow(/conv2d: weight: expected \[outChannels, 2, kh, kw\]/);
    expect(() => F.crossEntropy(a, [0, 1, 4])).toThrow(/labels: expected class indices in \[0, 3\], received 4 at position 2/);
    expect(() => F.crossEntropy(a, [0, 1])).toThrow(/labels: expected 3 labels/);
    expect(() => new nn.Linear(0, 2)).toThrow(/nn.Linear: inFeatures: expected an integer >= 1, received the number 0/);
    expect(() => new optim.SGD([], { lr: 0.1 })).toThrow(/optim.SGD: params: expected a non-empty array/);
    expect(() => new optim.Adam(new nn.Linear(2, 2).parameters(), { lr: -1 })).toThrow(/optim.Adam: options.lr/);
    if (device === 'cuda') {
      expect(() => F.add(a, batchOf(1, [3, 4], 'cpu'))).toThrow(/add: b: expected a tensor on 'cuda'/);
    }
  });
});

describe('optimizers against a float64 reference (CPU)', () => {
  it('SGD with Nesterov momentum and weight decay, Adam and Adamax over three steps', () => {
    const seed = runSeed();
    const p0 = normals(6, seed);
    const grads = [normals(6, seed + 1), normals(6, seed + 2), normals(6, seed + 3)];
    const run = (make: (params: Tensor[]) => optim.Optimizer) => {
      const p = tensor(Float32Array.from(p0), [6]);
      p.requiresGrad = true;
      const opt = make([p]);
      for (const g of grads) {
        opt.zeroGrad();
        p.grad = tensor(Float32Array.from(g), [6]);
        opt.step();
      }
      return p.toArray();
    };
    const f32 = (g: Float64Array) => Float64Array.from(Float32Array.from(g));
    // SGD: g' = g + wd·p; buf = g' (step 1) else μ·buf + g'; p -= lr·(g' + μ·buf)
    {
      const p = Float64Array.from(Float32Array.from(p0));
      const buf = new Float64Array(6);
      grads.forEach((g, t) => {
        for (let i = 0; i < 6; i++) {
          const gi = f32(g)[i]! + 0.01 * p[i]!;
          buf[i] = t === 0 ? gi : 0.9 * buf[i]! + gi;
          p[i] -= 0.1 * (gi + 0.9 * buf[i]!);
        }
      });
      expect(relativeError(run((ps) => new optim.SGD(ps, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 })), p)).toBeLessThan(1e-6);
    }
    for (const kind of ['adam', 'adamax'] as const) {
      const p = Float64Array.from(Float32Array.from(p0));
      const m = new Float64Array(6);
      const s = new Float64Array(6);
      const [lr, b1, b2, eps] = [0.01, 0.9, 0.999, 1e-8];
      grads.forEach((g, t) => {
        const step = t + 1;
        for (let i = 0; i < 6; i++) {
          const gi = f32(g)[i]!;
          m[i] = b1 * m[i]! + (1 - b1) * gi;
          if (kind === 'adam') {
            s[i] = b2 * s[i]! + (1 - b2) * gi * gi;
            const mHat = m[i]! / (1 - b1 ** step);
            const vHat = s[i]! / (1 - b2 ** step);
            p[i] -= (lr * mHat) / (Math.sqrt(vHat) + eps);
          } else {
            s[i] = Math.max(b2 * s[i]!, Math.abs(gi) + eps); // PyTorch's Adamax: eps inside the max
            p[i] -= ((lr / (1 - b1 ** step)) * m[i]!) / s[i]!;
          }
        }
      });
      const got = run((ps) => (kind === 'adam' ? new optim.Adam(ps, { lr }) : new optim.Adamax(ps, { lr })));
      expect(relativeError(got, p), kind).toBeLessThan(1e-5);
    }
  });
});

describe('BatchNorm in a network', () => {
  it('backpropagates in training mode (the batch statistics outlive the forward)', () => {
    manualSeed(21);
    const model = new nn.Sequential(new nn.Conv2d(2, 3, 3, { padding: 1 }), new nn.BatchNorm(3), new nn.Flatten());
    const x = batchOf(4, [4, 2, 4, 4], 'cpu');
    tidy(() => nn.crossEntropy(model.forward(x), [0, 1, 2, 0]).backward());
    for (const p of model.parameters()) expect(p.grad, 'every parameter gets a gradient').not.toBeNull();
  });
});
