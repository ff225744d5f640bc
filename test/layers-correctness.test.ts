// Layers, loader and initialization where they must behave as PyTorch does (behaviour read off torch 1.13; values
// checked against a float64 reference written here):
//   - eval-mode batch norm is differentiable (x, gamma, beta; the running statistics are constants), in a model and
//     alone; mean-only batch norm too;
//   - training batch norm refuses one value per channel and leaves its statistics alone on an empty batch;
//   - conv2d on an empty batch or zero input channels gives an (empty) output and gradients; shapes torch refuses
//     are RangeErrors naming the parameter;
//   - the loader refuses duplicate header keys and non-finite values (unless allowNonFinite), naming file and key;
//   - data-dependent init refuses batches that cannot give a standard deviation, and leaves the model as it was.
//
// Gradients are compared with central finite differences of a float64 reference written here (h = 1e-5: error
// ~1e-9), against float32 backward sums of a few dozen terms: 1e-4 of the gradient's scale; a wrong or missing
// term is O(1). Forwards: 2e-5 of the output's scale (float32 sums of a handful of products).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { backend, init, io, nn, optim, type Tensor, tensor, zeros } from '../ts/index.js';
import { normals, relativeError, reproduce, runSeed, uniformGenerator } from './helpers.js';
import { expectCheckpointError } from './expect-checkpoint-error.js';

const F = nn.functional;
const cudaUsable = backend().cuda.usable;
const devices = ['cpu', ...(cudaUsable ? ['cuda'] : [])] as const;
if (!cudaUsable) console.log(`layers-correctness: CUDA cases skipped: ${backend().cuda.reason}`);

const FORWARD_TOLERANCE = 2e-5;
const GRADIENT_TOLERANCE = 1e-4;

const work = mkdtempSync(join(tmpdir(), 'weightnorm-layers-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let fileCounter = 0;
const tempPath = (): string => join(work, `file-${fileCounter++}.safetensors`);

/** Seeded normals rounded to float32, so the library and the float64 reference see the same numbers. */
function values(n: number, seed: number, shift = 0): Float64Array {
  return Float64Array.from(normals(n, seed), (v) => Math.fround(v + shift));
}

/** Seeded values in [low, high), rounded to float32 (running variances must be positive). */
function uniformValues(n: number, seed: number, low: number, high: number): Float64Array {
  const uniform = uniformGenerator(seed);
  return Float64Array.from({ length: n }, () => Math.fround(low + (high - low) * uniform()));
}

const host = (shape: number[], data: Float64Array) => ({ shape, data: Float32Array.from(data) });

/** Central differences of loss() with respect to every element of params[i] (float64 throughout). */
function finiteDifferences(params: Float64Array[], i: number, loss: () => number): Float64Array {
  const p = params[i]!;
  const out = new Float64Array(p.length);
  for (let e = 0; e < p.length; e++) {
    const original = p[e]!;
    const h = 1e-5 * Math.max(1, Math.abs(original));
    p[e] = original + h;
    const up = loss();
    p[e] = original - h;
    const down = loss();
    p[e] = original;
    out[e] = (up - down) / (2 * h);
  }
  return out;
}

/** y[o, k, i] = f(x[o, k, i], k) over the channel layout of `shape` ([batch, channels, ...spatial]). */
function perChannel(x: Float64Array, shape: readonly number[], f: (value: number, k: number) => number): Float64Array {
  const [, channels = 1, ...spatial] = shape;
  const inner = spatial.reduce((a, b) => a * b, 1);
  return x.map((value, e) => f(value, Math.floor(e / inner) % channels));
}

/** x [batch, in] · wᵀ + b in float64. */
function linearReference(x: Float64Array, w: Float64Array, b: Float64Array, batch: number, inF: number, outF: number): Float64Array {
  const y = new Float64Array(batch * outF);
  for (let n = 0; n < batch; n++) {
    for (let o = 0; o < outF; o++) {
      let acc = b[o]!;
      for (let i = 0; i < inF; i++) acc += x[n * inF + i]! * w[o * inF + i]!;
      y[n * outF + o] = acc;
    }
  }
  return y;
}

const evalBatchNormReference = (x: Float64Array, shape: readonly number[], mean: Float64Array, variance: Float64Array, gamma: Float64Array, beta: Float64Array, eps: number) =>
  perChannel(x, shape, (v, k) => ((v - mean[k]!) / Math.sqrt(variance[k]! + eps)) * gamma[k]! + beta[k]!);

const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc += a[i]! * b[i]!;
  return acc;
};

function expectGradient(t: Tensor, reference: Float64Array, context: string): void {
  expect(t.grad, `${context}: no gradient`).not.toBeNull();
  expect(relativeError(t.grad!.toArray(), reference), context).toBeLessThan(GRADIENT_TOLERANCE);
}

function expectRangeError(fn: () => unknown, ...fragments: (string | RegExp)[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught, 'expected a RangeError').toBeInstanceOf(RangeError);
  for (const fragment of fragments) expect((caught as Error).message).toMatch(fragment);
}

// ---------------------------------------------------------------------------------------------------------------

describe.each(devices)('batch norm in evaluation mode is differentiable on %s', (device) => {
  const seed = runSeed();
  const eps = 1e-5;

  it('Linear → BatchNorm → Linear: every parameter and the input get the gradient torch gives', () => {
    const [batch, inF, hidden, outF] = [5, 4, 3, 2];
    // [x, w1, b1, gamma, beta, w2, b2]; the running statistics are constants.
    const params = [
      values(batch * inF, seed), values(hidden * inF, seed + 1), values(hidden, seed + 2),
      values(hidden, seed + 3, 1), values(hidden, seed + 4), values(outF * hidden, seed + 5), values(outF, seed + 6),
    ];
    const runningMean = values(hidden, seed + 7);
    const runningVar = uniformValues(hidden, seed + 8, 0.3, 2);
    const r = values(batch * outF, seed + 9);
    const model = new nn.Sequential(new nn.Linear(inF, hidden), new nn.BatchNorm(hidden, { eps }), new nn.Linear(hidden, outF));
    model.loadStateDict({
      '0.weight': host([hidden, inF], params[1]!), '0.bias': host([hidden], params[2]!),
      '1.gamma': host([hidden], params[3]!), '1.beta': host([hidden], params[4]!),
      '1.runningMean': host([hidden], runningMean), '1.runningVar': host([hidden], runningVar),
      '2.weight': host([outF, hidden], params[5]!), '2.bias': host([outF], params[6]!),
    });
    model.to(device).eval();
    const reference = (): Float64Array => {
      const h = linearReference(params[0]!, params[1]!, params[2]!, batch, inF, hidden);
      const z = evalBatchNormReference(h, [batch, hidden], runningMean, runningVar, params[3]!, params[4]!, eps);
      return linearReference(z, params[5]!, params[6]!, batch, hidden, outF);
    };
    const x = tensor(Float32Array.from(params[0]!), [batch, inF], { device });
    x.requiresGrad = true; // saliency: the gradient reaches the input through the batch norm
    const y = model.forward(x);
    const context = `eval Linear-BatchNorm-Linear on ${device} (${reproduce(seed)})`;
    expect(relativeError(y.toArray(), reference()), `${context}: forward`).toBeLessThan(FORWARD_TOLERANCE);
    F.sum(F.mul(y, tensor(Float32Array.from(r), [batch, outF], { device }))).backward();
    const loss = () => dot(reference(), r);
    const state = model.stateDict();
    const targets: [string, Tensor][] = [['x', x], ['0.weight', state['0.weight']!], ['0.bias', state['0.bias']!],
      ['1.gamma', state['1.gamma']!], ['1.beta', state['1.beta']!], ['2.weight', state['2.weight']!], ['2.bias', state['2.bias']!]];
    targets.forEach(([name, t], i) => expectGradient(t, finiteDifferences(params, i, loss), `${context}: d${name}`));
    expect(state['1.runningMean']!.grad, 'running statistics are constants').toBeNull();
    expect(state['1.runningVar']!.grad, 'running statistics are constants').toBeNull();
    model.dispose();
  });

  it('a lone BatchNorm in evaluation (rank 4): dx, dgamma, dbeta; the statistics of its forward are the ones used', () => {
    const shape = [2, 3, 2, 3];
    const size = shape.reduce((a, b) => a * b, 1);
    const params = [values(size, seed + 10), values(3, seed + 11, 1), values(3, seed + 12)];
    const runningMean = values(3, seed + 13);
    const runningVar = uniformValues(3, seed + 14, 0.3, 2);
    const r = values(size, seed + 15);
    const bn = new nn.BatchNorm(3, { eps });
    bn.loadStateDict({ gamma: host([3], params[1]!), beta: host([3], params[2]!), runningMean: host([3], runningMean), runningVar: host([3], runningVar) });
    bn.to(device).eval();
    const x = tensor(Float32Array.from(params[0]!), shape, { device });
    x.requiresGrad = true;
    const y = bn.forward(x);
    // A training forward before the backward moves the running statistics; the evaluation graph must not see it.
    bn.train().forward(tensor(Float32Array.from(values(size, seed + 16, 3)), shape, { device })).dispose();
    bn.eval();
    expect(() => F.sum(F.mul(y, tensor(Float32Array.from(r), shape, { device }))).backward()).not.toThrow();
    const reference = () => evalBatchNormReference(params[0]!, shape, runningMean, runningVar, params[1]!, params[2]!, eps);
    const loss = () => dot(reference(), r);
    const context = `eval BatchNorm rank 4 on ${device} (${reproduce(seed)})`;
    [x, bn.gamma, bn.beta].forEach((t, i) => expectGradient(t, finiteDifferences(params, i, loss), `${context}: input ${i}`));
    bn.dispose();
  });

  it('a lone BatchNorm in evaluation with only x requiring a gradient (adversarial inputs), and with only gamma', () => {
    const bn = new nn.BatchNorm(3, { eps }).to(device).eval();
    bn.gamma.requiresGrad = false;
    bn.beta.requiresGrad = false;
    const x = tensor(Float32Array.from(values(12, seed + 17)), [4, 3], { device });
    x.requiresGrad = true;
    F.sum(bn.forward(x)).backward();
    // Running statistics 0 and 1, gamma 1: dx = 1/sqrt(1 + eps) everywhere.
    expect(relativeError(x.grad!.toArray(), new Float64Array(12).fill(1 / Math.sqrt(1 + eps)))).toBeLessThan(1e-6);
    bn.gamma.requiresGrad = true;
    const frozen = tensor(Float32Array.from(values(12, seed + 17)), [4, 3], { device });
    F.sum(bn.forward(frozen)).backward();
    expect(bn.gamma.grad, 'gamma gets its gradient when x needs none').not.toBeNull();
    bn.dispose();
  });

  it('Linear → MeanOnlyBatchNorm → Linear in evaluation: y = h − running mean + bias, gradients to every parameter', () => {
    const [batch, inF, hidden, outF] = [5, 4, 3, 2];
    const params = [values(batch * inF, seed + 20), values(hidden * inF, seed + 21), values(hidden, seed + 22),
      values(hidden, seed + 23), values(outF * hidden, seed + 24), values(outF, seed + 25)];
    const runningMean = values(hidden, seed + 26);
    const r = values(batch * outF, seed + 27);
    const model = new nn.Sequential(new nn.Linear(inF, hidden), new nn.MeanOnlyBatchNorm(hidden), new nn.Linear(hidden, outF));
    model.loadStateDict({
      '0.weight': host([hidden, inF], params[1]!), '0.bias': host([hidden], params[2]!), '1.bias': host([hidden], params[3]!),
      '1.runningMean': host([hidden], runningMean), '2.weight': host([outF, hidden], params[4]!), '2.bias': host([outF], params[5]!),
    });
    model.to(device).eval();
    const reference = (): Float64Array => {
      const h = linearReference(params[0]!, params[1]!, params[2]!, batch, inF, hidden);
      const z = perChannel(h, [batch, hidden], (v, k) => v - runningMean[k]! + params[3]![k]!);
      return linearReference(z, params[4]!, params[5]!, batch, hidden, outF);
    };
    const x = tensor(Float32Array.from(params[0]!), [batch, inF], { device });
    x.requiresGrad = true;
    const y = model.forward(x);
    const context = `eval Linear-MeanOnlyBatchNorm-Linear on ${device} (${reproduce(seed)})`;
    expect(relativeError(y.toArray(), reference()), `${context}: forward`).toBeLessThan(FORWARD_TOLERANCE);
    F.sum(F.mul(y, tensor(Float32Array.from(r), [batch, outF], { device }))).backward();
    const loss = () => dot(reference(), r);
    const state = model.stateDict();
    [x, state['0.weight']!, state['0.bias']!, state['1.bias']!, state['2.weight']!, state['2.bias']!].forEach((t, i) =>
      expectGradient(t, finiteDifferences(params, i, loss), `${context}: input ${i}`),
    );
    model.dispose();
  });

  it('an optimizer step fine-tunes through an evaluation-mode BatchNorm (the first layer moves)', () => {
    const model = new nn.Sequential(new nn.Linear(4, 3), new nn.BatchNorm(3), new nn.Linear(3, 2)).to(device).eval();
    const first = model.stateDict()['0.weight']!;
    const before = first.toArray();
    const opt = new optim.SGD(model.parameters(), { lr: 0.1 });
    const x = tensor(Float32Array.from(values(20, seed + 30)), [5, 4], { device });
    F.sum(F.mul(model.forward(x), model.forward(x))).backward();
    opt.step();
    expect(relativeError(first.toArray(), before), 'the first Linear got no update').toBeGreaterThan(0);
    model.dispose();
  });
});

describe.each(devices)('batch norm in training mode on %s', (device) => {
  it('refuses one value per channel, as torch does ("expected more than 1 value per channel"), naming the shape', () => {
    for (const shape of [[1, 3], [1, 3, 1, 1], [1, 3, 1]]) {
      const bn = new nn.BatchNorm(3).to(device);
      const before = bn.runningMean.toArray();
      expectRangeError(() => bn.forward(zeros(shape, { device })), 'nn.BatchNorm.forward: x', 'more than 1 value per channel', `[${shape.join(', ')}]`);
      expect(bn.runningMean.toArray(), 'the running statistics are unchanged').toEqual(before);
      expectRangeError(() => F.batchNorm(zeros(shape, { device }), bn.gamma, bn.beta, 1e-5), 'batchNorm: x', `[${shape.join(', ')}]`);
      // Evaluation uses the running statistics: one value is fine there.
      expect(bn.eval().forward(zeros(shape, { device })).shape).toEqual(shape);
      bn.dispose();
    }
    const bn = new nn.BatchNorm(3).to(device);
    expect(bn.forward(tensor([1, 2, 3, 4, 5, 6], [1, 3, 1, 2], { device })).shape, 'two positions of one image are enough').toEqual([1, 3, 1, 2]);
    bn.dispose();
  });

  it('an empty batch gives an empty output and leaves the running statistics as they were (as torch)', () => {
    for (const layer of [new nn.BatchNorm(3), new nn.MeanOnlyBatchNorm(3)]) {
      layer.to(device);
      layer.forward(tensor(Float32Array.from(values(6, 1, 2)), [2, 3], { device })); // statistics away from 0 and 1
      const before = layer.namedBuffers().map(([, t]) => t.toArray());
      const x = zeros([0, 3], { device });
      x.requiresGrad = true;
      const y = layer.forward(x);
      expect(y.shape).toEqual([0, 3]);
      expect(layer.namedBuffers().map(([, t]) => t.toArray()), `${layer.constructor.name}: running statistics`).toEqual(before);
      F.sum(y).backward();
      expect(x.grad!.shape).toEqual([0, 3]);
      layer.dispose();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe.each(devices)('conv2d on empty and degenerate shapes on %s', (device) => {
  const seed = runSeed();

  it('an empty batch gives an empty output; the gradients are zero (weight, bias) and empty (x)', () => {
    const x = zeros([0, 3, 5, 5], { device });
    const w = tensor(Float32Array.from(values(54, seed)), [2, 3, 3, 3], { device });
    const b = tensor([0.5, -1], [2], { device });
    for (const t of [x, w, b]) t.requiresGrad = true;
    const y = F.conv2d(x, w, b, { padding: 0 });
    expect(y.shape).toEqual([0, 2, 3, 3]);
    F.sum(y).backward();
    expect(x.grad!.shape).toEqual([0, 3, 5, 5]);
    expect([...w.grad!.toArray()]).toEqual(new Array(54).fill(0));
    expect([...b.grad!.toArray()]).toEqual([0, 0]);
    const layer = new nn.Conv2d(3, 2, 3, { padding: 1, weightNorm: true }).to(device);
    expect(layer.forward(zeros([0, 3, 4, 4], { device })).shape).toEqual([0, 2, 4, 4]);
    layer.dispose();
  });

  it('zero input channels: y is the bias everywhere, dbias the sums of dy', () => {
    const x = zeros([2, 0, 4, 4], { device });
    const w = zeros([3, 0, 3, 3], { device });
    const b = tensor([1, -2, 0.25], [3], { device });
    for (const t of [x, w, b]) t.requiresGrad = true;
    const y = F.conv2d(x, w, b, { padding: 1 });
    expect(y.shape).toEqual([2, 3, 4, 4]);
    const want = perChannel(new Float64Array(96), [2, 3, 4, 4], (_, k) => [1, -2, 0.25][k]!);
    expect([...y.toArray()]).toEqual([...want]);
    const r = values(96, seed + 1);
    F.sum(F.mul(y, tensor(Float32Array.from(r), [2, 3, 4, 4], { device }))).backward();
    const dbias = [0, 0, 0];
    r.forEach((v, e) => (dbias[Math.floor(e / 16) % 3]! += v));
    expect(relativeError(b.grad!.toArray(), dbias)).toBeLessThan(1e-6);
    expect(x.grad!.shape).toEqual([2, 0, 4, 4]);
    expect(w.grad!.shape).toEqual([3, 0, 3, 3]);
    expect(F.conv2d(x, w, null).toArray().every((v) => v === 0), 'no bias: zeros').toBe(true);
  });

  it('shapes torch refuses are RangeErrors naming the parameter', () => {
    const w = zeros([2, 3, 3, 3], { device });
    // Zero height: no output position has data (torch: "Kernel size can't be greater than actual input size", or with
    // enough padding "Only zero batch or zero channel inputs are supported").
    expectRangeError(() => F.conv2d(zeros([1, 3, 0, 5], { device }), zeros([2, 3, 1, 1], { device })), 'conv2d: x', '[1, 3, 0, 5]');
    expectRangeError(() => F.conv2d(zeros([1, 3, 5, 0], { device }), w, null, { padding: 2 }), 'conv2d: x', '[1, 3, 5, 0]');
    expectRangeError(() => F.conv2d(zeros([1, 3, 5, 5], { device }), zeros([0, 3, 3, 3], { device })), 'conv2d: weight', '[0, 3, 3, 3]');
    expectRangeError(() => F.conv2d(zeros([1, 3, 5, 5], { device }), zeros([2, 3, 0, 0], { device })), 'conv2d: weight', '[2, 3, 0, 0]');
    const layer = new nn.Conv2d(3, 2, 1).to(device);
    expectRangeError(() => layer.forward(zeros([2, 3, 0, 4], { device })), 'conv2d: x');
    layer.dispose();
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('data-dependent initialization', () => {
  const seed = runSeed();

  it('an empty batch is a RangeError naming the batch, and the model is unchanged', () => {
    const model = new nn.Sequential(new nn.Linear(4, 3, { weightNorm: true }), new nn.ReLU(), new nn.Linear(3, 2));
    const before = Object.entries(model.stateDict()).map(([k, t]) => [k, [...t.toArray()]]);
    expectRangeError(() => init.dataDependent(model, zeros([0, 4])), 'init.dataDependent: batch', '[0, 4]');
    expect(Object.entries(model.stateDict()).map(([k, t]) => [k, [...t.toArray()]])).toEqual(before);
    model.dispose();
  });

  it('one value per unit (a batch of 1 into a Linear) is a RangeError naming the batch and the layer; the model is unchanged', () => {
    const model = new nn.Sequential(
      new nn.Conv2d(1, 2, 3, { padding: 1 }), new nn.ReLU(), new nn.Dropout(0.5, { seed: 3 }), new nn.Flatten(),
      new nn.Linear(32, 3, { weightNorm: true }),
    );
    const before = Object.entries(model.stateDict()).map(([k, t]) => [k, [...t.toArray()]]);
    const streams = model.namedRandomStreams();
    const image = tensor(Float32Array.from(values(16, seed)), [1, 1, 4, 4]);
    // The conv sees 16 positions per channel (enough); the Linear sees one example.
    expectRangeError(() => init.dataDependent(model, image), 'init.dataDependent: batch', "layer '4'", 'at least 2');
    expect(Object.entries(model.stateDict()).map(([k, t]) => [k, [...t.toArray()]]), 'all or nothing').toEqual(before);
    expect(model.namedRandomStreams(), 'the dropout stream too').toEqual(streams);
    model.dispose();
  });

  it('a unit constant on the batch keeps gain 1 (no division by σ = 0); everything stays finite', () => {
    const model = new nn.Sequential(new nn.Linear(2, 3, { weightNorm: true }));
    const x = tensor([0, 0, 0, 0, 0, 0], [3, 2]); // every pre-activation is 0: σ = 0 for every unit
    init.dataDependent(model, x, { seed: 1 });
    expect([...model.stateDict()['0.g']!.toArray()]).toEqual([1, 1, 1]);
    expect(model.stateDict()['0.bias']!.toArray().every((b) => b === 0), 'bias -μ/1 = 0').toBe(true);
    model.dispose();
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Loader.

/** A safetensors file whose header is the given JSON text (duplicate keys can only be written this way). */
function fileWithHeaderText(json: string, data: Uint8Array): string {
  const padded = json + ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(padded)));
  const path = tempPath();
  writeFileSync(path, Buffer.concat([length, Buffer.from(padded, 'utf8'), data]));
  return path;
}

type Entry = [name: string, shape: number[], dtype: string, bytes: Uint8Array];

function fileWithEntries(entries: Entry[]): string {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, shape, dtype, bytes] of entries) {
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
  }
  return fileWithHeaderText(JSON.stringify(header), Buffer.concat(entries.map((e) => e[3])));
}

const f32 = (v: number[]): Uint8Array => new Uint8Array(Float32Array.from(v).buffer);

/** A CheckpointError that names `file` (in its message too) and `key`. */
function expectCheckpointErrorAt(fn: () => unknown, file: string, key: string | undefined, ...fragments: (string | RegExp)[]): void {
  const error = expectCheckpointError(fn, file, ...fragments);
  expect(error.file).toBe(file);
  expect(error.key).toBe(key);
}

describe('loader: ambiguous and non-finite data', () => {
  const linear = () => new nn.Linear(2, 2);
  const snapshotOf = (m: nn.Module) => Object.entries(m.stateDict()).map(([k, t]) => [k, [...t.toArray()]]);

  it('a tensor listed twice in the header is an error naming the file and the key, at every entry point', () => {
    const entry = (shape: number[]) => `{"dtype":"F32","shape":[${shape.join(',')}],"data_offsets":[0,16]}`;
    const path = fileWithHeaderText(`{"weight":${entry([2, 2])},"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},"weight":${entry([4])}}`, f32([1, 2, 3, 4, 5, 6]));
    expectCheckpointErrorAt(() => io.load(path), path, 'weight', /'weight'.*more than once/);
    expectCheckpointErrorAt(() => io.inspect(path), path, 'weight', /more than once/);
    const model = linear();
    const before = snapshotOf(model);
    expectCheckpointErrorAt(() => io.loadInto(model, path), path, 'weight', /more than once/);
    expectCheckpointErrorAt(() => io.importTorchWeightNorm(path, model), path, 'weight', /more than once/);
    expect(snapshotOf(model)).toEqual(before);
    // Written with an escape, the same key is still the same key.
    const escaped = fileWithHeaderText(`{"w":${entry([4])},"\\u0077":${entry([2, 2])}}`, f32([1, 2, 3, 4]));
    expectCheckpointErrorAt(() => io.load(escaped), escaped, 'w', /more than once/);
  });

  it('a field or metadata key listed twice is an error too', () => {
    const field = fileWithHeaderText('{"w":{"dtype":"F32","shape":[2],"shape":[1],"data_offsets":[0,8]}}', f32([1, 2]));
    expectCheckpointErrorAt(() => io.load(field), field, 'w', /'shape'.*more than once/);
    const metadata = fileWithHeaderText('{"__metadata__":{"note":"a","note":"b"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32([1, 2]));
    expectCheckpointErrorAt(() => io.load(metadata), metadata, undefined, /__metadata__.*'note'.*more than once/);
  });

  it('NaN and infinite values are an error naming the file, key and position unless allowNonFinite', () => {
    const f64 = new Uint8Array(Float64Array.of(1, 1e300).buffer); // finite in F64, infinite as float32
    const f16 = new Uint8Array(Uint16Array.of(0x3c00, 0x7c00).buffer); // 1, +Infinity
    const bf16 = new Uint8Array(Uint16Array.of(0x3f80, 0x7fc0).buffer); // 1, NaN
    const cases: [Entry, RegExp][] = [
      [['weight', [2], 'F32', f32([0, Number.NaN])], /'weight'.*NaN at index 1/],
      [['weight', [2], 'F32', f32([Number.NEGATIVE_INFINITY, 0])], /'weight'.*-Infinity at index 0/],
      [['weight', [2], 'F64', f64], /'weight'.*1e\+300.*index 1.*float32/],
      [['weight', [2], 'F16', f16], /'weight'.*Infinity at index 1/],
      [['weight', [2], 'BF16', bf16], /'weight'.*NaN at index 1/],
    ];
    for (const [entry, message] of cases) {
      const path = fileWithEntries([entry]);
      expectCheckpointErrorAt(() => io.load(path), path, 'weight', message, /allowNonFinite/);
      const loaded = io.load(path, { allowNonFinite: true });
      expect(loaded.tensors.weight!.toArray().some((v) => !Number.isFinite(v)), `${entry[2]}: loaded as is`).toBe(true);
      loaded.tensors.weight!.dispose();
    }
  });

  it('loadInto and importTorchWeightNorm check every value too, and leave the model as it was', () => {
    const nan = fileWithEntries([['weight', [2, 2], 'F32', f32([1, 2, Number.NaN, 4])], ['bias', [2], 'F32', f32([0, 0])]]);
    const model = linear();
    const before = snapshotOf(model);
    expectCheckpointErrorAt(() => io.loadInto(model, nan), nan, 'weight', /NaN at index 2/);
    expectCheckpointErrorAt(() => io.importTorchWeightNorm(nan, model), nan, 'weight', /NaN at index 2/);
    expect(snapshotOf(model)).toEqual(before);
    io.loadInto(model, nan, { allowNonFinite: true });
    expect(Number.isNaN(model.stateDict().weight!.toArray()[2])).toBe(true);
    io.importTorchWeightNorm(nan, linear(), { allowNonFinite: true });
    expect(() => io.load(nan, { allowNonFinite: 'yes' as unknown as boolean })).toThrow(TypeError);

    // A training checkpoint whose optimizer state holds an infinity.
    const trained = new nn.Linear(2, 2);
    const opt = new optim.Adam(trained.parameters(), { lr: 1e-3 });
    F.sum(trained.forward(tensor([1, 2], [1, 2]))).backward();
    opt.step();
    const path = tempPath();
    io.save({ model: trained, optimizer: opt }, path);
    // Overwrite the first value of an optimizer slot in place (the checksum is then skipped: verifyChecksum false).
    const bytes = readFileSync(path);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { data_offsets: number[] }>;
    const slot = Object.keys(header).find((k) => k.startsWith('optimizer/'))!;
    bytes.writeFloatLE(Number.POSITIVE_INFINITY, 8 + headerLength + header[slot]!.data_offsets[0]!);
    writeFileSync(path, bytes);
    const bad = path;
    const options = { verifyChecksum: false };
    expectCheckpointErrorAt(() => io.loadInto({ model: trained, optimizer: opt }, bad, options), bad, slot, /Infinity at index 0/);
  });

  it('a torch weight-norm dim that does not match the layer is a CheckpointError naming the file and key', () => {
    // torch weight_norm(dim=1) on a Linear(2, 3): g has shape [1, 2]; our layer normalizes per output unit (dim 0).
    const path = fileWithEntries([
      ['0.weight_g', [1, 2], 'F32', f32([1, 1])], ['0.weight_v', [3, 2], 'F32', f32([1, 2, 3, 4, 5, 6])], ['0.bias', [3], 'F32', f32([0, 0, 0])],
    ]);
    const model = new nn.Sequential(new nn.Linear(2, 3, { weightNorm: true }));
    expectCheckpointErrorAt(() => io.importTorchWeightNorm(path, model), path, '0.weight_g', /dim=1.*dim 0/);
    model.dispose();
  });
});
