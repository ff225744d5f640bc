// Gradient clipping, parameter groups and learning-rate schedules: against PyTorch (test/fixtures/
// schedules_torch.json, scripts/make_schedule_fixtures.py), against separate optimizers, and through a checkpoint
// (a resumed run continues bit for bit, its schedule and per-group lrs included).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { io, manualSeed, nn, optim, randn, tensor, tidy, type Tensor } from '../ts/index.js';
import { reproduce, runSeed } from './helpers.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = mkdtempSync(join(tmpdir(), 'weightnorm-schedule-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const seed = runSeed();

interface ScheduleCase {
  name: string;
  kind: 'StepLR' | 'CosineAnnealingLR' | 'LinearLR' | 'warmupCosine';
  options: Record<string, number>;
  groupLrs: number[];
  lrs: number[][];
}
interface ClipCase {
  name: string;
  normType: 2 | 'inf';
  maxNorm: number;
  grads: { shape: number[]; data: number[] }[];
  total: number;
  clipped: number[][];
}
const fixture = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'schedules_torch.json'), 'utf8')) as {
  generator: string;
  cases: (ScheduleCase | ClipCase)[];
};
const scheduleCases = fixture.cases.filter((c): c is ScheduleCase => 'kind' in c);
const clipCases = fixture.cases.filter((c): c is ClipCase => 'maxNorm' in c);

function leaf(values: ArrayLike<number>, shape: readonly number[]): Tensor {
  const t = tensor(Float32Array.from(values), shape);
  t.requiresGrad = true;
  return t;
}

function makeSchedule(kind: ScheduleCase['kind'], opt: optim.Optimizer, options: Record<string, number>): optim.LRSchedule {
  if (kind === 'StepLR') return new optim.StepLR(opt, options as unknown as optim.StepLROptions);
  if (kind === 'CosineAnnealingLR') return new optim.CosineAnnealingLR(opt, options as unknown as optim.CosineAnnealingLROptions);
  if (kind === 'LinearLR') return new optim.LinearLR(opt, options);
  return optim.warmupCosine(opt, options as unknown as optim.WarmupCosineOptions);
}

describe('learning-rate schedules match torch.optim.lr_scheduler', () => {
  it('the fixture covers every schedule', () => {
    expect(fixture.generator).toBe('scripts/make_schedule_fixtures.py');
    expect(new Set(scheduleCases.map((c) => c.kind))).toEqual(new Set(['StepLR', 'CosineAnnealingLR', 'LinearLR', 'warmupCosine']));
  });

  it.each(scheduleCases.map((c) => [c.name, c] as const))('%s: the lr of each group over 30 steps', (_, c) => {
    const [a, b] = [leaf([0], [1]), leaf([0], [1])];
    const opt = new optim.SGD([{ params: [a], lr: c.groupLrs[0]! }, { params: [b], lr: c.groupLrs[1]! }], { lr: c.groupLrs[0]! });
    const schedule = makeSchedule(c.kind, opt, c.options);
    const ours = [schedule.lastLrs()];
    for (let t = 0; t < c.lrs.length - 1; t++) ours.push(schedule.step());
    // Ours are closed forms in float64; torch's chainable forms multiply step by step: a few ulps apart.
    c.lrs.forEach((expected, t) => expected.forEach((lr, g) => expect(Math.abs(ours[t]![g]! - lr), `step ${t} group ${g}`).toBeLessThanOrEqual(1e-12 * Math.max(lr, 1e-8))));
  });

  it('bad options are TypeErrors naming the option', () => {
    const opt = new optim.SGD([leaf([0], [1])], { lr: 0.1 });
    expect(() => new optim.StepLR(opt, { stepSize: 0 })).toThrow(/optim.StepLR: options.stepSize: expected an integer >= 1/);
    expect(() => new optim.CosineAnnealingLR(opt, { tMax: 10, etaMin: -1 })).toThrow(/options.etaMin/);
    expect(() => optim.warmupCosine(opt, { warmupSteps: 10, totalSteps: 10 })).toThrow(/options.totalSteps: expected an integer >= 11/);
    expect(() => new optim.StepLR({} as never, { stepSize: 1 })).toThrow(/optimizer: expected an Optimizer/);
  });
});

describe('gradient clipping matches torch.nn.utils', () => {
  it.each(clipCases.map((c) => [c.name, c] as const))('%s', (_, c) => {
    const params = c.grads.map((g) => {
      const p = leaf(new Float32Array(g.data.length), g.shape);
      p.grad = tensor(Float32Array.from(g.data), g.shape);
      return p;
    });
    const total = optim.clipGradNorm(params, c.maxNorm, { normType: c.normType === 'inf' ? Infinity : 2 });
    // Ours sums in float64 from the same float32 values: only torch's float64 rounding differs.
    expect(Math.abs(total - c.total)).toBeLessThanOrEqual(1e-12 * c.total);
    params.forEach((p, i) => {
      const got = p.grad!.toArray();
      // The coefficient is rounded to float32 and so is each product: two roundings, within 2·2^-24 relative (3 to spare).
      c.clipped[i]!.forEach((v, k) => expect(Math.abs(got[k]! - v)).toBeLessThanOrEqual(3 * 2 ** -24 * Math.abs(v) + 1e-30));
    });
  });

  it('clipGradValue clamps to [-v, v]; parameters without a gradient are skipped', () => {
    const p = leaf([0, 0, 0, 0], [4]);
    p.grad = tensor([-3, 0.5, 2, -0.25], [4]);
    const without = leaf([0], [1]);
    optim.clipGradValue([p, without], 1);
    expect(Array.from(p.grad.toArray())).toEqual([-1, 0.5, 1, -0.25]);
    expect(without.grad).toBeNull();
    expect(optim.clipGradNorm([without], 1)).toBe(0);
    expect(() => optim.clipGradNorm([p], -1)).toThrow(/maxNorm: expected a number >= 0/);
    expect(() => optim.clipGradNorm([p], 1, { normType: 1 as never })).toThrow(/normType: expected 2 or Infinity/);
  });
});

describe('parameter groups', () => {
  it(`a group's own lr, weight decay and betas act exactly as a separate optimizer with those options (${reproduce(seed)})`, () => {
    const values = [randn([3, 4], { seed: seed % 2 ** 31 }).toArray(), randn([5], { seed: (seed + 1) % 2 ** 31 }).toArray()];
    const grads = Array.from({ length: 4 }, (_, k) => [randn([3, 4], { seed: (seed + 2 + k) % 2 ** 31 }), randn([5], { seed: (seed + 9 + k) % 2 ** 31 })]);
    const run = (grouped: boolean): Float32Array[] => {
      const a = leaf(values[0]!, [3, 4]);
      const b = leaf(values[1]!, [5]);
      const opts = grouped
        ? [new optim.Adam([{ params: [a] }, { params: [b], lr: 0.05, weightDecay: 0.1, betas: [0.8, 0.99] }], { lr: 0.01 })]
        : [new optim.Adam([a], { lr: 0.01 }), new optim.Adam([b], { lr: 0.05, weightDecay: 0.1, betas: [0.8, 0.99] })];
      for (const [ga, gb] of grads) {
        a.grad = tensor(ga!.toArray(), [3, 4]);
        b.grad = tensor(gb!.toArray(), [5]);
        for (const o of opts) o.step();
      }
      return [a.toArray(), b.toArray()];
    };
    const grouped = run(true);
    const separate = run(false);
    expect(Buffer.from(grouped[0]!.buffer)).toEqual(Buffer.from(separate[0]!.buffer));
    expect(Buffer.from(grouped[1]!.buffer)).toEqual(Buffer.from(separate[1]!.buffer));
  });

  it('paramGroups lists every group with its options; setting opt.lr sets all; bad groups are errors', () => {
    const [a, b] = [leaf([1], [1]), leaf([2], [1])];
    const opt = new optim.SGD([{ params: [a], momentum: 0.9 }, { params: [b], lr: 0.5 }], { lr: 0.1 });
    expect(opt.paramGroups.map((g) => [g.lr, g.momentum])).toEqual([[0.1, 0.9], [0.5, 0]]);
    expect(opt.params).toEqual([a, b]);
    opt.lr = 0.2;
    expect(opt.paramGroups.map((g) => g.lr)).toEqual([0.2, 0.2]);
    expect(() => new optim.SGD([{ params: [a] }, { params: [a] }], { lr: 0.1 })).toThrow(/more than one parameter group/);
    expect(() => new optim.Adam([{ params: [a], beta: 0.5 } as never])).toThrow(/params\[0\]: expected a group with the keys params, lr, betas, eps, weightDecay/);
    expect(() => new optim.SGD([{ params: [b], lr: -1 }], { lr: 0.1 })).toThrow(/optim.SGD: params\[0\].lr: expected a number in \[0, Infinity\]/);
  });
});

describe('checkpoints keep groups and schedules', () => {
  function setup(): { model: nn.Sequential; opt: optim.Adam; schedule: optim.SequentialLR } {
    manualSeed(1234);
    const model = new nn.Sequential(new nn.Linear(6, 8, { weightNorm: true }), new nn.Tanh(), new nn.Linear(8, 3));
    const [first, ...rest] = model.layers;
    const opt = new optim.Adam([{ params: first!.parameters(), lr: 0.02 }, { params: rest.flatMap((l) => l.parameters()), weightDecay: 0.01 }], { lr: 0.005 });
    const schedule = optim.warmupCosine(opt, { warmupSteps: 3, totalSteps: 12 });
    return { model, opt, schedule };
  }
  const x = randn([10, 6], { seed: 77 });
  const labels = Int32Array.from({ length: 10 }, (_, i) => i % 3);
  function train(model: nn.Sequential, opt: optim.Adam, schedule: optim.LRSchedule, steps: number): void {
    for (let i = 0; i < steps; i++) {
      tidy(() => {
        const loss = nn.functional.crossEntropy(model.forward(x), labels, { labelSmoothing: 0.1 });
        opt.zeroGrad();
        loss.backward();
        optim.clipGradNorm(model.parameters(), 0.5);
        opt.step();
        schedule.step();
      });
    }
  }
  const bytes = (model: nn.Module): Buffer[] => model.parameters().map((p) => Buffer.from(p.toArray().buffer));

  it('train k steps, save, resume in a new process state: the parameters and lrs equal an uninterrupted run bit for bit', () => {
    const straight = setup();
    train(straight.model, straight.opt, straight.schedule, 9);

    const first = setup();
    train(first.model, first.opt, first.schedule, 5);
    const path = join(work, 'resume.safetensors');
    io.save({ model: first.model, optimizer: first.opt }, path);
    const resumed = setup();
    expect(resumed.schedule.lastStep).toBe(0);
    io.loadInto({ model: resumed.model, optimizer: resumed.opt }, path);
    expect(resumed.schedule.lastStep).toBe(5);
    expect(resumed.opt.paramGroups.map((g) => g.lr)).toEqual(first.opt.paramGroups.map((g) => g.lr));
    train(resumed.model, resumed.opt, resumed.schedule, 4);

    expect(resumed.opt.paramGroups.map((g) => g.lr)).toEqual(straight.opt.paramGroups.map((g) => g.lr));
    expect(bytes(resumed.model)).toEqual(bytes(straight.model));
    // The check can fail: one step fewer differs.
    const short = setup();
    train(short.model, short.opt, short.schedule, 8);
    expect(bytes(short.model)).not.toEqual(bytes(straight.model));
  });

  it('loading a schedule into an optimizer without one, or of another type, changes nothing and says why', () => {
    const { model, opt } = setup();
    const path = join(work, 'with-schedule.safetensors');
    io.save({ model, optimizer: opt }, path);
    const plain = new optim.Adam([{ params: model.layers[0]!.parameters() }, { params: [...model.layers[2]!.parameters()] }]);
    expect(() => io.loadInto({ model, optimizer: plain }, path)).toThrow(/schedule: the state holds a SequentialLR schedule, but this optimizer has none/);
    const other = new optim.Adam([{ params: model.layers[0]!.parameters() }, { params: [...model.layers[2]!.parameters()] }]);
    new optim.StepLR(other, { stepSize: 2 });
    expect(() => io.loadInto({ model, optimizer: other }, path)).toThrow(/expected the state of a StepLR, found the state of SequentialLR/);
    const oneGroup = new optim.Adam(model.parameters());
    optim.warmupCosine(oneGroup, { warmupSteps: 3, totalSteps: 12 });
    expect(() => io.loadInto({ model, optimizer: oneGroup }, path)).toThrow(/paramGroups: expected 1 parameter group/);
    expect(oneGroup.lr).toBeCloseTo(1e-5, 12);
  });
});
