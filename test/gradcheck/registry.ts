// What the gradient-check harness covers: every differentiable op of nn.functional and every layer of nn, each with
// how to run it from a fixture case and the tolerance it is held to (with the reason). Whatever is exported but not
// differentiable is in an exclusion list with its reason; the completeness test fails on anything in neither.
// To cover a new op or layer: add its cases (inputs, torch float64 forward) to scripts/make_gradcheck_fixtures.py,
// run it with a Python that has torch, and add an entry below that runs it with our library. A new op family keeps
// its cases in its own fixture (scripts/make_gradcheck_<family>_fixtures.py writing
// test/fixtures/gradcheck_<family>_torch.json) and its entries in test/gradcheck/registry-<family>.ts, spread into
// the lists below (shared tolerances and entry types are in entry.ts).
import { nn, noGrad, type Tensor } from '../../ts/index.js';
import type { LayerSpec, OpConfig } from './fixture.js';
import { accumulation, ELEMENTWISE, type LayerEntry, type OpEntry, UNIT_ROUNDOFF } from './entry.js';
import { SHAPE_OPS } from './registry-shape.js';
import { LAYERS as RNN_LAYERS } from './registry-rnn.js';
import { REDUCE_EXCLUDED_FUNCTIONAL, REDUCE_LAYERS, REDUCE_OPS } from './registry-reduce.js';
import { POINTWISE_EXCLUDED_FUNCTIONAL, POINTWISE_LAYERS, POINTWISE_OPS } from './registry-pointwise.js';
import { LOSS_EXCLUDED_MODULES, LOSS_OPS } from './registry-loss.js';
import { CONV2D_LAYER, CONV_EXCLUDED_MODULES, CONV_LAYERS, CONV_OPS } from './registry-conv.js';
import { VAE_OPS } from './registry-vae.js';

export { accumulation, ELEMENTWISE, type LayerEntry, type OpEntry, type OpRun, type Tolerance, UNIT_ROUNDOFF } from './entry.js';

const F = nn.functional;

/** Tensors that may be absent from a case (an op called without a bias). */
const optional = (t: Record<string, Tensor>, name: string): Tensor | null => t[name] ?? null;

function need(t: Record<string, Tensor>, name: string): Tensor {
  const tensor = t[name];
  if (!tensor) throw new RangeError(`gradcheck: the fixture case has no input '${name}'`);
  return tensor;
}

function number(config: OpConfig, key: string): number {
  const value = config[key];
  if (typeof value !== 'number') throw new TypeError(`gradcheck: config.${key}: expected a number, received ${JSON.stringify(value)}`);
  return value;
}

/** ‖v‖ per row, outside the graph: the precomputed norm weightNormLinear and weightNorm({ norm }) take. */
function detachedNorm(v: Tensor, g: Tensor, dim: number | null): Tensor {
  return noGrad(() => {
    const { w, norm } = F.weightNorm(v, g, { dim });
    w.dispose();
    return norm;
  });
}

/** Every differentiable op of nn.functional, by its export name. */
export const OPS: Record<string, OpEntry> = {
  add: { run: (t) => ({ y: F.add(need(t, 'a'), need(t, 'b')) }), tolerance: ELEMENTWISE },
  mul: { run: (t, c) => ({ y: F.mul(need(t, 'a'), c.sameOperand ? need(t, 'a') : need(t, 'b')) }), tolerance: ELEMENTWISE },
  scale: { run: (t, c) => ({ y: F.scale(need(t, 'x'), number(c, 'alpha')) }), tolerance: ELEMENTWISE },
  sum: { run: (t) => ({ y: F.sum(need(t, 'x')) }), tolerance: accumulation(24, 'sum of 24 elements') },
  mean: { run: (t) => ({ y: F.mean(need(t, 'x')) }), tolerance: accumulation(24, 'mean of 24 elements') },
  reshape: { run: (t, c) => ({ y: F.reshape(need(t, 'x'), c.shape as number[]) }), tolerance: ELEMENTWISE },
  flatten: { run: (t) => ({ y: F.flatten(need(t, 'x')) }), tolerance: ELEMENTWISE },
  matmul: { run: (t) => ({ y: F.matmul(need(t, 'a'), need(t, 'b')) }), tolerance: accumulation(6, 'dot products of up to 6 terms') },
  linear: {
    run: (t) => ({ y: F.linear(need(t, 'x'), need(t, 'weight'), optional(t, 'bias')) }),
    tolerance: accumulation(6, 'dot products of up to 6 terms (in features; batch 4 for the weight gradient)'),
  },
  weightNormLinear: {
    run: (t) => {
      const v = need(t, 'v');
      const g = need(t, 'g');
      const norm = detachedNorm(v, g, 0);
      return { y: F.weightNormLinear(need(t, 'x'), v, g, optional(t, 'bias'), norm) };
    },
    tolerance: accumulation(12, 'dot products of 6 terms, then the norm (6 squares) and the projection of dv, which subtracts two terms of similar size'),
  },
  weightNorm: {
    run: (t, c) => {
      const v = need(t, 'v');
      const g = need(t, 'g');
      const dim = c.dim as number | null;
      const norm = c.givenNorm ? detachedNorm(v, g, dim) : undefined;
      const { w, norm: used } = F.weightNorm(v, g, { dim, ...(norm ? { norm } : {}) });
      return { y: w, extras: { norm: used } };
    },
    tolerance: accumulation(30, 'norms of up to 30 squares; dv = s·(dw − (w·dw/‖w‖²)·w) subtracts two terms of similar size'),
  },
  maxPool2d: {
    run: (t, c) => ({ y: F.maxPool2d(need(t, 'x'), number(c, 'kernel'), number(c, 'stride')) }),
    tolerance: {
      forward: 4 * UNIT_ROUNDOFF,
      gradient: 8 * UNIT_ROUNDOFF,
      reason: 'the forward selects (exact); an element that is the maximum of up to 4 overlapping windows adds their gradients (3 roundings)',
    },
  },
  reluMaxPool2d: {
    run: (t, c) => ({ y: F.reluMaxPool2d(need(t, 'x'), number(c, 'kernel'), number(c, 'stride')) }),
    tolerance: {
      forward: 4 * UNIT_ROUNDOFF,
      gradient: 8 * UNIT_ROUNDOFF,
      reason: 'as maxPool2d: the ReLU and the pooling select (exact); overlapping windows add up to 4 gradients',
    },
  },
  globalAvgPool2d: { run: (t) => ({ y: F.globalAvgPool2d(need(t, 'x')) }), tolerance: accumulation(12, 'means of 12 positions') },
  relu: { run: (t) => ({ y: F.relu(need(t, 'x')) }), tolerance: ELEMENTWISE },
  leakyRelu: {
    // Without a slope in the config the op is called without one: its default is part of what is checked.
    run: (t, c) => ({ y: c.negativeSlope === undefined ? F.leakyRelu(need(t, 'x')) : F.leakyRelu(need(t, 'x'), number(c, 'negativeSlope')) }),
    tolerance: ELEMENTWISE,
  },
  tanh: {
    run: (t) => ({ y: F.tanh(need(t, 'x')) }),
    tolerance: {
      forward: 8 * UNIT_ROUNDOFF,
      gradient: 16 * UNIT_ROUNDOFF,
      reason: 'float32 tanh is within a few ulp; the gradient (1 − y²)·dy carries y\'s error twice',
    },
  },
  dropout: { run: (t, c, seed) => ({ y: F.dropout(need(t, 'x'), number(c, 'p'), seed) }), tolerance: ELEMENTWISE, random: 'dropout' },
  gaussianNoise: {
    run: (t, c, seed) => ({ y: F.gaussianNoise(need(t, 'x'), number(c, 'std'), seed) }),
    tolerance: ELEMENTWISE,
    random: 'noise',
  },
  batchNorm: {
    run: (t, c) => {
      const { y, mean, variance } = F.batchNorm(need(t, 'x'), need(t, 'gamma'), need(t, 'beta'), number(c, 'eps'));
      return { y, extras: { mean, variance } };
    },
    tolerance: accumulation(64, 'mean, variance and the two backward sums over 16 values per channel, each a difference of similar terms'),
  },
  batchNormInference: {
    run: (t, c) => ({
      y: F.batchNormInference(need(t, 'x'), need(t, 'runningMean'), need(t, 'runningVar'), need(t, 'gamma'), need(t, 'beta'), number(c, 'eps')),
    }),
    tolerance: accumulation(16, 'per-element affine map with 1/√(var + eps); dgamma and dbeta sum 16 values per channel'),
  },
  ...CONV_OPS,
  meanOnlyBatchNorm: {
    run: (t, c) => {
      const { y, mean } = F.meanOnlyBatchNorm(need(t, 'x'), need(t, 'bias'), c.runningMean ? need(t, 'runningMean') : null);
      return { y, extras: { mean } };
    },
    tolerance: accumulation(32, 'the batch mean over 16 values per channel, subtracted; dx = dy − mean(dy) and dbias = Σ dy over 16'),
  },
  ...SHAPE_OPS,
  ...REDUCE_OPS,
  ...POINTWISE_OPS,
  ...LOSS_OPS,
  ...VAE_OPS,
};

/** Exports of nn.functional that are not differentiable ops, with the reason. */
export const EXCLUDED_FUNCTIONAL: Record<string, string> = {
  channelLayout: 'a shape helper ([batch, channels, rest] of an activation), not an op',
  checkTrainingCount: 'an argument check shared with nn.BatchNorm, not an op',
  ...REDUCE_EXCLUDED_FUNCTIONAL,
  ...POINTWISE_EXCLUDED_FUNCTIONAL,
};


function count(spec: LayerSpec, key: 'in' | 'out' | 'kernel' | 'features'): number {
  const value = spec[key];
  if (typeof value !== 'number') throw new TypeError(`gradcheck: ${spec.type} spec: ${key}: expected a number, received ${JSON.stringify(value)}`);
  return value;
}

const weightOptions = (spec: LayerSpec) => ({ bias: spec.bias ?? true, weightNorm: spec.weightNorm ?? false });

/** Every nn.Module subclass, by its export name. */
export const LAYERS: Record<string, LayerEntry> = {
  Linear: {
    build: (s) => new nn.Linear(count(s, 'in'), count(s, 'out'), weightOptions(s)),
    tolerance: accumulation(12, 'dot products of 6 terms; with weight norm also the norm of 6 squares and the projection of dv'),
  },
  Conv2d: CONV2D_LAYER,
  ...CONV_LAYERS,
  ReLU: { build: () => new nn.ReLU(), tolerance: ELEMENTWISE },
  LeakyReLU: { build: (s) => new nn.LeakyReLU(s.negativeSlope), tolerance: ELEMENTWISE },
  Tanh: { build: () => new nn.Tanh(), tolerance: OPS.tanh!.tolerance },
  MaxPool2d: { build: (s) => new nn.MaxPool2d(count(s, 'kernel'), s.stride ?? count(s, 'kernel')), tolerance: OPS.maxPool2d!.tolerance },
  GlobalAvgPool2d: { build: () => new nn.GlobalAvgPool2d(), tolerance: OPS.globalAvgPool2d!.tolerance },
  Flatten: { build: () => new nn.Flatten(), tolerance: ELEMENTWISE },
  Dropout: { build: (s, seed) => new nn.Dropout(s.p ?? 0.5, { seed }), tolerance: ELEMENTWISE },
  GaussianNoise: { build: (s, seed) => new nn.GaussianNoise(s.std ?? 1, { seed }), tolerance: ELEMENTWISE },
  BatchNorm: { build: (s) => new nn.BatchNorm(count(s, 'features')), tolerance: OPS.batchNorm!.tolerance },
  MeanOnlyBatchNorm: { build: (s) => new nn.MeanOnlyBatchNorm(count(s, 'features')), tolerance: OPS.meanOnlyBatchNorm!.tolerance },
  Sequential: {
    build: (s, seed) => {
      const layers = s.layers ?? [];
      return new nn.Sequential(...layers.map((layer, i) => buildLayer(layer, seed + i)));
    },
    tolerance: accumulation(
      200,
      'a chain of up to six layers: each one\'s error (up to ~50 terms) is carried and amplified by those after it',
    ),
  },
  ...RNN_LAYERS,
  ...REDUCE_LAYERS,
  ...POINTWISE_LAYERS,
};

/** Exports of nn that are Module classes but not layers to check, with the reason. */
export const EXCLUDED_MODULES: Record<string, string> = {
  Module: 'the abstract base class; every concrete layer is registered',
  ...LOSS_EXCLUDED_MODULES,
  ...CONV_EXCLUDED_MODULES,
};

export function buildLayer(spec: LayerSpec, seed: number): nn.Module {
  const entry = LAYERS[spec.type];
  if (!entry) throw new RangeError(`gradcheck: no layer '${spec.type}' in the registry`);
  return entry.build(spec, seed);
}

/** Folds (v, g) into a plain weight where the spec asks for it (after the state dict is loaded). */
export function applyWeightNormRemovals(layer: nn.Module, spec: LayerSpec): void {
  if (spec.removeWeightNorm) nn.removeWeightNorm(layer as nn.WeightedLayer);
  if (spec.type === 'Sequential') (spec.layers ?? []).forEach((child, i) => applyWeightNormRemovals((layer as nn.Sequential).layers[i]!, child));
}

/** The tolerance of a layer case (a Sequential's covers the chain it holds). */
export function layerTolerance(spec: LayerSpec): Tolerance {
  const own = LAYERS[spec.type]?.tolerance;
  if (!own) throw new RangeError(`gradcheck: no layer '${spec.type}' in the registry`);
  return own;
}
