// What this build and machine can do, memory accounting, and CPU threading.
import { typeError } from './errors.js';
import { type DeviceMemory, native, type NativeBackend } from './native.js';

export type BackendInfo = NativeBackend;
export type { DeviceMemory, CudaDeviceInfo } from './native.js';

/** Which backends this build has and whether a GPU is usable now (with the reason when it is not). */
export function backend(): BackendInfo {
  return native.backend();
}

/**
 * Live tensors and their bytes per device, plus each caching allocator's `allocatorBytes` (held by live blocks,
 * rounded) and `cachedBytes` (freed blocks kept for reuse); the CPU entry also has `cacheLimitBytes`.
 */
export function memory(): { cpu: DeviceMemory; cuda: DeviceMemory } {
  return native.memory();
}

/**
 * Threads used by the CPU kernels, used as given. 0 restores the default: OMP_NUM_THREADS when it was set as the
 * library loaded, else the automatic choice, which starts with every core this process may use and, measured about
 * every 250 ms from /proc/stat, gives a core up while other processes keep it more than 30% busy (and takes it back
 * below 15%): on shared cores a parallel region waits for whichever thread the scheduler parked. Every CPU kernel
 * gives the same bits for any thread count, so the choice changes speed only. `backend().cpu` shows the count and who
 * chose it.
 */
export function setNumThreads(threads: number): void {
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 0 || threads > 1024) {
    throw typeError('setNumThreads: threads', 'an integer in [0, 1024]', threads);
  }
  native.setNumThreads(threads);
}

/** Waits for all queued GPU work (a no-op without a GPU). */
export function synchronize(): void {
  native.synchronize();
}

/** Returns the caching allocators' free blocks to the system: the CPU cache's to the OS, CUDA's to the driver. */
export function releaseCachedMemory(): void {
  native.releaseCachedMemory();
}

/**
 * Bounds the CPU caching allocator: freed tensor buffers are kept for reuse up to `bytes` in all (default 256 MiB,
 * or the environment variable WEIGHTNORM_CPU_CACHE_BYTES read at load), none larger than bytes / 8, and those under
 * 64 KiB at most min(4 MiB, bytes / 16) together; beyond that they go back to the system at once, as do cached
 * buffers of 64 KiB and more left unused for about a thousand large allocations. Lowering it returns the excess
 * now; 0 turns the cache off.
 */
export function setCpuCacheLimit(bytes: number): void {
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes < 0) {
    throw typeError('setCpuCacheLimit: bytes', 'a non-negative safe integer (bytes)', bytes);
  }
  native.setCpuCacheLimit(bytes);
}

export type MatmulPrecision = 'highest' | 'high';

/**
 * How float32 matrix products run on CUDA (as torch.set_float32_matmul_precision): 'highest' (default) in full
 * float32; 'high' on the TF32 tensor cores (operands rounded to a 10-bit significand, float32 accumulation): several
 * times faster, about 3 decimal digits per product. Process-wide; the CPU always computes in full float32.
 */
export function setMatmulPrecision(precision: MatmulPrecision): void {
  if (precision !== 'highest' && precision !== 'high') {
    throw typeError('setMatmulPrecision: precision', "'highest' or 'high'", precision);
  }
  native.setMatmulPrecision(precision);
}

export function matmulPrecision(): MatmulPrecision {
  return native.matmulPrecision();
}

/**
 * What the CUDA GEMM's tensor-core path is on this device, e.g. 'wgmma: self-check passed (tf32, bf16)' (Hopper),
 * 'wgmma: disabled: <why>' (the mma.sync kernels are used instead), 'wgmma: not an sm_90 device (sm_86)', or 'no
 * usable CUDA device'. On an H100/H200 the first call runs the Hopper kernel's one-time self-check.
 */
export function tensorCoreStatus(): string {
  return native.tensorCoreStatus();
}
