// bfloat16 tensors on every available backend: creation and cast against an arithmetic rounding reference
// (test/reference/bfloat16.ts), weight norm forward/backward and matmul against float64 references computed from
// the bfloat16 inputs, the float32-vs-TF32 matmul setting, and the errors for mixing element types.
//
// Tolerances. A bfloat16 has 8 significant bits: rounding a value once moves it by at most half an ulp, 2^-8 of
// its magnitude. Each bfloat16 output is a float32 result (a few float32 roundings, u = 2^-24, from exact) rounded
// once, so |got − ref| ≤ 2^-8·|ref| + (float32 error). The float32 error is relative to the element itself for w
// (a product), and to the larger of the two cancelling terms for dv (scale dvScale, as in weightnorm.test.ts); for
// matmul to Σ|a·b| (a float32 sum of k products, k ≤ 96 here: k·u < 2^-17). One missing or doubled term of a sum
// moves the result by ~1/k of its scale, far above these bounds.
import { afterEach, describe, expect, it } from 'vitest';

import {
  backend,
  matmulPrecision,
  ops,
  optim,
  randn,
  setMatmulPrecision,
  tensorCoreStatus,
  type Device,
  type Tensor,
  tensor,
  zeros,
} from '../ts/index.js';
import { relu } from '../ts/functional.js';
import { normals, reproduce, runSeed, shapeName } from './helpers.js';
import { roundAllToBfloat16, roundToBfloat16 } from './reference/bfloat16.js';
import { weightNormBackward, weightNormForward } from './reference/weightnorm.js';

const HALF_ULP = 2 ** -8;

const seed = runSeed();
console.log(`bfloat16.test: random seed ${seed} (${reproduce(seed)})`);

const info = backend();
const devices: { device: Device; usable: boolean }[] = [
  { device: 'cpu', usable: true },
  { device: 'cuda', usable: info.cuda.usable },
];

const live: Tensor[] = [];
function keep<T extends Tensor>(t: T): T {
  live.push(t);
  return t;
}
afterEach(() => {
  for (const t of live.splice(0)) t.dispose();
  setMatmulPrecision('highest');
});

/** The largest violation of |got − ref| ≤ relative·|ref| + absolute, as a multiple of the bound (≤ 1 passes). */
function worstBoundRatio(got: ArrayLike<number>, ref: ArrayLike<number>, relative: number, absolute: (i: number) => number): number {
  expect(got.length).toBe(ref.length);
  let worst = 0;
  for (let i = 0; i < ref.length; i++) {
    const bound = relative * Math.abs(ref[i]!) + absolute(i);
    const error = Math.abs(got[i]! - ref[i]!);
    if (!(error <= bound)) return Number.isNaN(got[i]!) ? Infinity : error / bound;
    worst = Math.max(worst, bound > 0 ? error / bound : 0);
  }
  return worst;
}

describe('bfloat16 rounding reference', () => {
  it('rounds to nearest, ties to even, with overflow to infinity and subnormals', () => {
    expect(roundToBfloat16(1 + 2 ** -8)).toBe(1); // a tie: down to the even significand
    expect(roundToBfloat16(1 + 3 * 2 ** -8)).toBe(1 + 2 ** -6); // a tie: up to the even significand
    expect(roundToBfloat16(1 + 2 ** -8 + 2 ** -20)).toBe(1 + 2 ** -7); // above the tie
    expect(roundToBfloat16(-2.5)).toBe(-2.5);
    expect(roundToBfloat16(3.4e38)).toBe(Infinity); // above (2 − 2^-8)·2^127 rounds past the largest bfloat16
    expect(roundToBfloat16(2 ** -133)).toBe(2 ** -133); // a subnormal with one significant bit
    expect(Number.isNaN(roundToBfloat16(NaN))).toBe(true);
    expect(Object.is(roundToBfloat16(-0), -0)).toBe(true);
  });
});

for (const { device, usable } of devices) {
  describe.skipIf(!usable)(`bfloat16 on ${device}`, () => {
    it('tensor(), zeros() and cast() round like the reference; cast back is exact', () => {
      const special = [0, -0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -65504.5, 3.4e38, -3.4e38, Infinity, -Infinity, NaN, 1e-39, 2 ** -133];
      const random = Array.from(normals(4096, seed), (x, i) => x * 10 ** ((i % 13) - 6));
      const values = Float32Array.from([...special, ...random]);
      const expected = roundAllToBfloat16(values);
      const direct = keep(tensor(values, [values.length], { device, dtype: 'bfloat16' }));
      const cast = keep(keep(tensor(values, [values.length], { device })).cast('bfloat16'));
      expect(direct.dtype).toBe('bfloat16');
      for (const t of [direct, cast]) {
        const got = t.toArray();
        for (let i = 0; i < values.length; i++) {
          if (!Object.is(got[i], expected[i])) throw new Error(`${values[i]} -> ${got[i]}, expected ${expected[i]} (${reproduce(seed)})`);
        }
      }
      const back = keep(direct.cast('float32'));
      expect(back.dtype).toBe('float32');
      expect(Array.from(back.toArray()).map(String)).toEqual(Array.from(expected).map(String));
      expect(Array.from(keep(zeros([5], { device, dtype: 'bfloat16' })).toArray())).toEqual([0, 0, 0, 0, 0]);
    });

    it('randn with dtype bfloat16 holds the float32 samples of the same seed, rounded; data() widens too', async () => {
      const f32 = keep(randn([1000], { seed: seed % 1e9, device })).toArray();
      const bf16 = keep(randn([1000], { seed: seed % 1e9, device, dtype: 'bfloat16' }));
      expect(Array.from(bf16.toArray())).toEqual(Array.from(roundAllToBfloat16(f32)));
      expect(Array.from(await bf16.data())).toEqual(Array.from(bf16.toArray()));
      expect(String(bf16)).toContain('bfloat16');
    });

    const shapes: { shape: number[]; dim: number | null }[] = [
      { shape: [64, 300], dim: 0 },
      { shape: [7, 5, 3, 3], dim: 0 },
      { shape: [33, 17], dim: 1 },
      { shape: [4, 6, 10], dim: 1 },
      { shape: [1000], dim: null },
      { shape: [5, 4099], dim: 0 },
    ];
    shapes.forEach(({ shape, dim }, index) => {
      it(`weight norm ${shapeName(shape, dim)}: forward and backward against float64 on the bfloat16 inputs`, () => {
        const caseSeed = seed + 31 * index;
        const size = shape.reduce((a, b) => a * b, 1);
        const channels = dim === null ? 1 : shape[dim]!;
        const vRounded = roundAllToBfloat16(normals(size, caseSeed));
        const dwRounded = roundAllToBfloat16(normals(size, caseSeed + 1));
        const gValues = Float32Array.from(normals(channels, caseSeed + 2));
        const v = keep(tensor(Float32Array.from(vRounded), shape, { device, dtype: 'bfloat16' }));
        const dw = keep(tensor(Float32Array.from(dwRounded), shape, { device, dtype: 'bfloat16' }));
        const g = keep(tensor(gValues, [channels], { device }));
        const { w, norm } = ops.weightNorm(v, g, { dim });
        keep(w);
        keep(norm);
        expect([w.dtype, norm.dtype]).toEqual(['bfloat16', 'float32']);
        const forward = weightNormForward(vRounded, gValues, shape, dim, 1e-12);
        const message = `${shapeName(shape, dim)} on ${device}: ${reproduce(seed)}`;
        // w = v·(g/norm): float32 relative error of a product (≤ 8u) plus one rounding to bfloat16.
        expect(worstBoundRatio(w.toArray(), forward.w, HALF_ULP + 8 * 2 ** -24, () => 0), message).toBeLessThanOrEqual(1);
        // norm is float32 from a float32 sum of positive terms: relative 2e-6 as in weightnorm.test.ts.
        expect(worstBoundRatio(norm.toArray(), forward.norm, 2e-6, () => 0), message).toBeLessThanOrEqual(1);

        const { dv, dg } = ops.weightNormBackward(dw, v, g, norm, { dim });
        keep(dv);
        keep(dg);
        expect([dv.dtype, dg.dtype]).toEqual(['bfloat16', 'float32']);
        const backward = weightNormBackward(dwRounded, vRounded, gValues, shape, dim, 1e-12);
        // dv: one rounding of the float32 result, whose own error scales with the larger cancelling term.
        const dvAbsolute = 2e-6 * backward.dvScale;
        expect(worstBoundRatio(dv.toArray(), backward.dv, HALF_ULP, () => dvAbsolute), message).toBeLessThanOrEqual(1);
        expect(worstBoundRatio(dg.toArray(), backward.dg, 0, () => 2e-6 * backward.dgScale), message).toBeLessThanOrEqual(1);
      });
    });

    it('weight norm in bfloat16 stays within one bfloat16 rounding of the float32 path', () => {
      const v32 = keep(randn([128, 96], { seed: seed % 1e9, device }));
      const v16 = keep(v32.cast('bfloat16'));
      const g = keep(randn([128], { seed: (seed + 1) % 1e9, device }));
      const w32 = keep(ops.weightNorm(keep(v16.cast('float32')), g).w).toArray();
      const w16 = keep(ops.weightNorm(v16, g).w).toArray();
      expect(worstBoundRatio(w16, w32, HALF_ULP + 2 ** -20, () => 0)).toBeLessThanOrEqual(1);
    });

    const products: { m: number; n: number; k: number; transposeA: boolean; transposeB: boolean }[] = [
      { m: 33, n: 17, k: 96, transposeA: false, transposeB: false },
      { m: 8, n: 40, k: 65, transposeA: true, transposeB: false },
      { m: 129, n: 5, k: 3, transposeA: false, transposeB: true },
      { m: 20, n: 31, k: 64, transposeA: true, transposeB: true },
    ];
    products.forEach(({ m, n, k, transposeA, transposeB }, index) => {
      const name = `${transposeA ? 'aᵀ' : 'a'}·${transposeB ? 'bᵀ' : 'b'} [${m}×${k}]·[${k}×${n}]`;
      it(`matmul ${name} in bfloat16 against float64 on the bfloat16 operands`, () => {
        const caseSeed = seed + 97 * index;
        const a = roundAllToBfloat16(normals(m * k, caseSeed));
        const b = roundAllToBfloat16(normals(k * n, caseSeed + 1));
        const aAt = (i: number, p: number) => (transposeA ? a[p * m + i]! : a[i * k + p]!);
        const bAt = (p: number, j: number) => (transposeB ? b[j * k + p]! : b[p * n + j]!);
        const ref = new Float64Array(m * n);
        const absoluteSum = new Float64Array(m * n);
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            for (let p = 0; p < k; p++) {
              ref[i * n + j]! += aAt(i, p) * bAt(p, j);
              absoluteSum[i * n + j]! += Math.abs(aAt(i, p) * bAt(p, j));
            }
          }
        }
        const ta = keep(tensor(Float32Array.from(a), transposeA ? [k, m] : [m, k], { device, dtype: 'bfloat16' }));
        const tb = keep(tensor(Float32Array.from(b), transposeB ? [n, k] : [k, n], { device, dtype: 'bfloat16' }));
        let out: Tensor;
        try {
          out = keep(ops.matmul(ta, tb, { transposeA, transposeB }));
        } catch (error) {
          throw new Error(`${name} on ${device}: ${(error as Error).message}`);
        }
        expect(out.dtype).toBe('bfloat16');
        expect(out.shape).toEqual([m, n]);
        const message = `${name} on ${device}: ${reproduce(seed)}`;
        expect(worstBoundRatio(out.toArray(), ref, HALF_ULP, (i) => 2 ** -16 * absoluteSum[i]!), message).toBeLessThanOrEqual(1);
      });
    });

    it.skipIf(device !== 'cuda')('matmul in float32 with precision high (TF32) stays within the TF32 bound, highest within float32', () => {
      const m = 70, n = 50, k = 90;
      const a = Float32Array.from(normals(m * k, seed + 5));
      const b = Float32Array.from(normals(k * n, seed + 6));
      const ref = new Float64Array(m * n);
      const absoluteSum = new Float64Array(m * n);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          for (let p = 0; p < k; p++) {
            ref[i * n + j]! += a[i * k + p]! * b[p * n + j]!;
            absoluteSum[i * n + j]! += Math.abs(a[i * k + p]! * b[p * n + j]!);
          }
        }
      }
      const ta = keep(tensor(a, [m, k], { device }));
      const tb = keep(tensor(b, [k, n], { device }));
      const full = keep(ops.matmul(ta, tb)).toArray();
      // float32: k products and sums, each within u of exact: k·u·Σ|a·b| is the classic bound.
      expect(worstBoundRatio(full, ref, 0, (i) => k * 2 ** -24 * absoluteSum[i]!)).toBeLessThanOrEqual(1);
      setMatmulPrecision('high');
      expect(matmulPrecision()).toBe('high');
      expect(['tf32-mma', 'tf32-wgmma']).toContain(backend().cuda.gemm);
      const tf32 = keep(ops.matmul(ta, tb)).toArray();
      // TF32 keeps 10 significand bits: each operand within 2^-11, each product within ~2^-10, then float32 sums.
      expect(worstBoundRatio(tf32, ref, 0, (i) => 2 ** -9 * absoluteSum[i]!)).toBeLessThanOrEqual(1);
      // And it really is the tensor-core path: TF32 rounding leaves some element different from full float32.
      expect(tf32.some((x, i) => x !== full[i])).toBe(true);
      // On an sm_90 device the Hopper kernel reports its self-check; elsewhere that it does not apply.
      const cc = info.cuda.device?.computeCapability;
      expect(tensorCoreStatus()).toMatch(cc === '9.0' ? /^wgmma: (self-check passed|disabled: )/ : /^wgmma: not an sm_90 device/);
    });
  });
}

describe('bfloat16 argument errors', () => {
  it('names the parameter when element types mix or an op takes float32 only', () => {
    const v = keep(randn([4, 3], { dtype: 'bfloat16' }));
    const g32 = keep(tensor([1, 2, 3, 4]));
    const g16 = keep(g32.cast('bfloat16'));
    expect(() => ops.weightNorm(v, g16)).toThrow(/weightNorm: g: expected a float32 tensor/);
    expect(() => ops.weightNorm(v, g32, { fused: false })).toThrow(/options\.fused: expected true for a bfloat16 v/);
    const { w, norm } = ops.weightNorm(v, g32);
    keep(w);
    keep(norm);
    const dw32 = keep(randn([4, 3]));
    expect(() => ops.weightNormBackward(dw32, v, g32, norm)).toThrow(/weightNormBackward: dw: expected a bfloat16 tensor like v/);
    expect(() => relu(v)).toThrow(/expected a float32 tensor, not bfloat16 .*received Tensor\(shape=\[4, 3\], dtype=bfloat16, device=cpu\)/);
    expect(() => ops.matmul(v, keep(randn([3, 2])))).toThrow(/ops\.matmul: b: expected a bfloat16 tensor like a/);
    expect(() => ops.matmul(v, keep(randn([4, 2], { dtype: 'bfloat16' })))).toThrow(/ops\.matmul: b: expected 3 rows/);
    expect(() => v.cast('float16' as never)).toThrow(/tensor\.cast: dtype: expected 'float32', 'bfloat16', 'int32' or 'bool'/);
    expect(() => randn([2], { dtype: 'int8' as never })).toThrow(/randn: options\.dtype/);
    expect(() => setMatmulPrecision('medium' as never)).toThrow(/setMatmulPrecision: precision/);
    if (!info.cuda.usable) expect(tensorCoreStatus()).toBe('no usable CUDA device');
    const parameter = keep(randn([2], { dtype: 'bfloat16' }));
    parameter.requiresGrad = true;
    expect(() => new optim.SGD([parameter], { lr: 0.1 })).toThrow(/params\[0\]: expected a float32 tensor/);
    expect(() => new optim.Adam([parameter])).toThrow(/params\[0\]: expected a float32 tensor/);
  });
});
