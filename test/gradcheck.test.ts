// Gradient check of every differentiable op of nn.functional and every layer of nn (train and eval mode) against
// PyTorch float64 results (test/fixtures/gradcheck_torch.json, from scripts/make_gradcheck_fixtures.py), on the CPU
// and, when usable, on CUDA. The registry and tolerances are in test/gradcheck/registry.ts; a new op or layer fails
// the completeness tests until it is registered there (with a fixture case) or excluded with a reason.
//
// GRADCHECK_REPORT=1 prints each case's measured errors as a fraction of its tolerance.
import { describe, expect, it } from 'vitest';

import { backend, type Device, memory, nn } from '../ts/index.js';
import { fixtureBytes, fixturePaths, type FixtureCase, loadFixture, loadRawFixture, loadRawFixtureFile } from './gradcheck/fixture.js';
import { runCase, toleranceOf } from './gradcheck/harness.js';
import { EXCLUDED_FUNCTIONAL, EXCLUDED_MODULES, LAYERS, OPS } from './gradcheck/registry.js';
import { reproduce, runSeed } from './helpers.js';

const fixture = loadFixture();
const regenerate = 'add a case to scripts/make_gradcheck_fixtures.py and run it with /usr/bin/python3 (torch)';
const cudaUsable = backend().cuda.usable;
const cudaSkipped = cudaUsable ? '' : ` — skipped: ${backend().cuda.reason ?? 'CUDA not compiled in'}`;

const functionExports = Object.entries(nn.functional)
  .filter(([, value]) => typeof value === 'function')
  .map(([name]) => name);
const moduleExports = Object.entries(nn)
  .filter(([, value]) => typeof value === 'function' && (value === nn.Module || value.prototype instanceof nn.Module))
  .map(([name]) => name);

const opCases = (op: string) => fixture.cases.filter((c) => c.kind === 'op' && c.config.op === op);
const layerCases = (type: string, mode: 'train' | 'eval') =>
  fixture.cases.filter((c) => c.kind === 'layer' && c.config.spec.type === type && c.config.mode === mode);

describe('gradcheck registry', () => {
  it('covers every function of nn.functional: registered with a fixture case, or excluded with a reason', () => {
    expect(functionExports.length).toBeGreaterThan(20);
    const uncovered = functionExports.filter((name) => !(name in EXCLUDED_FUNCTIONAL) && !(name in OPS && opCases(name).length > 0));
    expect(uncovered, `nn.functional exports neither registered in test/gradcheck/registry.ts OPS (with a fixture case: ${regenerate}) nor in EXCLUDED_FUNCTIONAL`).toEqual([]);
    const stale = [...Object.keys(OPS), ...Object.keys(EXCLUDED_FUNCTIONAL)].filter((name) => !functionExports.includes(name));
    expect(stale, 'registered or excluded names that nn.functional does not export').toEqual([]);
  });

  it('covers every Module class of nn in train and eval mode, or excludes it with a reason', () => {
    expect(moduleExports.length).toBeGreaterThan(10);
    const uncovered = moduleExports.flatMap((name) => {
      if (name in EXCLUDED_MODULES) return [];
      if (!(name in LAYERS)) return [`${name} (not in LAYERS)`];
      return (['train', 'eval'] as const).filter((mode) => layerCases(name, mode).length === 0).map((mode) => `${name} (no ${mode}-mode case)`);
    });
    expect(uncovered, `nn layers not covered by test/gradcheck/registry.ts LAYERS and the fixture (${regenerate}), nor in EXCLUDED_MODULES`).toEqual([]);
    const stale = [...Object.keys(LAYERS), ...Object.keys(EXCLUDED_MODULES)].filter((name) => !moduleExports.includes(name));
    expect(stale, 'registered or excluded names that nn does not export as a Module class').toEqual([]);
    // nn.removeWeightNorm is covered by the folded Linear and Conv2d cases.
    const folded = (type: string) => fixture.cases.some((c) => c.kind === 'layer' && c.config.spec.type === type && c.config.spec.removeWeightNorm);
    expect([folded('Linear'), folded('Conv2d')], 'cases of nn.removeWeightNorm on a Linear and a Conv2d').toEqual([true, true]);
  });

  it('has fixtures that are small, record torch and their generator, and name only registered ops and layers', () => {
    for (const [path, bytes] of Object.entries(fixtureBytes())) expect(bytes, path).toBeLessThan(1024 * 1024);
    for (const path of fixturePaths) {
      const file = loadRawFixtureFile(path);
      const family = /gradcheck_([a-z0-9_]+)_torch\.json$/.exec(path)?.[1];
      expect(file.generator, path).toBe(family ? `scripts/make_gradcheck_${family}_fixtures.py` : 'scripts/make_gradcheck_fixtures.py');
      expect(file.torch, path).toMatch(/^\d+\.\d+/);
    }
    const names = fixture.cases.map((c) => c.name);
    expect(new Set(names).size, 'unique case names').toBe(names.length);
    for (const c of loadRawFixture().cases) {
      expect(() => toleranceOf(c), c.name).not.toThrow();
      for (const [name, stored] of [...Object.entries(c.inputs), ['cotangent', c.cotangent] as const]) {
        // A float32 written as its shortest decimal: finite, and within half a float32 ulp of its float32 value.
        const ok = stored.data.every((x) => Number.isFinite(x) && Math.abs(x - Math.fround(x)) <= Math.abs(x) * 2 ** -24);
        expect(ok, `${c.name}: ${name} holds float32 values`).toBe(true);
      }
      if (!c.random) {
        const differentiable = [...c.differentiable].sort();
        expect(Object.keys(c.grads ?? {}).sort(), `${c.name}: a torch gradient for every differentiable input`).toEqual(differentiable);
        expect(Object.keys(c.gradScales ?? {}).sort(), `${c.name}: a scale for every gradient`).toEqual(differentiable);
      }
    }
  });
});

const report = process.env.GRADCHECK_REPORT === '1';

for (const device of ['cpu', 'cuda'] as const satisfies readonly Device[]) {
  const skipped = device === 'cuda' ? cudaSkipped : '';
  describe.skipIf(skipped !== '')(`gradients against PyTorch float64 on ${device}${skipped}`, () => {
    // Drives the random ops' masks and noise only; the fixture fixes every other input.
    const seed = runSeed();
    const caseTitle = (c: FixtureCase) => (c.kind === 'op' ? `nn.functional.${c.name}` : c.name);
    for (const c of fixture.cases) {
      it(caseTitle(c), () => {
        const live = () => memory().cpu.tensors + memory().cuda.tensors;
        const before = live();
        const { problems, errors } = runCase(c, device, seed % 2 ** 32);
        // Everything the case made is freed by then: a tensor still alive was leaked by the op or its backward.
        if (live() !== before) problems.push(`${live() - before} tensor(s) left alive after the case`);
        if (report) {
          const tolerance = c.random ? null : toleranceOf(c);
          const ratio = (what: string, e: number) =>
            tolerance ? (e / (what.startsWith('gradient') ? tolerance.gradient : tolerance.forward)).toFixed(2) : '-';
          const measured = Object.entries(errors).map(([what, e]) => `${what} ${e.toExponential(1)} (${ratio(what, e)})`);
          console.log(`${device} ${c.name}: ${measured.join('; ') || 'random checks'}`);
        }
        expect(problems, `${caseTitle(c)} on ${device} (${reproduce(seed)})`).toEqual([]);
      });
    }
  });
}
