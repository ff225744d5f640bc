// Which OpenBLAS kernels the addon ends up with. OpenBLAS picks them once, when it loads; its releases before the
// AMD Zen 4 / Zen 5 entries (Debian 12's 0.3.21) run AVX2 kernels on AMD CPUs with AVX-512, so the addon asks for
// the AVX-512 ones (OPENBLAS_CORETYPE=SkylakeX) for the load when the user has not chosen, and removes the variable
// again. Each case is a child process: the choice is made once per process.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
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

/** AMD CPU whose flags include the AVX-512 subsets OpenBLAS's SkylakeX kernels use (the kernel lists them only when the OS saves the state). */
function amdWithAvx512(): boolean {
  let info = '';
  try {
    info = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return false;
  }
  const vendor = /^vendor_id\s*:\s*(\S+)/m.exec(info)?.[1];
  const flags = new Set((/^flags\s*:(.*)$/m.exec(info)?.[1] ?? '').trim().split(/\s+/));
  return vendor === 'AuthenticAMD' && ['avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl'].every((f) => flags.has(f));
}

const openblasHere = wn.backend().cpu.gemm.startsWith('OpenBLAS');

describe.skipIf(!openblasHere)('OpenBLAS kernel choice (OpenBLAS is loaded on this machine)', () => {
  it('without OPENBLAS_CORETYPE: AVX-512 kernels on an AMD CPU with AVX-512, OpenBLAS\'s own pick elsewhere; the environment is left as it was', async () => {
    const report = await runChild({ OPENBLAS_CORETYPE: undefined, WEIGHTNORM_OPENBLAS: undefined });
    expect(report.envAfter).toBeNull();
    expect(report.blasCore).toBeTruthy();
    if (amdWithAvx512()) {
      expect(report.blasCore).toBe('SkylakeX');
      expect(report.gemm).toContain('OPENBLAS_CORETYPE=SkylakeX set by weightnorm');
    } else {
      expect(report.gemm).not.toContain('set by weightnorm');
    }
    expect(report.gemm).toContain(`kernels for ${report.blasCore!}`);
  }, 60_000);

  it.skipIf(process.arch !== 'x64')('a user\'s OPENBLAS_CORETYPE is respected and stays set (x86-64)', async () => {
    // Haswell's kernels run on every x86-64 CPU with AVX2 (all that OpenBLAS's dynamic builds here target).
    const report = await runChild({ OPENBLAS_CORETYPE: 'Haswell', WEIGHTNORM_OPENBLAS: undefined });
    expect(report.blasCore).toBe('Haswell');
    expect(report.envAfter).toBe('Haswell');
    expect(report.gemm).not.toContain('set by weightnorm');
  }, 60_000);

  it('WEIGHTNORM_OPENBLAS=0: no OpenBLAS, no kernel name', async () => {
    const report = await runChild({ OPENBLAS_CORETYPE: undefined, WEIGHTNORM_OPENBLAS: '0' });
    expect(report.blasCore).toBeNull();
    expect(report.gemm).toBe('blocked (hand-written): OpenBLAS disabled by WEIGHTNORM_OPENBLAS=0');
  }, 60_000);
});
