// The native kernel test (test/native/kernel_test.cc, built by CMake as build/weightnorm_kernel_test): every CPU
// kernel, and every CUDA kernel where a GPU is usable, against its own float64 reference, without Node.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

const binary = fileURLToPath(new URL('../build/weightnorm_kernel_test', import.meta.url));

describe('native kernel test', () => {
  it('build/weightnorm_kernel_test exits 0 and reports "N passed, 0 failed" with N > 0', () => {
    expect(existsSync(binary), `${binary} is missing: run npm run build`).toBe(true);
    const result = spawnSync(binary, [], { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
    const tail = output.trimEnd().split('\n').slice(-20).join('\n');
    expect(result.error, tail).toBeUndefined();
    expect(result.signal, `killed by a signal:\n${tail}`).toBeNull();
    const summary = (result.stdout ?? '').trimEnd().split('\n').at(-1) ?? '';
    const match = /^(\d+) passed, (\d+) failed$/.exec(summary);
    expect(match, `last line "${summary}" is not "N passed, M failed":\n${tail}`).not.toBeNull();
    const [passed, failed] = [Number(match![1]), Number(match![2])];
    expect(failed, tail).toBe(0);
    expect(passed, tail).toBeGreaterThan(0);
    expect(result.status, tail).toBe(0);
  });
});
