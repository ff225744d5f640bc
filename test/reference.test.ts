// The oracle's own checks: a hand-worked example, central finite differences of a random scalar loss against its
// gradients, and the identities of the method (Salimans & Kingma, 2016, §2). Float64 throughout; the library is not
// used here.
import { describe, expect, it } from 'vitest';

import { maxAbs, normals, relativeError, reproduce, runSeed, shapeName } from './helpers.js';
import {
  channelDot,
  channelIndices,
  channelLayout,
  weightNormBackward,
  weightNormForward,
} from './reference/weightnorm.js';

const seed = runSeed();
console.log(`reference.test: random seed ${seed} (${reproduce(seed)})`);

describe('reference layout', () => {
  it('views any dim as [outer, channels, inner]', () => {
    expect(channelLayout([2, 3, 4], 0)).toEqual({ outer: 1, channels: 2, inner: 12 });
    expect(channelLayout([2, 3, 4], 1)).toEqual({ outer: 2, channels: 3, inner: 4 });
    expect(channelLayout([2, 3, 4], -1)).toEqual({ outer: 6, channels: 4, inner: 1 });
    expect(channelLayout([2, 3, 4], null)).toEqual({ outer: 1, channels: 1, inner: 24 });
    expect(channelLayout([7], 0)).toEqual({ outer: 1, channels: 7, inner: 1 });
    expect(() => channelLayout([2, 3], 2)).toThrow(RangeError);
  });

  it('lists a channel’s elements: [2, 3] dim 1, channel 2 is the last column', () => {
    expect(channelIndices(channelLayout([2, 3], 1), 2)).toEqual([2, 5]);
    expect(channelIndices(channelLayout([2, 3, 2], 1), 1)).toEqual([2, 3, 8, 9]);
  });
});

describe('reference by hand', () => {
  it('v = [3, 4], g = 2, dim null: norm 5, w = [1.2, 1.6]; dw = [1, 0] gives dg = 0.6, dv = [0.256, -0.192]', () => {
    const { w, norm } = weightNormForward([3, 4], [2], [2], null, 1e-12);
    expect([...norm]).toEqual([5]);
    expect(w[0]).toBeCloseTo(1.2, 15);
    expect(w[1]).toBeCloseTo(1.6, 15);
    const { dv, dg } = weightNormBackward([1, 0], [3, 4], [2], [2], null, 1e-12);
    expect(dg[0]).toBeCloseTo(0.6, 15);
    expect(dv[0]).toBeCloseTo(0.256, 15);
    expect(dv[1]).toBeCloseTo(-0.192, 15);
  });

  it('a zero channel with the eps floor: w = 0, dg = 0, dv = (g/eps)·dw', () => {
    const eps = 1e-12;
    const { w, norm } = weightNormForward([0, 0, 1, 1], [3, 5], [2, 2], 0, eps);
    expect([...norm]).toEqual([eps, Math.SQRT2]);
    expect([w[0], w[1]]).toEqual([0, 0]);
    const { dv, dg, floored } = weightNormBackward([1, -2, 0, 0], [0, 0, 1, 1], [3, 5], [2, 2], 0, eps);
    expect(floored).toEqual([true, false]);
    expect(dg[0]).toBe(0);
    expect(dv[0]).toBeCloseTo(3 / eps, 0);
    expect(dv[1]).toBeCloseTo(-6 / eps, 0);
  });
});

interface Case {
  shape: number[];
  dim: number | null;
  eps?: number;
  /** Channels scaled so their norm is 0.1, below eps = 0.5: the floor is active there. */
  flooredChannels?: number[];
}

const cases: Case[] = [
  { shape: [5], dim: 0 },
  { shape: [5], dim: null },
  { shape: [3, 4], dim: 0 },
  { shape: [3, 4], dim: 1 },
  { shape: [3, 4], dim: -1 },
  { shape: [4, 1], dim: 0 }, // 1-element rows: w = ±g, dv = 0
  { shape: [2, 3, 4], dim: 1 },
  { shape: [2, 3, 4], dim: -3 },
  { shape: [2, 3, 4], dim: null },
  { shape: [2, 1, 3, 2], dim: 2 },
  { shape: [3, 4], dim: 0, eps: 0.5, flooredChannels: [1] },
  { shape: [2, 3, 2], dim: 1, eps: 0.5, flooredChannels: [0, 2] },
];

function inputsFor(c: Case, caseSeed: number) {
  const size = c.shape.reduce((a, b) => a * b, 1);
  const layout = channelLayout(c.shape, c.dim);
  const v = normals(size, caseSeed);
  const eps = c.eps ?? 1e-12;
  for (let k = 0; k < layout.channels; k++) {
    const vNorm = Math.sqrt(channelDot(v, v, layout, k));
    // Floored channels get norm 0.1 < eps. The others must sit clearly above eps: a few normals can have a norm
    // below 0.5 by chance (4 of them: p ≈ 0.7%), which would floor a channel the case means to leave alone.
    const target = (c.flooredChannels ?? []).includes(k) ? 0.1 : vNorm < 2 * eps ? 2 * eps : vNorm;
    const scale = target / vNorm;
    for (const index of channelIndices(layout, k)) v[index]! *= scale;
  }
  const g = normals(layout.channels, caseSeed + 1);
  const r = normals(size, caseSeed + 2); // L = Σ r·w, so ∂L/∂w = r
  return { v, g, r, layout, eps };
}

describe('reference gradients against central finite differences of L = Σ r·w', () => {
  // h = 1e-5 on O(1) inputs: truncation error ~h² ≈ 1e-10, rounding ~1e-16/h ≈ 1e-11, both far below 1e-7.
  const h = 1e-5;
  const tolerance = 1e-7;

  cases.forEach((c, index) => {
    const caseSeed = seed + 16 * index;
    const name = `${shapeName(c.shape, c.dim)}${c.eps ? ` eps ${c.eps} (floored channels ${c.flooredChannels})` : ''}`;
    it(name, () => {
      const { v, g, r, eps } = inputsFor(c, caseSeed);
      const loss = (vv: Float64Array, gg: Float64Array) => {
        const { w } = weightNormForward(vv, gg, c.shape, c.dim, eps);
        let sum = 0;
        for (let i = 0; i < w.length; i++) sum += r[i]! * w[i]!;
        return sum;
      };
      const central = (x: Float64Array, i: number, evaluate: () => number) => {
        const saved = x[i]!;
        x[i] = saved + h;
        const plus = evaluate();
        x[i] = saved - h;
        const minus = evaluate();
        x[i] = saved;
        return (plus - minus) / (2 * h);
      };
      const numericDv = v.map((_, i) => central(v, i, () => loss(v, g)));
      const numericDg = g.map((_, k) => central(g, k, () => loss(v, g)));
      const { dv, dg, dvScale } = weightNormBackward(r, v, g, c.shape, c.dim, eps);
      const message = `${name}: seed ${caseSeed}, ${reproduce(seed)}`;
      expect(relativeError(dv, numericDv, dvScale), message).toBeLessThan(tolerance);
      expect(relativeError(dg, numericDg), message).toBeLessThan(tolerance);
    });
  });
});

describe('reference identities', () => {
  cases.forEach((c, index) => {
    const caseSeed = seed + 16 * index + 8;
    const name = `${shapeName(c.shape, c.dim)}${c.eps ? ` eps ${c.eps}` : ''}`;
    it(`${name}: ‖w_k‖ = |g_k| unless floored (then g_k·‖v_k‖/eps), v_k·dv_k = 0`, () => {
      const { v, g, r, layout, eps } = inputsFor(c, caseSeed);
      const { w, norm } = weightNormForward(v, g, c.shape, c.dim, eps);
      const { dv, c1, c2, floored } = weightNormBackward(r, v, g, c.shape, c.dim, eps);
      const message = `${name}: seed ${caseSeed}, ${reproduce(seed)}`;
      for (let k = 0; k < layout.channels; k++) {
        const vNorm = Math.sqrt(channelDot(v, v, layout, k));
        const expected = floored[k] ? (Math.abs(g[k]!) * vNorm) / eps : Math.abs(g[k]!);
        expect(floored[k], message).toBe((c.flooredChannels ?? []).includes(k));
        expect(norm[k], message).toBe(Math.max(vNorm, eps));
        expect(Math.abs(Math.sqrt(channelDot(w, w, layout, k)) - expected), message).toBeLessThan(1e-14 * (1 + expected));
        // v·dv = c1·<v, dw> − c2·‖v‖², zero in exact arithmetic; float64 rounding is relative to the terms' size.
        let termScale = 0;
        for (const i of channelIndices(layout, k)) termScale += Math.abs(v[i]!) * (Math.abs(c1[k]! * r[i]!) + Math.abs(c2[k]! * v[i]!));
        const projection = channelDot(v, dv, layout, k);
        if (floored[k]) {
          // Below the floor the norm is a constant: dv = (g/eps)·dw, so v·dv is not 0 but (g/eps)·<v, dw>.
          expect(Math.abs(projection - (g[k]! / eps) * channelDot(v, r, layout, k)), message).toBeLessThan(1e-13 * termScale);
        } else {
          expect(Math.abs(projection), message).toBeLessThan(1e-13 * termScale);
        }
      }
      expect(maxAbs(w), message).toBeGreaterThan(0);
    });
  });
});
