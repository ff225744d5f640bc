// The pointwise family's entries in the gradient-check harness (cases: test/fixtures/gradcheck_pointwise_torch.json,
// from scripts/make_gradcheck_pointwise_fixtures.py). Spread into OPS, LAYERS and EXCLUDED_FUNCTIONAL by registry.ts.
import { nn, type Tensor } from '../../ts/index.js';
import type { LayerSpec, OpConfig } from './fixture.js';
import { ELEMENTWISE, type LayerEntry, type OpEntry, type Tolerance, UNIT_ROUNDOFF } from './entry.js';

const F = nn.functional;

function need(t: Record<string, Tensor>, name: string): Tensor {
  const tensor = t[name];
  if (!tensor) throw new RangeError(`gradcheck: the fixture case has no input '${name}'`);
  return tensor;
}

function optionalNumber(config: OpConfig | LayerSpec, key: string): number | undefined {
  const value = (config as unknown as Record<string, unknown>)[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number') throw new TypeError(`gradcheck: ${key}: expected a number, received ${JSON.stringify(value)}`);
  return value;
}

/** Operand a or b: the tensor input, or the config's scalarA / scalarB (a JS number). */
function operand(t: Record<string, Tensor>, c: OpConfig, name: 'a' | 'b'): Tensor | number {
  return optionalNumber(c, name === 'a' ? 'scalarA' : 'scalarB') ?? need(t, name);
}

function binaryEntry(run: (a: Tensor | number, b: Tensor | number, c: OpConfig) => Tensor, tolerance: Tolerance): OpEntry {
  return { run: (t, c) => ({ y: run(operand(t, c, 'a'), operand(t, c, 'b'), c) }), tolerance };
}

const alphaOf = (c: OpConfig) => ({ alpha: optionalNumber(c, 'alpha') ?? 1 });

/** float32 transcendental functions (exp, log, tanh, erf) are within a few ulp; a gradient reuses the output. */
const TRANSCENDENTAL: Tolerance = {
  forward: 8 * UNIT_ROUNDOFF,
  gradient: 16 * UNIT_ROUNDOFF,
  reason: 'float32 exp/log/tanh/erf are within a few ulp; the gradient carries that error through a few more roundings',
};

/** Compositions of several transcendental calls and roundings (gelu's tanh form, softplus, pow's exponent gradient). */
const COMPOSITE: Tolerance = {
  forward: 16 * UNIT_ROUNDOFF,
  gradient: 32 * UNIT_ROUNDOFF,
  reason: 'two or three float32 transcendental calls plus up to 6 roundings per element (gelu tanh: x³, tanh, products)',
};

/** div: the b gradient −dy·a/b² rounds three times; broadcast sums add in double, then round once. */
const DIVISION: Tolerance = {
  forward: 4 * UNIT_ROUNDOFF,
  gradient: 8 * UNIT_ROUNDOFF,
  reason: 'one rounding forward; −dy·a/b² is three float32 roundings, and a broadcast sum one more',
};

/** Replaces the core registry's add and mul (same names, spread after them): a superset that also reads alpha and scalars. */
export const POINTWISE_OPS: Record<string, OpEntry> = {
  add: binaryEntry((a, b, c) => F.add(a, b, alphaOf(c)), ELEMENTWISE),
  mul: {
    run: (t, c) => {
      const a = operand(t, c, 'a');
      return { y: F.mul(a, c.sameOperand ? a : operand(t, c, 'b')) };
    },
    tolerance: ELEMENTWISE,
  },
  sub: binaryEntry((a, b, c) => F.sub(a, b, alphaOf(c)), ELEMENTWISE),
  div: binaryEntry((a, b) => F.div(a, b), DIVISION),
  pow: binaryEntry((a, b) => F.pow(a, b), COMPOSITE),
  minimum: binaryEntry((a, b) => F.minimum(a, b), ELEMENTWISE),
  maximum: binaryEntry((a, b) => F.maximum(a, b), ELEMENTWISE),
  where: {
    run: (t, c) => ({ y: F.where(need(t, 'condition').gt(0.5), need(t, 'a'), operand(t, c, 'b')) }),
    tolerance: ELEMENTWISE,
  },
  neg: { run: (t) => ({ y: F.neg(need(t, 'x')) }), tolerance: ELEMENTWISE },
  exp: { run: (t) => ({ y: F.exp(need(t, 'x')) }), tolerance: TRANSCENDENTAL },
  log: { run: (t) => ({ y: F.log(need(t, 'x')) }), tolerance: TRANSCENDENTAL },
  sqrt: { run: (t) => ({ y: F.sqrt(need(t, 'x')) }), tolerance: ELEMENTWISE },
  rsqrt: {
    run: (t) => ({ y: F.rsqrt(need(t, 'x')) }),
    tolerance: { forward: 4 * UNIT_ROUNDOFF, gradient: 16 * UNIT_ROUNDOFF, reason: '1/√x rounds twice; −½·dy·y³ carries y\'s error three times plus 4 roundings' },
  },
  abs: { run: (t) => ({ y: F.abs(need(t, 'x')) }), tolerance: ELEMENTWISE },
  sign: { run: (t) => ({ y: F.sign(need(t, 'x')) }), tolerance: ELEMENTWISE },
  clamp: { run: (t, c) => ({ y: F.clamp(need(t, 'x'), optionalNumber(c, 'min') ?? null, optionalNumber(c, 'max') ?? null) }), tolerance: ELEMENTWISE },
  sigmoid: { run: (t) => ({ y: F.sigmoid(need(t, 'x')) }), tolerance: TRANSCENDENTAL },
  elu: {
    run: (t, c) => {
      const alpha = optionalNumber(c, 'alpha');
      return { y: alpha === undefined ? F.elu(need(t, 'x')) : F.elu(need(t, 'x'), alpha) };
    },
    tolerance: TRANSCENDENTAL,
  },
  softplus: {
    run: (t, c) => {
      const beta = optionalNumber(c, 'beta');
      const threshold = optionalNumber(c, 'threshold');
      return { y: beta === undefined ? F.softplus(need(t, 'x')) : F.softplus(need(t, 'x'), beta, threshold) };
    },
    tolerance: COMPOSITE,
  },
  gelu: {
    run: (t, c) => ({ y: c.approximate === undefined ? F.gelu(need(t, 'x')) : F.gelu(need(t, 'x'), { approximate: c.approximate as 'tanh' }) }),
    tolerance: COMPOSITE,
  },
  silu: { run: (t) => ({ y: F.silu(need(t, 'x')) }), tolerance: TRANSCENDENTAL },
};

const notDifferentiable = 'a bool result (comparison or logical op): no gradient; values checked in test/pointwise.test.ts';

export const POINTWISE_EXCLUDED_FUNCTIONAL: Record<string, string> = {
  eq: notDifferentiable,
  ne: notDifferentiable,
  lt: notDifferentiable,
  le: notDifferentiable,
  gt: notDifferentiable,
  ge: notDifferentiable,
  logicalAnd: notDifferentiable,
  logicalOr: notDifferentiable,
  logicalNot: notDifferentiable,
};

export const POINTWISE_LAYERS: Record<string, LayerEntry> = {
  Sigmoid: { build: () => new nn.Sigmoid(), tolerance: TRANSCENDENTAL },
  GELU: {
    build: (s) => new nn.GELU((s as unknown as { approximate?: 'none' | 'tanh' }).approximate === undefined ? {} : { approximate: (s as unknown as { approximate: 'tanh' }).approximate }),
    tolerance: COMPOSITE,
  },
  SiLU: { build: () => new nn.SiLU(), tolerance: TRANSCENDENTAL },
  ELU: { build: (s) => new nn.ELU(optionalNumber(s, 'alpha')), tolerance: TRANSCENDENTAL },
  Softplus: { build: (s) => new nn.Softplus(optionalNumber(s, 'beta'), optionalNumber(s, 'threshold')), tolerance: COMPOSITE },
};
