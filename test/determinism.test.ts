// Every CPU op gives bitwise identical results for any thread count (1, 2, and 3: more threads than a 2-core
// machine has) and run to run, on each CPU GEMM path: the default choice, the hand-written blocked kernel
// (WEIGHTNORM_OPENBLAS=0) and OpenBLAS loaded at run time where this machine has it (with OPENBLAS_CORETYPE unset,
// OpenBLAS picks its kernels from the CPU; wherever those have AVX-512, or the CPU has none, the automatic choice is
// OpenBLAS). The workload (test/determinism-workload.ts)
// covers matmul in every transpose and shape class, Linear (plain and weight-normalized) and conv2d forward and
// backward, weight norm, batch norm, pooling, the loss, an optimizer step, and four training steps of a small CNN.
// Results are compared as float32 bytes: any difference at all fails.
//
// The GEMM path is chosen once per process, so each path runs in a child process (the library transpiled to
// JavaScript); the default path also runs here, in vitest's process, and must match its child (run to run).
import { createHash } from 'node:crypto';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import * as wn from '../ts/index.js';
import { runWorkload, type Results } from './determinism-workload.js';
import { reproduce, runSeed } from './helpers.js';
import { transpileForNode } from './transpile-for-node.js';

const THREAD_COUNTS = [1, 2, 3] as const;
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const seed = runSeed();

function digest(values: Float32Array): string {
  return createHash('sha256').update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength)).digest('hex');
}

/** The first result (in workload order) whose bytes differ between two runs, or null. */
function firstDifference(a: Results, b: Results): string | null {
  if (a.length !== b.length) return `${a.length} results vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    const [name, x] = a[i]!;
    const [otherName, y] = b[i]!;
    if (name !== otherName) return `result ${i}: ${name} vs ${otherName}`;
    const bytesX = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    const bytesY = new Uint8Array(y.buffer, y.byteOffset, y.byteLength);
    if (Buffer.compare(bytesX, bytesY) !== 0) {
      const element = x.findIndex((v, j) => !Object.is(v, y[j]));
      return `${name}: element ${element} of ${x.length} is ${x[element]} vs ${y[element]}`;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes: the library and the workload transpiled to JavaScript (type-only imports vanish), run by node.

const CHILD = `
const [library, workload, seed, threads] = process.argv.slice(2);
const wn = await import(library);
const { runWorkload } = await import(workload);
const { createHash } = await import('node:crypto');
const runs = {};
for (const count of JSON.parse(threads)) {
  runs[count] = runWorkload(wn, Number(seed), count).map(([name, values]) => [
    name,
    createHash('sha256').update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength)).digest('hex'),
  ]);
}
process.stdout.write(JSON.stringify({ gemm: wn.backend().cpu.gemm, blasCore: wn.backend().cpu.blasCore ?? null, cpu: wn.backend().cpu, runs }));
`;

let work = '';
let library = '';
let workload = '';
let child = '';

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'weightnorm-determinism-'));
  await transpileForNode(work, [join(root, 'test', 'determinism-workload.ts')]);
  library = join(work, 'ts', 'index.js');
  workload = join(work, 'test', 'determinism-workload.js');
  child = join(work, 'child.mjs');
  writeFileSync(child, CHILD);
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

interface ChildRuns {
  gemm: string;
  blasCore: string | null;
  cpu: wn.BackendInfo['cpu'];
  runs: Record<string, [string, string][]>;
}

/** The workload in a child process with these environment variables set (undefined: removed), at these thread
 * counts (0: the automatic choice). */
function runChild(changes: Record<string, string | undefined>, threadCounts: readonly number[] = THREAD_COUNTS): Promise<ChildRuns> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [name, value] of Object.entries(changes)) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }
  return new Promise((done, fail) => {
    execFile(
      process.execPath,
      [child, library, workload, String(seed), JSON.stringify(threadCounts)],
      { env, timeout: 240_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => (error ? fail(new Error(`child failed: ${error.message}\n${stderr}`)) : done(JSON.parse(stdout) as ChildRuns)),
    );
  });
}

/** The first result whose digest differs between two runs of the child, or null. */
function firstDigestDifference(a: [string, string][], b: [string, string][]): string | null {
  if (a.length !== b.length) return `${a.length} results vs ${b.length}`;
  for (let i = 0; i < a.length; i++) if (a[i]![0] !== b[i]![0] || a[i]![1] !== b[i]![1]) return a[i]![0];
  return null;
}

// ---------------------------------------------------------------------------------------------------------------

describe('CPU results are bitwise identical for any thread count and run to run', () => {
  const inProcess = new Map<number, Results>();

  it('in this process (default GEMM path): 1, 2 and 3 threads, and 1 thread again', () => {
    for (const threads of THREAD_COUNTS) inProcess.set(threads, runWorkload(wn, seed, threads));
    const again = runWorkload(wn, seed, 1);
    const reference = inProcess.get(1)!;
    expect(reference.length).toBeGreaterThan(80);
    const gemm = wn.backend().cpu.gemm;
    for (const threads of THREAD_COUNTS) {
      expect(firstDifference(inProcess.get(threads)!, reference), `${threads} threads vs 1 (GEMM: ${gemm}; ${reproduce(seed)})`).toBeNull();
    }
    expect(firstDifference(again, reference), `1 thread, run to run (GEMM: ${gemm}; ${reproduce(seed)})`).toBeNull();
  }, 240_000);

  it.each([
    ['the default GEMM path', 'default', { WEIGHTNORM_OPENBLAS: undefined }],
    ['the blocked kernel (WEIGHTNORM_OPENBLAS=0)', 'blocked', { WEIGHTNORM_OPENBLAS: '0' }],
    ['OpenBLAS with the kernels it picks for this CPU (OPENBLAS_CORETYPE unset)', 'openblas',
      { WEIGHTNORM_OPENBLAS: undefined, OPENBLAS_CORETYPE: undefined }],
  ] as const)('in a child process on %s: 1, 2 and 3 threads', async (_label, path, env) => {
    const result = await runChild(env);
    if (path === 'blocked') expect(result.gemm).toBe('blocked (hand-written): OpenBLAS disabled by WEIGHTNORM_OPENBLAS=0');
    if (path === 'default') expect(result.gemm).toBe(wn.backend().cpu.gemm);
    // The automatic choice takes OpenBLAS whenever its kernels have AVX-512 (or the CPU has none): this child runs
    // the OpenBLAS path wherever OpenBLAS loads, except on an AVX-512 CPU that OpenBLAS does not give AVX-512 kernels.
    const avx512Core = ['SkylakeX', 'Cooperlake', 'SapphireRapids'].includes(result.blasCore ?? '');
    if (path === 'openblas' && avx512Core) expect(result.gemm).toMatch(/^OpenBLAS \(/);
    const reference = result.runs['1']!;
    for (const threads of THREAD_COUNTS) {
      expect(firstDigestDifference(result.runs[String(threads)]!, reference), `${threads} threads vs 1 (GEMM: ${result.gemm}; ${reproduce(seed)})`).toBeNull();
    }
    if (path === 'default' && inProcess.has(1)) {
      // Run to run across processes: the child's bytes are this process's bytes.
      const here = inProcess.get(1)!.map(([name, values]): [string, string] => [name, digest(values)]);
      expect(firstDigestDifference(reference, here), `child vs this process (${reproduce(seed)})`).toBeNull();
    }
  }, 240_000);

  // OpenBLAS's OpenMP build splits a call among the calling thread's default OpenMP team, and keeps its buffers by
  // OpenMP thread number: the pool's threads (which OpenMP never saw) must be told one thread each and take turns,
  // or the bits change with the thread count (cpu/gemm.cc, cpu/threads.cc). Where Debian's OpenMP build is installed.
  const openMpBlas = `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/openblas-openmp/libopenblas.so.0`;
  it.runIf(existsSync(openMpBlas))("in a child process on OpenBLAS's OpenMP build (its calls one at a time): 1, 2 and 3 threads", async () => {
    const result = await runChild({ WEIGHTNORM_OPENBLAS: openMpBlas });
    expect(result.gemm).toMatch(/OpenMP build.*one tile at a time/);
    const reference = result.runs['1']!;
    for (const threads of THREAD_COUNTS) {
      expect(firstDigestDifference(result.runs[String(threads)]!, reference), `${threads} threads vs 1 (GEMM: ${result.gemm}; ${reproduce(seed)})`).toBeNull();
    }
  }, 240_000);

  // The automatic thread count follows other processes' load (cpu/threads.h): with one busy process per core beside
  // it, it starts the workload on every core and drops to one thread part way through, and the bytes must not notice.
  it.runIf(wn.backend().cpu.cores >= 2)('under the automatic thread count while busy processes hold every core: the same bytes as 1 thread', async () => {
    const busy = Array.from({ length: wn.backend().cpu.cores }, () =>
      spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
    try {
      const [automatic, reference] = [await runChild({ OMP_NUM_THREADS: undefined }, [0]), await runChild({}, [1])];
      expect(automatic.cpu.threadSource).toBe('automatic');
      expect(automatic.cpu.threads, `others' load ${automatic.cpu.otherBusyCores} busy cores`).toBe(1);
      expect(automatic.cpu.otherBusyCores).toBeGreaterThan(0.3);
      expect(firstDigestDifference(automatic.runs['0']!, reference.runs['1']!), `automatic vs 1 thread (${reproduce(seed)})`).toBeNull();
    } finally {
      for (const process of busy) process.kill('SIGKILL');
    }
  }, 240_000);
});
