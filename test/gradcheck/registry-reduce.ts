// Gradient-check entries of the reductions over chosen axes and softmax (cases: test/fixtures/gradcheck_reduce_torch.json,
// from scripts/make_gradcheck_reduce_fixtures.py). sum and mean replace the core registry's entries (spread after
// them): the same ops, now also with dim and keepDim.
import { nn, type Tensor } from '../../ts/index.js';
import type { Dim } from '../../ts/reduce.js';
import type { LayerSpec, OpConfig } from './fixture.js';
import { accumulation, ELEMENTWISE, type LayerEntry, type OpEntry } from './entry.js';

const F = nn.functional;

function input(t: Record<string, Tensor>): Tensor {
  const x = t.x;
  if (!x) throw new RangeError("gradcheck: the fixture case has no input 'x'");
  return x;
}

const dimOf = (c: OpConfig): Dim => c.dim as Dim;
const keepDimOf = (c: OpConfig): boolean => c.keepDim === true;
const correctionOf = (c: OpConfig): number => (typeof c.correction === 'number' ? c.correction : 1);

function singleDim(c: OpConfig): number {
  if (typeof c.dim !== 'number') throw new TypeError(`gradcheck: config.dim: expected a number, received ${JSON.stringify(c.dim)}`);
  return c.dim;
}

// The largest reduction in the cases: all 60 elements of a [3, 4, 5] tensor.
const SUMS = accumulation(60, 'sums of up to 60 elements (float lanes folded into double), and dy broadcast back');
// Two passes in double, one float32 rounding of the result and of each gradient element.
const TWO_PASS = accumulation(8, 'double accumulation: a few float32 roundings of the mean, the result and (x − mean)');
// exp/log in float32 on each element, sums in double; the outputs are rounded once.
const EXPONENTIAL = accumulation(16, 'float32 exp per element, its sum in double, a log; gradients dy·softmax');

export const REDUCE_OPS: Record<string, OpEntry> = {
  sum: { run: (t, c) => ({ y: F.sum(input(t), dimOf(c), { keepDim: keepDimOf(c) }) }), tolerance: SUMS },
  mean: { run: (t, c) => ({ y: F.mean(input(t), dimOf(c), { keepDim: keepDimOf(c) }) }), tolerance: SUMS },
  amax: { run: (t, c) => ({ y: F.amax(input(t), dimOf(c), { keepDim: keepDimOf(c) }) }), tolerance: ELEMENTWISE },
  amin: { run: (t, c) => ({ y: F.amin(input(t), dimOf(c), { keepDim: keepDimOf(c) }) }), tolerance: ELEMENTWISE },
  max: { run: (t, c) => ({ y: F.max(input(t), singleDim(c), { keepDim: keepDimOf(c) }).values }), tolerance: ELEMENTWISE },
  min: { run: (t, c) => ({ y: F.min(input(t), singleDim(c), { keepDim: keepDimOf(c) }).values }), tolerance: ELEMENTWISE },
  var: {
    run: (t, c) => ({ y: F.var(input(t), dimOf(c), { keepDim: keepDimOf(c), correction: correctionOf(c) }) }),
    tolerance: TWO_PASS,
  },
  std: {
    run: (t, c) => ({ y: F.std(input(t), dimOf(c), { keepDim: keepDimOf(c), correction: correctionOf(c) }) }),
    tolerance: TWO_PASS,
  },
  logsumexp: { run: (t, c) => ({ y: F.logsumexp(input(t), dimOf(c), { keepDim: keepDimOf(c) }) }), tolerance: EXPONENTIAL },
  softmax: { run: (t, c) => ({ y: F.softmax(input(t), singleDim(c)) }), tolerance: EXPONENTIAL },
  logSoftmax: { run: (t, c) => ({ y: F.logSoftmax(input(t), singleDim(c)) }), tolerance: EXPONENTIAL },
};

export const REDUCE_EXCLUDED_FUNCTIONAL: Record<string, string> = {
  argmax: 'returns indices, not differentiable; its values and tie rule are checked in test/reduce.test.ts',
  argmin: 'returns indices, not differentiable; its values and tie rule are checked in test/reduce.test.ts',
};

const layerDim = (spec: LayerSpec): number => {
  const dim = (spec as LayerSpec & { dim?: unknown }).dim;
  if (typeof dim !== 'number') throw new TypeError(`gradcheck: ${spec.type} spec: dim: expected a number, received ${JSON.stringify(dim)}`);
  return dim;
};

export const REDUCE_LAYERS: Record<string, LayerEntry> = {
  Softmax: { build: (s) => new nn.Softmax(layerDim(s)), tolerance: EXPONENTIAL },
  LogSoftmax: { build: (s) => new nn.LogSoftmax(layerDim(s)), tolerance: EXPONENTIAL },
};
