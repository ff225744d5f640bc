// The weight-norm option rules are one rule set: the same bad dim or eps fed to every layer that takes it (ops,
// functional, the nn layers' weightNorm config) must give the same error class, and a message that names the
// function and the parameter as that layer spells it. Also the link from a layer's v to its ‖v‖ cache that the
// optimizers write through.
import { describe, expect, it } from 'vitest';

import { DEFAULT_EPS, nn, ops, optim, randn, type Tensor, tidy } from '../ts/index.js';
import { MIN_EPS } from '../ts/ops.js';

import { disposedAfterAll } from './suite-tensors.js';

const keep = disposedAfterAll();

const v = keep(randn([4, 6], { seed: 11 }));
const g = keep(randn([4], { seed: 12 }));
const dw = keep(randn([4, 6], { seed: 13 }));
const x = keep(randn([3, 6], { seed: 14 }));
const saved = keep(ops.weightNorm(v, g).norm);

/** A gain (and saved norm) that fits v for a valid dim, so that only the dim can be wrong; g for an invalid one. */
function gainFor(dim: unknown): Tensor {
  if (dim === null) return keep(randn([1], { seed: 15 }));
  if (typeof dim === 'number' && Number.isInteger(dim) && dim >= -2 && dim < 2) return keep(randn([v.shape[(dim + 2) % 2]!], { seed: 15 }));
  return g;
}
const normFor = (dim: unknown): Tensor => (gainFor(dim) === g ? saved : keep(ops.weightNorm(v, gainFor(dim), { dim: dim as number }).norm));

/** One place that takes a dim: how to call it with that dim, the rank it checks against, its name for it. */
interface DimTaker {
  where: string;
  parameter: string;
  rank: number;
  call: (dim: unknown) => unknown;
}

const dimTakers: DimTaker[] = [
  { where: 'weightNorm', parameter: 'options.dim', rank: 2, call: (dim) => ops.weightNorm(v, gainFor(dim), { dim: dim as number }) },
  {
    where: 'weightNormBackward',
    parameter: 'options.dim',
    rank: 2,
    call: (dim) => ops.weightNormBackward(dw, v, gainFor(dim), normFor(dim), { dim: dim as number }),
  },
  { where: 'weightNorm', parameter: 'options.dim', rank: 2, call: (dim) => nn.functional.weightNorm(v, gainFor(dim), { dim: dim as number }) },
  { where: 'nn.Linear', parameter: 'options.weightNorm.dim', rank: 2, call: (dim) => new nn.Linear(6, 4, { weightNorm: { dim: dim as number } }) },
  {
    where: 'nn.Conv2d',
    parameter: 'options.weightNorm.dim',
    rank: 4,
    call: (dim) => new nn.Conv2d(2, 3, 3, { weightNorm: { dim: dim as number } }),
  },
];

/** One place that takes an eps: how to call it with that eps and its name for it. */
interface EpsTaker {
  where: string;
  parameter: string;
  call: (eps: unknown) => unknown;
}

const epsTakers: EpsTaker[] = [
  { where: 'weightNorm', parameter: 'options.eps', call: (eps) => ops.weightNorm(v, g, { eps: eps as number }) },
  {
    where: 'weightNormBackward',
    parameter: 'options.eps',
    call: (eps) => ops.weightNormBackward(dw, v, g, saved, { eps: eps as number }),
  },
  { where: 'weightNorm', parameter: 'options.eps', call: (eps) => nn.functional.weightNorm(v, g, { eps: eps as number }) },
  {
    where: 'weightNormLinear',
    parameter: 'eps',
    call: (eps) => nn.functional.weightNormLinear(x, v, g, null, saved, eps as number),
  },
  { where: 'nn.Linear', parameter: 'options.weightNorm.eps', call: (eps) => new nn.Linear(6, 4, { weightNorm: { eps: eps as number } }) },
  { where: 'nn.Conv2d', parameter: 'options.weightNorm.eps', call: (eps) => new nn.Conv2d(2, 3, 3, { weightNorm: { eps: eps as number } }) },
];

function thrown(call: () => unknown): Error {
  try {
    tidy(() => {
      call();
    });
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected the call to throw, it returned');
}

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('one rule for dim everywhere', () => {
  for (const taker of dimTakers) {
    const bad: [string, (rank: number) => unknown, typeof TypeError | typeof RangeError, RegExp][] = [
      ['one past the last axis', (rank) => rank, RangeError, /expected an axis in \[-\d, \d\] for a tensor of rank \d/],
      ['one before the first axis', (rank) => -rank - 1, RangeError, /expected an axis in \[-\d, \d\]/],
      ['a fraction', () => 0.5, TypeError, /expected an integer or null, received the number 0\.5/],
      ['NaN', () => NaN, TypeError, /expected an integer or null, received NaN/],
      ['a string', () => '0', TypeError, /expected an integer or null, received the string "0"/],
    ];
    for (const [name, value, errorClass, wording] of bad) {
      it(`${taker.where} (${taker.parameter}): dim ${name} is a ${errorClass.name}`, () => {
        const error = thrown(() => taker.call(value(taker.rank)));
        expect(error).toBeInstanceOf(errorClass);
        expect(error.message).toMatch(new RegExp(`^${escape(taker.where)}: ${escape(taker.parameter)}: `));
        expect(error.message).toMatch(wording);
      });
    }
    it(`${taker.where} (${taker.parameter}): negative dims count from the end and null is accepted`, () => {
      expect(() => tidy(() => void taker.call(-1))).not.toThrow();
      expect(() => tidy(() => void taker.call(null))).not.toThrow();
    });
  }
});

describe('one rule for eps everywhere', () => {
  const bad: [string, unknown, typeof TypeError | typeof RangeError, RegExp][] = [
    ['0', 0, TypeError, /expected a positive finite number, received the number 0/],
    ['negative', -1e-12, TypeError, /expected a positive finite number, received the number -1e-12/],
    ['NaN', NaN, TypeError, /expected a positive finite number, received NaN/],
    ['Infinity', Infinity, TypeError, /expected a positive finite number, received the number Infinity/],
    ['a string', '1e-5', TypeError, /expected a positive finite number, received the string "1e-5"/],
    ['null', null, TypeError, /expected a positive finite number, received null/],
    // Positive and finite but below what float32 g/eps can hold: a value out of range.
    ['below MIN_EPS', MIN_EPS / 10, RangeError, /expected a positive finite number >= 1e-30 \(float32 must hold g\/eps\), received 1e-31/],
  ];
  for (const taker of epsTakers) {
    for (const [name, value, errorClass, wording] of bad) {
      it(`${taker.where} (${taker.parameter}): eps ${name} is a ${errorClass.name}`, () => {
        const error = thrown(() => taker.call(value));
        expect(error).toBeInstanceOf(errorClass);
        expect(error.message).toMatch(new RegExp(`^${escape(taker.where)}: ${escape(taker.parameter)}: `));
        expect(error.message).toMatch(wording);
      });
    }
    it(`${taker.where} (${taker.parameter}): MIN_EPS itself is accepted`, () => {
      expect(() => tidy(() => void taker.call(MIN_EPS))).not.toThrow();
    });
  }

  it('the default eps is 1e-12 for ops, functional and the layers alike', () => {
    expect(DEFAULT_EPS).toBe(1e-12);
    const layer = new nn.Linear(6, 4, { weightNorm: true });
    const configured = new nn.Conv2d(2, 3, 3, { weightNorm: {} });
    expect(layer.weightNorm!.eps).toBe(DEFAULT_EPS);
    expect(configured.weightNorm!.eps).toBe(DEFAULT_EPS);
    for (const p of [...layer.parameters(), ...configured.parameters()]) keep(p);
  });
});

describe("a weight-normalized layer's v links to its ‖v‖ cache", () => {
  it('the optimizer step writes the new norm through v.weightNormState; it is ‖v‖ for the new v', () => {
    const layer = new nn.Linear(6, 4, { weightNorm: { dim: 0 } });
    for (const p of layer.parameters()) keep(p);
    const state = layer.v!.weightNormState;
    expect(state).toBe(layer.weightNorm);
    expect(layer.g!.weightNormState).toBeNull();
    const opt = new optim.SGD(layer.parameters(), { lr: 0.1 });
    tidy(() => nn.functional.sum(layer.forward(x)).backward());
    opt.step();
    // The step wrote the norm for the v it just produced: the next forward uses it without reading v.
    expect(state!.normVersion).toBe(layer.v!.version);
    const written = [...state!.norm!.toArray()];
    const recomputed = tidy(() => [...ops.weightNorm(layer.v!, layer.g!).norm.toArray()]);
    // Fused (optimizer) and standalone norm reductions sum in different orders: a few float32 ulps apart.
    for (let c = 0; c < 4; c++) expect(Math.abs(written[c]! - recomputed[c]!)).toBeLessThanOrEqual(1e-6 * recomputed[c]!);
    opt.zeroGrad();
  });

  it('removeWeightNorm unlinks v, so an optimizer no longer treats it as a direction', () => {
    const layer = new nn.Linear(6, 4, { weightNorm: true });
    const v = layer.v!;
    expect(v.weightNormState).not.toBeNull();
    nn.removeWeightNorm(layer);
    expect(v.weightNormState).toBeNull();
    for (const p of layer.parameters()) keep(p);
  });
});
