// The native kernel tests' float64 expected values for the optimizers, batch norm (full and mean-only), the losses,
// the reductions and the rounding elementwise ops, from the one TypeScript reference of each op (optim.ts, nn.ts,
// reduce.ts, elementwise.ts): scripts/make_native_reference.mjs writes one file per op to
// test/fixtures/native_reference/, test/native/ops_cases.cc and gemm_conv_cases.cc read them (test/native/op_fixture.h), and
// test/native-reference.test.ts checks that the committed files are what these functions produce today.
//
// The format is native-op-fixtures.ts's ("WNOPS001"). Float parameters travel as the int64 of their float32 bit
// pattern (f32Bits; the native side reads them back bit for bit). Each stored element's "magnitude" is the scale its
// check's tolerance multiplies (a stated reason beside each output below), so the native test only compares:
// |got - want| <= tolerance * magnitude.
//
// Inputs are the library's seeded normals; where an op wants another distribution, both sides derive it from the
// drawn values with float32 operations that round once (an add of a float32 constant, a multiply by a power of two),
// so that both hold the same numbers.
import { adamaxStep, adamStep, sgdStep, type OptimizerState } from './optim.js';
import { axpby, tanhBackward, tanhForward } from './elementwise.js';
import { GemmField, gemmElement } from './gemm.js';
import { type InputSource } from './native-fixtures.js';
import { normals, storedIndices, writeCases, type OpCase, type OpOutput, type Storage } from './native-op-fixtures.js';
import {
  batchNormBackward, batchNormForward, batchNormInference, bceWithLogits, classCrossEntropy, meanOnlyBatchNormBackward,
  meanOnlyBatchNormForward, softmaxCrossEntropy,
} from './nn.js';
import { channelSums } from './reduce.js';

const fround = Math.fround;

/** A float32's bit pattern, the way float parameters are stored. */
export function f32Bits(x: number): number {
  return new Uint32Array(Float32Array.of(x).buffer)[0]!;
}

const abs = (values: ArrayLike<number>) => Float64Array.from(values, Math.abs);
function maxAbs(values: ArrayLike<number>): number {
  let largest = 0;
  for (let i = 0; i < values.length; i++) largest = Math.max(largest, Math.abs(values[i]!));
  return largest;
}
/** Every element measured against the output's largest |value| (outputs whose small elements come from cancellation). */
const scaled = (want: ArrayLike<number>): OpOutput => ({
  want,
  magnitude: new Float64Array(want.length).fill(Math.max(maxAbs(want), 1e-30)),
});
/** Every element measured against max(|want|, floor): relative error, absolute below floor. */
const floored = (want: ArrayLike<number>, floor: number): OpOutput => ({
  want,
  magnitude: Float64Array.from(want, (v) => Math.max(Math.abs(v), floor)),
});
const input = (seed: number, values: Float32Array) => ({ seed, values });
/** Per-channel outputs (statistics, their gradients, norms, sums): every channel up to 512, else 192 of them. */
const perChannel = (output: OpOutput): OpOutput => ({ ...output, storage: { full: 512, sampled: 192 } });

/** The channel layouts [outer, channels, inner] of the normalization and reduction cases: outer 1 / inner 1, short
 *  and long runs (segments / columns), many channels, the parallel CPU paths, and empty tensors. */
export const nativeLayouts: Array<[number, number, number]> = [
  [1, 1, 1], [1, 5, 1], [7, 1, 1], [7, 3, 1], [64, 16, 1], [1000, 10, 1], [5, 3000, 1],
  [2, 5, 31], [3, 4, 5], [4, 3, 33], [8, 16, 49], [1, 3, 1000], [2, 3, 40000], [1, 2, 70001],
  [300, 70, 1], [4096, 8, 1], [32, 64, 64], [0, 3, 4], [3, 0, 4], [2, 3, 0],
];
const channelOf = ([, channels, inner]: [number, number, number], e: number) => Math.floor(e / inner) % channels;

/** x ~ 2 N(0, 1) + 2 + k % 8 per channel k: a mean well away from 0 checks the centring, a spread away from 1 the
 *  scaling (2v is exact, the add rounds once on both sides). */
export function offsetValues(drawn: Float32Array, layout: [number, number, number]): Float32Array {
  return Float32Array.from(drawn, (v, e) => fround(2 * v + (2 + (channelOf(layout, e) % 8))));
}
/** 1 + v/4: gamma near 1, a running variance near 2 from 2 + v/4. */
const around = (drawn: Float32Array, center: number) => Float32Array.from(drawn, (v) => fround(center + 0.25 * v));

// ---------------------------------------------------------------------------------------------------------------
// Optimizers: parameters [kind (0 SGD, 1 Adam, 2 Adamax), lr, momentum | beta1, dampening | beta2, weight decay,
// eps, nesterov, with norm, outer, channels, inner, steps] (floats as bits); inputs p, then the gradient of each
// step; outputs p after the steps (magnitude |p| + lr·steps: each step rounds p and computes an update of size ~lr),
// state 1 (velocity / m) and state 2 (v / u) against their largest value, and the norm of each channel of the
// updated p (magnitude norm + lr·steps·√n: the parameter's tolerance summed over the channel).

interface OptimizerCase {
  kind: 0 | 1 | 2;
  lr: number; a: number; b: number; weightDecay: number; eps: number; nesterov: boolean;
}
const sgd = (lr: number, momentum: number, dampening: number, weightDecay: number, nesterov: boolean): OptimizerCase =>
  ({ kind: 0, lr, a: momentum, b: dampening, weightDecay, eps: 0, nesterov });
const adamLike = (kind: 1 | 2, lr: number, beta1: number, beta2: number, eps: number, weightDecay: number): OptimizerCase =>
  ({ kind, lr, a: beta1, b: beta2, weightDecay, eps, nesterov: false });

export const nativeOptimizerCases: OptimizerCase[] = [
  sgd(0.1, 0, 0, 0, false), sgd(0.05, 0.9, 0.1, 1e-2, false), sgd(0.05, 0.9, 0, 5e-4, true),
  adamLike(1, 1e-2, 0.9, 0.999, 1e-8, 0), adamLike(1, 3e-3, 0.8, 0.99, 1e-8, 1e-2),
  adamLike(2, 2e-3, 0.9, 0.999, 1e-8, 0), adamLike(2, 2e-3, 0.9, 0.999, 1e-8, 1e-2),
  // A large eps and a fast-decaying u: where eps sits (inside the max or added after it) changes the update by ~lr.
  adamLike(2, 5e-2, 0.9, 0.5, 0.5, 0),
];
/** [with norm, layout]: no norm; the fused norm rows (outer 1) short, long in one part and in several, and dim
 *  null; the second pass (outer > 1, inner 1); empty rows and count 0. */
export const nativeOptimizerLayouts: Array<[boolean, [number, number, number]]> = [
  [false, [1, 1, 1001]], [true, [1, 7, 9]], [true, [1, 5, 200]], [true, [1, 3, 5000]], [true, [1, 3, 20000]], [true, [1, 1, 70001]],
  [true, [5, 6, 7]], [true, [64, 10, 1]], [true, [1, 3, 0]], [false, [1, 1, 0]],
];
const kOptimizerSteps = 4;
const kNormEps = fround(1e-12);

/** A channel that stays zero (parameter and gradients) when the parameter has a norm and more than two channels:
 *  its norm must be the eps floor. */
function zeroChannel(values: Float32Array, withNorm: boolean, layout: [number, number, number]): Float32Array {
  if (!withNorm || layout[1] <= 2) return values;
  return values.map((v, e) => (channelOf(layout, e) === 1 ? 0 : v));
}

export function nativeOptimizerFixture(source: InputSource): Uint8Array {
  const cases: OpCase[] = [];
  nativeOptimizerCases.forEach((c, ci) => {
    nativeOptimizerLayouts.forEach(([withNorm, layout], li) => {
      const count = layout[0] * layout[1] * layout[2];
      const seed = 7000 + 8 * (ci * nativeOptimizerLayouts.length + li);
      const drawn = Array.from({ length: kOptimizerSteps + 1 }, (_, i) => normals(source, count, seed + i));
      const [p0, ...grads] = drawn.map((values) => zeroChannel(values, withNorm, layout));
      const state: OptimizerState = { p: new Float64Array(p0!), s1: new Float64Array(count), s2: new Float64Array(count) };
      const [lr, a, b, weightDecay, eps] = [c.lr, c.a, c.b, c.weightDecay, c.eps].map(fround) as [number, number, number, number, number];
      grads.forEach((grad, i) => {
        if (c.kind === 0) sgdStep(state, grad, { lr, momentum: a, dampening: b, weightDecay, nesterov: c.nesterov }, i + 1);
        else if (c.kind === 1) adamStep(state, grad, { lr, beta1: a, beta2: b, eps, weightDecay }, i + 1);
        else adamaxStep(state, grad, { lr, beta1: a, beta2: b, eps, weightDecay }, i + 1);
      });
      const squares = channelSums(state.p.map((v) => v * v), ...layout);
      const norm = squares.map((s) => Math.max(Math.sqrt(s), kNormEps));
      const channelCount = layout[0] * layout[2];
      cases.push({
        parameters: [
          c.kind, ...[lr, a, b, weightDecay, eps].map(f32Bits), c.nesterov ? 1 : 0, withNorm ? 1 : 0, ...layout, kOptimizerSteps,
        ],
        inputs: drawn.map((values, i) => input(seed + i, values)),
        outputs: [
          { want: state.p, magnitude: state.p.map((v) => Math.abs(v) + lr * kOptimizerSteps) },
          scaled(state.s1),
          scaled(state.s2),
          perChannel({
            want: withNorm ? norm : [],
            magnitude: withNorm ? norm.map((v) => v + lr * kOptimizerSteps * Math.sqrt(channelCount)) : [],
          }),
        ],
      });
    });
  });
  return writeCases(cases, { full: 128, sampled: 48 });
}

// ---------------------------------------------------------------------------------------------------------------
// Batch norm: parameters [outer, channels, inner, affine, eps, finite differences (0/1)].
// Plain cases: inputs x (offsetValues), dy, gamma (1 + v/4), beta, running mean, running variance (2 + v/4);
// outputs mean (max(|mean|, 1): the data's spread is the mean's scale), biased variance and invstd (relative), y
// (against its largest value), dx (its largest value: three terms of size |gamma|·invstd·|dy| cancel), dbeta
// (Σ|dy|), dgamma (Σ|dy·xhat|), inference y (its largest value).
// Finite-difference cases: inputs x, w, gamma, beta; outputs the central differences of L = Σ w·y over x, gamma and
// beta, evaluated in float64 through batchNormForward (the derivation itself, not only the formula), each against
// its largest value.

export const kBatchNormEps = fround(1e-5);
export const nativeBatchNormFiniteDifferenceLayouts: Array<[number, number, number]> = [[4, 3, 5], [2, 3, 7], [16, 2, 1]];

export function nativeBatchNormFixture(source: InputSource): Uint8Array {
  const cases: OpCase[] = [];
  let seed = 8000;
  for (const layout of nativeLayouts) {
    const n = layout[0] * layout[1] * layout[2];
    const c = layout[1];
    if (n > 1 << 20) continue;
    for (const affine of [true, false]) {
      if (!affine && n > 5000) continue;
      const drawn = [normals(source, n, seed), normals(source, n, seed + 1), normals(source, c, seed + 2),
        normals(source, c, seed + 3), normals(source, c, seed + 4), normals(source, c, seed + 5)];
      const x = offsetValues(drawn[0]!, layout);
      const dy = drawn[1]!;
      const gamma = affine ? around(drawn[2]!, 1) : null;
      const beta = affine ? drawn[3]! : null;
      const runningVar = around(drawn[5]!, 2);
      const f = batchNormForward(x, gamma, beta, layout, kBatchNormEps);
      const g = batchNormBackward(dy, x, gamma, layout, kBatchNormEps);
      const xhat = batchNormForward(x, null, null, layout, kBatchNormEps).y;
      const absDy = channelSums(abs(dy), ...layout);
      const absDyXhat = channelSums(Float64Array.from(dy, (v, e) => Math.abs(v * xhat[e]!)), ...layout);
      cases.push({
        parameters: [...layout, affine ? 1 : 0, f32Bits(kBatchNormEps), 0],
        inputs: drawn.map((values, i) => input(seed + i, values)),
        outputs: [
          perChannel(floored(f.mean, 1)), perChannel(floored(f.variance, 1e-30)), perChannel(floored(f.invstd, 1e-30)),
          scaled(f.y), scaled(g.dx),
          perChannel({ want: g.dbeta, magnitude: absDy.map((v) => Math.max(v, 1e-30)) }),
          perChannel({ want: g.dgamma, magnitude: absDyXhat.map((v) => Math.max(v, 1e-30)) }),
          scaled(batchNormInference(x, drawn[4]!, runningVar, gamma, beta, layout, kBatchNormEps)),
        ],
      });
      seed += 6;
    }
  }
  for (const layout of nativeBatchNormFiniteDifferenceLayouts) {
    const n = layout[0] * layout[1] * layout[2];
    const drawn = [normals(source, n, seed), normals(source, n, seed + 1), normals(source, layout[1], seed + 2),
      normals(source, layout[1], seed + 3)];
    const x = offsetValues(drawn[0]!, layout);
    const w = drawn[1]!;
    const gamma = around(drawn[2]!, 1);
    const beta = drawn[3]!;
    const loss = (xs: ArrayLike<number>, gs: ArrayLike<number>, bs: ArrayLike<number>) =>
      batchNormForward(xs, gs, bs, layout, kBatchNormEps).y.reduce((sum, y, e) => sum + w[e]! * y, 0);
    // x in float64, h = 1e-4: truncation ~h², rounding ~1e-16/h, both far below the float32 kernels' error.
    const h = 1e-4;
    const dx = Float64Array.from(x, (_, e) => {
      const plus = Float64Array.from(x);
      const minus = Float64Array.from(x);
      plus[e] = x[e]! + h;
      minus[e] = x[e]! - h;
      return (loss(plus, gamma, beta) - loss(minus, gamma, beta)) / (2 * h);
    });
    // gamma and beta are float32 on the native side: stepped by a float32-representable amount, divided by the
    // real step.
    const stepped = (values: Float32Array, k: number, by: number) => values.map((v, j) => (j === k ? fround(v + by) : v));
    const hf = 1 / 1024;
    const dgamma = Float64Array.from(gamma, (v, k) =>
      (loss(x, stepped(gamma, k, hf), beta) - loss(x, stepped(gamma, k, -hf), beta)) / (fround(v + hf) - fround(v - hf)));
    const dbeta = Float64Array.from(beta, (v, k) =>
      (loss(x, gamma, stepped(beta, k, hf)) - loss(x, gamma, stepped(beta, k, -hf))) / (fround(v + hf) - fround(v - hf)));
    cases.push({
      parameters: [...layout, 1, f32Bits(kBatchNormEps), 1],
      inputs: drawn.map((values, i) => input(seed + i, values)),
      outputs: [scaled(dx), scaled(dgamma), scaled(dbeta)],
    });
    seed += 4;
  }
  return writeCases(cases, { full: 256, sampled: 64 });
}

// ---------------------------------------------------------------------------------------------------------------
// Mean-only batch norm (Salimans & Kingma 2016, §4): parameters [outer, channels, inner, finite differences].
// Plain cases: inputs x (offsetValues), bias, dy (v + 1/4); outputs mean (max(|mean|, 1)), y (|x| + |mean| +
// |bias|: two roundings of terms that large), dbias (Σ|dy|), dx (|dy| + Σ|dy|/n).
// The finite-difference case: inputs x, w, bias; output the central differences of L = Σ w·y over x (L is linear
// in x: exact up to rounding), against its largest value.

export const nativeMeanOnlyFiniteDifferenceLayout: [number, number, number] = [6, 3, 4];

export function nativeMeanOnlyBatchNormFixture(source: InputSource): Uint8Array {
  const cases: OpCase[] = [];
  let seed = 8600;
  for (const layout of nativeLayouts) {
    const n = layout[0] * layout[1] * layout[2];
    const drawn = [normals(source, n, seed), normals(source, layout[1], seed + 1), normals(source, n, seed + 2)];
    const x = offsetValues(drawn[0]!, layout);
    const bias = drawn[1]!;
    const dy = Float32Array.from(drawn[2]!, (v) => fround(v + 0.25));
    const f = meanOnlyBatchNormForward(x, bias, layout);
    const b = meanOnlyBatchNormBackward(dy, layout);
    const absDy = channelSums(abs(dy), ...layout);
    const count = layout[0] * layout[2];
    cases.push({
      parameters: [...layout, 0],
      inputs: drawn.map((values, i) => input(seed + i, values)),
      outputs: [
        perChannel(floored(f.mean, 1)),
        {
          want: f.y,
          magnitude: Float64Array.from(x, (v, e) => Math.abs(v) + Math.abs(f.mean[channelOf(layout, e)]!) + Math.abs(bias[channelOf(layout, e)]!)),
        },
        perChannel({ want: b.dbias, magnitude: absDy.map((v) => Math.max(v, 1e-30)) }),
        {
          want: b.dx,
          magnitude: Float64Array.from(dy, (v, e) => Math.max(Math.abs(v) + absDy[channelOf(layout, e)]! / count, 1e-30)),
        },
      ],
    });
    seed += 3;
  }
  {
    const layout = nativeMeanOnlyFiniteDifferenceLayout;
    const n = layout[0] * layout[1] * layout[2];
    const drawn = [normals(source, n, seed), normals(source, n, seed + 1), normals(source, layout[1], seed + 2)];
    const x = offsetValues(drawn[0]!, layout);
    const [w, bias] = [drawn[1]!, drawn[2]!];
    const loss = (xs: ArrayLike<number>) => meanOnlyBatchNormForward(xs, bias, layout).y.reduce((sum, y, e) => sum + w[e]! * y, 0);
    const dx = Float64Array.from(x, (_, e) => {
      const plus = Float64Array.from(x);
      const minus = Float64Array.from(x);
      plus[e] = x[e]! + 1e-3;
      minus[e] = x[e]! - 1e-3;
      return (loss(plus) - loss(minus)) / 2e-3;
    });
    cases.push({ parameters: [...layout, 1], inputs: drawn.map((values, i) => input(seed + i, values)), outputs: [scaled(dx)] });
  }
  return writeCases(cases, { full: 256, sampled: 64 });
}

// ---------------------------------------------------------------------------------------------------------------
// Softmax cross-entropy: parameters [batch, classes, logit scale, upstream gradient]; inputs logits (v·scale, one
// rounding), labels drawn as floor(|u|·1000) mod classes (float32 ops, the same on both sides); outputs the mean
// loss (max(|loss|, 1)), probs (absolute: they are at most 1), dlogits (max(|g|, upstream/batch): the probs'
// error scaled by dloss/batch).

export const nativeSoftmaxCrossEntropyCases: Array<[number, number, number]> = [
  [0, 10, 1], [1, 1, 1], [7, 10, 1], [300, 37, 3], [64, 1000, 2], [16, 10, 1e4], [5, 3, 1e4],
];
const kUpstream = fround(0.7);

/** Labels from drawn normals: floor(|u|·1000) mod classes. */
export function labelsFrom(drawn: Float32Array, classes: number): number[] {
  return Array.from(drawn, (u) => Math.trunc(fround(Math.abs(u) * 1000)) % classes);
}

export function nativeSoftmaxCrossEntropyFixture(source: InputSource): Uint8Array {
  return writeCases(nativeSoftmaxCrossEntropyCases.map(([batch, classes, scale], index) => {
    const seed = 8800 + 2 * index;
    const drawnLogits = normals(source, batch * classes, seed);
    const drawnLabels = normals(source, batch, seed + 1);
    const logits = drawnLogits.map((v) => fround(v * scale));
    const r = softmaxCrossEntropy(logits, labelsFrom(drawnLabels, classes), classes, kUpstream);
    return {
      parameters: [batch, classes, f32Bits(scale), f32Bits(kUpstream)],
      inputs: [input(seed, drawnLogits), input(seed + 1, drawnLabels)],
      outputs: [floored([r.loss], 1), floored(r.probs, 1), floored(r.dlogits, batch ? kUpstream / batch : 1)],
    };
  }), { full: 1024, sampled: 128 });
}

// ---------------------------------------------------------------------------------------------------------------
// Cross-entropy over [outer, classes, inner] with ignored positions (every fifth), class weights and label
// smoothing (the weighted mean): parameters [outer, classes, inner, ignore index, label smoothing, upstream, logit
// scale, class weights...]; inputs logits (v·scale), labels (labelsFrom, ignore index at p % 5 == 0); outputs the
// position losses (max(|loss|, 1, scale): float exp/log of logits that large), the mean (max(|mean|, 1)), dlogits
// (max(|g|, 3·upstream/Σw): a few roundings of terms up to w·upstream/Σw).

export const nativeClassLossScales = [1, 1e4];
const kClassWeights = [0.5, 1, 1.5, 2, 3];

export function nativeClassLossFixture(source: InputSource): Uint8Array {
  const [outer, classes, inner, ignoreIndex, smoothing] = [6, 5, 4, -100, fround(0.2)];
  return writeCases(nativeClassLossScales.map((scale, index) => {
    const seed = 8900 + 2 * index;
    const drawnLogits = normals(source, outer * classes * inner, seed);
    const drawnLabels = normals(source, outer * inner, seed + 1);
    const logits = drawnLogits.map((v) => fround(v * scale));
    const labels = labelsFrom(drawnLabels, classes).map((label, p) => (p % 5 === 0 ? ignoreIndex : label));
    const options = { outer, classes, inner, ignoreIndex, labelSmoothing: smoothing };
    const r = classCrossEntropy(logits, labels, kClassWeights, options, kUpstream);
    let weightSum = 0;
    for (const label of labels) if (label !== ignoreIndex) weightSum += kClassWeights[label]!;
    return {
      parameters: [
        outer, classes, inner, ignoreIndex, f32Bits(smoothing), f32Bits(kUpstream), f32Bits(scale), ...kClassWeights.map(f32Bits),
      ],
      inputs: [input(seed, drawnLogits), input(seed + 1, drawnLabels)],
      outputs: [floored(r.positionLoss, Math.max(1, scale)), floored([r.mean], 1), floored(r.dinput, (3 * kUpstream) / weightSum)],
    };
  }));
}

// ---------------------------------------------------------------------------------------------------------------
// Binary cross-entropy on logits with pos_weight and the sum reduction, at logits of 1e4 and ±80 (where a naive
// log(sigmoid) overflows): parameters [count, x..., y..., pos_weight count, pos_weight..., upstream]; no drawn
// inputs; outputs the elements' losses, their sum and dinput, each max(|value|, 1).

export const nativeBceInputs = {
  x: [1e4, -1e4, 80, -80, 0.5, -2, 1e4, -1e4],
  y: [1, 0, 1, 0, 0.3, 1, 0, 1],
  posWeight: [2, 0.5],
  upstream: 0.5,
};

export function nativeBceWithLogitsFixture(): Uint8Array {
  const [x, y, posWeight] = [nativeBceInputs.x, nativeBceInputs.y, nativeBceInputs.posWeight].map((v) => v.map(fround)) as [
    number[], number[], number[],
  ];
  const r = bceWithLogits(x, y, posWeight, nativeBceInputs.upstream);
  return writeCases([{
    parameters: [
      x.length, ...x.map(f32Bits), ...y.map(f32Bits), posWeight.length, ...posWeight.map(f32Bits), f32Bits(nativeBceInputs.upstream),
    ],
    inputs: [],
    outputs: [floored(r.loss, 1), floored([r.sum], 1), floored(r.dinput, 1)],
  }]);
}

// ---------------------------------------------------------------------------------------------------------------
// Reductions: parameters [kind (0 sum_all, 1 channel_sum), outer, channels, inner] (sum_all: [0, 1, 1, n]);
// inputs two draws: small integers clamp(floor(2v), -2, 3) (every partial sum is exact in float32, so any order
// gives the exact sum and a missing or doubled element cannot hide under rounding) and v + 1/2; outputs the
// integers' sums (magnitude 0: exact) and the other sums (Σ|x|).

export const nativeSumAllCounts = [0, 1, 31, 32, 1000, (1 << 20) + 7];

export function integerValues(drawn: Float32Array): Float32Array {
  return drawn.map((v) => Math.min(Math.max(Math.floor(2 * v), -2), 3));
}

export function nativeReduceFixture(source: InputSource): Uint8Array {
  const layouts: Array<[number, [number, number, number]]> = [
    ...nativeSumAllCounts.map((n): [number, [number, number, number]] => [0, [1, 1, n]]),
    ...nativeLayouts.map((l): [number, [number, number, number]] => [1, l]),
  ];
  return writeCases(layouts.map(([kind, layout], index) => {
    const seed = 9000 + 2 * index;
    const n = layout[0] * layout[1] * layout[2];
    const drawnIntegers = normals(source, n, seed);
    const drawn = normals(source, n, seed + 1);
    const x = drawn.map((v) => fround(v + 0.5));
    return {
      parameters: [kind, ...layout],
      inputs: [input(seed, drawnIntegers), input(seed + 1, drawn)],
      outputs: [
        perChannel({ want: channelSums(integerValues(drawnIntegers), ...layout), magnitude: new Float64Array(layout[1]) }),
        perChannel({ want: channelSums(x, ...layout), magnitude: channelSums(abs(x), ...layout).map((v) => Math.max(v, 1e-30)) }),
      ],
    };
  }), { full: 1024, sampled: 256 });
}

// ---------------------------------------------------------------------------------------------------------------
// Elementwise ops that round: parameters [n, alpha, beta]; inputs a (every 7th element made 0: ReLU's kink, which
// the native test checks bitwise), c, and a saved tanh output t = v/4 (exact); outputs axpby alpha·a + beta·c
// (|alpha·a| + |beta·c|: a fused multiply-add may round once instead of twice), tanh(a) (relative), and tanh's
// backward c·(1 − t²) (|c|·(1 + t²): the terms before the subtraction).

export const nativeElementwiseCounts = [0, 1, 5, 1001, 65537];
const kAlpha = 0.75;
const kBeta = -1.25;

export function reluKinkInput(drawn: Float32Array): Float32Array {
  return drawn.map((v, i) => (i % 7 === 0 ? 0 : v));
}

export function nativeElementwiseFixture(source: InputSource): Uint8Array {
  return writeCases(nativeElementwiseCounts.map((n, index) => {
    const seed = 9200 + 3 * index;
    const drawn = [normals(source, n, seed), normals(source, n, seed + 1), normals(source, n, seed + 2)];
    const a = reluKinkInput(drawn[0]!);
    const c = drawn[1]!;
    const t = drawn[2]!.map((v) => 0.25 * v);
    return {
      parameters: [n, f32Bits(kAlpha), f32Bits(kBeta)],
      inputs: drawn.map((values, i) => input(seed + i, values)),
      outputs: [
        {
          want: axpby(kAlpha, a, kBeta, c),
          magnitude: Float64Array.from(a, (v, i) => Math.max(Math.abs(kAlpha * v) + Math.abs(kBeta * c[i]!), 1e-30)),
        },
        floored(tanhForward(a), 1e-30),
        {
          want: tanhBackward(c, t),
          magnitude: Float64Array.from(c, (g, i) => Math.max(Math.abs(g) * (1 + t[i]! * t[i]!), 1e-30)),
        },
      ],
    };
  }), { full: 256, sampled: 96 });
}

// ---------------------------------------------------------------------------------------------------------------
// GEMM with its epilogue (gemm.ts): parameters [m, n, k, bfloat16 (0/1), epilogue count, then per epilogue its
// fields (GemmField bits) and beta]; inputs A [m, k] and B [k, n] (op(a) and op(b), row-major: the native test
// transposes them itself for the transposed layouts, so all four layouts share one problem and its values),
// row_scale and column_scale (1 + v/4), row_bias, column_bias, subtract_coefficient, subtract_matrix, out0; with
// bfloat16, A, B, subtract_matrix and out0 rounded to bfloat16 by the library (what a bfloat16 GEMM receives, so
// the reference is exact for it). Outputs: one per epilogue, with the sum of |terms| of each element (the native
// test's bound is a multiple of it that depends on the backend's arithmetic: float32, TF32, bfloat16). The plain
// product (epilogue 0, also raw_out's reference) stores up to 160 elements; the other epilogues, whose bugs (a
// wrong row or column index, a missing term) show on any element, 16.

/** The epilogues every problem stores, in the native test's order (kEpilogueCases in gemm_conv_cases.cc). */
export const nativeGemmEpilogues: Array<[number, number]> = [
  [0, 0], [GemmField.rowScale, 0], [GemmField.columnScale, 0], [GemmField.rowBias, 0], [GemmField.columnBias, 0],
  [GemmField.subtract, 0], [GemmField.subtractNoCoefficient, 0], [GemmField.beta, 1],
  [GemmField.rowScale | GemmField.columnScale | GemmField.rowBias | GemmField.columnBias | GemmField.subtract | GemmField.beta, 0.5],
  [GemmField.rowScale | GemmField.columnScale | GemmField.beta, 1],
  [GemmField.columnScale | GemmField.columnBias, 0], [GemmField.rowScale | GemmField.subtract, 0],
];

// The shapes [m, n, k] of every backend's checks (gemm_conv_cases.cc says which backend takes which and why).
const kGemmShapes: Array<[number, number, number]> = [
  [1, 1, 1], [7, 13, 5], [33, 65, 17], [16, 16, 16], [257, 129, 300], [130, 600, 520], [1000, 3, 7], [3, 1000, 7],
  [5, 7, 2000], [64, 48, 1], [1, 100, 37], [100, 1, 37], [128, 128, 8], [12, 32, 256], [13, 33, 257],
];
const kCudaShapes: Array<[number, number, number]> = [
  [300, 257, 129], [256, 192, 64], [129, 260, 33], [64, 96, 5000], [7, 13, 3001], [1537, 1539, 33], [1536, 1536, 40],
  [20, 30, 0], [33, 17, 3], [1536, 1536, 24],
];
const kWgmmaShapes: Array<[number, number, number]> = [
  [128, 256, 64], [200, 136, 72], [257, 513, 136], [130, 260, 1000], [64, 96, 5000], [1, 1, 8], [3, 1000, 24],
];
export const nativeGemmFloat32Shapes: Array<[number, number, number]> = [
  ...kGemmShapes, [1000, 24, 300], [24, 1000, 300], [64, 96, 5000], [300, 257, 129], [1100, 700, 40],
  ...kCudaShapes, ...kWgmmaShapes, [200, 136, 74], [1024, 512, 64],
  // The CPU blocked kernel's edge tiles and k parts, and a CNN training step's products (test/native/gemm_conv_cases.cc).
  [50, 40, 30], [18, 200, 100], [11, 17, 600], [35, 50, 1200], [64, 196, 288], [288, 196, 64], [32, 9, 784], [32, 784, 9],
  [100, 128, 3136],
];
export const nativeGemmBfloat16Shapes: Array<[number, number, number]> = [...kGemmShapes, ...kCudaShapes, ...kWgmmaShapes, [200, 136, 76]];

/** Distinct shapes, in first-seen order. */
function distinct(shapes: Array<[number, number, number]>): Array<[number, number, number]> {
  const seen = new Set<string>();
  return shapes.filter((s) => !seen.has(s.join('x')) && seen.add(s.join('x')));
}

/** An output of `count` elements holding values at its stored indices only (the rest is never written). */
function sparseOutput(count: number, storage: Storage, value: (x: number) => { want: number; magnitude: number }): OpOutput {
  const want: { length: number; [x: number]: number } = { length: count };
  const magnitude: { length: number; [x: number]: number } = { length: count };
  for (const x of storedIndices(count, storage)) {
    const element = value(x);
    want[x] = element.want;
    magnitude[x] = element.magnitude;
  }
  return { want, magnitude, storage };
}

export function nativeGemmFixture(source: InputSource): Uint8Array {
  const problems: Array<[number, number, number, boolean]> = [
    ...distinct(nativeGemmFloat32Shapes).map(([m, n, k]): [number, number, number, boolean] => [m, n, k, false]),
    ...distinct(nativeGemmBfloat16Shapes).map(([m, n, k]): [number, number, number, boolean] => [m, n, k, true]),
  ];
  return writeCases(problems.map(([m, n, k, bfloat16], index) => {
    const seed = 9500 + 9 * index;
    const counts = [m * k, k * n, m, n, m, n, m, m * n, m * n];
    const drawn = counts.map((count, i) => normals(source, count, seed + i));
    const rounded = (values: Float32Array) => (bfloat16 && values.length ? source.bfloat16(values) : values);
    const [A, B, subtractMatrix, out0] = [drawn[0]!, drawn[1]!, drawn[7]!, drawn[8]!].map(rounded) as [
      Float32Array, Float32Array, Float32Array, Float32Array,
    ];
    const epilogue = {
      rowScale: around(drawn[2]!, 1), columnScale: around(drawn[3]!, 1), rowBias: drawn[4]!, columnBias: drawn[5]!,
      subtractCoefficient: drawn[6]!, subtractMatrix, out0,
    };
    return {
      parameters: [
        m, n, k, bfloat16 ? 1 : 0, nativeGemmEpilogues.length,
        ...nativeGemmEpilogues.flatMap(([fields, beta]) => [fields, f32Bits(beta)]),
      ],
      inputs: drawn.map((values, i) => input(seed + i, values)),
      outputs: nativeGemmEpilogues.map(([fields, beta], e) =>
        sparseOutput(m * n, e === 0 ? { full: 160, sampled: 160 } : { full: 16, sampled: 16 }, (x) =>
          gemmElement(A, B, n, k, epilogue, fields, beta, Math.floor(x / n), x % n))),
    };
  }));
}

/** This module's fixture files: each name under test/fixtures/native_reference/ and what writes it. */
export const nativeKernelFixtures: Array<{ file: string; write: (source: InputSource) => Uint8Array }> = [
  { file: 'optim.bin', write: nativeOptimizerFixture },
  { file: 'batch_norm.bin', write: nativeBatchNormFixture },
  { file: 'mean_only_batch_norm.bin', write: nativeMeanOnlyBatchNormFixture },
  { file: 'softmax_cross_entropy.bin', write: nativeSoftmaxCrossEntropyFixture },
  { file: 'class_loss.bin', write: nativeClassLossFixture },
  { file: 'bce_with_logits.bin', write: nativeBceWithLogitsFixture },
  { file: 'reduce.bin', write: nativeReduceFixture },
  { file: 'elementwise.bin', write: nativeElementwiseFixture },
  { file: 'gemm.bin', write: nativeGemmFixture },
];
