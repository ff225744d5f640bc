// Checkpoints (io.ts): the safetensors layout, bit-exact resumption of training, atomic saves under SIGKILL,
// all-or-nothing loads of truncated/corrupted/mismatched files, and PyTorch weight-norm state dicts
// (test/fixtures/torch_state_dicts, written by scripts/make_torch_state_dicts.py; torch is not needed here).
import { fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { io, manualSeed, nn, ops, optim, Tensor, tensor, tidy } from '../ts/index.js';
import { bitwiseEqual, firstBitDifference, normals, relativeError, reproduce, runSeed, uniformGenerator } from './helpers.js';
import { expectCheckpointError } from './expect-checkpoint-error.js';
import { transpileForNode } from './transpile-for-node.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const fixtures = join(root, 'test', 'fixtures', 'torch_state_dicts');
const work = mkdtempSync(join(tmpdir(), 'weightnorm-io-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

let fileCounter = 0;
const tempPath = (name = 'file'): string => join(work, `${name}-${fileCounter++}.safetensors`);

// ---------------------------------------------------------------------------------------------------------------
// Helpers.

type Snapshot = Map<string, Float32Array>;

function snapshot(tensors: Record<string, Tensor>): Snapshot {
  return new Map(Object.entries(tensors).map(([name, t]) => [name, t.toArray()]));
}

function optimizerSnapshot(optimizer: optim.Optimizer): Snapshot {
  const out: Snapshot = new Map();
  for (const [param, slots] of Object.entries(optimizer.stateDict().state)) {
    for (const [slot, t] of Object.entries(slots)) out.set(`${param}/${slot}`, (t as Tensor).toArray());
  }
  return out;
}

/** Fails naming the first tensor and element whose bits differ. */
function expectSameBits(got: Snapshot, want: Snapshot, context = ''): void {
  expect([...got.keys()].sort(), context).toEqual([...want.keys()].sort());
  for (const [name, values] of want) {
    const other = got.get(name)!;
    if (!bitwiseEqual(other, values)) {
      const i = firstBitDifference(other, values);
      expect.fail(`${context}: '${name}' differs first at element ${i}: ${other[i]} vs ${values[i]}`);
    }
  }
}

/** A safetensors file from parts, for layouts save() never writes. */
function rawFile(header: Record<string, unknown>, data: Uint8Array, options: { headerLength?: bigint; pad?: boolean } = {}): Buffer {
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  if (options.pad !== false) json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(options.headerLength ?? BigInt(json.length));
  return Buffer.concat([length, json, data]);
}

/** A well-formed file holding `entries` (F32 unless a dtype and raw bytes are given), offsets in order. */
type RawEntry = [name: string, shape: readonly number[], values: Float32Array | { dtype: string; bytes: Uint8Array }];

function rawTensors(entries: RawEntry[], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, shape, values] of entries) {
    const bytes = values instanceof Float32Array ? new Uint8Array(values.buffer, values.byteOffset, values.byteLength) : values.bytes;
    const dtype = values instanceof Float32Array ? 'F32' : values.dtype;
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  if (metadata) header.__metadata__ = metadata;
  return rawFile(header, Buffer.concat(chunks));
}

function parseHeader(bytes: Buffer): { header: Record<string, any>; dataStart: number } {
  const length = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')), dataStart: 8 + length };
}

function batch(seed: number, shape: number[]): Tensor {
  return tensor(Float32Array.from(normals(shape.reduce((a, b) => a * b, 1), seed)), shape);
}

const labelsFor = (seed: number, n: number, classes: number): number[] => {
  const uniform = uniformGenerator(seed);
  return Array.from({ length: n }, () => Math.floor(uniform() * classes));
};

/** An MLP with every kind of state: weight norm, mean-only BN (a buffer), dropout (a random stream). */
function mlp(seed: number, hidden = 12): nn.Sequential {
  manualSeed(seed);
  return new nn.Sequential(
    new nn.Linear(6, hidden, { weightNorm: true }),
    new nn.MeanOnlyBatchNorm(hidden),
    new nn.ReLU(),
    new nn.Dropout(0.25),
    new nn.Linear(hidden, 3, { weightNorm: true }),
  );
}

/**
 * A conv net with weight norm, mean-only batch norm and Gaussian noise. (nn.BatchNorm cannot train at present: its
 * forward disposes the batch mean that its backward reads.)
 */
function convNet(seed: number): nn.Sequential {
  manualSeed(seed);
  return new nn.Sequential(
    new nn.Conv2d(2, 3, 3, { padding: 1, weightNorm: true }),
    new nn.MeanOnlyBatchNorm(3),
    new nn.ReLU(),
    new nn.GaussianNoise(0.1),
    new nn.Flatten(),
    new nn.Linear(48, 3, { weightNorm: true }),
  );
}

const inputShapes = { mlp: [8, 6], conv: [4, 2, 4, 4] } as const;

function train(model: nn.Module, optimizer: optim.Optimizer, inputShape: readonly number[], from: number, to: number, dataSeed: number): void {
  for (let step = from; step < to; step++) {
    tidy(() => {
      const x = batch(dataSeed + step, [...inputShape]);
      optimizer.zeroGrad();
      nn.crossEntropy(model.forward(x), labelsFor(dataSeed + step, inputShape[0]!, 3)).backward();
      optimizer.step();
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------

describe('safetensors files', () => {
  it('save() writes the documented layout: u64 LE header length, JSON header, 8-aligned F32 data that tiles the section', () => {
    const model = mlp(1);
    const path = tempPath('layout');
    io.save(model, path, { metadata: { note: 'hello' } });
    const bytes = readFileSync(path);
    const { header, dataStart } = parseHeader(bytes);
    expect(dataStart % 8).toBe(0);
    expect(header.__metadata__.note).toBe('hello');
    expect(header.__metadata__['weightnorm.format']).toBe('1');
    expect(header.__metadata__['weightnorm.sha256']).toMatch(/^[0-9a-f]{64}$/);
    const state = model.stateDict();
    expect(Object.keys(header).filter((k) => k !== '__metadata__')).toEqual(Object.keys(state));
    expect(Object.keys(state)).toEqual(['0.v', '0.g', '0.bias', '1.bias', '4.v', '4.g', '4.bias', '1.runningMean']);
    let end = 0;
    for (const [name, t] of Object.entries(state)) {
      const entry = header[name];
      expect(entry.dtype).toBe('F32');
      expect(entry.shape).toEqual(t.shape);
      expect(entry.data_offsets[0]).toBe(end);
      end = entry.data_offsets[1];
      const raw = bytes.subarray(dataStart + entry.data_offsets[0], dataStart + entry.data_offsets[1]);
      const values = new Float32Array(Uint8Array.from(raw).buffer);
      expect(bitwiseEqual(values, t.toArray()), name).toBe(true);
    }
    expect(dataStart + end).toBe(bytes.length);
  });

  it('load() returns every tensor and the metadata; inspect() reads only the header; records round-trip', () => {
    const values = Float32Array.from([1.5, -0, Number.MIN_VALUE, 3.4e38, -1e-45, 7]);
    const path = tempPath('record');
    io.save({ a: tensor(values, [2, 3]), empty: tensor([], [0, 4]), scalar: tensor([2], []) }, path, { metadata: { run: '7' } });
    const { tensors, metadata } = io.load(path);
    expect(Object.keys(tensors)).toEqual(['a', 'empty', 'scalar']);
    expect(tensors.a!.shape).toEqual([2, 3]);
    expect(bitwiseEqual(tensors.a!.toArray(), values)).toBe(true);
    expect(tensors.empty!.shape).toEqual([0, 4]);
    expect(tensors.scalar!.shape).toEqual([]);
    expect(metadata.run).toBe('7');
    expect(io.inspect(path).tensors).toEqual({
      a: { dtype: 'F32', shape: [2, 3] },
      empty: { dtype: 'F32', shape: [0, 4] },
      scalar: { dtype: 'F32', shape: [] },
    });
  });

  it('converts F16, BF16 and F64 to float32 and names the tensor and dtype of anything else', () => {
    const half = Uint16Array.from([0x3c00, 0xc000, 0x3555, 0x0001, 0x7c00, 0x8000]); // 1, -2, 0.33325195, 2^-24, inf, -0
    const brain = Uint16Array.from([0x3f80, 0xc0a0, 0x3eab]); // 1, -5, 0.333984375
    const double = Float64Array.from([0.1, -1e-50, 1e300]);
    const path = tempPath('dtypes');
    writeFileSync(
      path,
      rawTensors([
        ['half', [6], { dtype: 'F16', bytes: new Uint8Array(half.buffer) }],
        ['brain', [3], { dtype: 'BF16', bytes: new Uint8Array(brain.buffer) }],
        ['double', [3], { dtype: 'F64', bytes: new Uint8Array(double.buffer) }],
      ]),
    );
    // The infinities (F16 inf, F64 1e300 beyond float32) are refused unless allowed: see layers-correctness.test.ts.
    const { tensors } = io.load(path, { allowNonFinite: true });
    expect(Array.from(tensors.half!.toArray())).toEqual([1, -2, Math.fround(0.33325195), 2 ** -24, Infinity, -0]);
    expect(Array.from(tensors.brain!.toArray())).toEqual([1, -5, 0.333984375]);
    expect(Array.from(tensors.double!.toArray())).toEqual([Math.fround(0.1), -0, Infinity]);

    const int64 = tempPath('int64');
    writeFileSync(int64, rawTensors([['steps', [2], { dtype: 'I64', bytes: new Uint8Array(16) }]]));
    const error = expectCheckpointError(() => io.load(int64), int64, "tensor 'steps'", 'dtype I64', 'F16, BF16, F64');
    expect(error.key).toBe('steps');
    expect(io.inspect(int64).tensors.steps).toEqual({ dtype: 'I64', shape: [2] });
  });

  it('bfloat16 tensors save as BF16 bit for bit; load() widens them unless keepBfloat16', () => {
    const dataSeed = runSeed();
    const values = Float32Array.from(normals(257, dataSeed), (x, i) => x * 10 ** ((i % 9) - 4));
    const brain = tensor(values, [257], { dtype: 'bfloat16' });
    const expected = brain.toArray();
    const path = tempPath('bf16');
    io.save({ brain, plain: tensor(values, [257]) }, path);
    expect(io.inspect(path).tensors).toEqual({ brain: { dtype: 'BF16', shape: [257] }, plain: { dtype: 'F32', shape: [257] } });
    // 2 bytes per element on disk, each the top half of the widened float32.
    const file = readFileSync(path);
    const headerLength = Number(file.readBigUInt64LE(0));
    expect(file.length).toBe(8 + headerLength + 257 * 2 + 257 * 4);
    const widened = io.load(path).tensors;
    expect(widened.brain!.dtype).toBe('float32');
    expect(bitwiseEqual(widened.brain!.toArray(), expected)).toBe(true);
    const kept = io.load(path, { keepBfloat16: true }).tensors;
    expect([kept.brain!.dtype, kept.plain!.dtype]).toEqual(['bfloat16', 'float32']);
    expect(bitwiseEqual(kept.brain!.toArray(), expected)).toBe(true);
    expect(bitwiseEqual(kept.plain!.toArray(), values)).toBe(true);
    expect(() => io.load(path, { keepBfloat16: 1 as never })).toThrow(/io\.load: options\.keepBfloat16: expected a boolean/);
  });

  it('loadInto() copies into the same tensor objects and invalidates cached weight norms', () => {
    const source = mlp(2);
    const target = mlp(3);
    const x = batch(5, [8, 6]);
    target.eval();
    source.eval();
    target.forward(x).dispose(); // caches ‖v‖ of the old weights
    const objects = target.parameters();
    const path = tempPath('into');
    io.save(source, path);
    io.loadInto(target, path);
    expect(target.parameters()).toEqual(objects);
    expectSameBits(snapshot(target.stateDict()), snapshot(source.stateDict()), 'after loadInto');
    expect(bitwiseEqual(target.forward(x).toArray(), source.forward(x).toArray())).toBe(true);
  });

  it('Module.loadStateDict() and allowExtraKeys / allowMissingKeys', () => {
    const a = mlp(4);
    const b = mlp(5);
    const before = snapshot(b.stateDict());
    const { '0.bias': _, ...withoutBias } = a.stateDict();
    expect(() => b.loadStateDict(withoutBias)).toThrow(/1 missing key\(s\) '0.bias'/);
    expect(() => b.loadStateDict({ ...a.stateDict(), 'x.weight': a.stateDict()['0.v']! })).toThrow(/unexpected key\(s\) 'x.weight'/);
    expectSameBits(snapshot(b.stateDict()), before, 'after the failed loads');
    b.loadStateDict(withoutBias, { allowMissingKeys: true });
    const after = snapshot(b.stateDict());
    expect(bitwiseEqual(after.get('0.bias')!, before.get('0.bias')!)).toBe(true);
    expect(bitwiseEqual(after.get('0.v')!, a.stateDict()['0.v']!.toArray())).toBe(true);
    b.loadStateDict({ ...a.stateDict(), 'x.weight': a.stateDict()['0.v']! }, { allowExtraKeys: true });
    expectSameBits(snapshot(b.stateDict()), snapshot(a.stateDict()), 'after allowExtraKeys');
  });

  it('rejects bad arguments and reserved names with messages naming them', () => {
    const model = mlp(6);
    expect(() => io.save(model, tempPath(), { metadata: { 'weightnorm.format': '2' } })).toThrow(/reserved/);
    expect(() => io.save(model, tempPath(), { metadata: { n: 3 as unknown as string } })).toThrow(/metadata\['n'\]: expected a string/);
    expect(() => io.save({ a: 3 } as unknown as Record<string, Tensor>, tempPath())).toThrow(/source\['a'\]: expected a Tensor/);
    expect(() => io.save(model, join(work, 'no-such-dir', 'x.safetensors'))).toThrow(/cannot write/);
    expect(() => io.loadInto(model, join(work, 'missing.safetensors'))).toThrow(io.CheckpointError);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('resuming training from a checkpoint is bit for bit', () => {
  const cases = [
    ['mlp', 'Adam', () => mlp(11), (m: nn.Module) => new optim.Adam(m.parameters(), { lr: 3e-3 })],
    [
      'mlp',
      'SGD (Nesterov momentum, weight decay)',
      () => mlp(12),
      (m: nn.Module) => new optim.SGD(m.parameters(), { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 1e-4 }),
    ],
    ['mlp', 'SGD (plain)', () => mlp(13), (m: nn.Module) => new optim.SGD(m.parameters(), { lr: 0.3 })],
    ['conv', 'Adamax', () => convNet(14), (m: nn.Module) => new optim.Adamax(m.parameters(), { lr: 5e-3 })],
  ] as const;

  const title = '%s with %s: N steps, save, M steps = N steps, save, load into a fresh model and optimizer, M steps';
  it.each(cases)(title, (kind, _name, build, makeOptimizer) => {
    const dataSeed = runSeed();
    const shape = inputShapes[kind];
    const [n, m] = [4, 5];
    const path = tempPath('resume');

    const model = build();
    const optimizer = makeOptimizer(model);
    train(model, optimizer, shape, 0, n, dataSeed);
    io.save({ model, optimizer }, path);
    train(model, optimizer, shape, n, n + m, dataSeed);

    // A fresh model from another seed (other weights, other dropout/noise seeds) and a fresh optimizer.
    const fresh = kind === 'mlp' ? mlp(999) : convNet(999);
    const freshOptimizer = makeOptimizer(fresh);
    freshOptimizer.lr = 123;
    io.loadInto({ model: fresh, optimizer: freshOptimizer }, path);
    expect(freshOptimizer.stepCount).toBe(n);
    expect(freshOptimizer.lr).toBe(optimizer.lr);
    train(fresh, freshOptimizer, shape, n, n + m, dataSeed);

    const context = `${kind}/${_name}, ${reproduce(dataSeed)}`;
    expectSameBits(snapshot(fresh.stateDict()), snapshot(model.stateDict()), context);
    expectSameBits(optimizerSnapshot(freshOptimizer), optimizerSnapshot(optimizer), `${context} (optimizer)`);
    const x = batch(dataSeed + 100, [...shape]);
    expect(bitwiseEqual(fresh.forward(x).toArray(), model.forward(x).toArray()), `${context} (training-mode forward)`).toBe(true);
    fresh.eval();
    model.eval();
    expect(bitwiseEqual(fresh.forward(x).toArray(), model.forward(x).toArray()), `${context} (eval forward)`).toBe(true);
  });

  it('the check can fail: a fresh optimizer instead of the saved one ends elsewhere', () => {
    const dataSeed = runSeed();
    const path = tempPath('control');
    const model = mlp(21);
    const optimizer = new optim.Adam(model.parameters(), { lr: 3e-3 });
    train(model, optimizer, inputShapes.mlp, 0, 3, dataSeed);
    io.save(model, path); // the model alone
    train(model, optimizer, inputShapes.mlp, 3, 6, dataSeed);
    const fresh = mlp(999);
    const freshOptimizer = new optim.Adam(fresh.parameters(), { lr: 3e-3 });
    io.loadInto(fresh, path);
    train(fresh, freshOptimizer, inputShapes.mlp, 3, 6, dataSeed);
    expect(bitwiseEqual(fresh.stateDict()['0.v']!.toArray(), model.stateDict()['0.v']!.toArray()), reproduce(dataSeed)).toBe(false);
  });

  it("the saved ‖v‖ matters: the optimizer's fused norm differs in the last bit from a recomputed one", () => {
    // Why checkpoints carry optimizer/<v>/norm: the next forward uses the norm the step wrote, and recomputing it
    // (another summation order) changes some channels by an ulp, which a bit-exact resumption cannot afford.
    manualSeed(41);
    const layer = new nn.Linear(784, 100, { weightNorm: true });
    const optimizer = new optim.Adam(layer.parameters(), { lr: 1e-2 });
    train(layer, optimizer, [8, 784], 0, 5, 42);
    const saved = (optimizer.stateDict().state['0']!.norm as Tensor).toArray();
    const recomputed = ops.weightNorm(layer.v!, layer.g!, { dim: 0 }).norm.toArray();
    expect(relativeError(recomputed, saved)).toBeLessThan(1e-6);
    expect(bitwiseEqual(recomputed, saved)).toBe(false);
  });

  it('optimizer state round-trips through Optimizer.stateDict()/loadStateDict() and is all-or-nothing', () => {
    const model = mlp(22);
    const optimizer = new optim.Adam(model.parameters());
    train(model, optimizer, inputShapes.mlp, 0, 2, 1);
    // stateDict() hands out the live tensors (a later step or load may replace the cached norm): keep copies.
    const live = optimizer.stateDict();
    const copySlots = (slots: Record<string, unknown>): Record<string, Tensor> =>
      Object.fromEntries(Object.entries(slots).map(([k, t]) => [k, tensor((t as Tensor).toArray(), (t as Tensor).shape)]));
    const state = { ...live, state: Object.fromEntries(Object.entries(live.state).map(([p, slots]) => [p, copySlots(slots)])) };
    expect(state.type).toBe('Adam');
    expect(state.stepCount).toBe(2);
    expect(Object.keys(state.state['0']!)).toEqual(['expAvg', 'expAvgSq', 'norm']);
    expect(Object.keys(state.state['2']!)).toEqual(['expAvg', 'expAvgSq']); // 0.bias: no norm
    const other = new optim.Adam(model.parameters());
    other.loadStateDict(state);
    expectSameBits(optimizerSnapshot(other), optimizerSnapshot(optimizer));
    expect(other.stepCount).toBe(2);

    const sgd = new optim.SGD(model.parameters(), { lr: 0.1, momentum: 0.5 });
    expect(() => sgd.loadStateDict(state)).toThrow(/expected the state of a SGD, found the state of Adam/);
    const bad = { ...state, state: { ...state.state, '2': { expAvg: state.state['2']!.expAvg!, expAvgSq: tensor([1, 2], [2]) } } };
    const before = optimizerSnapshot(other);
    expect(() => other.loadStateDict({ ...bad, stepCount: 9 })).toThrow(/state '2' slot 'expAvgSq': expected shape \[12\], received \[2\]/);
    expectSameBits(optimizerSnapshot(other), before, 'after the failed load');
    expect(other.stepCount).toBe(2);
  });
});

// ---------------------------------------------------------------------------------------------------------------

const CHILD = `
const [library, target] = process.argv.slice(2);
const { io, tensor } = await import(library);
// ~4 MB per save, so that most kills land inside one. Every value of version k is k.
const elements = 1 << 20;
for (let version = 1; ; version++) {
  const tensors = { big: tensor(new Float32Array(elements).fill(version), [1024, 1024]), tag: tensor([version], [1]) };
  io.save(tensors, target, { metadata: { version: String(version) } });
  for (const t of Object.values(tensors)) t.dispose();
  process.send({ saved: version });
}
`;

describe('atomic saves', () => {
  it('SIGKILL at random moments of a save loop always leaves a complete, loadable previous or new version', async () => {
    const seed = runSeed();
    const uniform = uniformGenerator(seed);
    const dir = mkdtempSync(join(work, 'kill-'));
    const libraryDir = mkdtempSync(join(work, 'lib-'));
    await transpileForNode(libraryDir, []);
    const library = join(libraryDir, 'ts', 'index.js');
    const child = join(dir, 'child.mjs');
    writeFileSync(child, CHILD);
    const target = join(dir, 'checkpoint.safetensors');
    const isTemporary = (name: string): boolean => name.startsWith('.checkpoint.safetensors.') && name.endsWith('.tmp');
    let killedMidSave = 0;
    const rounds = 10;
    for (let round = 0; round < rounds; round++) {
      let lastSaved = 0;
      const worker = fork(child, [library, target], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
      let stderr = '';
      worker.stderr!.on('data', (chunk) => (stderr += chunk));
      const exited = new Promise<void>((done) => worker.on('exit', () => done()));
      await new Promise<void>((started, failed) => {
        worker.on('message', (message: { saved: number }) => {
          lastSaved = message.saved;
          started();
        });
        worker.on('exit', () => failed(new Error(`the child exited before saving: ${stderr}`)));
      });
      if (round % 2 === 0) {
        await new Promise((wait) => setTimeout(wait, 5 + uniform() * 60));
      } else {
        // Aim: kill as soon as a temporary file appears (between its creation and the rename).
        const deadline = Date.now() + 10_000;
        while (!readdirSync(dir).some(isTemporary) && Date.now() < deadline) await new Promise((next) => setImmediate(next));
      }
      worker.kill('SIGKILL');
      await exited;
      const leftovers = readdirSync(dir).filter(isTemporary);
      if (leftovers.length > 0) killedMidSave += 1;
      for (const name of leftovers) unlinkSync(join(dir, name));

      const { tensors, metadata } = io.load(target); // must not throw: the file is always complete
      const version = Number(metadata.version);
      expect(version, `round ${round}, ${reproduce(seed)}`).toBeGreaterThanOrEqual(lastSaved);
      expect(Array.from(tensors.tag!.toArray())).toEqual([version]);
      const big = tensors.big!.toArray();
      expect(big.every((x) => x === version), `round ${round}: a tensor mixes versions`).toBe(true);
      for (const t of Object.values(tensors)) t.dispose();
    }
    // The kills must have hit saves in progress, or the test shows nothing.
    expect(killedMidSave, `${killedMidSave} of ${rounds} kills interrupted a save (${reproduce(seed)})`).toBeGreaterThan(0);
  }, 120_000);

  it('a failed save leaves the previous file and no temporary file behind', () => {
    const dir = mkdtempSync(join(work, 'fail-'));
    const target = join(dir, 'model.safetensors');
    io.save({ a: tensor([1, 2, 3]) }, target);
    const before = readFileSync(target);
    mkdirSync(join(dir, 'blocked.safetensors'));
    writeFileSync(join(dir, 'blocked.safetensors', 'x'), 'not empty');
    expect(() => io.save({ a: tensor([4]) }, join(dir, 'blocked.safetensors'))).toThrow(/cannot write/);
    expect(readdirSync(dir).sort()).toEqual(['blocked.safetensors', 'model.safetensors']);
    io.save({ a: tensor([4, 5]) }, target);
    expect(readFileSync(target).equals(before)).toBe(false);
    expect(Array.from(io.load(target).tensors.a!.toArray())).toEqual([4, 5]);
    expect(readdirSync(dir).sort()).toEqual(['blocked.safetensors', 'model.safetensors']);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('loads are checked in full and all-or-nothing', () => {
  // The target model and optimizer hold other values than the file: a partial load would show.
  const source = mlp(31);
  const sourceOptimizer = new optim.Adam(source.parameters(), { lr: 1e-2 });
  train(source, sourceOptimizer, inputShapes.mlp, 0, 2, 7);
  const checkpoint = tempPath('checkpoint');
  io.save({ model: source, optimizer: sourceOptimizer }, checkpoint);
  const good = readFileSync(checkpoint);
  const { dataStart } = parseHeader(good);

  const target = mlp(32);
  const targetOptimizer = new optim.Adam(target.parameters(), { lr: 1e-2 });
  train(target, targetOptimizer, inputShapes.mlp, 0, 1, 8);
  const original = snapshot(target.stateDict());
  const originalOptimizer = optimizerSnapshot(targetOptimizer);
  const copy = (t: Tensor | { shape: readonly number[]; data: Float32Array }): Tensor =>
    t instanceof Tensor ? tensor(t.toArray(), t.shape) : tensor(t.data, t.shape);
  const originalOptimizerState = (() => {
    const state = targetOptimizer.stateDict();
    const slots = Object.entries(state.state).map(([p, s]) => [p, Object.fromEntries(Object.entries(s).map(([k, t]) => [k, copy(t)]))]);
    return { ...state, state: Object.fromEntries(slots) };
  })();

  function restoreTarget(): void {
    target.loadStateDict(Object.fromEntries([...original].map(([k, v]) => [k, tensor(v, target.stateDict()[k]!.shape)])));
    targetOptimizer.loadStateDict(originalOptimizerState);
  }

  function expectUntouched(context: string): void {
    expectSameBits(snapshot(target.stateDict()), original, context);
    expectSameBits(optimizerSnapshot(targetOptimizer), originalOptimizer, `${context} (optimizer)`);
    expect(targetOptimizer.stepCount, context).toBe(1);
  }

  /** Loads `bytes` into the target: a CheckpointError naming the file, and the target untouched; or a complete load. */
  function attempt(bytes: Uint8Array, context: string): 'rejected' | 'loaded' {
    const path = join(work, 'attempt.safetensors');
    writeFileSync(path, bytes);
    try {
      io.loadInto({ model: target, optimizer: targetOptimizer }, path);
    } catch (error) {
      if (!(error instanceof io.CheckpointError)) throw new Error(`${context}: ${String(error)}`);
      expect(error.message, context).toContain(path);
      expectUntouched(context);
      return 'rejected';
    }
    // Only acceptable when the file means exactly what was saved; then restore the target for the next case.
    expectSameBits(snapshot(target.stateDict()), snapshot(source.stateDict()), `${context} loaded`);
    restoreTarget();
    return 'loaded';
  }

  it('the untouched checkpoint loads (control)', () => {
    const fresh = mlp(33);
    const freshOptimizer = new optim.Adam(fresh.parameters(), { lr: 1e-2 });
    io.loadInto({ model: fresh, optimizer: freshOptimizer }, checkpoint);
    expectSameBits(snapshot(fresh.stateDict()), snapshot(source.stateDict()), 'control');
  });

  it('truncated at every length: a clear error, the model and optimizer unchanged', () => {
    const messages = new Set<string>();
    for (let length = 0; length < good.length; length++) {
      expect(attempt(good.subarray(0, length), `truncated to ${length} bytes`)).toBe('rejected');
    }
    for (const length of [0, 5, 8, 20, dataStart - 1, dataStart, good.length - 1]) {
      const path = join(work, 'truncated.safetensors');
      writeFileSync(path, good.subarray(0, length));
      try {
        io.loadInto(target, path);
      } catch (error) {
        messages.add((error as Error).message.replace(path, '<file>'));
      }
    }
    expect([...messages].join('\n')).toMatch(/too short for the 8-byte header length/);
    expect([...messages].join('\n')).toMatch(/header length \d+ exceeds the \d+ bytes after it/);
    expect([...messages].join('\n')).toMatch(/run past the end of the data section .* truncated/);
  });

  it('every single-bit flip in the header is rejected or means the same file', () => {
    const outcomes = { rejected: 0, loaded: 0 };
    for (let byte = 0; byte < dataStart; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const corrupted = Uint8Array.from(good);
        corrupted[byte]! ^= 1 << bit;
        outcomes[attempt(corrupted, `byte ${byte} bit ${bit}`)] += 1;
      }
    }
    // The checksum covers the header, so no flip should get through; none may ever change what is loaded.
    expect(outcomes.loaded).toBe(0);
    expect(outcomes.rejected).toBe(dataStart * 8);
    // About 18,000 corrupted files written and loaded: ~30 s on an idle 2-core machine, over a minute when it is shared.
  }, 240_000);

  it('flipped data bytes fail the checksum (and load as is with verifyChecksum: false)', () => {
    const seed = runSeed();
    const uniform = uniformGenerator(seed);
    for (let i = 0; i < 40; i++) {
      const corrupted = Uint8Array.from(good);
      const at = dataStart + Math.floor(uniform() * (good.length - dataStart));
      corrupted[at]! ^= 1 << Math.floor(uniform() * 8);
      expect(attempt(corrupted, `data byte ${at}, ${reproduce(seed)}`)).toBe('rejected');
    }
    const corrupted = Uint8Array.from(good);
    corrupted[good.length - 1]! ^= 0x40;
    const path = join(work, 'unchecked.safetensors');
    writeFileSync(path, corrupted);
    expectCheckpointError(() => io.load(path), 'do not match the SHA-256');
    expect(() => io.load(path, { verifyChecksum: false })).not.toThrow();
  });

  it('wrong shapes, missing and extra keys: errors naming the file, the key, expected and found', () => {
    const wide = mlp(34, 10);
    const path = tempPath('wide');
    io.save(wide, path);
    const error = expectCheckpointError(() => io.loadInto(target, path), path, "'0.v'", /expected shape \[12, 6\], received \[10, 6\]/);
    expect(error.key).toBe('0.v');

    const { '4.g': _, ...partial } = source.stateDict();
    const missing = tempPath('missing');
    io.save(partial, missing);
    expectCheckpointError(() => io.loadInto(target, missing), missing, "1 missing key(s) '4.g'");
    const extra = tempPath('extra');
    io.save({ ...source.stateDict(), 'head.v': source.stateDict()['0.v']! }, extra);
    expectCheckpointError(() => io.loadInto(target, extra), extra, "unexpected key(s) 'head.v'");
    expectUntouched('after shape and key errors');

    io.loadInto(target, extra, { allowExtraKeys: true });
    expectSameBits(snapshot(target.stateDict()), snapshot(source.stateDict()), 'allowExtraKeys');
    restoreTarget();
    expectUntouched('restored');
  });

  it('malformed layouts: non-F32 dtype, overlaps, gaps, trailing bytes, header length, not JSON, bad fields', () => {
    const model = source.stateDict();
    const entries = Object.entries(model).map(([name, t]): [string, readonly number[], Float32Array] => [name, t.shape, t.toArray()]);
    const f32 = (t: Float32Array): Uint8Array => new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
    const data = Buffer.concat(entries.map(([, , v]) => f32(v)));
    const header = (): Record<string, any> => {
      const out: Record<string, any> = {};
      let offset = 0;
      for (const [name, shape, values] of entries) {
        out[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + values.byteLength] };
        offset += values.byteLength;
      }
      return out;
    };
    const check = (bytes: Uint8Array, ...fragments: (string | RegExp)[]): void => {
      const path = join(work, 'malformed.safetensors');
      writeFileSync(path, bytes);
      expectCheckpointError(() => io.loadInto(target, path), path, ...fragments);
      expectUntouched(fragments.join(' '));
    };
    // Control: the hand-made file is valid and loads into a third model.
    const path = tempPath('handmade');
    writeFileSync(path, rawFile(header(), data));
    io.loadInto(mlp(35), path);

    const bias = entries.findIndex(([name]) => name === '0.bias');
    const int32 = header();
    int32['0.bias'].dtype = 'I32';
    check(rawFile(int32, data), "tensor '0.bias' has dtype I32");
    const unknown = header();
    unknown['0.bias'].dtype = 'F33';
    check(rawFile(unknown, data), "tensor '0.bias': unknown dtype 'F33'");
    const overlap = header();
    overlap['0.g'].data_offsets = overlap['0.g'].data_offsets.map((x: number) => x - 4);
    overlap['0.v'].data_offsets[1] -= 4;
    overlap['0.v'].shape = [12, 6];
    check(rawFile(overlap, data), /overlaps|hold \d+ bytes/);
    const overlapSameSize = header();
    overlapSameSize['0.g'].data_offsets = [240, 288]; // inside 0.v's [0, 288]
    check(rawFile(overlapSameSize, data), "tensor '0.g' (bytes [240, 288]) overlaps tensor '0.v' (bytes [0, 288])");
    const gap = header();
    delete gap['0.g'];
    check(rawFile(gap, data), /belong to no tensor/);
    check(rawFile(header(), Buffer.concat([data, Buffer.alloc(8)])), '8 bytes follow the last tensor');
    check(rawFile(header(), data, { headerLength: 1n << 40n }), /header length 1099511627776 exceeds/);
    const badShape = header();
    badShape['0.bias'].shape = [12.5];
    check(rawFile(badShape, data), "tensor '0.bias': shape must be an array of non-negative integers");
    const negative = header();
    negative['0.bias'].data_offsets = [-4, 44];
    check(rawFile(negative, data), "tensor '0.bias': data_offsets must be [begin, end]");
    const wrongLength = header();
    wrongLength['0.bias'].shape = [11];
    check(rawFile(wrongLength, data), /tensor '0.bias': data_offsets \[\d+, \d+\] hold 48 bytes; shape \[11\] of F32 needs 44/);
    const extraField = header();
    extraField['0.bias'].offsets = [0, 1];
    check(rawFile(extraField, data), "unknown field 'offsets'");
    check(rawFile({ ...header(), __metadata__: { n: 1 } }, data), "__metadata__ 'n' must be a string");
    const notJson = rawFile(header(), data);
    notJson[8] = 0x5b; // '[' instead of '{'
    check(notJson, 'not valid JSON');
    const array = Buffer.from(JSON.stringify([1, 2]).padEnd(8, ' '));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(array.length));
    check(Buffer.concat([length, array]), 'not a JSON object');
    expect(bias).toBeGreaterThanOrEqual(0);
  });

  it('optimizer problems leave the model unchanged too (the model part was already staged)', () => {
    const modelOnly = tempPath('model-only');
    io.save(source, modelOnly);
    expectCheckpointError(() => io.loadInto({ model: target, optimizer: targetOptimizer }, modelOnly), 'holds no optimizer state');
    expectUntouched('no optimizer state');
    const sgd = new optim.SGD(target.parameters(), { lr: 0.1, momentum: 0.9 });
    const wrong = (): unknown => io.loadInto({ model: target, optimizer: sgd }, checkpoint);
    expectCheckpointError(wrong, 'expected the state of a SGD, found the state of Adam');
    expectUntouched('wrong optimizer');
    // A model file with an optimizer part loads into a bare model (the optimizer part is skipped).
    const bare = mlp(36);
    io.loadInto(bare, checkpoint);
    expectSameBits(snapshot(bare.stateDict()), snapshot(source.stateDict()), 'bare model from a checkpoint');
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('PyTorch weight-norm state dicts (torch 1.13 fixtures)', () => {
  // Both sides compute in float32 with their own summation orders; outputs agree to ~1e-6 of their scale.
  const TOLERANCE = 1e-5;
  const fixture = (name: string): string => join(fixtures, `${name}.safetensors`);
  const builders = {
    mlp: () => new nn.Sequential(new nn.Linear(8, 16, { weightNorm: true }), new nn.ReLU(), new nn.Linear(16, 4, { weightNorm: true })),
    conv: () =>
      new nn.Sequential(
        new nn.Conv2d(2, 4, 3, { padding: 1, weightNorm: true }),
        new nn.ReLU(),
        new nn.MaxPool2d(2),
        new nn.Flatten(),
        new nn.Linear(36, 5, { weightNorm: true }),
      ),
  };

  it('the fixtures are small and were written by the script', () => {
    const files = readdirSync(fixtures);
    expect(files.length).toBe(9);
    const total = files.reduce((sum, f) => sum + statSync(join(fixtures, f)).size, 0);
    expect(total).toBeLessThan(200_000);
    expect(io.inspect(fixture('mlp.weight_norm')).metadata.generator).toBe('scripts/make_torch_state_dicts.py');
  });

  describe.each(['weight_norm', 'parametrizations'] as const)('naming scheme %s', (scheme) => {
    it.each(['mlp', 'conv'] as const)('%s: imported model gives torch outputs', (name) => {
      const model = builders[name]();
      io.importTorchWeightNorm(fixture(`${name}.${scheme}`), model);
      const { tensors: torchState } = io.load(fixture(`${name}.${scheme}`));
      const first = scheme === 'weight_norm' ? '0.weight_v' : '0.parametrizations.weight.original1';
      expect(bitwiseEqual(model.stateDict()['0.v']!.toArray(), torchState[first]!.toArray())).toBe(true);
      expect(model.stateDict()['0.g']!.shape).toEqual([name === 'mlp' ? 16 : 4]);
      const { tensors } = io.load(fixture(`${name}.io`));
      model.eval();
      const y = model.forward(tensors.input!);
      expect(y.shape).toEqual(tensors.output!.shape);
      expect(relativeError(y.toArray(), tensors.output!.toArray())).toBeLessThan(TOLERANCE);
    });
  });

  it('mapTorchStateDict() names, shapes, and prefixMap', () => {
    const { tensors } = io.load(fixture('mlp.parametrizations'));
    const mapped = io.mapTorchStateDict(tensors);
    expect(Object.keys(mapped).sort()).toEqual(['0.bias', '0.g', '0.v', '2.bias', '2.g', '2.v']);
    expect(mapped['0.g']!.shape).toEqual([16]);
    expect(tensors['0.parametrizations.weight.original0']!.shape).toEqual([16, 1]);
    const renamed = Object.fromEntries(Object.entries(io.load(fixture('mlp.weight_norm')).tensors).map(([k, t]) => [`features.${k}`, t]));
    const model = builders.mlp();
    io.importTorchWeightNorm(renamed, model, { prefixMap: { 'features.': '' } });
    expectSameBits(
      new Map([['0.v', model.stateDict()['0.v']!.toArray()]]),
      new Map([['0.v', renamed['features.0.weight_v']!.toArray()]]),
    );
  });

  it('a mismatched import changes nothing and says why', () => {
    const model = builders.mlp();
    const before = snapshot(model.stateDict());
    expectCheckpointError(() => io.importTorchWeightNorm(fixture('conv.weight_norm'), model), "3 unexpected key(s) '4.bias', '4.g', '4.v'");
    expectSameBits(snapshot(model.stateDict()), before, 'after the failed import');
    const narrow = new nn.Sequential(new nn.Linear(8, 10, { weightNorm: true }), new nn.ReLU(), new nn.Linear(10, 4, { weightNorm: true }));
    const narrowBefore = snapshot(narrow.stateDict());
    const load = (): void => io.importTorchWeightNorm(fixture('mlp.weight_norm'), narrow);
    expectCheckpointError(load, /'0.bias': expected shape \[10\], received \[16\]/);
    expectSameBits(snapshot(narrow.stateDict()), narrowBefore, 'after the failed import');
    const perInput = new nn.Sequential(
      new nn.Linear(8, 16, { weightNorm: { dim: 1 } }),
      new nn.ReLU(),
      new nn.Linear(16, 4, { weightNorm: true }),
    );
    expect(() => io.importTorchWeightNorm(fixture('mlp.weight_norm'), perInput)).toThrow(
      /weight_norm dim=0\), but the layer '0' normalizes with dim 1/,
    );
  });

  const transposeTitle = 'ConvTranspose1d (%s): dim 0 stays one norm per INPUT channel; w and outputs match torch';
  it.each(['weight_norm', 'parametrizations'])(transposeTitle, (scheme) => {
    const { tensors } = io.load(fixture(`convtranspose1d.${scheme}`));
    const { v, g, bias } = io.mapTorchStateDict(tensors) as Record<'v' | 'g' | 'bias', Tensor>;
    const [inChannels, outChannels, kernel] = v.shape as [number, number, number];
    expect([inChannels, outChannels, kernel]).toEqual([3, 4, 3]);
    expect(g.shape).toEqual([inChannels]);
    const { w } = ops.weightNorm(v, g, { dim: 0 });
    const io1d = io.load(fixture('convtranspose1d.io')).tensors;
    const torchWeight = io1d.weight!.toArray();
    // Same float32 formula, different summation order for the norm: a few ulps.
    expect(relativeError(w.toArray(), torchWeight)).toBeLessThan(1e-6);
    const wv = w.toArray();
    const gv = g.toArray();
    for (let i = 0; i < inChannels; i++) {
      let squares = 0;
      for (let j = 0; j < outChannels * kernel; j++) squares += wv[i * outChannels * kernel + j]! ** 2;
      expect(Math.sqrt(squares)).toBeCloseTo(Math.abs(gv[i]!), 5); // ‖w[i, :, :]‖ = |g[i]|: per input channel
    }
    // torch's output from our w, through a float64 transposed convolution (stride 2, no padding).
    const x = io1d.input!.toArray();
    const [batchSize, , length] = io1d.input!.shape as [number, number, number];
    const stride = 2;
    const outLength = (length - 1) * stride + kernel;
    const y = new Float64Array(batchSize * outChannels * outLength);
    const b = bias.toArray();
    for (let n = 0; n < batchSize; n++)
      for (let o = 0; o < outChannels; o++)
        for (let t = 0; t < outLength; t++) y[(n * outChannels + o) * outLength + t] = b[o]!;
    for (let n = 0; n < batchSize; n++)
      for (let i = 0; i < inChannels; i++)
        for (let s = 0; s < length; s++)
          for (let o = 0; o < outChannels; o++)
            for (let k = 0; k < kernel; k++) {
              const input = x[(n * inChannels + i) * length + s]!;
              y[(n * outChannels + o) * outLength + s * stride + k] += input * wv[(i * outChannels + o) * kernel + k]!;
            }
    expect(io1d.output!.shape).toEqual([batchSize, outChannels, outLength]);
    expect(relativeError(y, io1d.output!.toArray())).toBeLessThan(TOLERANCE);
  });
});
