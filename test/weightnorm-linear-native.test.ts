// The weight-normalized Linear's two native entry points (binding/nn.cc weightNormLinear, weightNormLinearBackward).
// The forward against the separate native calls it replaces (the same kernels in the same order: the same bits); the
// backward, whose prologue is one fused pass, against float64 references, for any thread count with the same bits;
// and bad arguments as clear errors. (The layer's gradients against float64 and PyTorch: gradcheck.test.ts,
// layers-correctness.test.ts.)
import { afterAll, describe, expect, it } from 'vitest';
import { native, type NativeTensor } from '../ts/native.js';

const raw = native as unknown as Record<string, (...args: unknown[]) => unknown>;
let seed = Date.now() % 1_000_000; // fresh inputs each run; the seed is in every failure message
const randn = (shape: number[], mean = 0, std = 1): NativeTensor => native.randn(shape, seed++, 'cpu', mean, std);
const bits = (t: NativeTensor | undefined): number[] => Array.from(new Uint32Array(new Float32Array(t!.toArray()).buffer));

interface Case {
  batch: number;
  inFeatures: number;
  outFeatures: number;
}

// Small shapes (one GEMM tile, odd sizes) and the demo MLP's layers (several tiles on the OpenBLAS path).
const CASES: Case[] = [
  { batch: 3, inFeatures: 5, outFeatures: 7 },
  { batch: 17, inFeatures: 33, outFeatures: 1 },
  { batch: 100, inFeatures: 784, outFeatures: 256 },
  { batch: 100, inFeatures: 256, outFeatures: 10 },
  // More than one tile of the backward prologue's 1024 rows x 256 columns, enough elements for its threaded path.
  { batch: 2100, inFeatures: 24, outFeatures: 300 },
];

const f64 = (t: NativeTensor | undefined): Float64Array => Float64Array.from(t!.toArray());

// The backward in float64 from the same float32 inputs: dot, dg, dv, dx and dbias as Salimans & Kingma (2016) §2.1
// define them, with the saved norm (w = g·v/norm).
function referenceBackward(c: Case, x: Float64Array, v: Float64Array, g: Float64Array, norm: Float64Array, dy: Float64Array) {
  const { batch, inFeatures: k, outFeatures: n } = c;
  const dx = new Float64Array(batch * k), dv = new Float64Array(n * k), dg = new Float64Array(n), dbias = new Float64Array(n);
  for (let o = 0; o < n; o++) {
    const s = g[o]! / norm[o]!;
    const grad = new Float64Array(k); // dL/dw for row o: Σ_b dy[b,o] x[b,:]
    for (let b = 0; b < batch; b++) {
      const d = dy[b * n + o]!;
      dbias[o] += d;
      for (let i = 0; i < k; i++) {
        grad[i] += d * x[b * k + i]!;
        dx[b * k + i] += d * s * v[o * k + i]!;
      }
    }
    let dot = 0;
    for (let i = 0; i < k; i++) dot += grad[i]! * v[o * k + i]!;
    dg[o] = dot / norm[o]!;
    const c2 = (g[o]! * dg[o]!) / norm[o]! ** 2;
    for (let i = 0; i < k; i++) dv[o * k + i] = s * grad[i]! - c2 * v[o * k + i]!;
  }
  return { dx, dv, dg, dbias };
}

// Largest error relative to the reference's largest magnitude: float32 products summed over at most 2,100 terms
// (batch) or 784 (inputs), then one epilogue, stay within a few hundred float32 ulps of that scale; a wrong term,
// coefficient or layout is off by far more.
function relativeError(actual: NativeTensor | undefined, expected: Float64Array): number {
  const a = f64(actual);
  let scale = 0, worst = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]!));
    worst = Math.max(worst, Math.abs(a[i]! - expected[i]!));
  }
  return worst / scale;
}

afterAll(() => native.setNumThreads(0));

function inputs({ batch, inFeatures, outFeatures }: Case) {
  return {
    x: randn([batch, inFeatures]),
    v: randn([outFeatures, inFeatures]),
    g: randn([outFeatures], 1, 0.3),
    bias: randn([outFeatures]),
    dy: randn([batch, outFeatures]),
  };
}

describe('weightNormLinear (native)', () => {
  for (const c of CASES) {
    for (const withBias of [true, false]) {
      it(`forward equals the separate calls bit for bit, backward the float64 reference: ${c.batch}x${c.inFeatures}->${c.outFeatures}, bias ${withBias}`, () => {
        const s0 = seed;
        const { x, v, g, bias, dy } = inputs(c);
        const { batch, inFeatures: k, outFeatures: n } = c;
        const eps = 1e-12;
        const saved = native.weightNorm(v, g, 0, eps, true).norm; // ‖v‖ per row, as a forward or the optimizer saves it
        const b = withBias ? bias : null;
        const fused = native.weightNormLinear(x, v, g, saved, b, true);
        const scale = native.weightNormScale(g, saved);
        const y = native.gemm(x, v, { m: batch, n, k, transposeB: true, epilogue: { columnScale: scale, columnBias: b } });
        const where = `seed ${s0}`;
        expect(bits(fused), where).toEqual(bits(y));
        // Without a backward to come, t is not kept: y has the same bits, and a backward from it is refused.
        const inference = native.weightNormLinear(x, v, g, saved, b, false);
        expect(bits(inference), where).toEqual(bits(y));
        expect(() => native.weightNormLinearBackward(dy, x, v, g, saved, inference, { eps, wantDx: true, wantDv: true, wantDg: true, wantDbias: true })).toThrow(
          /weightNormLinearBackward: y: expected the output of weightNormLinear/,
        );

        const everything = { eps, wantDx: true, wantDv: true, wantDg: true, wantDbias: true };
        const all = native.weightNormLinearBackward(dy, x, v, g, saved, fused, everything);
        const reference = referenceBackward(c, f64(x), f64(v), f64(g), f64(saved), f64(dy));
        expect(relativeError(all.dx, reference.dx), `${where}: dx`).toBeLessThan(2e-5);
        expect(relativeError(all.dv, reference.dv), `${where}: dv`).toBeLessThan(2e-5);
        expect(relativeError(all.dg, reference.dg), `${where}: dg`).toBeLessThan(2e-5);
        expect(relativeError(all.dbias, reference.dbias), `${where}: dbias`).toBeLessThan(2e-5);
        // The same bits on one thread and on two (the prologue's sums and the GEMMs have fixed orders).
        for (const threads of [1, 2]) {
          native.setNumThreads(threads);
          const again = native.weightNormLinearBackward(dy, x, v, g, saved, fused, everything);
          for (const name of ['dx', 'dv', 'dg', 'dbias'] as const) {
            expect(bits(again[name]), `${where}: ${name} on ${threads} threads`).toEqual(bits(all[name]));
          }
        }
        native.setNumThreads(0);
        // Only what is asked for comes back, and the rest is unchanged by the choice.
        const some = native.weightNormLinearBackward(dy, x, v, g, saved, fused, { eps, wantDx: false, wantDv: true, wantDg: false, wantDbias: false });
        expect(Object.keys(some)).toEqual(['dv']);
        expect(bits(some.dv), where).toEqual(bits(all.dv));
        const dgOnly = native.weightNormLinearBackward(dy, x, v, g, saved, fused, { eps, wantDx: false, wantDv: false, wantDg: true, wantDbias: true });
        expect(Object.keys(dgOnly).sort()).toEqual(['dbias', 'dg']);
        expect(bits(dgOnly.dg), where).toEqual(bits(all.dg));
        expect(bits(dgOnly.dbias), where).toEqual(bits(all.dbias));
      });
    }
  }

  it('rejects bad arguments with errors naming them', () => {
    const c = CASES[0]!;
    const { x, v, g, dy } = inputs(c);
    const saved = native.weightNorm(v, g, 0, 1e-12, true).norm;
    const t = native.weightNormLinear(x, v, g, saved, null, true); // y, which carries t for the backward
    expect(() => raw.weightNormLinear!(randn([c.batch, c.inFeatures + 1]), v, g, saved, null, true)).toThrow(/weightNormLinear: expected x \[batch, in\] and v \[out, in\]/);
    expect(() => raw.weightNormLinear!(x, v, randn([c.outFeatures + 1]), saved, null, true)).toThrow(/\bg\b/);
    expect(() => raw.weightNormLinear!(x, v, g, saved, randn([2]), true)).toThrow(/bias/);
    expect(() => raw.weightNormLinear!(x, v, g, 'norm', null, true)).toThrow(TypeError);
    expect(() => raw.weightNormLinear!(x, v, g, saved, null, 'yes')).toThrow(/weightNormLinear: keepForBackward: expected a boolean, got 'yes'/);
    // y must be weightNormLinear's own output: any other tensor of its shape carries no t.
    expect(() => native.weightNormLinearBackward(dy, x, v, g, saved, dy, { eps: 1e-12, wantDx: true, wantDv: true, wantDg: true, wantDbias: true })).toThrow(
      /weightNormLinearBackward: y: expected the output of weightNormLinear with these x and v/,
    );
    const all = { eps: 1e-12, wantDx: true, wantDv: true, wantDg: true, wantDbias: true };
    // Each option checked by name: a missing or mistyped one is a TypeError that says which.
    for (const name of ['eps', 'wantDx', 'wantDv', 'wantDg', 'wantDbias'] as const) {
      const { [name]: _, ...without } = all;
      expect(() => raw.weightNormLinearBackward!(dy, x, v, g, saved, t, without)).toThrow(
        new RegExp(`weightNormLinearBackward: options\\.${name}: expected a (number|boolean), got undefined`),
      );
      expect(() => raw.weightNormLinearBackward!(dy, x, v, g, saved, t, { ...all, [name]: 'yes' })).toThrow(TypeError);
    }
    // The old positional form (eps, [dx, dv, dg, dbias]) is refused, not misread.
    expect(() => raw.weightNormLinearBackward!(dy, x, v, g, saved, t, 1e-12, [true, true, true, true])).toThrow(
      /weightNormLinearBackward: options: expected an options object/,
    );
    expect(() => raw.weightNormLinearBackward!(dy, x, v, g, saved, t, null)).toThrow(TypeError);
    expect(() => raw.weightNormLinearBackward!(randn([1]), x, v, g, saved, t, all)).toThrow(/dy/);
    expect(() => raw.weightNormLinearBackward!(dy, x, v, g, saved, randn([2]), all)).toThrow(/\by: expected \d+ elements/);
  });
});
