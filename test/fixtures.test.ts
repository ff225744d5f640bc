// Our fused and unfused ops against golden outputs from PyTorch (test/fixtures/weightnorm_torch.json, written by
// scripts/make_fixtures.py; torch is not needed here). Both sides are float32 with their own summation orders, so
// each is within ~TOLERANCE of the exact result and they agree within 2·TOLERANCE, on the same scales as
// weightnorm.test.ts (max|ref| for w and norm, the larger term for dv, Σ|dw·v|/norm for dg; ref = the float64
// reference on the fixture's inputs).
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { backend, type Device, ops, type Tensor, tensor } from '../ts/index.js';
import { relativeError } from './helpers.js';
import { weightNormBackward, weightNormForward } from './reference/weightnorm.js';

const TOLERANCE = 2e-6;

interface FixtureCase {
  name: string;
  op: string;
  shape: number[];
  dim: number | null;
  torchDim: number;
  v: number[];
  g: number[];
  dw: number[];
  w: number[];
  norm: number[];
  dv: number[];
  dg: number[];
}

const path = fileURLToPath(new URL('./fixtures/weightnorm_torch.json', import.meta.url));
const fixtures = JSON.parse(readFileSync(path, 'utf8')) as { torch: string; generator: string; cases: FixtureCase[] };
// The JSON holds each float32 as its shortest decimal; Math.fround gives back the exact float32 value, which is what
// both the library (through Float32Array) and the reference must see.
const arrays = ['v', 'g', 'dw', 'w', 'norm', 'dv', 'dg'] as const;
const rawCases = fixtures.cases.map((c) => ({ ...c }));
for (const c of fixtures.cases) for (const key of arrays) c[key] = c[key].map(Math.fround);

const info = backend();
const devices: Device[] = info.cuda.usable ? ['cpu', 'cuda'] : ['cpu'];
if (!info.cuda.usable) console.log(`fixtures.test: CUDA comparison skipped: ${info.cuda.reason ?? 'CUDA not compiled in'}`);

describe(`PyTorch ${fixtures.torch} fixtures`, () => {
  it('are small (< 200 KB), record the torch version, and hold float32 values and no zero channel', () => {
    expect(statSync(path).size).toBeLessThan(200 * 1024);
    expect(fixtures.torch).toMatch(/^\d+\.\d+/);
    expect(fixtures.generator).toBe('scripts/make_fixtures.py');
    expect(fixtures.cases.length).toBeGreaterThanOrEqual(10);
    const dims = new Set(fixtures.cases.map((c) => c.dim));
    for (const dim of [0, -1, 1, 2, null]) expect(dims.has(dim), `a case with dim ${dim}`).toBe(true);
    for (const c of fixtures.cases) {
      const size = c.shape.reduce((a, b) => a * b, 1);
      expect([c.v.length, c.dw.length, c.w.length, c.dv.length], c.name).toEqual([size, size, size, size]);
      for (const key of arrays) {
        // A float32 written as its shortest decimal: finite, and within half a float32 ulp of its float32 value.
        const raw = rawCases.find((r) => r.name === c.name)![key];
        const ok = raw.every((x, i) => Number.isFinite(x) && Math.abs(x - c[key][i]!) <= Math.abs(c[key][i]!) * 2 ** -24);
        expect(ok, `${c.name}: ${key} holds float32 values`).toBe(true);
      }
      expect(Math.min(...c.norm), `${c.name}: no zero channel (torch has no eps)`).toBeGreaterThan(1e-3);
    }
  });

  describe('torch agrees with our float64 reference (the fixtures are what we think they are)', () => {
    for (const c of fixtures.cases) {
      it(`${c.name} (torch: ${c.op.split(' ')[0]} dim ${c.torchDim})`, () => {
        const forward = weightNormForward(c.v, c.g, c.shape, c.dim, 1e-12);
        const backward = weightNormBackward(c.dw, c.v, c.g, c.shape, c.dim, 1e-12);
        expect(relativeError(c.w, forward.w), 'w').toBeLessThan(TOLERANCE);
        expect(relativeError(c.norm, forward.norm), 'norm').toBeLessThan(TOLERANCE);
        expect(relativeError(c.dv, backward.dv, backward.dvScale), 'dv').toBeLessThan(TOLERANCE);
        expect(relativeError(c.dg, backward.dg, backward.dgScale), 'dg').toBeLessThan(TOLERANCE);
      });
    }
  });

  for (const device of devices) {
    for (const fused of [true, false]) {
      describe(`ours on ${device}, ${fused ? 'fused' : 'unfused'}, against torch (error / scale < 4e-6)`, () => {
        for (const c of fixtures.cases) {
          it(c.name, () => {
            const made: Tensor[] = [];
            const keep = (t: Tensor) => (made.push(t), t);
            try {
              const v = keep(tensor(c.v, c.shape, { device }));
              const g = keep(tensor(c.g, [c.g.length], { device }));
              const dw = keep(tensor(c.dw, c.shape, { device }));
              const options = { dim: c.dim, fused };
              const { w, norm } = ops.weightNorm(v, g, options);
              keep(w), keep(norm);
              const { dv, dg } = ops.weightNormBackward(dw, v, g, norm, options);
              keep(dv), keep(dg);
              const forward = weightNormForward(c.v, c.g, c.shape, c.dim, 1e-12);
              const backward = weightNormBackward(c.dw, c.v, c.g, c.shape, c.dim, 1e-12);
              const scale = (values: ArrayLike<number>) => Math.max(...Array.from(values, Math.abs));
              expect(relativeError(w.toArray(), c.w, scale(forward.w)), 'w').toBeLessThan(2 * TOLERANCE);
              expect(relativeError(norm.toArray(), c.norm, scale(forward.norm)), 'norm').toBeLessThan(2 * TOLERANCE);
              expect(relativeError(dv.toArray(), c.dv, backward.dvScale), 'dv').toBeLessThan(2 * TOLERANCE);
              expect(relativeError(dg.toArray(), c.dg, backward.dgScale), 'dg').toBeLessThan(2 * TOLERANCE);
            } finally {
              for (const t of made) t.dispose();
            }
          });
        }
      });
    }
  }
});
