// The weight-normalized Linear's two native entry points (binding/nn.cc weightNormLinear, weightNormLinearBackward)
// against the separate native calls they replace: same kernels in the same order, so every output must have the
// same bits (the layer's gradients against float64 references: gradcheck.test.ts, layers-correctness.test.ts), and
// bad arguments must be clear errors.
import { describe, expect, it } from 'vitest';
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
];

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
      it(`forward and backward equal the separate calls bit for bit: ${c.batch}x${c.inFeatures}->${c.outFeatures}, bias ${withBias}`, () => {
        const s0 = seed;
        const { x, v, g, bias, dy } = inputs(c);
        const { batch, inFeatures: k, outFeatures: n } = c;
        const eps = 1e-12;
        const saved = native.weightNorm(v, g, 0, eps, true).norm; // ‖v‖ per row, as a forward or the optimizer saves it
        const b = withBias ? bias : null;
        const fused = native.weightNormLinear(x, v, g, saved, b);
        const scale = native.weightNormScale(g, saved);
        const t = native.empty([batch, n], 'cpu');
        const y = native.gemm(x, v, { m: batch, n, k, transposeB: true, epilogue: { columnScale: scale, columnBias: b, rawOut: t } });
        const where = `seed ${s0}`;
        expect(bits(fused.y), where).toEqual(bits(y));
        expect(bits(fused.t), where).toEqual(bits(t));
        expect(Object.keys(fused).sort()).toEqual(['t', 'y']); // the backward recomputes the scale

        const dot = native.channelReduce('dot', dy, t, batch, n, 1);
        const { dg, c1, c2 } = native.weightNormCoefficients(dot, g, saved, eps);
        const scaledDy = native.channelOp('scale', dy, scale, batch, n, 1);
        const dx = native.gemm(scaledDy, v, { m: batch, n: k, k: n });
        const dv = native.gemm(dy, x, { m: n, n: k, k: batch, transposeA: true, epilogue: { rowScale: c1, subtractCoefficient: c2, subtractMatrix: v } });
        const dbias = native.channelReduce('sum', dy, null, batch, n, 1);
        const all = native.weightNormLinearBackward(dy, x, v, g, saved, fused.t, { eps, wantDx: true, wantDv: true, wantDg: true, wantDbias: true });
        expect(bits(all.dx), where).toEqual(bits(dx));
        expect(bits(all.dv), where).toEqual(bits(dv));
        expect(bits(all.dg), where).toEqual(bits(dg));
        expect(bits(all.dbias), where).toEqual(bits(dbias));
        // Only what is asked for comes back, and the rest is unchanged by the choice.
        const some = native.weightNormLinearBackward(dy, x, v, g, saved, fused.t, { eps, wantDx: false, wantDv: true, wantDg: false, wantDbias: false });
        expect(Object.keys(some)).toEqual(['dv']);
        expect(bits(some.dv), where).toEqual(bits(dv));
      });
    }
  }

  it('rejects bad arguments with errors naming them', () => {
    const c = CASES[0]!;
    const { x, v, g, dy } = inputs(c);
    const saved = native.weightNorm(v, g, 0, 1e-12, true).norm;
    const { t } = native.weightNormLinear(x, v, g, saved, null);
    expect(() => raw.weightNormLinear!(randn([c.batch, c.inFeatures + 1]), v, g, saved, null)).toThrow(/weightNormLinear: expected x \[batch, in\] and v \[out, in\]/);
    expect(() => raw.weightNormLinear!(x, v, randn([c.outFeatures + 1]), saved, null)).toThrow(/\bg\b/);
    expect(() => raw.weightNormLinear!(x, v, g, saved, randn([2]))).toThrow(/bias/);
    expect(() => raw.weightNormLinear!(x, v, g, 'norm', null)).toThrow(TypeError);
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
    expect(() => raw.weightNormLinearBackward!(dy, x, v, g, saved, randn([2]), all)).toThrow(/\bt\b/);
  });
});
