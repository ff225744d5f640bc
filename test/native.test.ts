// The native kernel tests, built by CMake and runnable without Node (and under compute-sanitizer on a GPU machine):
// one runner, build/weightnorm_backend_ops_test (test/native/backend_ops_test.cc and harness.h), with one group of
// checks per op family and backend (weightnorm/cpu, gemm/cpu, ops/cpu, host_allocator/cpu, shape/cpu, threads/cpu,
// and the /cuda groups).
// Each group runs here in its own process (--filter), so a slow or crashing group names itself. Every CPU kernel,
// and every CUDA kernel where a GPU is usable, is checked against a float64 reference; a CUDA group without a GPU
// reports itself skipped, and then must say why.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

const binary = fileURLToPath(new URL('../build/weightnorm_backend_ops_test', import.meta.url));

function run(args: string[]) {
  const result = spawnSync(binary, args, { encoding: 'utf8', timeout: 600_000, maxBuffer: 64 * 1024 * 1024 });
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  return { result, output, tail: output.trimEnd().split('\n').slice(-20).join('\n') };
}

// Listed when the file loads, so each group is its own test; a missing binary is one failing test below.
const groups = existsSync(binary) ? run(['--list']).result.stdout.trim().split('\n').filter(Boolean) : [];

describe('native kernel tests', () => {
  it('build/weightnorm_backend_ops_test exists and lists the CPU group of every op family', () => {
    expect(existsSync(binary), `${binary} is missing: run npm run build`).toBe(true);
    for (const family of ['weightnorm', 'gemm', 'ops', 'host_allocator', 'shape', 'threads']) expect(groups).toContain(`${family}/cpu`);
  });

  it('a filter that matches no group fails instead of passing with nothing checked', () => {
    const { result, output } = run(['--filter', 'no-such-group']);
    expect(result.status, output).toBe(1);
  });

  it.each(groups)('group %s: exits 0 and reports "N passed, 0 failed" with N > 0 (or is skipped without a GPU)', (group) => {
    const { result, output, tail } = run(['--filter', group]);
    expect(result.error, tail).toBeUndefined();
    expect(result.signal, `killed by a signal:\n${tail}`).toBeNull();
    const lines = (result.stdout ?? '').trimEnd().split('\n');
    const summary = lines.at(-1) ?? '';
    const match = /^(\d+) passed, (\d+) failed$/.exec(summary);
    expect(match, `last line "${summary}" is not "N passed, M failed":\n${tail}`).not.toBeNull();
    const [passed, failed] = [Number(match![1]), Number(match![2])];
    expect(failed, tail).toBe(0);
    expect(result.status, tail).toBe(0);
    if (lines.some((line) => line.startsWith(`group ${group} `) && line.includes('skipped: no usable GPU'))) {
      // Only a CUDA group may be skipped, and the runner said why CUDA is unusable.
      expect(group.endsWith('/cuda'), tail).toBe(true);
      expect(output, tail).toMatch(/^cuda: (compiled, but no GPU is usable|not in this build)/m);
    } else {
      expect(passed, tail).toBeGreaterThan(0);
    }
  }, 620_000);
});
