// The loss functions and layers beyond the torch gradient check (test/gradcheck, gradcheck_loss_torch.json): label
// forms, layouts, the loss layers, argument errors, and CUDA against the CPU.
import { describe, expect, it } from 'vitest';

import { backend, nn, randn, setNumThreads, tensor, type Tensor } from '../ts/index.js';
import { reproduce, runSeed, uniformGenerator } from './helpers.js';

const F = nn.functional;
const seed = runSeed();
const uniform = uniformGenerator(seed);
const cudaUsable = backend().cuda.usable;

function randomLabels(count: number, classes: number): Int32Array {
  return Int32Array.from({ length: count }, () => Math.floor(uniform() * classes));
}

/** Cross-entropy of one position in float64, from the definition. */
function crossEntropyOf(row: number[], label: number): number {
  const max = Math.max(...row);
  const logSum = Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0)) + max;
  return logSum - row[label]!;
}

describe('class losses', () => {
  it(`crossEntropy over [N, C, T] equals the definition per (n, t) and its mean (${reproduce(seed)})`, () => {
    const [n, c, t] = [3, 4, 5];
    const logits = randn([n, c, t], { seed: seed % 2 ** 31 });
    const labels = randomLabels(n * t, c);
    const values = logits.toArray();
    const expected: number[] = [];
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < t; k++) {
        const row = Array.from({ length: c }, (_, j) => values[(i * c + j) * t + k]!);
        expected.push(crossEntropyOf(row, labels[i * t + k]!));
      }
    }
    const none = F.crossEntropy(logits, labels, { reduction: 'none' });
    expect(none.shape).toEqual([n, t]);
    Array.from(none.toArray()).forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
    const mean = expected.reduce((a, b) => a + b, 0) / expected.length;
    expect(F.crossEntropy(logits, labels).item()).toBeCloseTo(mean, 5);
    expect(F.crossEntropy(logits, labels, { reduction: 'sum' }).item()).toBeCloseTo(mean * expected.length, 4);
  });

  it('labels as number[], Int32Array, a float tensor or a [N, T] tensor give the same loss', () => {
    const logits = randn([4, 3, 2], { seed: 5 });
    const labels = [0, 2, 1, 1, 2, 0, 0, 1];
    const reference = F.crossEntropy(logits, labels).item();
    expect(F.crossEntropy(logits, Int32Array.from(labels)).item()).toBe(reference);
    expect(F.crossEntropy(logits, tensor(labels, [4, 2])).item()).toBe(reference);
    expect(() => F.crossEntropy(logits, tensor(labels, [2, 4]))).toThrow(/labels: expected shape \[4, 2\]/);
    const int32 = tensor(Int32Array.from(labels), [4, 2], { dtype: 'int32' });
    expect(int32.dtype).toBe('int32');
    expect(F.crossEntropy(logits, int32).item()).toBe(reference);
    expect(() => F.crossEntropy(logits, tensor(labels.map((l) => l > 0), [4, 2], { dtype: 'bool' }))).toThrow(/an int32 or float32 tensor of class indices/);
  });

  it('ignoreIndex: ignored positions add nothing, get no gradient, and leave the mean over the others', () => {
    const logits = randn([4, 5], { seed: 11 });
    logits.requiresGrad = true;
    const kept = F.crossEntropy(randnSlice(logits, [0, 2]), [3, 1]).item();
    const loss = F.crossEntropy(logits, [3, -100, 1, -100]);
    expect(loss.item()).toBeCloseTo(kept, 6);
    loss.backward();
    const grad = logits.grad!.toArray();
    for (const row of [1, 3]) for (let c = 0; c < 5; c++) expect(grad[row * 5 + c]).toBe(0);
    expect(F.crossEntropy(logits, [7, 7, 7, 7], { ignoreIndex: 7 }).item()).toBeNaN(); // 0/0, as in PyTorch
    expect(F.nllLoss(logits, [0, 7, 7, 7], { ignoreIndex: 7, reduction: 'sum' }).item()).toBeCloseTo(-logits.toArray()[0]!, 6);
  });

  it('a label out of range is a RangeError naming the parameter, the position and the value', () => {
    const logits = randn([3, 4], { seed: 1 });
    expect(() => F.crossEntropy(logits, [0, 4, 1])).toThrow(RangeError);
    expect(() => F.crossEntropy(logits, [0, 4, 1])).toThrow(/crossEntropy: labels: expected class indices in \[0, 3\].*received 4 at position 1/);
    expect(() => F.nllLoss(logits, [0, 1, 2.5])).toThrow(/nllLoss: labels: .*received 2.5 at position 2/);
    expect(() => F.crossEntropy(logits, [0, 1])).toThrow(/expected 3 labels/);
    expect(() => F.crossEntropy(randn([4], { seed: 1 }), [0])).toThrow(/logits: expected \[N, C\] or \[N, C, d1, \.\.\.\]/);
    expect(() => F.crossEntropy(logits, [0, 1, 2], { weight: randn([3], { seed: 1 }) })).toThrow(/options.weight: expected shape \[4\]/);
    expect(() => F.crossEntropy(logits, [0, 1, 2], { labelSmoothing: 1.5 })).toThrow(TypeError);
    expect(() => F.crossEntropy(logits, [0, 1, 2], { reduction: 'avg' as never })).toThrow(/options.reduction: expected 'mean', 'sum' or 'none'/);
    expect(() => F.crossEntropy(logits, [0, 1, 2], { smoothing: 0.1 } as never)).toThrow(/only the keys/);
    expect(() => F.crossEntropy(logits, 'abc' as never)).toThrow(TypeError);
  });
});

/** Rows of a [N, C] tensor as a new tensor (test helper, outside the graph). */
function randnSlice(t: Tensor, rows: number[]): Tensor {
  const [, c] = t.shape as [number, number];
  const values = t.toArray();
  return tensor(rows.flatMap((r) => Array.from(values.subarray(r * c, (r + 1) * c))), [rows.length, c]);
}

describe('class loss native entry points', () => {
  it('return only what each reduction keeps, and the backward in the shape asked for', async () => {
    const { native } = await import('../ts/native.js');
    const logits = native.randn([6, 4], seed % 2 ** 31, 'cpu', 0, 1);
    const labels = native.fromArray(Float32Array.from(randomLabels(6, 4)), [6], 'cpu');
    const options = { outer: 6, classes: 4, inner: 1, ignoreIndex: -100, labelSmoothing: 0, classWeight: null, fromLogits: true };
    const mean = native.classLoss(logits, labels, { ...options, reduction: 'mean' });
    expect([mean.positionLoss, mean.reduced?.shape, mean.weightTotal?.shape, mean.saved?.shape]).toEqual([null, [1], [1], [6, 4]]);
    const sum = native.classLoss(logits, labels, { ...options, reduction: 'sum' });
    expect([sum.positionLoss, sum.reduced?.shape, sum.weightTotal, sum.saved?.shape]).toEqual([null, [1], null, [6, 4]]);
    const none = native.classLoss(logits, labels, { ...options, reduction: 'none' });
    expect([none.positionLoss?.shape, none.reduced, none.weightTotal]).toEqual([[6], null, null]);
    // The mean is the per-position losses' mean, and sum their sum (float32 of a float64 sum).
    const perPosition = none.positionLoss!.toArray();
    const total = perPosition.reduce((a, b) => a + b, 0);
    expect(sum.reduced!.toArray()[0]).toBeCloseTo(total, 5);
    expect(mean.reduced!.toArray()[0]).toBeCloseTo(total / 6, 5);
    const dloss = native.full([1], 1, 'cpu');
    expect(native.classLossBackward(mean.saved, labels, dloss, mean.weightTotal, options).shape).toEqual([6, 4, 1]);
    const shaped = native.classLossBackward(mean.saved, labels, dloss, mean.weightTotal, options, [6, 4]);
    expect(shaped.shape).toEqual([6, 4]);
    expect(() => native.classLossBackward(mean.saved, labels, dloss, mean.weightTotal, options, [6, 5])).toThrow(
      /classLossBackward: shape: expected 24 elements \(outer·classes·inner\), got \[6, 5\]/,
    );
  });
});

describe('pointwise losses', () => {
  it(`mse, l1, huber and smooth L1 equal their definitions (${reproduce(seed)})`, () => {
    const x = randn([6, 7], { seed: (seed + 1) % 2 ** 31, std: 2 });
    const y = randn([6, 7], { seed: (seed + 2) % 2 ** 31 });
    const xs = x.toArray(), ys = y.toArray();
    const mean = (f: (d: number) => number): number => Array.from(xs).reduce((s, v, i) => s + f(v - ys[i]!), 0) / xs.length;
    expect(F.mseLoss(x, y).item()).toBeCloseTo(mean((d) => d * d), 5);
    expect(F.l1Loss(x, y).item()).toBeCloseTo(mean((d) => Math.abs(d)), 5);
    expect(F.huberLoss(x, y, { delta: 0.7 }).item()).toBeCloseTo(mean((d) => (Math.abs(d) < 0.7 ? 0.5 * d * d : 0.7 * (Math.abs(d) - 0.35))), 5);
    expect(F.smoothL1Loss(x, y, { beta: 0.7 }).item()).toBeCloseTo(mean((d) => (Math.abs(d) < 0.7 ? (0.5 * d * d) / 0.7 : Math.abs(d) - 0.35)), 5);
    expect(F.smoothL1Loss(x, y, { beta: 0 }).item()).toBeCloseTo(F.l1Loss(x, y).item(), 6);
    expect(F.mseLoss(x, y, { reduction: 'none' }).shape).toEqual([6, 7]);
  });

  it('binaryCrossEntropyWithLogits stays finite and exact for logits of magnitude 1e4', () => {
    const x = tensor([1e4, -1e4, 1e4, -1e4], [4]);
    const y = tensor([1, 0, 0, 1], [4]);
    expect(Array.from(F.binaryCrossEntropyWithLogits(x, y, { reduction: 'none' }).toArray())).toEqual([0, 0, 1e4, 1e4]);
    const p = tensor([0, 1, 0.5], [3]);
    expect(Array.from(F.binaryCrossEntropy(p, tensor([1, 0, 1], [3]), { reduction: 'none' }).toArray())[0]).toBe(100);
  });

  it('weight and posWeight broadcast over a suffix of the input shape; other shapes are a RangeError', () => {
    const x = randn([3, 4], { seed: 3 });
    const y = tensor(new Float32Array(12).fill(1), [3, 4]);
    const weight = tensor([1, 2, 3, 4], [4]);
    const none = F.binaryCrossEntropyWithLogits(x, y, { reduction: 'none' }).toArray();
    const weighted = F.binaryCrossEntropyWithLogits(x, y, { reduction: 'none', weight }).toArray();
    weighted.forEach((v, i) => expect(v).toBeCloseTo(none[i]! * (1 + (i % 4)), 5));
    expect(() => F.binaryCrossEntropyWithLogits(x, y, { posWeight: tensor([1, 2, 3], [3]) })).toThrow(/options.posWeight: expected a shape that broadcasts/);
    expect(() => F.mseLoss(x, randn([4, 3], { seed: 1 }))).toThrow(/mseLoss: target: expected the input's shape \[3, 4\], received \[4, 3\]/);
    expect(() => F.huberLoss(x, y, { delta: 0 })).toThrow(/options.delta: expected a finite number > 0/);
  });
});

describe('loss layers', () => {
  it('each layer equals its functional form with the same options', () => {
    const x = randn([4, 3], { seed: 21 });
    const y = tensor(Float32Array.from({ length: 12 }, (_, i) => (i % 3) / 2), [4, 3]);
    const p = tensor(Float32Array.from({ length: 12 }, (_, i) => 0.1 + 0.07 * i), [4, 3]);
    const labels = [2, 0, 1, 2];
    const w = tensor([0.5, 1, 2], [3]);
    const pairs: [number, number][] = [
      [new nn.MSELoss({ reduction: 'sum' }).forward(x, y).item(), F.mseLoss(x, y, { reduction: 'sum' }).item()],
      [new nn.L1Loss().forward(x, y).item(), F.l1Loss(x, y).item()],
      [new nn.HuberLoss({ delta: 0.3 }).forward(x, y).item(), F.huberLoss(x, y, { delta: 0.3 }).item()],
      [new nn.SmoothL1Loss({ beta: 0.3 }).forward(x, y).item(), F.smoothL1Loss(x, y, { beta: 0.3 }).item()],
      [new nn.BCELoss({ weight: w }).forward(p, y).item(), F.binaryCrossEntropy(p, y, { weight: w }).item()],
      [new nn.BCEWithLogitsLoss({ posWeight: w }).forward(x, y).item(), F.binaryCrossEntropyWithLogits(x, y, { posWeight: w }).item()],
      [new nn.NLLLoss({ weight: w }).forward(x, labels).item(), F.nllLoss(x, labels, { weight: w }).item()],
      [new nn.CrossEntropyLoss({ labelSmoothing: 0.1, ignoreIndex: 1 }).forward(x, labels).item(), F.crossEntropy(x, labels, { labelSmoothing: 0.1, ignoreIndex: 1 }).item()],
    ];
    for (const [layer, functional] of pairs) expect(layer).toBe(functional);
    expect(() => new nn.MSELoss({ delta: 1 } as never)).toThrow(/nn.MSELoss: options: expected only the keys reduction/);
    expect(nn.parameterCount(new nn.CrossEntropyLoss())).toBe(0);
  });

  it('each layer is its own class, named as in PyTorch, with its own option keys', () => {
    const layers = [
      [nn.MSELoss, 'MSELoss', 'reduction'],
      [nn.L1Loss, 'L1Loss', 'reduction'],
      [nn.HuberLoss, 'HuberLoss', 'reduction, delta'],
      [nn.SmoothL1Loss, 'SmoothL1Loss', 'reduction, beta'],
      [nn.BCELoss, 'BCELoss', 'reduction, weight'],
      [nn.BCEWithLogitsLoss, 'BCEWithLogitsLoss', 'reduction, weight, posWeight'],
      [nn.NLLLoss, 'NLLLoss', 'reduction, ignoreIndex, weight'],
      [nn.CrossEntropyLoss, 'CrossEntropyLoss', 'reduction, ignoreIndex, weight, labelSmoothing'],
    ] as const;
    for (const [Layer, name, keys] of layers) {
      const layer = new Layer();
      expect(layer.constructor.name).toBe(name);
      expect(layer).toBeInstanceOf(nn.Module);
      for (const [Other] of layers) expect(layer instanceof Other).toBe(Other === Layer);
      expect(layer.options).toEqual({});
      const options = { reduction: 'sum' as const };
      expect(new Layer(options).options).toBe(options);
      expect(() => new Layer({ unknown: 1 } as never)).toThrow(
        new TypeError(`nn.${name}: options: expected only the keys ${keys}, received the string "unknown"`),
      );
      expect(() => new Layer(3 as never)).toThrow(TypeError);
    }
  });
});

describe('determinism', () => {
  it('losses and gradients are the same bits with 1, 2 and 3 threads (fixed-order reductions)', () => {
    const x = randn([64, 10, 80], { seed: 41 }); // 51,200 elements: above the size where the CPU kernels go parallel
    const target = randn([64, 10, 80], { seed: 42 });
    const labels = Array.from(randomLabels(64 * 80, 10));
    const results = [1, 2, 3].map((threads) => {
      setNumThreads(threads);
      const xs = tensor(x.toArray(), x.shape);
      xs.requiresGrad = true;
      const loss = F.add(F.add(F.crossEntropy(xs, labels, { labelSmoothing: 0.1 }), F.binaryCrossEntropyWithLogits(xs, F.scale(target, 0.1))), F.huberLoss(xs, target));
      loss.backward();
      return [Buffer.from(loss.toArray().buffer), Buffer.from(xs.grad!.toArray().buffer)];
    });
    setNumThreads(0);
    expect(results[1]).toEqual(results[0]);
    expect(results[2]).toEqual(results[0]);
  });
});

describe.skipIf(!cudaUsable)('losses on cuda', () => {
  it(`every loss and its gradient match the CPU (${reproduce(seed)})`, () => {
    const x = randn([8, 5, 3], { seed: (seed + 7) % 2 ** 31, std: 3 });
    const target = randn([8, 5, 3], { seed: (seed + 8) % 2 ** 31 }).toArray().map((v) => 1 / (1 + Math.exp(-v)));
    const labels = Array.from(randomLabels(24, 5)).map((l, i) => (i % 7 === 0 ? -100 : l));
    const weight = tensor([0.5, 1, 1.5, 2, 3], [5]);
    const runs: ((x: Tensor, y: Tensor, w: Tensor) => Tensor)[] = [
      (x, y) => F.mseLoss(x, y),
      (x, y) => F.l1Loss(x, y, { reduction: 'sum' }),
      (x, y) => F.huberLoss(x, y, { delta: 0.5 }),
      (x, y) => F.smoothL1Loss(x, y, { beta: 0.5, reduction: 'sum' }),
      (x, y) => F.binaryCrossEntropyWithLogits(x, y, { posWeight: tensor([2, 1, 0.5], [3], { device: x.device }) }),
      (x, y) => F.binaryCrossEntropy(F.scale(y, 0.9), y),
      (x, _y, w) => F.crossEntropy(x, labels, { weight: w, labelSmoothing: 0.2 }),
      (x, _y, w) => F.crossEntropy(x, labels, { weight: w, reduction: 'none' }),
      (x) => F.nllLoss(x, labels, { reduction: 'sum' }),
    ];
    for (const [i, run] of runs.entries()) {
      const results = (['cpu', 'cuda'] as const).map((device) => {
        const xd = x.to(device);
        xd.requiresGrad = true;
        const y = run(xd, tensor(target, [8, 5, 3], { device }), weight.to(device));
        const out = y.toArray();
        F.sum(y).backward();
        return { out, grad: xd.grad!.toArray() };
      });
      const [cpu, cuda] = results as [{ out: Float32Array; grad: Float32Array }, { out: Float32Array; grad: Float32Array }];
      cpu.out.forEach((v, k) => expect(cuda.out[k], `loss ${i} output ${k}`).toBeCloseTo(v, 4));
      cpu.grad.forEach((v, k) => expect(cuda.grad[k], `loss ${i} gradient ${k}`).toBeCloseTo(v, 5));
    }
  });
});
