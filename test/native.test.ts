// The native kernel tests, built by CMake and runnable without Node (and under compute-sanitizer on a GPU machine):
//   weightnorm_kernel_test  the weight-norm kernels (test/native/kernel_test.cc)
//   weightnorm_gemm_test    GEMM with its epilogue, conv2d, pooling (test/native/gemm_test.cc)
//   weightnorm_ops_test     elementwise, reductions, loss, normalization, optimizers (test/native/ops_test.cc)
//   weightnorm_host_allocator_test  the host caching allocator (test/native/host_allocator_test.cc)
//   weightnorm_shape_test   the shape ops' strided copy and index kernels (test/native/shape_test.cc)
// Each kernel test checks every CPU kernel, and every CUDA kernel where a GPU is usable, against a float64 reference.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

const binaries = ['weightnorm_kernel_test', 'weightnorm_gemm_test', 'weightnorm_ops_test', 'weightnorm_host_allocator_test', 'weightnorm_shape_test'];

describe.each(binaries)('native test %s', (name) => {
  const binary = fileURLToPath(new URL(`../build/${name}`, import.meta.url));
  it(`build/${name} exits 0 and reports "N passed, 0 failed" with N > 0`, () => {
    expect(existsSync(binary), `${binary} is missing: run npm run build`).toBe(true);
    const result = spawnSync(binary, [], { encoding: 'utf8', timeout: 300_000, maxBuffer: 64 * 1024 * 1024 });
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
  }, 320_000);
});
