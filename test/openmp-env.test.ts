// How the CPU kernels' pool threads wait (ts/openmp-env.ts): adaptive unless the user chose, written where the
// native pool reads it; and the choice changes no result (training steps give bit-identical losses and weights
// under every policy).
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

describe('thread wait policy', () => {
  it('is adaptive when the user set nothing, and is written for the native pool', () => {
    const env: NodeJS.ProcessEnv = {};
    expect(decideWaitPolicy(env)).toEqual({ policy: 'adaptive', source: 'weightnorm' });
    expect(env[WAIT_POLICY_ENV]).toBe('adaptive');
  });

  it("follows the user's OMP_WAIT_POLICY when it says passive or active, and ignores other values", () => {
    const passive: NodeJS.ProcessEnv = { OMP_WAIT_POLICY: 'PASSIVE' };
    expect(decideWaitPolicy(passive)).toEqual({ policy: 'passive', source: 'user' });
    expect(passive[WAIT_POLICY_ENV]).toBe('passive');
    expect(passive.OMP_WAIT_POLICY).toBe('PASSIVE');
    expect(decideWaitPolicy({ OMP_WAIT_POLICY: 'active' })).toEqual({ policy: 'active', source: 'user' });
    expect(decideWaitPolicy({ OMP_WAIT_POLICY: 'sometimes' })).toEqual({ policy: 'adaptive', source: 'weightnorm' });
    expect(decideWaitPolicy({ GOMP_SPINCOUNT: '1000' })).toEqual({ policy: 'adaptive', source: 'weightnorm' });
  });

  it(`${WAIT_POLICY_ENV} wins: 'default' is adaptive, case does not matter, anything else is a RangeError`, () => {
    expect(decideWaitPolicy({ [WAIT_POLICY_ENV]: 'default', OMP_WAIT_POLICY: 'passive' })).toEqual({ policy: 'adaptive', source: 'user' });
    const active: NodeJS.ProcessEnv = { [WAIT_POLICY_ENV]: 'Active' };
    expect(decideWaitPolicy(active)).toEqual({ policy: 'active', source: 'user' });
    expect(active[WAIT_POLICY_ENV]).toBe('active');
    expect(() => decideWaitPolicy({ [WAIT_POLICY_ENV]: 'sleepy' })).toThrow(RangeError);
    expect(() => decideWaitPolicy({ [WAIT_POLICY_ENV]: 'sleepy' })).toThrow(
      /WEIGHTNORM_OMP_WAIT_POLICY: expected 'adaptive', 'passive', 'active' or 'default', received "sleepy"/,
    );
  });

  it('was decided for this process before the addon loaded', () => {
    expect(['weightnorm', 'user']).toContain(openMpWaitPolicy.source);
    expect(process.env[WAIT_POLICY_ENV]).toBe(openMpWaitPolicy.policy);
  });

  it('changes no result: training steps with 2 threads give the same bits under every policy, and backend() reports it', () => {
    // Each policy in its own process (the pool reads it once, when it starts).
    const script = `
      const { backend, nn, optim, randn, setNumThreads, trainStep, manualSeed } = await import(${JSON.stringify(join(work, 'ts', 'index.js'))});
      setNumThreads(2);
      manualSeed(11);
      const model = new nn.Sequential(new nn.Linear(256, 128, { weightNorm: true }), new nn.ReLU(), new nn.Linear(128, 10));
      const optimizer = new optim.Adam(model.parameters(), { lr: 1e-2 });
      const x = randn([512, 256], { seed: 5 }); // products and an optimizer step large enough to run on 2 threads
      const labels = Int32Array.from({ length: 512 }, (_, i) => (i * 7) % 10);
      const losses = [];
      for (let i = 0; i < 5; i++) losses.push(trainStep(model, optimizer, x, labels));
      const weights = model.parameters().map((p) => Buffer.from(p.toArray().buffer).toString('hex')).join('');
      console.log(JSON.stringify({ losses, weights, policy: backend().cpu.waitPolicy }));`;
    const run = (env: Record<string, string>) => {
      const clean = { ...process.env };
      delete clean.OMP_WAIT_POLICY;
      delete clean[WAIT_POLICY_ENV];
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: repositoryRoot, env: { ...clean, ...env }, encoding: 'utf8', timeout: 120_000 });
      expect(child.status, child.stderr).toBe(0);
      return JSON.parse(child.stdout.trim().split('\n').pop()!) as { losses: number[]; weights: string; policy: string };
    };
    const adaptive = run({});
    const passive = run({ OMP_WAIT_POLICY: 'passive' });
    const active = run({ [WAIT_POLICY_ENV]: 'active' });
    expect([adaptive.policy, passive.policy, active.policy]).toEqual(['adaptive', 'passive', 'active']);
    for (const other of [passive, active]) {
      expect(other.losses).toEqual(adaptive.losses);
      expect(other.weights === adaptive.weights).toBe(true);
    }
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
