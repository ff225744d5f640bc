// Resident memory of the README's training loop, run as written (test/memory-soak-child.mjs: CPU, the same model,
// batch 100, tidy() per step, never yielding) for 5,000 steps in a child process of its own. Freed multi-megabyte
// activations used to stay resident in glibc's heaps (2.6-3.4 GB while memory() counted under 3 MB live); the host
// caching allocator (cpu/host_allocator.h) reuses them and bounds what it keeps. Checked here:
//  - the peak resident memory (VmHWM) of loading + init, and of the 5,000-step loop, each under 400 MB;
//  - memory().cpu: live tensors and bytes identical at every sample (a leak of even one tensor shows), the cache
//    within its limit;
//  - resident memory over the second half of the loop grows by less than 3 KB per step: the README's loop never
//    yields to the event loop, and disposed tensors need nothing from it (dispose() removes a handle's finalizer;
//    while finalizers ran only when the event loop turned, their JS wrappers grew the process by 6-11 KB per step);
//  - the loop trains (mean loss of the last 80 steps under half that of the first 80), so the steps did real work.
// Measured on a 2-core host: loading + init peak 295-351 MB, loop peak 288-335 MB; with glibc's malloc alone (before
// the cache) the loop peaked at 2.3-4.7 GB within 300 steps. 5,000 steps take about a minute on an idle 2-core
// machine (10-13 ms per step), 11-14 minutes with the host loaded eight deep.
// And in this process: memory().cpu reports the cache, a freed block is reused, releaseCachedMemory() and
// setCpuCacheLimit() empty and bound it, bad limits are refused.
// Needs the compiled library (npm run build: dist/ and build/).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { memory, releaseCachedMemory, setCpuCacheLimit, zeros } from '../ts/index.js';

const child = fileURLToPath(new URL('./memory-soak-child.mjs', import.meta.url));
const library = fileURLToPath(new URL('../dist/index.js', import.meta.url));

const STEPS = 5000;
const PEAK_LIMIT_MIB = 400;
// Growth is measured from this step on: by then the cache holds the loop's working set, the blocks init left have
// been dropped and V8's heap has grown to its working size (RSS rose ~8 MiB from step 500 to 2,500, then 0.1 MiB to
// 5,000, 2 threads). The wrappers of disposed tensors, while they waited for the event loop, added about 6 KB per
// step over the same half; a native leak of ~0.15 KB per tensor a step makes shows as much (leaked tensors
// themselves show in memory()). 3 KB per step (7 MiB over the half) leaves room for the heap's timing.
const WARM_STEP = STEPS / 2;
const GROWTH_LIMIT_KIB_PER_STEP = 3;

interface Sample {
  step: number;
  seconds: number;
  rss: number;
  peak: number;
  cpu: { tensors: number; bytes: number; allocatorBytes: number; cachedBytes: number; cacheLimitBytes: number };
}
interface SoakResult {
  steps: number;
  setupPeakMiB: number;
  setupRssMiB: number;
  peakReset: boolean;
  loopPeakMiB: number;
  samples: Sample[];
  firstLoss: number;
  lastLoss: number;
  loopSeconds: number;
  totalSeconds: number;
  cpuSeconds: number;
  minorPageFaults: number;
}

describe('the README training loop, 5,000 steps on the CPU', () => {
  it('stays under 400 MB resident with flat live memory', () => {
    expect(existsSync(library), `${library} is missing: run npm run build`).toBe(true);
    // The child measures this library's allocator, not a tuned glibc: drop malloc tuning and cache settings.
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([name]) => !name.startsWith('MALLOC_') && !name.startsWith('GLIBC_TUNABLES') &&
        name !== 'WEIGHTNORM_CPU_CACHE_BYTES'),
    );
    const run = spawnSync(process.execPath, [child, String(STEPS), library], {
      encoding: 'utf8', env, timeout: 25 * 60_000, maxBuffer: 16 * 1024 * 1024,
    });
    const output = `${run.stdout ?? ''}${run.stderr ?? ''}`.trimEnd().split('\n').slice(-20).join('\n');
    expect(run.error, output).toBeUndefined();
    expect(run.status, output).toBe(0);
    const result = JSON.parse((run.stdout ?? '').trimEnd().split('\n').at(-1) ?? '') as SoakResult;
    const { samples } = result;
    const maxSampledRss = Math.max(...samples.map((s) => s.rss));
    const summary = `setup peak ${result.setupPeakMiB.toFixed(0)} MiB, loop peak ${result.loopPeakMiB.toFixed(0)} MiB ` +
      `(reset ${result.peakReset}), sampled RSS max ${maxSampledRss.toFixed(0)} MiB, ${STEPS} steps in ` +
      `${result.loopSeconds.toFixed(0)} s (process CPU ${result.cpuSeconds.toFixed(0)} s, ${result.minorPageFaults} page faults), loss ${result.firstLoss.toFixed(3)} -> ${result.lastLoss.toFixed(3)}`;
    console.log(`memory soak: ${summary}`);

    expect(result.steps).toBe(STEPS);
    expect(samples.length, summary).toBe(STEPS / 50);
    expect(result.setupPeakMiB, `loading + init peak: ${summary}`).toBeLessThan(PEAK_LIMIT_MIB);
    // Without the VmHWM reset (Linux < 4.0) the loop's peak is only known at the samples.
    const loopPeak = result.peakReset ? result.loopPeakMiB : maxSampledRss;
    expect(loopPeak, `loop peak: ${summary}`).toBeLessThan(PEAK_LIMIT_MIB);

    const first = samples[0]!.cpu;
    for (const s of samples) {
      expect({ step: s.step, tensors: s.cpu.tensors, bytes: s.cpu.bytes, allocatorBytes: s.cpu.allocatorBytes })
        .toEqual({ step: s.step, tensors: first.tensors, bytes: first.bytes, allocatorBytes: first.allocatorBytes });
      expect(s.cpu.cachedBytes, `cache at step ${s.step}`).toBeLessThanOrEqual(s.cpu.cacheLimitBytes);
    }

    const warm = samples.find((s) => s.step === WARM_STEP)!;
    const last = samples.at(-1)!;
    const growthKiBPerStep = ((last.rss - warm.rss) * 1024) / (last.step - warm.step);
    expect(growthKiBPerStep, `RSS ${warm.rss.toFixed(1)} MiB at step ${warm.step} -> ${last.rss.toFixed(1)} MiB at step ` +
      `${last.step}: ${summary}`).toBeLessThan(GROWTH_LIMIT_KIB_PER_STEP);

    expect(result.lastLoss, summary).toBeLessThan(result.firstLoss / 2);
  }, 26 * 60_000);
});

describe('the CPU caching allocator through the API', () => {
  const MiB = 1024 * 1024;
  const defaultLimit = memory().cpu.cacheLimitBytes!;
  afterAll(() => setCpuCacheLimit(defaultLimit));

  it('memory().cpu reports the live blocks, the cache and its limit (256 MiB unless WEIGHTNORM_CPU_CACHE_BYTES says otherwise)', () => {
    const cpu = memory().cpu;
    expect(cpu.cacheLimitBytes).toBe(Number(process.env.WEIGHTNORM_CPU_CACHE_BYTES ?? 256 * MiB));
    expect(cpu.allocatorBytes).toBeGreaterThanOrEqual(cpu.bytes);
    expect(cpu.cachedBytes).toBeLessThanOrEqual(cpu.cacheLimitBytes!);
  });

  it('a freed 1 MiB tensor is cached and reused; releaseCachedMemory() empties the cache', () => {
    releaseCachedMemory();
    const before = memory().cpu;
    const first = zeros([MiB / 4]);
    expect(memory().cpu.allocatorBytes).toBe(before.allocatorBytes! + MiB);
    first.dispose();
    expect(memory().cpu).toMatchObject({ tensors: before.tensors, bytes: before.bytes, allocatorBytes: before.allocatorBytes, cachedBytes: MiB });
    const second = zeros([MiB / 4 - 1000]);  // the same size class: served from the cache
    expect(memory().cpu.cachedBytes).toBe(0);
    expect(second.toArray().every((value) => value === 0), 'a reused block is filled by zeros()').toBe(true);
    second.dispose();
    expect(memory().cpu.cachedBytes).toBe(MiB);
    releaseCachedMemory();
    expect(memory().cpu).toEqual({ ...before, cachedBytes: 0 });
  });

  it('setCpuCacheLimit bounds the cache: lowering it returns the excess at once, 0 caches nothing', () => {
    setCpuCacheLimit(defaultLimit);
    const tensors = [zeros([MiB / 4]), zeros([MiB / 4]), zeros([MiB / 4])];
    for (const t of tensors) t.dispose();
    expect(memory().cpu.cachedBytes).toBe(3 * MiB);
    setCpuCacheLimit(2 * MiB);  // also caps a cached block at 2 MiB / 8: the 1 MiB blocks go
    expect(memory().cpu).toMatchObject({ cachedBytes: 0, cacheLimitBytes: 2 * MiB });
    setCpuCacheLimit(16 * MiB);
    zeros([MiB / 4]).dispose();
    expect(memory().cpu.cachedBytes).toBe(MiB);
    setCpuCacheLimit(0);
    expect(memory().cpu.cachedBytes).toBe(0);
    zeros([MiB / 4]).dispose();
    expect(memory().cpu.cachedBytes).toBe(0);
  });

  it('setCpuCacheLimit refuses what is not a non-negative safe integer, naming the parameter', () => {
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 53, '1024', null, undefined]) {
      expect(() => setCpuCacheLimit(bad as number), String(bad)).toThrow(TypeError);
      expect(() => setCpuCacheLimit(bad as number), String(bad)).toThrow(/setCpuCacheLimit: bytes.*non-negative safe integer/);
    }
  });
});
