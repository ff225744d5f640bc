// The multi-tensor optimizer step (native.optimizerSteps: every parameter of a group in one call) against the
// per-parameter one (native.optimizerStep) and against an exact float32 emulation of the per-element rule: all three
// must agree bit for bit, on fresh random parameters of odd sizes (vector tails, one element, a tensor large enough
// for the threaded path), weight decay, momentum and Nesterov, parameters at different step counts, one skipped at
// a step, and weight-norm norm outputs (fused rows, rows cut into parts, and the unfused outer > 1 layout). Bad
// arguments are errors that name the field and index, and nothing is updated when any entry is bad.
import { afterAll, describe, expect, it } from 'vitest';

import { setNumThreads } from '../ts/index.js';
import { native, type NativeTensor, type OptimizerNormOutput } from '../ts/native.js';
import { firstBitDifference, reproduce, runSeed } from './helpers.js';

const raw = native as unknown as Record<string, (...args: unknown[]) => unknown>;
const seed = runSeed();
let nextSeed = seed;
const f32 = (t: NativeTensor): Float32Array => new Float32Array(t.toArray());
const fr = Math.fround;

type Kind = 'sgd' | 'adam' | 'adamax';

interface Hyper {
  lr: number;
  weightDecay: number;
  momentum: number;
  dampening: number;
  nesterov: boolean;
  beta1: number;
  beta2: number;
  eps: number;
}

/** A parameter's [outer, channels, inner] weight-norm view, or null for a plain parameter. */
type Layout = [number, number, number] | null;

// Sizes: 1 element, odd sizes around the 4- and 8-float vectors, a 40000-float tensor (past the 32768 elements from
// which the step is threaded), rows of 37 (two whole groups of 16 floats and a tail; four rows then one at a time),
// rows of 1031 (two 1024-float blocks per row), rows of 20000 (two 16384-float parts),
// and an outer > 1 view (the norm computed after the update).
const SHAPES: { count: number; layout: Layout }[] = [
  { count: 1, layout: null },
  { count: 7, layout: null },
  { count: 33, layout: null },
  { count: 40_000, layout: null },
  { count: 6 * 37, layout: [1, 6, 37] },
  { count: 5 * 1031, layout: [1, 5, 1031] },
  { count: 2 * 20_000, layout: [1, 2, 20_000] },
  { count: 3 * 5 * 7, layout: [3, 5, 7] },
  { count: 9, layout: [1, 9, 1] },
];

/**
 * ‖row‖ per row as the fused step adds it (cpu/optim.cc, rows_squares): a row is cut into parts of 16384 elements
 * and a part into blocks of 1024; a block's squares go to 16 float32 lanes (element j to lane j % 16 for the whole
 * groups of 16, the rest to lane 0 in order), the lanes are added in order; blocks and then parts are added in
 * double; the norm is the float32 square root, floored at eps (1e-12).
 */
function fusedNorms(values: Float32Array, rows: number, rowLength: number): Float32Array {
  const norms = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let rowSum = 0;
    for (let part = 0; part < rowLength; part += 16384) {
      let partSum = 0;
      for (let block = part; block < Math.min(rowLength, part + 16384); block += 1024) {
        const end = Math.min(rowLength, part + 16384, block + 1024);
        const lanes = new Array<number>(16).fill(0);
        let j = block;
        for (; j + 16 <= end; j += 16) for (let l = 0; l < 16; l++) lanes[l] = fr(lanes[l]! + fr(values[r * rowLength + j + l]! ** 2));
        for (; j < end; j++) lanes[0] = fr(lanes[0]! + fr(values[r * rowLength + j]! ** 2));
        // The lanes folded as a tree: l + (l + 8), then + 4, + 2, + 1.
        for (let width = 8; width >= 1; width /= 2) for (let l = 0; l < width; l++) lanes[l] = fr(lanes[l]! + lanes[l + width]!);
        partSum += lanes[0]!;
      }
      rowSum += partSum;
    }
    norms[r] = Math.max(fr(Math.sqrt(rowSum)), fr(1e-12));
  }
  return norms;
}

/**
 * The per-element rule as the scalar C++ loop computes it, one float32 rounding per operation (the CPU kernels
 * contract no multiply-add): the vectorized kernels must give exactly this. Bias corrections in double, rounded once.
 */
function referenceStep(kind: Kind, h: Hyper, step: number, p: Float32Array, grad: Float32Array, s1: Float32Array | null, s2: Float32Array | null): void {
  const lr = fr(h.lr), wd = fr(h.weightDecay), b1 = fr(h.beta1), b2 = fr(h.beta2), eps = fr(h.eps);
  const stepSize = fr(lr / (1 - Math.pow(b1, step)));
  const invSqrtCorrection2 = fr(1 / Math.sqrt(1 - Math.pow(b2, step)));
  const momentum = fr(h.momentum), keep = fr(1 - fr(h.dampening));
  for (let i = 0; i < p.length; i++) {
    const g = wd !== 0 ? fr(grad[i]! + fr(wd * p[i]!)) : grad[i]!;
    if (kind === 'sgd') {
      let direction = g;
      if (momentum !== 0) {
        const buffer = step <= 1 ? g : fr(fr(momentum * s1![i]!) + fr(keep * g));
        s1![i] = buffer;
        direction = h.nesterov ? fr(g + fr(momentum * buffer)) : buffer;
      }
      p[i] = fr(p[i]! - fr(lr * direction));
    } else if (kind === 'adam') {
      const m = fr(fr(b1 * s1![i]!) + fr(fr(1 - b1) * g));
      const v = fr(fr(b2 * s2![i]!) + fr(fr(fr(1 - b2) * g) * g));
      s1![i] = m;
      s2![i] = v;
      p[i] = fr(p[i]! - fr(fr(stepSize * m) / fr(fr(fr(Math.sqrt(v)) * invSqrtCorrection2) + eps)));
    } else {
      const m = fr(fr(b1 * s1![i]!) + fr(fr(1 - b1) * g));
      const a = fr(b2 * s2![i]!), b = fr(Math.abs(g) + eps);
      const u = a < b ? b : a; // std::max
      s1![i] = m;
      s2![i] = u;
      p[i] = fr(p[i]! - fr(fr(stepSize * m) / u));
    }
  }
}

interface ParamSet {
  params: NativeTensor[];
  state1: (NativeTensor | null)[];
  state2: (NativeTensor | null)[];
  norms: (NativeTensor | null)[];
}

function makeSet(kind: Kind, h: Hyper, initial: Float32Array[], states: Float32Array[][]): ParamSet {
  const tensorOf = (values: Float32Array) => native.fromArray(Float32Array.from(values), [values.length], 'cpu');
  return {
    params: initial.map(tensorOf),
    state1: states.map(([s1]) => (kind === 'sgd' && h.momentum === 0 ? null : tensorOf(s1!))),
    state2: states.map(([, s2]) => (kind === 'sgd' ? null : tensorOf(s2!))),
    norms: SHAPES.map(({ layout }) => (layout ? native.full([layout[1]], 0, 'cpu') : null)),
  };
}

function normOutput(set: ParamSet, i: number): OptimizerNormOutput | null {
  const layout = SHAPES[i]!.layout;
  if (!layout) return null;
  return { norm: set.norms[i]!, outer: layout[0], channels: layout[1], inner: layout[2], eps: 1e-12 };
}

function stepMany(kind: Kind, h: Hyper, set: ParamSet, which: number[], grads: NativeTensor[], steps: number[]): void {
  const common = {
    params: which.map((i) => set.params[i]!),
    grads: which.map((i) => grads[i]!),
    steps: which.map((i) => steps[i]!),
    normOutputs: which.map((i) => normOutput(set, i)),
    lr: h.lr,
    weightDecay: h.weightDecay,
  };
  if (kind === 'sgd') {
    native.optimizerSteps('sgd', { ...common, momentum: h.momentum, dampening: h.dampening, nesterov: h.nesterov, momentumBuffers: which.map((i) => set.state1[i]!) });
  } else {
    const adamLike = { ...common, beta1: h.beta1, beta2: h.beta2, eps: h.eps, expAvgs: which.map((i) => set.state1[i]!) };
    const second = which.map((i) => set.state2[i]!);
    if (kind === 'adam') native.optimizerSteps('adam', { ...adamLike, expAvgSqs: second });
    else native.optimizerSteps('adamax', { ...adamLike, expInfs: second });
  }
}

function stepOne(kind: Kind, h: Hyper, set: ParamSet, i: number, grad: NativeTensor, step: number): void {
  const common = { param: set.params[i]!, grad, step, lr: h.lr, weightDecay: h.weightDecay, normOutput: normOutput(set, i) };
  if (kind === 'sgd') {
    native.optimizerStep('sgd', { ...common, momentum: h.momentum, dampening: h.dampening, nesterov: h.nesterov, momentumBuffer: set.state1[i] });
  } else {
    const adamLike = { ...common, beta1: h.beta1, beta2: h.beta2, eps: h.eps, expAvg: set.state1[i]! };
    if (kind === 'adam') native.optimizerStep('adam', { ...adamLike, expAvgSq: set.state2[i]! });
    else native.optimizerStep('adamax', { ...adamLike, expInf: set.state2[i]! });
  }
}

const CASES: { name: string; kind: Kind; h: Partial<Hyper> }[] = [
  { name: 'Adam', kind: 'adam', h: {} },
  { name: 'Adam with weight decay', kind: 'adam', h: { weightDecay: 0.05, lr: 3e-3, beta1: 0.8, beta2: 0.99, eps: 1e-6 } },
  { name: 'Adamax with weight decay', kind: 'adamax', h: { weightDecay: 0.01, lr: 2e-3 } },
  { name: 'SGD', kind: 'sgd', h: {} },
  { name: 'SGD with momentum, dampening and weight decay', kind: 'sgd', h: { momentum: 0.9, dampening: 0.1, weightDecay: 1e-3 } },
  { name: 'SGD with Nesterov momentum', kind: 'sgd', h: { momentum: 0.8, nesterov: true } },
];

afterAll(() => setNumThreads(0));

describe('optimizerSteps (multi-tensor) equals optimizerStep per parameter and the scalar rule, bit for bit', () => {
  for (const { name, kind, h: overrides } of CASES) {
    it(name, () => {
      const s0 = nextSeed;
      nextSeed += 1000;
      let s = s0;
      const h: Hyper = { lr: 0.01, weightDecay: 0, momentum: 0, dampening: 0, nesterov: false, beta1: 0.9, beta2: 0.999, eps: 1e-8, ...overrides };
      const where = `${name}, ${reproduce(seed)} (case seed ${s0})`;
      const initial = SHAPES.map(({ count }) => f32(native.randn([count], s++, 'cpu', 0, 1)));
      // Momentum buffers and second moments start from values a previous step could have left (v >= 0).
      const states = SHAPES.map(({ count }) => [
        f32(native.randn([count], s++, 'cpu', 0, 0.1)),
        f32(native.pointwiseUnary('abs', native.randn([count], s++, 'cpu', 0, 0.01), 0, 0)),
      ]);
      const many = makeSet(kind, h, initial, states);
      const single = makeSet(kind, h, initial, states);
      const reference = {
        params: initial.map((a) => Float32Array.from(a)),
        state1: states.map(([a]) => Float32Array.from(a!)),
        state2: states.map(([, b]) => Float32Array.from(b!)),
      };
      // Parameters at different counts: some start at step 1, others as if updated before (their bias correction).
      const steps = SHAPES.map((_, i) => (i % 3 === 0 ? 0 : 4 + i));
      for (let iteration = 0; iteration < 4; iteration++) {
        // On the second iteration parameter 2 has no gradient: it is left out, as step() leaves it.
        const which = SHAPES.map((_, i) => i).filter((i) => !(iteration === 1 && i === 2));
        for (const i of which) steps[i] = steps[i]! + 1;
        const grads = SHAPES.map(({ count }) => native.randn([count], s++, 'cpu', 0, 1));
        setNumThreads(2); // the threaded path for the large tensors
        stepMany(kind, h, many, which, grads, steps);
        setNumThreads(1);
        for (const i of which) stepOne(kind, h, single, i, grads[i]!, steps[i]!);
        for (const i of which) {
          const momentumless = kind === 'sgd' && h.momentum === 0;
          referenceStep(kind, h, steps[i]!, reference.params[i]!, f32(grads[i]!), momentumless ? null : reference.state1[i]!, kind === 'sgd' ? null : reference.state2[i]!);
        }
        for (let i = 0; i < SHAPES.length; i++) {
          const at = `${where}, iteration ${iteration}, parameter ${i} (${SHAPES[i]!.count} elements)`;
          const pMany = f32(many.params[i]!), pSingle = f32(single.params[i]!);
          expect(firstBitDifference(pMany, pSingle), `${at}: multi-tensor vs per-parameter`).toBe(-1);
          expect(firstBitDifference(pMany, reference.params[i]!), `${at}: vs the float32 rule`).toBe(-1);
          if (many.state1[i]) {
            expect(firstBitDifference(f32(many.state1[i]!), f32(single.state1[i]!)), `${at}: state 1`).toBe(-1);
            expect(firstBitDifference(f32(many.state1[i]!), reference.state1[i]!), `${at}: state 1 vs the rule`).toBe(-1);
          }
          if (many.state2[i]) {
            expect(firstBitDifference(f32(many.state2[i]!), f32(single.state2[i]!)), `${at}: state 2`).toBe(-1);
            expect(firstBitDifference(f32(many.state2[i]!), reference.state2[i]!), `${at}: state 2 vs the rule`).toBe(-1);
          }
          const layout = SHAPES[i]!.layout;
          if (!layout || !which.includes(i)) continue;
          const normMany = f32(many.norms[i]!);
          expect(firstBitDifference(normMany, f32(single.norms[i]!)), `${at}: norm`).toBe(-1);
          // The norm of the updated parameter per channel, in float64: float32 sums of up to 40000 squares.
          const [outer, channels, inner] = layout;
          const values = reference.params[i]!;
          if (outer === 1) {
            const exact = fusedNorms(values, channels, inner);
            expect(firstBitDifference(normMany, exact), `${at}: norm vs the fused rows' float32 additions`).toBe(-1);
          }
          for (let k = 0; k < channels; k++) {
            let sum = 0;
            for (let o = 0; o < outer; o++) for (let j = 0; j < inner; j++) sum += values[(o * channels + k) * inner + j]! ** 2;
            expect(Math.abs(normMany[k]! - Math.sqrt(sum)) / Math.sqrt(sum), `${at}: norm[${k}] vs float64`).toBeLessThan(1e-5);
          }
        }
      }
    });
  }
});

describe('optimizerSteps checks every entry before updating any', () => {
  const randn = (count: number) => native.randn([count], nextSeed++, 'cpu', 0, 1);
  const adam = (overrides: Record<string, unknown> = {}) => ({
    params: [randn(3), randn(5)],
    grads: [randn(3), randn(5)],
    steps: [1, 2],
    normOutputs: [null, null],
    expAvgs: [randn(3), randn(5)],
    expAvgSqs: [native.full([3], 0.5, 'cpu'), native.full([5], 0.5, 'cpu')],
    lr: 1e-3,
    weightDecay: 0,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    ...overrides,
  });

  it('names the field and the index of a bad entry', () => {
    expect(() => raw.optimizerSteps!('rmsprop', adam())).toThrow(/optimizerSteps: kind/);
    expect(() => raw.optimizerSteps!('adam', null)).toThrow(/optimizerSteps: options: expected an options object/);
    expect(() => raw.optimizerSteps!('adam', adam({ grads: [randn(3)] }))).toThrow(RangeError);
    expect(() => raw.optimizerSteps!('adam', adam({ grads: [randn(3)] }))).toThrow(/optimizerSteps: options\.grads: expected 2 entries \(one per parameter\), got 1/);
    expect(() => raw.optimizerSteps!('adam', adam({ expAvgSqs: 'x' }))).toThrow(/optimizerSteps: options\.expAvgSqs: expected an array/);
    expect(() => raw.optimizerSteps!('adam', adam({ grads: [randn(3), [1, 2]] }))).toThrow(/optimizerSteps: options\.grads\[1\]/);
    expect(() => raw.optimizerSteps!('adam', adam({ grads: [randn(3), randn(4)] }))).toThrow(/options\.grads\[1\]: expected 5 elements/);
    expect(() => raw.optimizerSteps!('adam', adam({ steps: [1, 0] }))).toThrow(RangeError);
    expect(() => raw.optimizerSteps!('adam', adam({ steps: [1, 0] }))).toThrow(/options\.steps\[1\]: expected an integer >= 1, got 0/);
    expect(() => raw.optimizerSteps!('adam', adam({ steps: [1, '2'] }))).toThrow(TypeError);
    expect(() => raw.optimizerSteps!('adam', adam({ lr: undefined }))).toThrow(/optimizerSteps: options\.lr: expected a number/);
    expect(() => raw.optimizerSteps!('adam', adam({ normOutputs: [null, { norm: randn(2), outer: 1, channels: 2, inner: 3, eps: 1e-12 }] }))).toThrow(
      /options\.params\[1\]: expected 6 elements/,
    );
    expect(() => raw.optimizerSteps!('adamax', adam())).toThrow(/optimizerSteps: options\.expInfs: expected an array/);
    const sgd = { ...adam(), momentum: 0.9, dampening: 0, nesterov: false, momentumBuffers: [randn(3), null] };
    expect(() => raw.optimizerSteps!('sgd', sgd)).toThrow(/optimizerSteps: options\.momentumBuffers\[1\]: expected a tensor when momentum != 0/);
  });

  it('leaves every parameter as it was when the last entry is bad', () => {
    const options = adam({ expAvgs: [randn(3), randn(4)] });
    const before = options.params.map(f32);
    expect(() => raw.optimizerSteps!('adam', options)).toThrow(/options\.expAvgs\[1\]: expected 5 elements/);
    options.params.forEach((p, i) => expect(firstBitDifference(f32(p), before[i]!)).toBe(-1));
  });

  it('accepts an empty group', () => {
    expect(() => native.optimizerSteps('adam', adam({ params: [], grads: [], steps: [], normOutputs: [], expAvgs: [], expAvgSqs: [] }))).not.toThrow();
  });
});
