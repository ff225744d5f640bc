// The OpenMP wait policy set before the addon loads (ts/openmp-env.ts): passive unless the user chose; and the
// choice changes no result (a few training steps give bit-identical losses and weights under either policy).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { decideWaitPolicy, openMpWaitPolicy, WAIT_POLICY_ENV } from '../ts/openmp-env.js';
import { repositoryRoot, transpileForNode } from './transpile-for-node.js';

let work = '';
beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'weightnorm-openmp-'));
  await transpileForNode(work, []);
});
afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('OpenMP wait policy', () => {
  it('sets OMP_WAIT_POLICY=PASSIVE when the user set nothing', () => {
    const env: NodeJS.ProcessEnv = {};
    expect(decideWaitPolicy(env)).toEqual({ policy: 'PASSIVE', source: 'weightnorm' });
    expect(env.OMP_WAIT_POLICY).toBe('PASSIVE');
  });

  it("leaves the user's OMP_WAIT_POLICY or GOMP_SPINCOUNT alone", () => {
    const active: NodeJS.ProcessEnv = { OMP_WAIT_POLICY: 'active' };
    expect(decideWaitPolicy(active)).toEqual({ policy: 'active', source: 'user' });
    expect(active.OMP_WAIT_POLICY).toBe('active');
    const spin: NodeJS.ProcessEnv = { GOMP_SPINCOUNT: '1000' };
    expect(decideWaitPolicy(spin)).toEqual({ policy: 'GOMP_SPINCOUNT=1000', source: 'user' });
    expect(spin.OMP_WAIT_POLICY).toBeUndefined();
  });

  it(`${WAIT_POLICY_ENV}: 'default' keeps libgomp's default, 'active' sets ACTIVE, anything else is a RangeError`, () => {
    const keep: NodeJS.ProcessEnv = { [WAIT_POLICY_ENV]: 'default' };
    expect(decideWaitPolicy(keep).source).toBe('libgomp default');
    expect(keep.OMP_WAIT_POLICY).toBeUndefined();
    const active: NodeJS.ProcessEnv = { [WAIT_POLICY_ENV]: 'Active' };
    expect(decideWaitPolicy(active)).toEqual({ policy: 'ACTIVE', source: 'weightnorm' });
    expect(() => decideWaitPolicy({ [WAIT_POLICY_ENV]: 'sleepy' })).toThrow(RangeError);
    expect(() => decideWaitPolicy({ [WAIT_POLICY_ENV]: 'sleepy' })).toThrow(/WEIGHTNORM_OMP_WAIT_POLICY: expected 'passive', 'active' or 'default', received "sleepy"/);
  });

  it('was decided for this process before the addon loaded', () => {
    expect(['weightnorm', 'user', 'libgomp default']).toContain(openMpWaitPolicy.source);
    if (openMpWaitPolicy.source === 'weightnorm') expect(process.env.OMP_WAIT_POLICY).toBe(openMpWaitPolicy.policy);
  });

  it('changes no result: training steps with 2 threads give the same bits under passive waiting and libgomp default', () => {
    // Each policy in its own process (libgomp reads the environment once, when the addon loads).
    const script = `
      const { nn, optim, randn, setNumThreads, trainStep, manualSeed } = await import(${JSON.stringify(join(work, 'ts', 'index.js'))});
      setNumThreads(2);
      manualSeed(11);
      const model = new nn.Sequential(new nn.Linear(64, 48, { weightNorm: true }), new nn.ReLU(), new nn.Linear(48, 10));
      const optimizer = new optim.Adam(model.parameters(), { lr: 1e-2 });
      const x = randn([32, 64], { seed: 5 });
      const labels = Int32Array.from({ length: 32 }, (_, i) => (i * 7) % 10);
      const losses = [];
      for (let i = 0; i < 5; i++) losses.push(trainStep(model, optimizer, x, labels));
      const weights = model.parameters().map((p) => Buffer.from(p.toArray().buffer).toString('hex')).join('');
      console.log(JSON.stringify({ losses, weights, policy: process.env.OMP_WAIT_POLICY ?? 'unset' }));`;
    const run = (env: Record<string, string>) => {
      const clean = { ...process.env };
      delete clean.OMP_WAIT_POLICY;
      delete clean.GOMP_SPINCOUNT;
      delete clean[WAIT_POLICY_ENV];
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: repositoryRoot, env: { ...clean, ...env }, encoding: 'utf8', timeout: 120_000 });
      expect(child.status, child.stderr).toBe(0);
      return JSON.parse(child.stdout.trim().split('\n').pop()!) as { losses: number[]; weights: string; policy: string };
    };
    const passive = run({});
    const spinning = run({ [WAIT_POLICY_ENV]: 'default' });
    expect(passive.policy).toBe('PASSIVE');
    expect(spinning.policy).toBe('unset');
    expect(passive.losses).toEqual(spinning.losses);
    expect(passive.weights === spinning.weights).toBe(true);
  });
});

describe('the CPU thread count', () => {
  // backend().cpu in a child process with this environment (OMP_NUM_THREADS is read once, when the addon loads),
  // after setNumThreads(set) when given.
  const cpuInfo = (env: Record<string, string | undefined>, set?: number) => {
    const script = `
      const { backend, setNumThreads } = await import(${JSON.stringify(join(work, 'ts', 'index.js'))});
      ${set === undefined ? '' : `setNumThreads(${set});`}
      console.log(JSON.stringify(backend().cpu));`;
    const clean: NodeJS.ProcessEnv = { ...process.env };
    for (const [name, value] of Object.entries(env)) {
      if (value === undefined) delete clean[name];
      else clean[name] = value;
    }
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: repositoryRoot, env: clean, encoding: 'utf8', timeout: 60_000 });
    expect(child.status, child.stderr).toBe(0);
    return JSON.parse(child.stdout.trim().split('\n').pop()!) as { threads: number; threadSource: string; cores: number };
  };

  it('OMP_NUM_THREADS is used as given (first entry of a list); a value that is not a positive integer is ignored', () => {
    expect(cpuInfo({ OMP_NUM_THREADS: '3' })).toMatchObject({ threads: 3, threadSource: 'OMP_NUM_THREADS' });
    expect(cpuInfo({ OMP_NUM_THREADS: '5,2' })).toMatchObject({ threads: 5, threadSource: 'OMP_NUM_THREADS' });
    for (const ignored of ['0', '-2', 'four', '2x', '']) {
      const info = cpuInfo({ OMP_NUM_THREADS: ignored });
      expect(info.threadSource, `OMP_NUM_THREADS=${JSON.stringify(ignored)}`).toBe('automatic');
      expect(info.threads).toBeGreaterThanOrEqual(1);
      expect(info.threads).toBeLessThanOrEqual(info.cores);
    }
  });

  it('setNumThreads wins over OMP_NUM_THREADS, and setNumThreads(0) goes back to it (or to the automatic choice)', () => {
    expect(cpuInfo({ OMP_NUM_THREADS: '3' }, 5)).toMatchObject({ threads: 5, threadSource: 'setNumThreads' });
    expect(cpuInfo({ OMP_NUM_THREADS: '3' }, 0)).toMatchObject({ threads: 3, threadSource: 'OMP_NUM_THREADS' });
    const automatic = cpuInfo({ OMP_NUM_THREADS: undefined }, 0);
    expect(automatic.threadSource).toBe('automatic');
    expect(automatic.cores).toBeGreaterThanOrEqual(1);
  });
});
