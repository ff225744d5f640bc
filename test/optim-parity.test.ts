// The optimizers against PyTorch: float64 trajectories from torch.optim (test/fixtures/optim_torch.json, written by
// scripts/make_optim_fixtures.py), with parameters that get their first gradient late or none at some steps; the
// per-parameter step count (what a parameter's update depends on, and what checkpoints keep); all-or-nothing step().
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { backend, io, manualSeed, nn, optim, tensor, type Tensor } from '../ts/index.js';
import { bitwiseEqual, normals, reproduce, runSeed } from './helpers.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
type Device = 'cpu' | 'cuda';
const devices: readonly Device[] = ['cpu', ...(backend().cuda.usable ? (['cuda'] as const) : [])];

interface FixtureCase {
  name: string;
  optimizer: 'SGD' | 'Adam' | 'Adamax';
  options: Record<string, number | boolean | number[]>;
  schedule: { totalSteps: number; finalLr: number } | null;
  shapes: number[][];
  initial: number[][];
  grads: (number[] | null)[][];
  expected: number[][][];
}

const fixture = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'optim_torch.json'), 'utf8')) as {
  generator: string;
  steps: number;
  cases: FixtureCase[];
};

function makeOptimizer(kind: FixtureCase['optimizer'], params: Tensor[], options: FixtureCase['options']): optim.Optimizer {
  if (kind === 'SGD') return new optim.SGD(params, options as unknown as optim.SGDOptions);
  if (kind === 'Adam') return new optim.Adam(params, options as optim.AdamOptions);
  return new optim.Adamax(params, options as optim.AdamOptions);
}

function parameter(values: ArrayLike<number>, shape: readonly number[], device: Device = 'cpu'): Tensor {
  const p = tensor(Float32Array.from(values), shape, { device });
  p.requiresGrad = true;
  return p;
}

/**
 * The case's first parameter ([2, 3]) as the weight-norm direction v of a Linear(3, 2), so that its steps also go
 * through the fused ‖v‖ route; the others plain tensors.
 */
function fixtureParameters(c: FixtureCase, device: Device, weightNormFirst: boolean): Tensor[] {
  if (!weightNormFirst) return c.shapes.map((shape, i) => parameter(c.initial[i]!, shape, device));
  const layer = new nn.Linear(3, 2, { weightNorm: true }).to(device);
  const v = layer.namedParameters().find(([name]) => name === 'v')![1];
  layer.loadStateDict({ v: tensor(Float32Array.from(c.initial[0]!), c.shapes[0]!) }, { allowMissingKeys: true });
  return [v, ...c.shapes.slice(1).map((shape, i) => parameter(c.initial[i + 1]!, shape, device))];
}

describe.each(devices)('optimizers match torch.optim (float64 fixture) on %s', (device) => {
  // Each step rounds p and its update to float32 (2^-24 relative) plus a few ulps in the update's arithmetic; over 8
  // steps that stays below 1e-6 of |p| + the distance p travelled. 1e-5 leaves room; the defects this guards against
  // (a global step count, eps outside Adamax's max) are off by 1e-2 to 1e-1 of a step.
  const tolerance = 1e-5;
  const cases = fixture.cases.flatMap((c) => [[c.name, c, false] as const, [`${c.name} (first parameter a weight-norm v)`, c, true] as const]);

  it.each(cases)('%s', (_title, c, weightNormFirst) => {
    const params = fixtureParameters(c, device, weightNormFirst);
    const optimizer = makeOptimizer(c.optimizer, params, c.options);
    const schedule = c.schedule ? optim.linearDecay(optimizer, c.schedule) : null;
    const travelled = c.initial.map((values) => new Float64Array(values.length));
    let previous = c.initial;
    c.grads.forEach((row, t) => {
      optimizer.zeroGrad();
      row.forEach((g, i) => {
        if (g) params[i]!.grad = tensor(Float32Array.from(g), c.shapes[i]!, { device });
      });
      optimizer.step();
      schedule?.step();
      const expected = c.expected[t]!;
      params.forEach((p, i) => {
        const got = p.toArray();
        const ref = expected[i]!;
        const distance = travelled[i]!;
        let worst = 0;
        for (let k = 0; k < ref.length; k++) {
          distance[k] = distance[k]! + Math.abs(ref[k]! - previous[i]![k]!);
          worst = Math.max(worst, Math.abs(got[k]! - ref[k]!) / (Math.abs(ref[k]!) + distance[k]!));
        }
        expect(worst, `step ${t + 1}, parameter ${i} ([${c.shapes[i]}]): error ${worst.toExponential(2)} of |p| + distance travelled`).toBeLessThan(
          tolerance,
        );
      });
      previous = expected;
    });
    // A parameter counts only the steps where it had a gradient, as torch's state['step'].
    params.forEach((p, i) => expect(optimizer.stepsOf(p), `parameter ${i}`).toBe(c.grads.filter((row) => row[i] !== null).length));
    expect(optimizer.stepCount).toBe(fixture.steps);
    optimizer.dispose();
  });
});

describe('a parameter whose first gradient comes at step 2 (the other parameter had one at step 1)', () => {
  // Hand-computed in float64 (torch gives the same): the late parameter starts at 1, gets gradient 1 at step 2.
  const cases = [
    // Adam's first step moves by lr whatever the gradient: m̂ = g, v̂ = g². A global count gives 0.9256.
    ['Adam', (ps: Tensor[]) => new optim.Adam(ps, { lr: 0.1 }), 0.9],
    // Adamax: m̂ = g, u = |g| + eps. A global count gives 0.9474.
    ['Adamax', (ps: Tensor[]) => new optim.Adamax(ps, { lr: 0.1 }), 0.9],
    // SGD's momentum buffer starts as the gradient itself (no dampening on the first step). A global count: 0.975.
    ['SGD with momentum and dampening', (ps: Tensor[]) => new optim.SGD(ps, { lr: 0.05, momentum: 0.9, dampening: 0.5 }), 0.95],
  ] as const;
  it.each(cases)('%s updates it as its first step', (_name, make, want) => {
    const late = parameter([1], [1]);
    const early = parameter([1], [1]);
    const optimizer = make([late, early]);
    early.grad = tensor([1], [1]);
    optimizer.step();
    expect(late.toArray()[0]).toBe(1);
    optimizer.zeroGrad();
    late.grad = tensor([1], [1]);
    optimizer.step();
    expect(late.toArray()[0]).toBeCloseTo(want, 6);
    expect(optimizer.stepsOf(late)).toBe(1);
    expect(optimizer.stepsOf(early)).toBe(1);
    expect(optimizer.stepCount).toBe(2);
  });

  it('Adamax puts eps inside the max, as torch: lr 0.1, betas (0.9, 0.5), eps 1, gradients 1 then 0 give 0.90263', () => {
    // Step 1: m = 0.1, u = max(0, 1 + 1) = 2, p = 1 − 0.1/0.1 · 0.1/2 = 0.95. Step 2: m = 0.09, u = max(1, 0 + 1) = 1,
    // p = 0.95 − 0.1/0.19 · 0.09 = 0.902632 (eps added after the max instead: 0.91842).
    const p = parameter([1], [1]);
    const optimizer = new optim.Adamax([p], { lr: 0.1, betas: [0.9, 0.5], eps: 1 });
    for (const g of [1, 0]) {
      optimizer.zeroGrad();
      p.grad = tensor([g], [1]);
      optimizer.step();
    }
    expect(p.toArray()[0]).toBeCloseTo(0.95 - (0.1 / 0.19) * 0.09, 6);
  });
});

describe.each(devices)('per-parameter state on %s', (device) => {
  const makers = [
    ['SGD (momentum, dampening, weight decay)', (ps: Tensor[]) => new optim.SGD(ps, { lr: 0.05, momentum: 0.9, dampening: 0.2, weightDecay: 0.01 })],
    ['SGD (Nesterov)', (ps: Tensor[]) => new optim.SGD(ps, { lr: 0.05, momentum: 0.9, nesterov: true })],
    ['Adam', (ps: Tensor[]) => new optim.Adam(ps, { lr: 0.01, weightDecay: 0.01 })],
    ['Adamax', (ps: Tensor[]) => new optim.Adamax(ps, { lr: 0.01, eps: 0.1 })],
  ] as const;

  it.each(makers)('%s: a parameter gets the same updates, bit for bit, whether or not another had gradients earlier', (_name, make) => {
    const seed = runSeed();
    const start = normals(12, seed);
    const grads = [1, 2, 3, 4].map((k) => Float32Array.from(normals(12, seed + k)));
    // Alone: p gets gradients at steps 1-4.
    const alone = parameter(start, [3, 4], device);
    const soloOptimizer = make([alone]);
    for (const g of grads) {
      soloOptimizer.zeroGrad();
      alone.grad = tensor(g, [3, 4], { device });
      soloOptimizer.step();
    }
    // Shared: another parameter has gradients at steps 1-3, p gets the same four gradients at steps 4-7.
    const shared = parameter(start, [3, 4], device);
    const other = parameter(normals(5, seed + 9), [5], device);
    const sharedOptimizer = make([shared, other]);
    for (let step = 1; step <= 7; step++) {
      sharedOptimizer.zeroGrad();
      if (step <= 3) other.grad = tensor(Float32Array.from(normals(5, seed + 20 + step)), [5], { device });
      if (step >= 4) shared.grad = tensor(grads[step - 4]!, [3, 4], { device });
      sharedOptimizer.step();
    }
    expect(bitwiseEqual(shared.toArray(), alone.toArray()), reproduce(seed)).toBe(true);
    expect(sharedOptimizer.stepsOf(shared)).toBe(4);
    expect(sharedOptimizer.stepsOf(other)).toBe(3);
  });

  it('step() is all-or-nothing: a bad later parameter or gradient throws before anything is updated', () => {
    const cases: [string, (ps: Tensor[]) => void, RegExp][] = [
      ['a disposed parameter', (ps) => ps[1]!.dispose(), /optim\.Adam\.step: params\[1\].*used after dispose/],
      ['a disposed gradient', (ps) => ps[1]!.grad!.dispose(), /optim\.Adam\.step: params\[1\]\.grad.*used after dispose/],
      [
        'a gradient of the wrong shape',
        (ps) => {
          ps[1]!.grad!.dispose();
          ps[1]!.grad = tensor([1, 2], [2], { device });
        },
        /optim\.Adam\.step: params\[1\]\.grad: expected the parameter's shape \[3\], received \[2\]/,
      ],
      [
        'a bfloat16 gradient',
        (ps) => {
          ps[1]!.grad = ps[1]!.grad!.cast('bfloat16');
        },
        /optim\.Adam\.step: params\[1\]\.grad: expected a float32 tensor/,
      ],
      [
        'a gradient that is no tensor',
        (ps) => {
          (ps[1] as { grad: unknown }).grad = [1, 2, 3];
        },
        /optim\.Adam\.step: params\[1\]\.grad: expected a Tensor or null, received an array of length 3/,
      ],
    ];
    if (device === 'cuda') {
      cases.push([
        'a gradient on another device',
        (ps) => {
          ps[1]!.grad = tensor([1, 2, 3], [3]);
        },
        /optim\.Adam\.step: params\[1\]\.grad: expected a tensor on 'cuda' like the parameter, received one on 'cpu'/,
      ]);
    }
    for (const [what, spoil, message] of cases) {
      const a = parameter([1, 2], [2], device);
      const b = parameter([3, 4, 5], [3], device);
      const optimizer = new optim.Adam([a, b], { lr: 0.1 });
      a.grad = tensor([1, 1], [2], { device });
      b.grad = tensor([1, 1, 1], [3], { device });
      optimizer.step();
      const afterFirstStep = a.toArray();
      spoil([a, b]);
      expect(() => optimizer.step(), what).toThrow(message);
      expect(bitwiseEqual(a.toArray(), afterFirstStep), what).toBe(true);
      expect(optimizer.stepCount, what).toBe(1);
      expect(optimizer.stepsOf(a), what).toBe(1);
      expect(a.version, what).toBe(1);
    }
    // A failed first step leaves no state behind either.
    const a = parameter([1, 2], [2], device);
    const b = parameter([3, 4, 5], [3], device);
    const optimizer = new optim.Adam([a, b], { lr: 0.1 });
    a.grad = tensor([1, 1], [2], { device });
    b.grad = tensor([1, 1], [2], { device });
    expect(() => optimizer.step()).toThrow(/params\[1\]\.grad: expected the parameter's shape \[3\]/);
    expect(optimizer.stateDict().state).toEqual({});
    expect(optimizer.stateDict().steps).toEqual({});
  });
});

describe('per-parameter step counts in state dicts and checkpoints', () => {
  const work = mkdtempSync(join(tmpdir(), 'weightnorm-optim-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  function model(seed: number): nn.Module {
    manualSeed(seed);
    return new nn.Sequential(new nn.Linear(3, 4, { weightNorm: true }), new nn.ReLU(), new nn.Linear(4, 2));
  }

  /** Sets a seeded gradient on the parameters whose index is in `which`, then steps. */
  function stepWith(optimizer: optim.Optimizer, which: readonly number[], seed: number): void {
    optimizer.zeroGrad();
    optimizer.params.forEach((p, i) => {
      if (which.includes(i)) p.grad = tensor(Float32Array.from(normals(p.size, seed + 100 * i)), p.shape);
    });
    optimizer.step();
  }

  it.each(['Adam', 'Adamax', 'SGD'] as const)('%s: save after late-starting parameters, load, continue = uninterrupted run, bit for bit', (kind) => {
    const seed = runSeed();
    const make = (m: nn.Module) =>
      kind === 'SGD' ? new optim.SGD(m.parameters(), { lr: 0.05, momentum: 0.9, dampening: 0.1 }) : makeOptimizer(kind, m.parameters(), { lr: 0.01 });
    const all = [0, 1, 2, 3, 4];
    const a = model(1);
    const optimizerA = make(a);
    // Steps 1-3: only some parameters have gradients (v and the last bias start late).
    stepWith(optimizerA, [1, 2, 3], seed + 1);
    stepWith(optimizerA, [1, 3], seed + 2);
    stepWith(optimizerA, [0, 1, 2, 3], seed + 3);
    const path = join(work, `${kind}.safetensors`);
    io.save({ model: a, optimizer: optimizerA }, path);
    const names = a.namedParameters().map(([name]) => name);
    const saved = optimizerA.stateDict(names).steps;
    expect(saved).toEqual({ '0.v': 1, '0.g': 3, '0.bias': 2, '2.weight': 3 });

    const b = model(2);
    const optimizerB = make(b);
    io.loadInto({ model: b, optimizer: optimizerB }, path);
    expect(optimizerB.stateDict(names).steps).toEqual(saved);
    for (let step = 4; step <= 6; step++) {
      stepWith(optimizerA, all, seed + step);
      stepWith(optimizerB, all, seed + step);
    }
    const pa = a.parameters();
    b.parameters().forEach((p, i) => expect(bitwiseEqual(p.toArray(), pa[i]!.toArray()), `parameter ${i}, ${reproduce(seed)}`).toBe(true));
  });

  it('a state dict without per-parameter steps (older checkpoints) counts stepCount for each parameter with state', () => {
    const p = parameter([1, 2], [2]);
    const q = parameter([3], [1]);
    const optimizer = new optim.Adam([p, q], { lr: 0.1 });
    p.grad = tensor([1, 1], [2]);
    optimizer.step();
    optimizer.step();
    const { steps, ...old } = optimizer.stateDict();
    expect(steps).toEqual({ '0': 2 });
    old.stepCount = 5;
    const fresh = new optim.Adam([parameter([1, 2], [2]), parameter([3], [1])], { lr: 0.1 });
    fresh.loadStateDict(old);
    expect(fresh.stepsOf(fresh.params[0]!)).toBe(5);
    expect(fresh.stepsOf(fresh.params[1]!)).toBe(0);
  });

  it('rejects per-parameter steps that do not fit the state, naming what is wrong', () => {
    const p = parameter([1, 2], [2]);
    const q = parameter([3], [1]);
    const optimizer = new optim.Adam([p, q], { lr: 0.1 });
    p.grad = tensor([1, 1], [2]);
    optimizer.step();
    const good = optimizer.stateDict();
    const fresh = new optim.Adam([parameter([1, 2], [2]), parameter([3], [1])], { lr: 0.1 });
    const where = /optim\.Adam\.loadStateDict: /;
    expect(() => fresh.loadStateDict({ ...good, steps: { '0': 2 } })).toThrow(/steps '0': expected an integer in \[1, 1\] \(at most stepCount\), received the number 2/);
    expect(() => fresh.loadStateDict({ ...good, steps: { '0': 1.5 } })).toThrow(where);
    expect(() => fresh.loadStateDict({ ...good, steps: { '7': 1 } })).toThrow(/steps for '7', which is none of the optimizer's parameters/);
    expect(() => fresh.loadStateDict({ ...good, steps: {} })).toThrow(/state '0' has state tensors but no entry in steps/);
    expect(() => fresh.loadStateDict({ ...good, steps: { '0': 1, '1': 1 } })).toThrow(/steps has '1', which has no state tensors/);
    expect(() => fresh.loadStateDict({ ...good, steps: [1] as unknown as Record<string, number> })).toThrow(
      /steps: expected a record of step counts by parameter, received an array of length 1/,
    );
    expect(fresh.stepCount).toBe(0);
    fresh.loadStateDict(good);
    expect(fresh.stepsOf(fresh.params[0]!)).toBe(1);
  });
});
