// Which OpenBLAS kernels the addon runs on, as backend().cpu reports them. OpenBLAS picks its kernels once, when it
// loads: from the CPU, or from OPENBLAS_CORETYPE when the user sets it. Each case is a child process, since the
// library is loaded once per process.
import { execFile } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import * as wn from '../ts/index.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

// The library as a user loads it (package.json's main: the addon and the compiled TypeScript of `npm run build`).
const CHILD = `
const wn = require(${JSON.stringify(root)});
const cpu = wn.backend().cpu;
process.stdout.write(JSON.stringify({ gemm: cpu.gemm, blasCore: cpu.blasCore ?? null, envAfter: process.env.OPENBLAS_CORETYPE ?? null }));
`;

interface ChildReport {
  gemm: string;
  blasCore: string | null;
  envAfter: string | null;
}

function runChild(env: Record<string, string | undefined>): Promise<ChildReport> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[name];
    else childEnv[name] = value;
  }
  return new Promise((done, fail) => {
    execFile(process.execPath, ['-e', CHILD], { env: childEnv, timeout: 60_000 }, (error, stdout, stderr) =>
      error ? fail(new Error(`child failed: ${error.message}\n${stderr}`)) : done(JSON.parse(stdout) as ChildReport),
    );
  });
}

// Loaded whether or not gemm() uses it (the blocked kernel is chosen over OpenBLAS's AVX2 kernels on AVX-512 CPUs).
const openblasHere = Boolean(wn.backend().cpu.blasCore);

describe.skipIf(!openblasHere)('OpenBLAS kernel choice (OpenBLAS is loaded on this machine)', () => {
  it('without OPENBLAS_CORETYPE: the kernels OpenBLAS picked are named, and the environment is left as it was', async () => {
    const report = await runChild({ OPENBLAS_CORETYPE: undefined, WEIGHTNORM_OPENBLAS: undefined });
    expect(report.envAfter).toBeNull();
    expect(report.blasCore).toMatch(/^\w+$/);
    expect(report.gemm).toContain(`kernels for ${report.blasCore!}`);
  }, 60_000);

  it.skipIf(process.arch !== 'x64')('a user\'s OPENBLAS_CORETYPE is respected and stays set (x86-64)', async () => {
    // Haswell's kernels run on every x86-64 CPU with AVX2 (all that OpenBLAS's dynamic builds here target).
    const report = await runChild({ OPENBLAS_CORETYPE: 'Haswell', WEIGHTNORM_OPENBLAS: undefined });
    expect(report.blasCore).toBe('Haswell');
    expect(report.envAfter).toBe('Haswell');
    expect(report.gemm).toContain('kernels for Haswell');
  }, 60_000);

  it('WEIGHTNORM_OPENBLAS=0: no OpenBLAS, no kernel name', async () => {
    const report = await runChild({ OPENBLAS_CORETYPE: undefined, WEIGHTNORM_OPENBLAS: '0' });
    expect(report.blasCore).toBeNull();
    expect(report.gemm).toBe('blocked (hand-written): OpenBLAS disabled by WEIGHTNORM_OPENBLAS=0');
  }, 60_000);
});
