// The benchmark's machinery for the side-by-side suites (GEMM, Linear, MNIST) without timing anything that matters:
// the native GEMM / bfloat16 entry points (their outputs against the float32 ops), bfloat16 rounding, the byte
// counts, the round runner's handling of a throwing variant, and the met / not met / unavailable evaluation of the
// goals. Every CPU kernel these entries call exists, so any error from them fails the test.
import { describe, expect, it } from 'vitest';

import { minimalBytes } from '../weightnorm-cli/src/bench/cases.js';
import { gemmOutputs, timeGemm, timeWeightNormBf16, weightNormBf16Outputs } from '../weightnorm-cli/src/bench/native-bench.js';
import { relativeError } from '../weightnorm-cli/src/bench/measure.js';
import { evaluateSuiteGoals } from '../weightnorm-cli/src/bench/results.js';
import type { GemmRow, LinearRow, MnistRow } from '../weightnorm-cli/src/bench/results.js';
import { alternate, roundToBfloat16 } from '../weightnorm-cli/src/bench/rounds.js';
import { GEMM_CASES } from '../weightnorm-cli/src/bench/gemm.js';
import { LINEAR_CASES } from '../weightnorm-cli/src/bench/training.js';
import { native } from '../ts/native.js';

describe('roundToBfloat16', () => {
  it('rounds to nearest with ties to even and keeps NaN and infinities', () => {
    const ulp = 2 ** -7; // bfloat16 spacing just above 1
    const input = Float32Array.from([1, 1 + ulp / 2, 1 + (3 * ulp) / 2, 1 + ulp / 4, -2.5, Infinity, NaN, 1 + (3 * ulp) / 4]);
    const out = roundToBfloat16(input);
    expect(Array.from(out.slice(0, 6))).toEqual([1, 1, 1 + 2 * ulp, 1, -2.5, Infinity]);
    expect(Number.isNaN(out[6])).toBe(true);
    expect(out[7]).toBe(1 + ulp);
    expect(input[1]).toBe(1 + ulp / 2); // a copy, not in place
  });
});

describe('minimalBytes', () => {
  it('counts bfloat16 per-element tensors at 2 bytes and per-channel ones at 4', () => {
    expect(minimalBytes('forward', 1000, 10, 'bf16')).toBe(2 * 2 * 1000 + 4 * 2 * 10);
    expect(minimalBytes('backward', 1000, 10, 'bf16')).toBe(3 * 2 * 1000 + 4 * 3 * 10);
    expect(minimalBytes('forward', 1000, 10)).toBe(4 * (2 * 1000 + 2 * 10));
  });
});

describe('native GEMM benchmark entry (CPU)', () => {
  const [m, n, k] = [33, 17, 29];
  const spec = { m, n, k, transposeA: true, transposeB: false, precision: 'fp32' as const };

  it('returns the same product as the GEMM op, and the backend that computed it', () => {
    const a = native.randn([k, m], 1, 'cpu', 0, 1);
    const b = native.randn([k, n], 2, 'cpu', 0, 1);
    const { out, backend } = gemmOutputs(spec, [a, b]);
    const reference = native.gemm(a, b, { m, n, k, transposeA: true });
    expect(out.shape).toEqual([m, n]);
    expect(relativeError(out.toArray(), reference.toArray())).toBeLessThan(1e-6);
    expect(['openblas', 'blocked']).toContain(backend);
    expect(timeGemm(spec, [[a, b]], 1, 3)).toHaveLength(3);
    for (const t of [a, b, out, reference]) t.dispose();
  });

  it('bf16: the product of the rounded operands', () => {
    const a = native.randn([k, m], 3, 'cpu', 0, 1);
    const b = native.randn([k, n], 4, 'cpu', 0, 1);
    const { out } = gemmOutputs({ ...spec, precision: 'bf16' }, [a, b]);
    const ra = native.fromArray(roundToBfloat16(a.toArray()), [k, m], 'cpu');
    const rb = native.fromArray(roundToBfloat16(b.toArray()), [k, n], 'cpu');
    const reference = native.gemm(ra, rb, { m, n, k, transposeA: true });
    expect(relativeError(out.toArray(), reference.toArray())).toBeLessThan(1e-2);
    for (const t of [a, b, out, ra, rb, reference]) t.dispose();
  });

  it('refuses TF32 on the CPU and operands of the wrong size', () => {
    const a = native.randn([k, m], 5, 'cpu', 0, 1);
    const b = native.randn([k, n], 6, 'cpu', 0, 1);
    expect(() => gemmOutputs({ ...spec, precision: 'tf32' }, [a, b])).toThrow(/TF32/);
    expect(() => gemmOutputs({ ...spec, k: k + 1 }, [a, b])).toThrow(/elements/);
    a.dispose();
    b.dispose();
  });
});

describe('native bfloat16 weight-norm benchmark entry (CPU)', () => {
  it('forward: w and norm of the rounded v', () => {
    const v = native.fromArray(roundToBfloat16(native.randn([8, 40], 7, 'cpu', 0, 1).toArray()), [8, 40], 'cpu');
    const g = native.randn([8], 8, 'cpu', 1, 0.25);
    const { out, perChannel } = weightNormBf16Outputs('forward', [v, g], 0, 1e-12);
    const reference = native.weightNorm(v, g, 0, 1e-12, true);
    expect(relativeError(out.toArray(), reference.w.toArray())).toBeLessThan(1e-2);
    expect(relativeError(perChannel!.toArray(), reference.norm.toArray())).toBeLessThan(1e-5);
    expect(timeWeightNormBf16('forward', [[v, g]], 0, 1e-12, 1, 2)).toHaveLength(2);
  });
});

describe('alternate', () => {
  it('reports a throwing variant as unavailable with its message and times the others', async () => {
    const result = await alternate(
      {
        works: (_warmup, repeats) => Array.from({ length: repeats }, (_, i) => 1 + i),
        throws: () => {
          throw new Error('kernel X: not implemented yet');
        },
      },
      { known: 'failed its check' },
      null,
      null,
      { rounds: 2, warmup: 0, repeats: 3 },
    );
    expect(result.ours.works).toMatchObject({ ms: 2, runs: 6 });
    expect(result.ours.throws).toEqual({ unavailable: 'kernel X: not implemented yet' });
    expect(result.ours.known).toEqual({ unavailable: 'failed its check' });
    expect(result.theirs).toBeNull();
  });

  it('runs our variants in reverse order every other round', async () => {
    const order: string[] = [];
    const variant = (name: string) => (_warmup: number, repeats: number) => {
      order.push(name);
      return Array.from({ length: repeats }, () => 1);
    };
    await alternate({ a: variant('a'), b: variant('b'), c: variant('c') }, {}, null, null, { rounds: 3, warmup: 0, repeats: 1 });
    expect(order).toEqual(['a', 'b', 'c', 'c', 'b', 'a', 'a', 'b', 'c']);
  });
});

describe('evaluateSuiteGoals', () => {
  const timing = (ms: number) => ({ ms, roundMedians: [ms], pooledMedian: ms, runs: 1 });
  const square = GEMM_CASES.find((c) => c.name === 'square-4096')!;
  const gemmRow = (precision: 'fp32' | 'tf32', ours: GemmRow['ours'], ratio: number | null): GemmRow => ({
    case: square,
    precision,
    flops: 1,
    check: null,
    ours,
    torch: { ...timing(1), tflops: 10, call: 'torch.mm' },
    ratio,
  });
  const linearRow = (ratio: number | null): LinearRow => ({
    case: LINEAR_CASES[0]!,
    flopsPerStep: 1,
    check: { errors: {}, tolerance: 1e-3, pass: true },
    plain: timing(1),
    wn: ratio === null ? { unavailable: 'x' } : timing(ratio),
    ratio,
    torchPlain: timing(1),
    torchWn: timing(1),
    torchRatio: 1,
    wnVsTorch: null,
    calls: {},
  });
  const mnistRow = (vsTorch: number): MnistRow => ({ batch: 64, norm: 'wn', check: { skipped: 'no peer' }, ours: timing(1), torch: timing(vsTorch), vsTorch, call: null });

  it('marks each goal met, not met or unavailable', () => {
    const gemm = [
      gemmRow('fp32', { ...timing(1), tflops: 7.5, backend: 'simt' }, 0.75),
      gemmRow('tf32', { unavailable: "TF32 requested but the GEMM backend is still 'simt'" }, null),
    ];
    const targets = evaluateSuiteGoals('cuda', ['gemm', 'linear', 'mnist'], gemm, [linearRow(1.02), linearRow(1.08)], [mnistRow(1.2)]);
    expect(targets.map((t) => t.status)).toEqual(['met', 'unavailable', 'not met', 'met']);
    expect(targets[1]!.detail).toMatch(/simt/);
  });

  it('on the CPU the cuBLAS goals are unavailable, and a suite not run is unavailable', () => {
    const targets = evaluateSuiteGoals('cpu', ['linear'], [], [linearRow(1.0)], []);
    expect(targets.map((t) => t.status)).toEqual(['unavailable', 'unavailable', 'met', 'unavailable']);
  });
});

describe('LSTM training-step suite', () => {
  it('checks the weight-normalized LSTM against plain, times both (no peer: torch columns say why) and reports their ratio', async () => {
    const { runLstmSuite } = await import('../weightnorm-cli/src/bench/lstm.js');
    const tiny = { name: 'lstm-tiny', batch: 2, steps: 3, input: 2, hidden: 3, quick: true };
    const before = native.memory().cpu.tensors;
    const rows = await runLstmSuite([tiny], null, { device: 'cpu', plan: { rounds: 1, warmup: 0, repeats: 2 }, seed: 1, log: () => undefined });
    expect(rows).toHaveLength(1);
    const row = rows[0]!;
    expect('ms' in row.plain && row.plain.ms > 0, JSON.stringify(row.plain)).toBe(true);
    expect('ms' in row.wn && row.wn.ms > 0, JSON.stringify(row.wn)).toBe(true);
    expect(row.ratio).toBeGreaterThan(0);
    expect('pass' in row.check && row.check.pass, `the WN LSTM checked against plain before timing: ${JSON.stringify(row.check)}`).toBe(true);
    expect(row.torchWn).toEqual({ unavailable: 'no torch peer' });
    expect(native.memory().cpu.tensors - before, 'tensors the suite left alive').toBe(0);
  });
});

describe('training suite (CNN and demo MLP steps)', () => {
  const timing = (roundMedians: number[]) => ({ ms: Math.min(...roundMedians), roundMedians, pooledMedian: roundMedians[0]!, runs: roundMedians.length });

  it('pairs ratios by round: the median of the in-round ratios, null when a side is unavailable', async () => {
    const { pairedRatio } = await import('../weightnorm-cli/src/bench/training.js');
    // Round 2 is spoiled on both sides alike: its ratio is still 2; the lowest medians alone would give 10 / 4.
    expect(pairedRatio(timing([10, 30, 12]), timing([5, 15, 4]))).toBe(2);
    expect(pairedRatio(timing([6, 8]), timing([2, 2]))).toBe(3.5);
    expect(pairedRatio({ unavailable: 'no torch peer' }, timing([1]))).toBeNull();
  });

  it('evaluates its goals: CNN vs torch on both variants, WN/plain on both networks', async () => {
    const { evaluateTrainingGoals } = await import('../weightnorm-cli/src/bench/results.js');
    const row = (network: 'cnn' | 'mlp', plain: number | null, wn: number | null, wnOverPlain: number | null) =>
      ({ network, batch: 100, checks: { plain: { skipped: 'x' }, wn: { skipped: 'x' } }, ours: { plain: timing([1]), wn: timing([1]) },
        torch: { plain: timing([1]), wn: timing([1]) }, vsTorch: { plain, wn }, wnOverPlain: { ours: wnOverPlain, torch: 1 }, calls: {} }) as never;
    expect(evaluateTrainingGoals(['gemm'], [])).toEqual([]);
    const met = evaluateTrainingGoals(['training'], [row('cnn', 1.3, 1.25, 1.02), row('mlp', 0.9, 0.9, 1.04)]);
    expect(met.map((g) => g.status)).toEqual(['met', 'met']);
    const missed = evaluateTrainingGoals(['training'], [row('cnn', 1.3, 1.1, 1.02), row('mlp', 2, 2, 1.2)]);
    expect(missed.map((g) => g.status)).toEqual(['not met', 'not met']);
    expect(missed[1]!.detail).toMatch(/MLP 1\.200×/);
    const noPeer = evaluateTrainingGoals(['training'], [row('cnn', null, null, 1.0)]);
    expect(noPeer.map((g) => g.status)).toEqual(['unavailable', 'met']);
  });

  it('does not judge a goal whose per-round ratios spread (load changed within a round): "noisy", naming them', async () => {
    const { evaluateTrainingGoals } = await import('../weightnorm-cli/src/bench/results.js');
    const { pairedRatio, pairedRatioSpread, TRAINING_MAX_SPREAD } = await import('../weightnorm-cli/src/bench/training.js');
    // Rounds whose load drifts (both sides of a round alike): the medians spread widely, the ratios do not.
    const drift = Array.from({ length: 5 }, () => 1 + 2 * Math.random());
    const plain = drift.map((d) => 1.5 * d);
    const steadyWn = drift.map((d) => 1.5 * d * 1.03 * (1 + 0.01 * Math.random()));
    expect(pairedRatioSpread(timing(steadyWn), timing(plain))!).toBeLessThan(TRAINING_MAX_SPREAD);
    // One stray round where only the WN step was slowed: the median survives it, so the goal is still judged.
    const strayWn = [...steadyWn];
    strayWn[2] = strayWn[2]! * 3;
    expect(pairedRatioSpread(timing(strayWn), timing(plain))!).toBeLessThan(TRAINING_MAX_SPREAD);
    // Two of five rounds slowed on the WN side alone, beyond the limit: the middle half disagrees.
    const disturbedWn = [...steadyWn];
    for (const i of [1, 3]) disturbedWn[i] = disturbedWn[i]! * (1 + 2 * TRAINING_MAX_SPREAD + Math.random());
    const spread = pairedRatioSpread(timing(disturbedWn), timing(plain))!;
    expect(spread).toBeGreaterThan(TRAINING_MAX_SPREAD);
    const row = (network: 'cnn' | 'mlp', wn: number[], torchPlain: number[]) => {
      const ours = { plain: timing(plain), wn: timing(wn) }, torch = { plain: timing(torchPlain), wn: timing(plain) };
      return { network, batch: 100, checks: { plain: { skipped: 'x' }, wn: { skipped: 'x' } }, ours, torch,
        vsTorch: { plain: pairedRatio(torch.plain, ours.plain), wn: pairedRatio(torch.wn, ours.wn) },
        wnOverPlain: { ours: pairedRatio(ours.wn, ours.plain), torch: 1 }, calls: {},
        ratioSpread: { vsTorch: { plain: pairedRatioSpread(torch.plain, ours.plain), wn: pairedRatioSpread(torch.wn, ours.wn) },
          wnOverPlain: { ours: pairedRatioSpread(ours.wn, ours.plain), torch: 0 } } } as never;
    };
    const torchPlain = plain.map((x) => 2 * x);
    const calm = row('mlp', steadyWn, torchPlain);
    expect(evaluateTrainingGoals(['training'], [calm]).map((g) => g.status)).toEqual(['unavailable', 'met']);
    // Our WN step disturbed in two rounds: WN/plain (ours) and torch/ours WN are noisy; torch/ours plain is judged.
    const goals = evaluateTrainingGoals(['training'], [row('cnn', disturbedWn, torchPlain), calm]);
    expect(goals.map((g) => g.status)).toEqual(['noisy', 'noisy']);
    expect(goals[0]!.detail).toContain(`WN: rounds' ratios ${(100 * spread).toFixed(0)}% apart`);
    expect(goals[0]!.detail).not.toContain('plain: rounds');
    expect(goals[1]!.detail).toContain('CNN: rounds');
    expect(goals[1]!.detail).not.toContain('MLP:');
    // torch's plain step disturbed in two rounds: only the goal that compares with torch's plain step.
    const torchBusy = [...torchPlain];
    for (const i of [0, 4]) torchBusy[i] = torchBusy[i]! * 2;
    expect(evaluateTrainingGoals(['training'], [row('cnn', steadyWn, torchBusy)]).map((g) => g.status)).toEqual(['noisy', 'met']);
  });

  it('judges the weight-norm goal (5% wide) only on rounds whose middle half spans at most 10%', async () => {
    const { evaluateTrainingGoals } = await import('../weightnorm-cli/src/bench/results.js');
    const { pairedRatio, pairedRatioSpread, TRAINING_MAX_SPREAD, TRAINING_WN_MAX_SPREAD } = await import('../weightnorm-cli/src/bench/training.js');
    // Eight rounds whose WN / plain ratios alternate 1.02 and 1.02 × (1 + s): the middle half spans s (with s drawn
    // between the two limits), so the torch ratio built the same way is still judged and the WN one is not.
    const s = TRAINING_WN_MAX_SPREAD + (TRAINING_MAX_SPREAD - TRAINING_WN_MAX_SPREAD) * (0.2 + 0.6 * Math.random());
    const plain = Array.from({ length: 8 }, () => 1 + Math.random());
    const wn = plain.map((p, i) => p * 1.02 * (i % 2 ? 1 + s : 1));
    const torchPlain = plain.map((p, i) => 2 * p * (i % 2 ? 1 + s : 1));
    expect(pairedRatioSpread(timing(wn), timing(plain))!).toBeCloseTo(s, 10);
    const ours = { plain: timing(plain), wn: timing(wn) }, torch = { plain: timing(torchPlain), wn: timing(torchPlain.map((t) => 1.5 * t)) };
    const cnn = { network: 'cnn', batch: 100, checks: { plain: { skipped: 'x' }, wn: { skipped: 'x' } }, ours, torch,
      vsTorch: { plain: pairedRatio(torch.plain, ours.plain), wn: pairedRatio(torch.wn, ours.wn) },
      wnOverPlain: { ours: pairedRatio(ours.wn, ours.plain), torch: 1 }, calls: {},
      ratioSpread: { vsTorch: { plain: pairedRatioSpread(torch.plain, ours.plain), wn: pairedRatioSpread(torch.wn, ours.wn) },
        wnOverPlain: { ours: pairedRatioSpread(ours.wn, ours.plain), torch: 0 } } } as never;
    const [vsTorch, weightNorm] = evaluateTrainingGoals(['training'], [cnn]);
    expect(vsTorch!.status).toBe('met');
    expect(weightNorm!.status).toBe('noisy');
    expect(weightNorm!.detail).toContain(`more than ${(100 * TRAINING_WN_MAX_SPREAD).toFixed(0)}% apart (CNN: rounds' ratios ${(100 * s).toFixed(0)}% apart)`);
  });

  it('times both networks plain and weight-normalized (no peer: torch columns say why) and leaks no tensor', async () => {
    const { runTrainingSuite, TRAINING_MLP_ROUND_FACTOR } = await import('../weightnorm-cli/src/bench/training.js');
    const before = native.memory().cpu.tensors;
    const rows = await runTrainingSuite(null, { device: 'cpu', plan: { rounds: 1, warmup: 0, repeats: 1 }, seed: 1, log: () => undefined });
    expect(rows.map((r) => r.network)).toEqual(['cnn', 'mlp']);
    // The plan's rounds for the CNN, more for the MLP (a short step whose weight-norm ratio sits near its goal).
    const rounds = rows.map((r) => ('roundMedians' in r.ours.plain ? r.ours.plain.roundMedians.length : 0));
    expect(rounds).toEqual([1, TRAINING_MLP_ROUND_FACTOR]);
    for (const r of rows) {
      expect('ms' in r.ours.plain && 'ms' in r.ours.wn, JSON.stringify(r.ours)).toBe(true);
      expect(r.torch.wn).toEqual({ unavailable: 'no torch peer' });
      expect(r.checks.plain).toEqual({ skipped: 'no torch peer' });
      expect(r.wnOverPlain.ours).toBeGreaterThan(0);
      expect(r.vsTorch.plain).toBeNull();
    }
    expect(native.memory().cpu.tensors - before, 'tensors the suite left alive').toBe(0);
  });
});
