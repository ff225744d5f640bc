// nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell and nn.Embedding:
//  - against torch itself (test/fixtures/rnn_torch.json, scripts/make_rnn_fixtures.py): state dicts in both of
//    torch's weight-norm naming schemes imported with io.importTorchWeightNorm, then output, final states and the
//    gradient of every input, initial state and parameter (v, g, biases) in float64;
//  - against the float64 reference of test/reference/rnn.ts on fresh random inputs every run (forward, and gradients
//    against central differences of the reference);
//  - bad shapes and options are clear errors naming the parameter.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { backend, type Device, io, nn, noGrad, optim, randn, setNumThreads, type Tensor, tensor, tidy } from '../ts/index.js';
import { maxAbs, normals, relativeError, reproduce, runSeed } from './helpers.js';
import { referenceRecurrentLayer } from './reference/rnn.js';

const F = nn.functional;
const cudaUsable = backend().cuda.usable;
const devices: Device[] = ['cpu', ...(cudaUsable ? (['cuda'] as const) : [])];
if (!cudaUsable) console.log(`rnn: CUDA cases skipped: ${backend().cuda.reason}`);

interface Stored {
  shape: number[];
  data: number[];
}

interface TorchCase {
  name: string;
  layer: 'LSTM' | 'GRU' | 'LSTMCell' | 'GRUCell';
  inputSize: number;
  hiddenSize: number;
  options: Record<string, unknown>;
  scheme: string;
  stateDict: Record<string, Stored>;
  x: Stored;
  h0: Stored | null;
  c0: Stored | null;
  cotangents: Record<string, Stored>;
  expected: Record<string, Stored>;
  grads: Record<string, number[]>;
}

const fixture = JSON.parse(readFileSync(new URL('./fixtures/rnn_torch.json', import.meta.url), 'utf8')) as { cases: TorchCase[] };

// float32 against torch's float64 on the same float32 values, as max error / max|torch|: each output is a few
// dot products of ≤ 12 terms per step through ≤ 6 steps and 2 layers, where every step's rounding (a few 2^-24)
// is carried on; 2e-5 is ~300 ulps. Gradients add up the same terms over all steps and, for g, over a whole gate row
// (terms that cancel), so they get 1e-4.
const FORWARD_TOLERANCE = 2e-5;
const GRADIENT_TOLERANCE = 1e-4;

const toTensor = (s: Stored, device: Device, requiresGrad = false): Tensor => {
  const t = tensor(Float32Array.from(s.data), s.shape, { device });
  t.requiresGrad = requiresGrad;
  return t;
};

type AnyRecurrent = nn.LSTM | nn.GRU | nn.LSTMCell | nn.GRUCell;

function build(c: TorchCase): AnyRecurrent {
  const options = c.options as nn.RecurrentOptions;
  switch (c.layer) {
    case 'LSTM':
      return new nn.LSTM(c.inputSize, c.hiddenSize, options);
    case 'GRU':
      return new nn.GRU(c.inputSize, c.hiddenSize, options);
    case 'LSTMCell':
      return new nn.LSTMCell(c.inputSize, c.hiddenSize, options as nn.CellOptions);
    case 'GRUCell':
      return new nn.GRUCell(c.inputSize, c.hiddenSize, options as nn.CellOptions);
  }
}

/** Runs any of the four with optional initial states: { output?, h, c? }. */
function run(model: AnyRecurrent, x: Tensor, h0: Tensor | null, c0: Tensor | null): Record<string, Tensor> {
  if (model instanceof nn.LSTM) {
    const { output, h, c } = model.forward(x, { ...(h0 ? { h: h0 } : {}), ...(c0 ? { c: c0 } : {}) });
    return { output, h, c };
  }
  if (model instanceof nn.GRU) {
    const { output, h } = model.forward(x, h0 ? { h: h0 } : undefined);
    return { output, h };
  }
  if (model instanceof nn.LSTMCell) return model.forward(x, { ...(h0 ? { h: h0 } : {}), ...(c0 ? { c: c0 } : {}) });
  return { h: model.forward(x, h0 ?? undefined) };
}

describe.each(devices)('against torch (float64), state dicts imported from torch, on %s', (device) => {
  it.each(fixture.cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const model = build(c);
    const torchState = Object.fromEntries(Object.entries(c.stateDict).map(([name, s]) => [name, toTensor(s, 'cpu')]));
    io.importTorchWeightNorm(torchState, model);
    for (const t of Object.values(torchState)) t.dispose();
    model.to(device);
    const x = toTensor(c.x, device, true);
    const h0 = c.h0 ? toTensor(c.h0, device, true) : null;
    const c0 = c.c0 ? toTensor(c.c0, device, true) : null;
    const problems: string[] = [];
    try {
      tidy(() => {
        const outputs = run(model, x, h0, c0);
        let loss: Tensor | null = null;
        for (const [name, expected] of Object.entries(c.expected)) {
          const got = outputs[name];
          expect(got, `${name} returned`).toBeDefined();
          expect(got!.shape, `${name} shape`).toEqual(expected.shape);
          const error = relativeError(got!.toArray(), expected.data);
          if (!(error <= FORWARD_TOLERANCE)) problems.push(`${name}: error ${error.toExponential(2)}`);
          const term = F.sum(F.mul(got!, toTensor(c.cotangents[name]!, device)));
          loss = loss ? F.add(loss, term) : term;
        }
        loss!.backward();
      });
      const ours: Record<string, Tensor> = { ...model.stateDict(), x, ...(h0 ? { h0 } : {}), ...(c0 ? { c0 } : {}) };
      expect(Object.keys(c.grads).sort(), 'a torch gradient for every parameter and input').toEqual(Object.keys(ours).sort());
      for (const [name, expected] of Object.entries(c.grads)) {
        const grad = ours[name]!.grad;
        if (!grad) {
          problems.push(`${name}: no gradient`);
          continue;
        }
        const error = relativeError(grad.toArray(), expected);
        if (!(error <= GRADIENT_TOLERANCE)) problems.push(`gradient of ${name}: error ${error.toExponential(2)} (max|torch| ${maxAbs(expected).toPrecision(3)})`);
      }
    } finally {
      for (const t of [x, h0, c0]) {
        t?.grad?.dispose();
        t?.dispose();
      }
      model.dispose();
    }
    expect(problems).toEqual([]);
  });
});

/** w = g·v/max(‖v‖, eps) in float64, for v [rows, columns] and weight-norm dim 0 (per row), 1 (per column) or null. */
function referenceWeightNorm(v: Float64Array, g: Float64Array, rows: number, columns: number, dim: 0 | 1 | null, eps: number): Float64Array {
  const channel = (r: number, k: number) => (dim === 0 ? r : dim === 1 ? k : 0);
  const squares = new Float64Array(g.length);
  for (let r = 0; r < rows; r++) for (let k = 0; k < columns; k++) squares[channel(r, k)] += v[r * columns + k]! ** 2;
  const w = new Float64Array(v.length);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < columns; k++) {
      const c = channel(r, k);
      w[r * columns + k] = (g[c]! * v[r * columns + k]!) / Math.max(Math.sqrt(squares[c]!), eps);
    }
  }
  return w;
}

type WeightNormDims = { ih: 0 | 1 | null; hh: 0 | 1 | null } | null;

/**
 * One layer on fresh random inputs, weights and initial states from this run's seed, against the float64 reference:
 * output, final states, and the gradient of every parameter (w, or v and g), x and the initial states against
 * central differences of the reference. With weight norm, g is drawn independently of ‖v‖ (either sign), so a scale
 * applied to the wrong axis, twice or not at all changes every output.
 */
function checkAgainstReference(device: Device, cell: 'lstm' | 'gru', dims: WeightNormDims, seed: number): void {
  const [T, N, I, H] = [4, 3, 5, 4];
  const G = cell === 'lstm' ? 4 : 3;
  const weightNorm = dims ? { ih: dims.ih === null ? { dim: null } : { dim: dims.ih }, hh: dims.hh === null ? { dim: null } : { dim: dims.hh } } : false;
  const model = cell === 'lstm' ? new nn.LSTM(I, H, { weightNorm }) : new nn.GRU(I, H, { weightNorm });
  // Weights from this run's seed (scaled so the gates are neither saturated nor linear).
  const sd = model.stateDict();
  let offset = 0;
  const fresh = (shape: number[], scale: number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = normals(n, seed + 101 * ++offset).map((v) => Math.fround(scale * v));
    return { shape, data: Float32Array.from(values) };
  };
  model.loadStateDict(Object.fromEntries(Object.entries(sd).map(([name, t]) => [name, fresh([...t.shape], name.endsWith('_g') ? 1.5 : 0.6)])));
  model.to(device);
  const xs = fresh([T, N, I], 1);
  const hs = fresh([1, N, H], 1);
  const cs = fresh([1, N, H], 1);
  const co = { output: fresh([T, N, H], 1), h: fresh([1, N, H], 1), c: fresh([1, N, H], 1) };
  const x = tensor(xs.data, xs.shape, { device });
  const h0 = tensor(hs.data, hs.shape, { device });
  const c0 = tensor(cs.data, cs.shape, { device });
  for (const t of [x, h0, c0]) t.requiresGrad = true;
  const params = Object.fromEntries(Object.entries(model.stateDict()).map(([name, t]) => [name, Float64Array.from(t.toArray())]));
  const matrix = (p: Record<string, Float64Array>, name: string, columns: number, dim: 0 | 1 | null | undefined): Float64Array =>
    dims ? referenceWeightNorm(p[`${name}_v`]!, p[`${name}_g`]!, G * H, columns, dim!, 1e-12) : p[name]!;
  const reference = (p: Record<string, Float64Array>, xv: Float64Array, hv: Float64Array, cv: Float64Array) =>
    referenceRecurrentLayer({
      cell, steps: T, batch: N, inputSize: I, hiddenSize: H, x: xv, h0: hv, c0: cell === 'lstm' ? cv : null,
      wIh: matrix(p, 'weight_ih_l0', I, dims?.ih), wHh: matrix(p, 'weight_hh_l0', H, dims?.hh), bIh: p.bias_ih_l0!, bHh: p.bias_hh_l0!,
    });
  const lossOf = (r: ReturnType<typeof referenceRecurrentLayer>): number => {
    let sum = 0;
    r.output.forEach((v, i) => (sum += v * co.output.data[i]!));
    r.h.forEach((v, i) => (sum += v * co.h.data[i]!));
    r.c?.forEach((v, i) => (sum += v * co.c.data[i]!));
    return sum;
  };
  const x64 = Float64Array.from(xs.data);
  const h64 = Float64Array.from(hs.data);
  const c64 = Float64Array.from(cs.data);
  const want = reference(params, x64, h64, c64);
  try {
    tidy(() => {
      const got = cell === 'lstm' ? (model as nn.LSTM).forward(x, { h: h0, c: c0 }) : (model as nn.GRU).forward(x, { h: h0 });
      expect(relativeError(got.output.toArray(), want.output), `output (${reproduce(seed)})`).toBeLessThan(FORWARD_TOLERANCE);
      expect(relativeError(got.h.toArray(), want.h), `h (${reproduce(seed)})`).toBeLessThan(FORWARD_TOLERANCE);
      let loss = F.add(F.sum(F.mul(got.output, tensor(co.output.data, co.output.shape, { device }))), F.sum(F.mul(got.h, tensor(co.h.data, co.h.shape, { device }))));
      if ('c' in got) {
        expect(relativeError((got as nn.LSTMOutput).c.toArray(), want.c!), `c (${reproduce(seed)})`).toBeLessThan(FORWARD_TOLERANCE);
        loss = F.add(loss, F.sum(F.mul((got as nn.LSTMOutput).c, tensor(co.c.data, co.c.shape, { device }))));
      }
      loss.backward();
    });
    // Central differences of the float64 reference (step 1e-6: truncation ~1e-12, rounding ~1e-10) for every
    // element of every parameter, x and the initial states.
    const step = 1e-6;
    const numeric = (values: Float64Array, evaluate: () => number): Float64Array => {
      const out = new Float64Array(values.length);
      for (let i = 0; i < values.length; i++) {
        const keep = values[i]!;
        values[i] = keep + step;
        const plus = evaluate();
        values[i] = keep - step;
        const minus = evaluate();
        values[i] = keep;
        out[i] = (plus - minus) / (2 * step);
      }
      return out;
    };
    const evaluate = () => lossOf(reference(params, x64, h64, c64));
    const checks: [string, Tensor, Float64Array][] = [
      ...Object.entries(model.stateDict()).map(([name, t]): [string, Tensor, Float64Array] => [name, t, params[name]!]),
      ['x', x, x64],
      ['h0', h0, h64],
      ...(cell === 'lstm' ? ([['c0', c0, c64]] as [string, Tensor, Float64Array][]) : []),
    ];
    for (const [name, t, values] of checks) {
      const expected = numeric(values, evaluate);
      expect(t.grad, `${name} has a gradient`).not.toBeNull();
      expect(relativeError(t.grad!.toArray(), expected), `gradient of ${name} (${reproduce(seed)})`).toBeLessThan(GRADIENT_TOLERANCE);
    }
    expect(G * H).toBe(model.stateDict().bias_ih_l0!.shape[0]);
  } finally {
    for (const t of [x, h0, c0]) {
      t.grad?.dispose();
      t.dispose();
    }
    model.dispose();
  }
}

describe.each(devices)('fresh random inputs against the float64 reference on %s', (device) => {
  const seed = runSeed();

  it.each(['lstm', 'gru'] as const)('%s: output, final states and gradients (central differences of the reference)', (cell) => {
    checkAgainstReference(device, cell, null, seed);
  });

  // dim 0 on a matrix runs the kernels on v with g/‖v‖ in the GEMM epilogue (forward) and on the gate gradients
  // (backward); any other dim materializes w. Both, and the two mixed in one layer.
  it.each([
    ['lstm', { ih: 0, hh: 0 }],
    ['gru', { ih: 0, hh: 0 }],
    ['lstm', { ih: 1, hh: 0 }],
    ['gru', { ih: 0, hh: null }],
    ['lstm', { ih: null, hh: 1 }],
  ] as const)('%s, weight norm %j: output, final states and the gradients of v and g', (cell, dims) => {
    checkAgainstReference(device, cell, dims, seed);
  });
});

describe('weight norm on the recurrent matrices', () => {
  it('names v and g as weight_hh_l0_v / weight_hh_l0_g, one g per gate row by default, any dim, per matrix', () => {
    const all = new nn.LSTM(3, 4, { numLayers: 2, weightNorm: true });
    const shapes = Object.fromEntries(Object.entries(all.stateDict()).map(([k, t]) => [k, t.shape]));
    expect(shapes).toEqual({
      weight_ih_l0_v: [16, 3], weight_ih_l0_g: [16], weight_hh_l0_v: [16, 4], weight_hh_l0_g: [16],
      bias_ih_l0: [16], bias_hh_l0: [16],
      weight_ih_l1_v: [16, 4], weight_ih_l1_g: [16], weight_hh_l1_v: [16, 4], weight_hh_l1_g: [16],
      bias_ih_l1: [16], bias_hh_l1: [16],
    });
    const perMatrix = new nn.GRU(3, 4, { weightNorm: { hh: { dim: 1 } }, bias: false });
    expect(Object.fromEntries(Object.entries(perMatrix.stateDict()).map(([k, t]) => [k, t.shape]))).toEqual({
      weight_ih_l0: [12, 3], weight_hh_l0_v: [12, 4], weight_hh_l0_g: [4],
    });
    const whole = new nn.LSTMCell(2, 3, { weightNorm: { dim: null } });
    expect(whole.stateDict().weight_ih_g!.shape).toEqual([1]);
    for (const m of [all, perMatrix, whole]) m.dispose();
  });

  it('starts at w = v (g = ‖v‖ per row) and follows an optimizer step (the cached norm is refreshed)', () => {
    const seed = runSeed();
    const normalized = new nn.LSTM(3, 5, { weightNorm: true });
    const plain = new nn.LSTM(3, 5);
    const state = normalized.stateDict();
    const asPlain = { weight_ih_l0: state.weight_ih_l0_v!, weight_hh_l0: state.weight_hh_l0_v!, bias_ih_l0: state.bias_ih_l0!, bias_hh_l0: state.bias_hh_l0! };
    plain.loadStateDict(asPlain);
    const x = randn([4, 2, 3], { seed });
    tidy(() => {
      const a = normalized.forward(x).output.toArray();
      const b = plain.forward(x).output.toArray();
      expect(relativeError(a, b), reproduce(seed)).toBeLessThan(1e-6);
    });
    const sgd = new optim.SGD(normalized.parameters(), { lr: 0.5 });
    tidy(() => {
      F.sum(normalized.forward(x).output).backward();
      sgd.step();
    });
    // A fresh model loaded with the updated v and g must agree: a stale cached ‖v‖ would not.
    const reloaded = new nn.LSTM(3, 5, { weightNorm: true });
    reloaded.loadStateDict(normalized.stateDict());
    tidy(() => {
      expect(relativeError(normalized.forward(x).output.toArray(), reloaded.forward(x).output.toArray()), reproduce(seed)).toBeLessThan(1e-6);
    });
    x.dispose();
    for (const m of [normalized, plain, reloaded]) m.dispose();
  });

  it('nn.removeWeightNorm / removeWeightNorms fold the recurrent matrices into plain weights under PyTorch\'s names and order', () => {
    const seed = runSeed();
    // A 2-layer LSTM normalized over dim 1 on ih (so g is not ‖v‖ of the default rows) and the default dim on hh,
    // after an optimizer step (g ≠ ‖v‖): folding must keep the outputs and leave a plain LSTM's state dict.
    const lstm = new nn.LSTM(3, 4, { numLayers: 2, weightNorm: { ih: { dim: 1 }, hh: true } });
    const x = randn([5, 2, 3], { seed });
    const sgd = new optim.SGD(lstm.parameters(), { lr: 0.3 });
    tidy(() => {
      F.sum(lstm.forward(x).output).backward();
      sgd.step();
    });
    const before = tidy(() => lstm.forward(x).output.toFloat32Array());
    expect(lstm.isWeightNormalized).toBe(true);
    nn.removeWeightNorm(lstm);
    expect(lstm.isWeightNormalized).toBe(false);
    expect(Object.keys(lstm.stateDict())).toEqual(Object.keys(new nn.LSTM(3, 4, { numLayers: 2 }).stateDict()));
    const after = tidy(() => lstm.forward(x).output.toFloat32Array());
    // w = g·v/‖v‖ rounded once to float32, then the same products: a few float32 roundings apart.
    expect(relativeError(after, before), reproduce(seed)).toBeLessThan(1e-5);
    // The folded layer trains as a plain one: gradients reach the new weights.
    tidy(() => F.sum(lstm.forward(x).output).backward());
    expect(lstm.stateDict().weight_hh_l1!.grad, 'gradient of a folded weight').not.toBeNull();

    // In a module tree, with a cell: removeWeightNorms folds every recurrent and weighted layer.
    class Tagger extends nn.Module {
      readonly cell = this.registerModule('cell', new nn.GRUCell(3, 4, { weightNorm: true }));
      readonly head = this.registerModule('head', new nn.Linear(4, 2, { weightNorm: true }));
      forward(input: Tensor): Tensor {
        return this.head.forward(this.cell.forward(input));
      }
    }
    const tagger = new Tagger();
    const step = randn([2, 3], { seed: seed + 1 });
    const y0 = tidy(() => tagger.forward(step).toFloat32Array());
    nn.removeWeightNorms(tagger);
    expect(Object.keys(tagger.stateDict())).toEqual(['cell.weight_ih', 'cell.weight_hh', 'cell.bias_ih', 'cell.bias_hh', 'head.weight', 'head.bias']);
    expect(relativeError(tidy(() => tagger.forward(step).toFloat32Array()), y0), reproduce(seed)).toBeLessThan(1e-5);
    expect(() => nn.removeWeightNorm(new nn.Embedding(3, 2) as never)).toThrow(/nn\.removeWeightNorm: layer/);
    for (const t of [x, step]) t.dispose();
    lstm.dispose();
    tagger.dispose();
  });
});

describe('determinism', () => {
  it('forward and backward of a weight-normalized 2-layer LSTM and a GRU are bitwise the same with 1, 2 and 3 threads', () => {
    const seed = runSeed();
    const results = [1, 2, 3].map((threads) => {
      setNumThreads(threads);
      const out: number[][] = [];
      for (const make of [() => new nn.LSTM(5, 33, { numLayers: 2, weightNorm: true }), () => new nn.GRU(5, 33)]) {
        const model = make();
        tidy(() => model.loadStateDict(Object.fromEntries(Object.entries(model.stateDict()).map(([name, t], i) => [name, randn([...t.shape], { seed: seed + i, std: 0.3 })]))));
        const x = randn([7, 9, 5], { seed: seed + 99 });
        x.requiresGrad = true;
        tidy(() => {
          const { output, h } = model.forward(x);
          out.push(Array.from(output.toArray()));
          F.sum(F.add(F.sum(output), F.sum(F.mul(h, h)))).backward();
        });
        out.push(Array.from(x.grad!.toArray()), ...model.parameters().map((p) => Array.from(p.grad!.toArray())));
        x.grad!.dispose();
        x.dispose();
        model.dispose();
      }
      return out;
    });
    setNumThreads(0);
    expect(results[1], `2 threads vs 1 (${reproduce(seed)})`).toEqual(results[0]);
    expect(results[2], `3 threads vs 1 (${reproduce(seed)})`).toEqual(results[0]);
  });
});

describe('checkpoints', () => {
  it('io.save / io.loadInto round-trips a weight-normalized LSTM (same outputs after loading)', () => {
    const seed = runSeed();
    const dir = mkdtempSync(join(tmpdir(), 'weightnorm-rnn-'));
    const path = join(dir, 'lstm.safetensors');
    const saved = new nn.LSTM(3, 4, { numLayers: 2, weightNorm: true });
    const loaded = new nn.LSTM(3, 4, { numLayers: 2, weightNorm: true });
    const x = randn([5, 2, 3], { seed });
    try {
      io.save(saved, path);
      io.loadInto(loaded, path);
      tidy(() => {
        expect(Array.from(loaded.forward(x).output.toArray()), reproduce(seed)).toEqual(Array.from(saved.forward(x).output.toArray()));
      });
    } finally {
      x.dispose();
      saved.dispose();
      loaded.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('io.importTorchWeightNorm of recurrent weights', () => {
  it('refuses a weight-norm dim that differs from the layer\'s, naming the matrix, and changes nothing', () => {
    const model = new nn.GRU(2, 3, { weightNorm: { hh: { dim: 1 } } });
    const before = model.stateDict().weight_hh_l0_g!.toArray();
    const torchState: Record<string, Tensor> = {
      weight_ih_l0: randn([9, 2], { seed: 1 }),
      weight_hh_l0_g: randn([9, 1], { seed: 2 }), // torch's dim 0: one g per gate row
      weight_hh_l0_v: randn([9, 3], { seed: 3 }),
      bias_ih_l0: randn([9], { seed: 4 }),
      bias_hh_l0: randn([9], { seed: 5 }),
    };
    expect(() => io.importTorchWeightNorm(torchState, model)).toThrow(
      "'weight_hh_l0_g' has shape [9, 1] (torch weight_norm dim=0), but the matrix 'weight_hh_l0' normalizes with dim 1",
    );
    expect(Array.from(model.stateDict().weight_hh_l0_g!.toArray())).toEqual(Array.from(before));
    for (const t of Object.values(torchState)) t.dispose();
    model.dispose();
  });
});

describe('bad input is a clear error naming the parameter', () => {
  const lstm = new nn.LSTM(3, 4, { numLayers: 2 });
  const gru = new nn.GRU(3, 4, { batchFirst: true });

  it('wrong input size or rank', () => {
    const x = randn([5, 2, 6], { seed: 1 });
    expect(() => lstm.forward(x)).toThrow(RangeError);
    expect(() => lstm.forward(x)).toThrow('nn.LSTM.forward: x: expected [steps, batch, 3], received [5, 2, 6]');
    expect(() => gru.forward(x)).toThrow('nn.GRU.forward: x: expected [batch, steps, 3], received [5, 2, 6]');
    const flat = randn([5, 3], { seed: 2 });
    expect(() => lstm.forward(flat)).toThrow(RangeError);
    const cell = new nn.LSTMCell(3, 4);
    expect(() => cell.forward(x)).toThrow('nn.LSTMCell.forward: x: expected [batch, 3], received [5, 2, 6]');
    expect(() => lstm.forward([1, 2] as unknown as Tensor)).toThrow(TypeError);
    for (const t of [x, flat]) t.dispose();
    cell.dispose();
  });

  it('wrong state shape or kind', () => {
    const x = randn([5, 2, 3], { seed: 3 });
    const h = randn([1, 2, 4], { seed: 4 });
    expect(() => lstm.forward(x, { h })).toThrow('nn.LSTM.forward: state.h: expected shape [2, 2, 4], received [1, 2, 4]');
    expect(() => lstm.forward(x, { h: randn([2, 2, 4]), c: h })).toThrow('nn.LSTM.forward: state.c: expected shape [2, 2, 4]');
    expect(() => lstm.forward(x, h as unknown as nn.LSTMState)).toThrow(TypeError);
    expect(() => lstm.forward(x, { hx: h } as unknown as nn.LSTMState)).toThrow('nn.LSTM.forward: state: expected an object { h, c }');
    const cell = new nn.GRUCell(3, 4);
    expect(() => cell.forward(randn([2, 3]), randn([3, 4]))).toThrow('nn.GRUCell.forward: h: expected shape [2, 4], received [3, 4]');
    for (const t of [x, h]) t.dispose();
    cell.dispose();
  });

  it('bad constructor options', () => {
    expect(() => new nn.LSTM(0, 4)).toThrow('nn.LSTM: inputSize: expected an integer >= 1');
    expect(() => new nn.GRU(3, 4, { numLayers: 0 })).toThrow('nn.GRU: options.numLayers: expected an integer >= 1');
    expect(() => new nn.LSTM(3, 4, { batchFirst: 1 as unknown as boolean })).toThrow(TypeError);
    expect(() => new nn.LSTM(3, 4, { weightNorm: { dim: 2 } })).toThrow(RangeError);
    expect(() => new nn.LSTM(3, 4, { weightNorm: { hh: { dim: 'x' as unknown as number } } })).toThrow('options.weightNorm.hh.dim');
    expect(() => new nn.LSTM(3, 4, { dropout: 0.1 } as unknown as nn.RecurrentOptions)).toThrow('nn.LSTM: options: expected only the keys');
  });
});

describe.each(devices)('nn.Embedding on %s', (device) => {
  it('looks rows up and scatter-adds the gradient (repeated indices add, paddingIdx gets none)', () => {
    const seed = runSeed();
    const [num, dim] = [7, 5];
    const embedding = new nn.Embedding(num, dim, { paddingIdx: 2 }).to(device);
    const weight = embedding.weight.toArray();
    expect(Array.from(weight.slice(2 * dim, 3 * dim)), 'the padding row starts at zero').toEqual(new Array(dim).fill(0));
    const rng = normals(24, seed);
    const indices = Array.from(rng.slice(0, 12), (v) => Math.floor(Math.abs(v * 1000)) % num);
    indices[0] = indices[5] = 3; // a repeated index
    indices[7] = 2; // the padding index
    const shape = [3, 4];
    const co = normals(12 * dim, seed + 1).map(Math.fround);
    tidy(() => {
      const y = embedding.forward(tensor(Float32Array.from(indices), shape, { device }));
      expect(y.shape).toEqual([3, 4, dim]);
      const values = y.toArray();
      indices.forEach((index, i) => expect(Array.from(values.slice(i * dim, (i + 1) * dim)), `row ${i} (${reproduce(seed)})`).toEqual(Array.from(weight.slice(index * dim, (index + 1) * dim))));
      F.sum(F.mul(y, tensor(Float32Array.from(co), [3, 4, dim], { device }))).backward();
    });
    const expected = new Float64Array(num * dim);
    indices.forEach((index, i) => {
      if (index === 2) return;
      for (let j = 0; j < dim; j++) expected[index * dim + j]! += co[i * dim + j]!;
    });
    expect(relativeError(embedding.weight.grad!.toArray(), expected), reproduce(seed)).toBeLessThan(1e-6);
    embedding.dispose();
  });

  it('takes Int32Array and number[] indices and refuses bad ones', () => {
    const embedding = new nn.Embedding(4, 2).to(device);
    noGrad(() => {
      tidy(() => {
        expect(embedding.forward(Int32Array.from([1, 3])).shape).toEqual([2, 2]);
        expect(embedding.forward([0]).shape).toEqual([1, 2]);
        const int32 = tensor(Int32Array.from([3, 0, 2, 1]), [2, 2], { device, dtype: 'int32' });
        const rows = embedding.forward(int32).toArray();
        const table = embedding.weight.toArray();
        expect(Array.from(rows)).toEqual([3, 0, 2, 1].flatMap((i) => Array.from(table.slice(2 * i, 2 * i + 2))));
        expect(() => embedding.forward(tensor([true], [1], { dtype: 'bool' }))).toThrow('nn.Embedding.forward: indices: expected an int32 tensor');
      });
    });
    expect(() => embedding.forward([4])).toThrow('nn.Embedding.forward: indices: expected integers in [0, 3], received 4 at position 0');
    expect(() => embedding.forward([1.5])).toThrow(RangeError);
    expect(() => embedding.forward('1' as unknown as number[])).toThrow(TypeError);
    expect(() => new nn.Embedding(4, 2, { paddingIdx: 4 })).toThrow('nn.Embedding: options.paddingIdx: expected an index in [-4, 3], received 4');
    embedding.dispose();
  });
});
