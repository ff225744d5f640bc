// The typed contract of the raw N-API binding (binding/addon.cc). Nothing outside ts/ uses it directly: the
// public API validates arguments first and only then calls down here.
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export type Device = 'cpu' | 'cuda';

export interface NativeTensor {
  readonly shape: number[];
  readonly device: Device | null; // null once disposed
  readonly disposed: boolean;
  toArray(): Float32Array;
  to(device: Device): NativeTensor;
  dispose(): void;
}

export interface CudaDeviceInfo {
  name: string;
  computeCapability: string;
  multiprocessors: number;
  totalBytes: number;
  count: number;
}

export interface NativeBackend {
  cpu: { threads: number };
  cuda: { compiled: boolean; usable: boolean; reason?: string; device?: CudaDeviceInfo };
}

export interface DeviceMemory {
  tensors: number;
  bytes: number;
  allocatorBytes?: number;
  cachedBytes?: number;
}

export interface NativeBinding {
  NativeTensor: abstract new (...args: never[]) => NativeTensor;
  fromArray(data: Float32Array, shape: number[], device: Device): NativeTensor;
  zeros(shape: number[], device: Device): NativeTensor;
  randn(shape: number[], seed: number, device: Device, mean: number, std: number): NativeTensor;
  weightNorm(v: NativeTensor, g: NativeTensor, dim: number | null, eps: number, fused: boolean): {
    w: NativeTensor;
    norm: NativeTensor;
  };
  weightNormBackward(
    dw: NativeTensor,
    v: NativeTensor,
    g: NativeTensor,
    norm: NativeTensor,
    dim: number | null,
    eps: number,
    fused: boolean,
  ): { dv: NativeTensor; dg: NativeTensor };
  backend(): NativeBackend;
  memory(): { cpu: DeviceMemory; cuda: DeviceMemory };
  setNumThreads(threads: number): void;
  synchronize(): void;
  releaseCachedMemory(): void;
  /** Times kernels natively with preallocated outputs; run i uses sets[i % sets.length]. Milliseconds per run. */
  benchmark(
    op: 'forward' | 'backward' | 'copy',
    fused: boolean,
    sets: NativeTensor[][],
    dim: number | null,
    eps: number,
    warmup: number,
    repeats: number,
  ): Float64Array;
}

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const load = require('node-gyp-build') as (root: string) => unknown;

export const native = load(packageRoot) as NativeBinding;
