// Every weight-norm op on every available backend, fused and unfused, against the float64 reference
// (test/reference/weightnorm.ts), plus the identities of the method (Salimans & Kingma, 2016, §2) on the kernels'
// own outputs, the eps floor, and determinism.
//
// Error measure and tolerance. Inputs are float32 values, which the float64 reference takes exactly, so the only
// error is the kernels' own float32 arithmetic. Each output element is a few roundings (u = 2^-24 ≈ 6e-8) from the
// exact result: w = v·(g/norm), norm = sqrt of a sum of squares (accumulated in double on the CPU, in float trees
// with per-thread runs on CUDA, both summing positive terms, so relative error is small). We report
// max|got − ref| / scale with scale = max|ref| for w and norm; for dv the largest of its two terms |c1·dw|, |c2·v|
// (they cancel; a 1-element channel has dv = 0 exactly); for dg the largest Σ|dw·v|/norm (the dot product's terms
// cancel too, and a float sum's error is bounded relative to the sum of |terms|). TOLERANCE = 2e-6 (≈ 32 u) leaves
// room for CUDA's float accumulation over tens of thousands of terms and is still tight enough to catch one
// element of a 70000-element channel missing from a sum (≈ 1/70000 = 1.4e-5 of the norm²; 7e-6 of the norm).
// Measured (the suite prints its worst errors at the end): ≤ 1.6e-7 on the CPU, ≤ 1.6e-7 on CUDA (H200).
import { afterAll, afterEach, describe, expect, it } from 'vitest';

import { backend, ops, randn, setNumThreads, type Device, type Tensor, tensor } from '../ts/index.js';
import {
  bitwiseEqual,
  firstBitDifference,
  maxAbs,
  relativeError,
  reproduce,
  runSeed,
  shapeName,
} from './helpers.js';
import {
  channelDot,
  channelIndices,
  channelLayout,
  weightNormBackward,
  weightNormForward,
  type BackwardReference,
  type ForwardReference,
} from './reference/weightnorm.js';

const TOLERANCE = 2e-6;
const DEFAULT_EPS = 1e-12;

const seed = runSeed();
console.log(`weightnorm.test: random seed ${seed} (${reproduce(seed)})`);

const info = backend();
const cudaSkipReason = info.cuda.usable ? '' : info.cuda.compiled ? (info.cuda.reason ?? 'unknown reason') : 'CUDA not compiled in';
if (!info.cuda.usable) console.log(`weightnorm.test: CUDA tests skipped: ${cudaSkipReason}`);
const deviceSuites: { device: Device; usable: boolean; title: string }[] = [
  { device: 'cpu', usable: true, title: `cpu (${info.cpu.threads} threads)` },
  {
    device: 'cuda',
    usable: info.cuda.usable,
    title: info.cuda.usable ? `cuda (${info.cuda.device?.name ?? 'GPU'})` : `cuda — skipped: ${cudaSkipReason}`,
  },
];

// Every tensor a test creates goes here and is disposed after it, so memory does not grow over the suite.
const live: Tensor[] = [];
function keep<T extends Tensor>(t: T): T {
  live.push(t);
  return t;
}
afterEach(() => {
  for (const t of live.splice(0)) t.dispose();
});
afterAll(() => setNumThreads(0));

// The worst error seen per device and quantity, printed at the end: the margin under TOLERANCE, measured.
const worst = new Map<string, number>();
function measured(key: string, error: number): number {
  worst.set(key, Math.max(worst.get(key) ?? 0, error));
  return error;
}
afterAll(() => {
  const rows = [...worst].map(([key, error]) => `  ${key.padEnd(32)} ${error.toExponential(2)}`);
  console.log(`weightnorm.test: worst error / scale (tolerance ${TOLERANCE}):\n${rows.join('\n')}`);
});

interface Case {
  shape: number[];
  dim: number | null;
  eps?: number;
  /** Channels scaled to a norm of eps/5, so the eps floor is active there (with no rounding doubt). */
  floored?: number[];
}

const cases: Case[] = [
  // 1-D, odd sizes, 1-element rows and channels
  { shape: [1], dim: 0 },
  { shape: [1], dim: null },
  { shape: [7], dim: 0 },
  { shape: [7], dim: null },
  { shape: [7], dim: -1 },
  { shape: [1023], dim: null },
  { shape: [4097], dim: 0 },
  { shape: [4097], dim: null },
  { shape: [1, 1], dim: 0 },
  { shape: [5, 1], dim: 0 },
  { shape: [1, 5], dim: 0 },
  { shape: [5, 1], dim: 1 },
  { shape: [1, 7], dim: 1 },
  // 2-D: first, last, negative, null
  { shape: [3, 7], dim: 0 },
  { shape: [3, 7], dim: 1 },
  { shape: [3, 7], dim: -1 },
  { shape: [3, 7], dim: -2 },
  { shape: [3, 7], dim: null },
  { shape: [7, 1023], dim: 0 },
  { shape: [7, 1023], dim: 1 },
  { shape: [1023, 7], dim: 0 },
  { shape: [1023, 7], dim: -1 },
  { shape: [4097, 1], dim: 0 },
  // 3-D and 4-D: middle dims
  { shape: [2, 3, 4], dim: 0 },
  { shape: [2, 3, 4], dim: 1 },
  { shape: [2, 3, 4], dim: 2 },
  { shape: [2, 3, 4], dim: -2 },
  { shape: [2, 3, 4], dim: null },
  { shape: [16, 8, 3, 3], dim: 0 },
  { shape: [16, 8, 3, 3], dim: 1 },
  { shape: [16, 8, 3, 3], dim: -1 },
  { shape: [16, 8, 3, 3], dim: null },
  { shape: [3, 5, 7, 9], dim: 2 },
  { shape: [2, 3, 1, 4], dim: 2 },
  { shape: [8, 50, 64], dim: 1 },
  { shape: [64, 3, 300], dim: 1 },
  // the kernels' split paths: few long channels, one long channel, long strided columns
  { shape: [3, 70000], dim: 0 },
  { shape: [4, 33000], dim: null },
  { shape: [2, 20000, 3], dim: 2 },
  { shape: [5000, 40], dim: 1 },
  { shape: [1, 140000], dim: 0 },
  // short rows and short columns
  { shape: [1000, 16], dim: 0 },
  { shape: [4096, 8], dim: 1 },
  { shape: [4096, 3], dim: 0 },
  // empty tensors: no channels, or channels with nothing to reduce (norm = eps)
  { shape: [0, 3], dim: 0 },
  { shape: [0, 3], dim: 1 },
  { shape: [3, 0], dim: 0 },
  // the eps floor active on some channels
  { shape: [6, 50], dim: 0, eps: 0.5, floored: [1, 4] },
  { shape: [50, 6], dim: 1, eps: 0.5, floored: [0, 5] },
  { shape: [4, 5, 6], dim: 1, eps: 0.5, floored: [2] },
  { shape: [3, 70000], dim: 0, eps: 1, floored: [1] },
];

interface Prepared {
  name: string;
  caseSeed: number;
  eps: number;
  v: Float32Array;
  g: Float32Array;
  dw: Float32Array;
  forward: ForwardReference;
  backward: BackwardReference;
}

const prepared = new Map<Case, Prepared>();

/** Random inputs from the library's seeded generator (the same on every device), and the reference outputs. */
function prepare(c: Case): Prepared {
  const cached = prepared.get(c);
  if (cached) return cached;
  const caseSeed = seed + 1000 * cases.indexOf(c);
  const layout = channelLayout(c.shape, c.dim);
  const draw = (shape: number[], offset: number) => {
    const t = randn(shape, { seed: caseSeed + offset });
    const data = t.toArray();
    t.dispose();
    return data;
  };
  const v = draw(c.shape, 0);
  const g = draw([layout.channels], 1);
  const dw = draw(c.shape, 2);
  const eps = c.eps ?? DEFAULT_EPS;
  for (const k of c.floored ?? []) {
    const scale = eps / 5 / Math.sqrt(channelDot(v, v, layout, k));
    for (const index of channelIndices(layout, k)) v[index] = Math.fround(v[index]! * scale);
  }
  // The kernels take eps as float32; the reference gets the same value.
  const eps32 = Math.fround(eps);
  const result: Prepared = {
    name: shapeName(c.shape, c.dim) + (c.eps === undefined ? '' : ` eps ${c.eps}`),
    caseSeed,
    eps,
    v,
    g,
    dw,
    forward: weightNormForward(v, g, c.shape, c.dim, eps32),
    backward: weightNormBackward(dw, v, g, c.shape, c.dim, eps32),
  };
  prepared.set(c, result);
  return result;
}

function run(c: Case, p: Prepared, device: Device, fused: boolean) {
  const v = keep(tensor(p.v, c.shape, { device }));
  const g = keep(tensor(p.g, [p.g.length], { device }));
  const dw = keep(tensor(p.dw, c.shape, { device }));
  const options = { dim: c.dim, eps: p.eps, fused };
  const { w, norm } = ops.weightNorm(v, g, options);
  const { dv, dg } = ops.weightNormBackward(dw, v, g, keep(norm), options);
  keep(w);
  keep(dv);
  keep(dg);
  return {
    tensors: { v, g, dw, w, norm, dv, dg },
    w: w.toArray(),
    norm: norm.toArray(),
    dv: dv.toArray(),
    dg: dg.toArray(),
  };
}

function describeRun(p: Prepared, device: Device, fused: boolean): string {
  return `${p.name} on ${device}, ${fused ? 'fused' : 'unfused'}: seed ${p.caseSeed}, ${reproduce(seed)}`;
}

for (const suite of deviceSuites) {
  describe.skipIf(!suite.usable)(suite.title, () => {
    const device = suite.device;

    describe('against the float64 reference (error / scale < 2e-6)', () => {
      for (const c of cases) {
        for (const fused of [true, false]) {
          const floor = c.eps === undefined ? '' : ` eps ${c.eps} floored ${c.floored}`;
          it(`${shapeName(c.shape, c.dim)}${floor} ${fused ? 'fused' : 'unfused'}`, () => {
            const p = prepare(c);
            const out = run(c, p, device, fused);
            const where = describeRun(p, device, fused);
            const channels = p.forward.norm.length;
            const { tensors } = out;
            expect(tensors.w.shape, where).toEqual(c.shape);
            expect(tensors.dv.shape, where).toEqual(c.shape);
            expect(tensors.norm.shape, where).toEqual([channels]);
            expect(tensors.dg.shape, where).toEqual([channels]);
            for (const t of [tensors.w, tensors.norm, tensors.dv, tensors.dg]) expect(t.device, where).toBe(device);
            const key = `${device} ${fused ? 'fused' : 'unfused'}`;
            expect(measured(`${key} w`, relativeError(out.w, p.forward.w)), `w: ${where}`).toBeLessThan(TOLERANCE);
            expect(measured(`${key} norm`, relativeError(out.norm, p.forward.norm)), `norm: ${where}`).toBeLessThan(TOLERANCE);
            const dgError = relativeError(out.dg, p.backward.dg, p.backward.dgScale);
            expect(measured(`${key} dg`, dgError), `dg: ${where}`).toBeLessThan(TOLERANCE);
            const dvError = relativeError(out.dv, p.backward.dv, p.backward.dvScale);
            expect(measured(`${key} dv`, dvError), `dv: ${where}`).toBeLessThan(TOLERANCE);
            // The ops never write their inputs.
            expect(bitwiseEqual(tensors.v.toArray(), p.v), `v unchanged: ${where}`).toBe(true);
            expect(bitwiseEqual(tensors.g.toArray(), p.g), `g unchanged: ${where}`).toBe(true);
            expect(bitwiseEqual(tensors.dw.toArray(), p.dw), `dw unchanged: ${where}`).toBe(true);
          });
        }
      }
    });

    describe('identities on the kernel outputs: ‖w_k‖ = |g_k|, v_k·dv_k = 0', () => {
      const identityCases = cases.filter((c) => c.floored === undefined && c.shape.every((d) => d > 0));
      for (const c of identityCases) {
        for (const fused of [true, false]) {
          it(`${shapeName(c.shape, c.dim)} ${fused ? 'fused' : 'unfused'}`, () => {
            const p = prepare(c);
            const out = run(c, p, device, fused);
            const where = describeRun(p, device, fused);
            const layout = channelLayout(c.shape, c.dim);
            const { c1, c2 } = p.backward;
            for (let k = 0; k < layout.channels; k++) {
              // ‖w_k‖ from float32 w: each element is ~2 roundings from exact, so relative to |g_k|.
              const wNorm = Math.sqrt(channelDot(out.w, out.w, layout, k));
              const gAbs = Math.abs(p.g[k]!);
              const normError = measured(`${device} ‖w_k‖ vs |g_k|`, Math.abs(wNorm - gAbs) / gAbs);
              expect(normError, `‖w_${k}‖ = ${wNorm} vs |g_${k}| = ${gAbs}: ${where}`).toBeLessThan(TOLERANCE);
              // v·dv: each dv_i is a few roundings of its larger term, so the sum is small against Σ|v_i|·(terms).
              let termScale = 0;
              for (const i of channelIndices(layout, k)) {
                termScale += Math.abs(p.v[i]!) * (Math.abs(c1[k]! * p.dw[i]!) + Math.abs(c2[k]! * p.v[i]!));
              }
              const projection = channelDot(p.v, out.dv, layout, k);
              const projectionError = measured(`${device} v_k·dv_k`, Math.abs(projection) / termScale);
              expect(projectionError, `v_${k}·dv_${k} = ${projection} (terms ${termScale}): ${where}`).toBeLessThan(TOLERANCE);
            }
          });
        }
      }
    });

    describe('options', () => {
      it('no options means dim 0, eps 1e-12, fused (bitwise the same)', () => {
        const v = keep(randn([5, 6], { seed, device }));
        const g = keep(randn([5], { seed: seed + 1, device }));
        const dw = keep(randn([5, 6], { seed: seed + 2, device }));
        const implicit = ops.weightNorm(v, g);
        const explicit = ops.weightNorm(v, g, { dim: 0, eps: 1e-12, fused: true });
        keep(implicit.w), keep(implicit.norm), keep(explicit.w), keep(explicit.norm);
        expect(bitwiseEqual(implicit.w.toArray(), explicit.w.toArray())).toBe(true);
        expect(bitwiseEqual(implicit.norm.toArray(), explicit.norm.toArray())).toBe(true);
        const b1 = ops.weightNormBackward(dw, v, g, implicit.norm);
        const b2 = ops.weightNormBackward(dw, v, g, implicit.norm, { dim: 0, eps: 1e-12, fused: true });
        keep(b1.dv), keep(b1.dg), keep(b2.dv), keep(b2.dg);
        expect(bitwiseEqual(b1.dv.toArray(), b2.dv.toArray())).toBe(true);
        expect(bitwiseEqual(b1.dg.toArray(), b2.dg.toArray())).toBe(true);
      });

      it('a negative dim is the same axis counted from the end (bitwise)', () => {
        const v = keep(randn([3, 4, 5], { seed, device }));
        for (const [negative, positive] of [[-1, 2], [-2, 1], [-3, 0]] as const) {
          const g = keep(randn([v.shape[positive]!], { seed: seed + 1, device }));
          const a = ops.weightNorm(v, g, { dim: negative });
          const b = ops.weightNorm(v, g, { dim: positive });
          keep(a.w), keep(a.norm), keep(b.w), keep(b.norm);
          expect(bitwiseEqual(a.w.toArray(), b.w.toArray()), `dim ${negative}`).toBe(true);
          expect(bitwiseEqual(a.norm.toArray(), b.norm.toArray()), `dim ${negative}`).toBe(true);
        }
      });
    });

    describe('eps floor (documented behaviour)', () => {
      for (const fused of [true, false]) {
        const variant = fused ? 'fused' : 'unfused';
        it(`a zero channel gives w = 0, norm = eps, dg = 0 and the finite dv = (g/eps)·dw (${variant})`, () => {
          const v = keep(tensor([0, 0, 0, 1, 2, 2], [2, 3], { device }));
          const g = keep(tensor([2, 3], undefined, { device }));
          const dw = keep(tensor([1, -1, 0.5, 1, 1, 1], [2, 3], { device }));
          const { w, norm } = ops.weightNorm(v, g, { fused });
          const { dv, dg } = ops.weightNormBackward(dw, v, g, keep(norm), { fused });
          keep(w), keep(dv), keep(dg);
          const eps = Math.fround(1e-12);
          expect([...w.toArray()]).toEqual([0, 0, 0, 1, 2, 2]); // row 1: v·3/3
          expect([...norm.toArray()]).toEqual([eps, 3]);
          expect(dg.toArray()[0]).toBe(0);
          const dvRow = [...dv.toArray().subarray(0, 3)];
          // The floor makes the norm a constant there: dv = (g/eps)·dw, about 2e12·dw — large, but finite.
          dvRow.forEach((x, i) => expect(x / ((2 / eps) * [1, -1, 0.5][i]!)).toBeCloseTo(1, 6));
          for (const x of [...w.toArray(), ...dv.toArray(), ...dg.toArray()]) expect(Number.isFinite(x)).toBe(true);
        });

        it(`an all-zero tensor with dim null: w = 0, norm = [eps], dg = 0, dv = (g/eps)·dw (${variant})`, () => {
          const v = keep(tensor(new Float32Array(10), [2, 5], { device }));
          const g = keep(tensor([0.5], undefined, { device }));
          const dw = keep(randn([2, 5], { seed, device }));
          const { w, norm } = ops.weightNorm(v, g, { dim: null, fused });
          const { dv, dg } = ops.weightNormBackward(dw, v, g, keep(norm), { dim: null, fused });
          keep(w), keep(dv), keep(dg);
          expect([...w.toArray()].every((x) => x === 0)).toBe(true);
          expect([...norm.toArray()]).toEqual([Math.fround(1e-12)]);
          expect([...dg.toArray()]).toEqual([0]);
          const scale = Math.fround(0.5 / Math.fround(1e-12));
          expect(relativeError(dv.toArray(), [...dw.toArray()].map((x) => x * scale))).toBeLessThan(TOLERANCE);
        });

        it(`a zero channel with dw = 0 gives dv = 0 exactly (${variant})`, () => {
          const v = keep(tensor([0, 0, 3, 4], [2, 2], { device }));
          const g = keep(tensor([7, 1], undefined, { device }));
          const dw = keep(tensor([0, 0, 1, 1], [2, 2], { device }));
          const { norm, w } = ops.weightNorm(v, g, { fused });
          const { dv } = ops.weightNormBackward(dw, v, g, keep(norm), { fused });
          keep(w), keep(dv);
          expect([...dv.toArray().subarray(0, 2)]).toEqual([0, 0]);
        });

        // The paper has no eps; here a zero row must not become a silent NaN. The kernels use eps as float32 and
        // form g/eps: an eps below float32's range (or g/eps beyond it) is rejected up front with a RangeError naming
        // eps (below 1e-30), by the forward and the backward alike, before any kernel runs.
        for (const eps of [1e-40, 1e-300]) {
          it(`eps = ${eps} (underflows or overflows in float32) is a RangeError naming eps (${variant})`, () => {
            const v = keep(tensor([0, 0, 0, 1, 2, 2], [2, 3], { device }));
            const g = keep(tensor([2, 3], undefined, { device }));
            const dw = keep(tensor([1, -1, 0.5, 1, 1, 1], [2, 3], { device }));
            const norm = keep(tensor([1, 3], undefined, { device }));
            expect(() => ops.weightNorm(v, g, { eps, fused })).toThrow(RangeError);
            expect(() => ops.weightNorm(v, g, { eps, fused })).toThrow(/eps/);
            expect(() => ops.weightNormBackward(dw, v, g, norm, { eps, fused })).toThrow(RangeError);
            expect(() => ops.weightNormBackward(dw, v, g, norm, { eps, fused })).toThrow(/eps/);
          });
        }
      }
    });

    describe('determinism: the same inputs twice give bitwise identical outputs', () => {
      const names = ['[3, 70000] dim 0', '[4, 33000] dim null', '[2, 20000, 3] dim 2', '[5000, 40] dim 1', '[8, 50, 64] dim 1'];
      names.push('[4096, 8] dim 1', '[7, 1023] dim 0');
      const repeatCases = cases.filter((c) => names.includes(shapeName(c.shape, c.dim)) && c.eps === undefined);
      for (const c of repeatCases) {
        for (const fused of [true, false]) {
          it(`${shapeName(c.shape, c.dim)} ${fused ? 'fused' : 'unfused'}`, () => {
            const p = prepare(c);
            const first = run(c, p, device, fused);
            const second = run(c, p, device, fused);
            for (const key of ['w', 'norm', 'dv', 'dg'] as const) {
              const at = firstBitDifference(first[key], second[key]);
              expect(at, `${key} differs at ${at}: ${describeRun(p, device, fused)}`).toBe(-1);
            }
          });
        }
      }
    });
  });
}

describe('cpu: results do not depend on the thread count (setNumThreads)', () => {
  const threadCases = cases.filter((c) => c.eps === undefined && c.shape.reduce((a, b) => a * b, 1) >= 20000);
  for (const c of threadCases) {
    for (const fused of [true, false]) {
      it(`${shapeName(c.shape, c.dim)} ${fused ? 'fused' : 'unfused'}: 1, 3 and 8 threads bitwise equal to the default (${info.cpu.threads})`, () => {
        const p = prepare(c);
        setNumThreads(0);
        const reference = run(c, p, 'cpu', fused);
        for (const threads of [1, 3, 8]) {
          setNumThreads(threads);
          const out = run(c, p, 'cpu', fused);
          for (const key of ['w', 'norm', 'dv', 'dg'] as const) {
            const at = firstBitDifference(out[key], reference[key]);
            expect(at, `${key} differs at ${at} with ${threads} threads: ${describeRun(p, 'cpu', fused)}`).toBe(-1);
          }
        }
        setNumThreads(0);
      });
    }
  }

  // Random data almost never shows a change of summation order in double (the float32 result moves only when the
  // double sum lies within a few double ulps of a float32 rounding boundary). This input puts it exactly there:
  // channel 0's dot product is 2^60 + 2^36 (the midpoint between two float32 values once divided by the norm 2^30)
  // plus two terms of 100 that are 1024 and 65536+ elements away. Adding them one at a time to the large sum rounds
  // each away in double; adding them to each other first (as a separate part of the reduction) does not.
  for (const fused of [true, false]) {
    it(`a sum on a float32 rounding boundary: 1 thread vs the default (${fused ? 'fused' : 'unfused'})`, () => {
      const n = 70000;
      const v = new Float32Array(2 * n);
      const dw = new Float32Array(2 * n);
      v[0] = dw[0] = 2 ** 30;
      v[1] = dw[1] = 2 ** 18;
      v[65536] = dw[65536] = 10;
      v[65536 + 1024] = dw[65536 + 1024] = 10;
      v.fill(1, n);
      dw.fill(1, n);
      const exact = weightNormBackward(dw, v, [1, 1], [2, n], 0, DEFAULT_EPS);
      const results = [0, 1].map((threads) => {
        setNumThreads(threads);
        const vt = keep(tensor(v, [2, n]));
        const g = keep(tensor([1, 1]));
        const { w, norm } = ops.weightNorm(vt, g, { fused });
        const grads = ops.weightNormBackward(keep(tensor(dw, [2, n])), vt, g, keep(norm), { fused });
        keep(w), keep(grads.dv), keep(grads.dg);
        return { norm: norm.toArray(), dg: grads.dg.toArray(), dv: grads.dv.toArray() };
      });
      setNumThreads(0);
      const [byDefault, single] = results as [(typeof results)[0], (typeof results)[0]];
      expect(maxAbs(byDefault.dg)).toBeGreaterThan(0);
      expect(relativeError(byDefault.dg, exact.dg)).toBeLessThan(TOLERANCE);
      expect(
        [...single.dg],
        `dg with 1 thread vs ${info.cpu.threads} (correctly rounded: ${Math.fround(2 ** 30 + 64 + 200 / 2 ** 30)})`,
      ).toEqual([...byDefault.dg]);
      expect(firstBitDifference(single.dv, byDefault.dv)).toBe(-1);
      expect(firstBitDifference(single.norm, byDefault.norm)).toBe(-1);
    });
  }
});

describe.skipIf(!info.cuda.usable)(`cpu and cuda agree${info.cuda.usable ? '' : ` — skipped: ${cudaSkipReason}`}`, () => {
  // Each is within TOLERANCE of the reference, so they are within 2·TOLERANCE of each other.
  const agreeCases = cases.filter((c, i) => i % 3 === 0 || c.shape.reduce((a, b) => a * b, 1) >= 20000);
  for (const c of agreeCases) {
    it(`${shapeName(c.shape, c.dim)}${c.eps === undefined ? '' : ` eps ${c.eps}`}`, () => {
      const p = prepare(c);
      const cpu = run(c, p, 'cpu', true);
      const cuda = run(c, p, 'cuda', true);
      const where = `${p.name}: seed ${p.caseSeed}, ${reproduce(seed)}`;
      const error = (key: string, e: number) => measured(`cpu vs cuda ${key}`, e);
      expect(error('w', relativeError(cuda.w, cpu.w, maxAbs(p.forward.w))), `w: ${where}`).toBeLessThan(2 * TOLERANCE);
      expect(error('norm', relativeError(cuda.norm, cpu.norm, maxAbs(p.forward.norm))), `norm: ${where}`).toBeLessThan(2 * TOLERANCE);
      expect(error('dg', relativeError(cuda.dg, cpu.dg, p.backward.dgScale)), `dg: ${where}`).toBeLessThan(2 * TOLERANCE);
      expect(error('dv', relativeError(cuda.dv, cpu.dv, p.backward.dvScale)), `dv: ${where}`).toBeLessThan(2 * TOLERANCE);
    });
  }
});
