// GEMM suite: our FP32 (SIMT), TF32 (tensor cores) and bf16 GEMMs against cuBLAS through torch (FP32 with
// allow_tf32 off, TF32 on, bf16) on the same card in the same run: TFLOP/s and ours / torch. Every kernel's output
// is checked against a float64 reference on sampled entries before it is timed; a kernel that throws (not
// implemented yet) or computes TF32 on the FP32 path is reported unavailable with the reason.
import { floats } from './floats.js';
import type { Device, NativeTensor } from 'weightnorm/native';
import { native } from 'weightnorm/native';
import { alternate, isUnavailable, type Measured, type RoundPlan } from './rounds.js';
import { type GemmPrecision, type GemmSpec, gemmOutputs, timeGemm } from './native-bench.js';
import type { TorchPeer } from './peer.js';
import type { Timing } from './measure.js';

export interface GemmCase {
  name: string;
  /** What the product is in training. */
  kind: string;
  m: number;
  n: number;
  k: number;
  transposeA: boolean;
  transposeB: boolean;
  /** Part of the --quick subset. */
  quick: boolean;
}

/** out[m, n] = op(a)·op(b); the names give the layer's shape, the layout says which of its three products it is. */
export const GEMM_CASES: readonly GemmCase[] = [
  { name: 'square-4096', kind: '4096³ (NN)', m: 4096, n: 4096, k: 4096, transposeA: false, transposeB: false, quick: false },
  { name: 'square-2048', kind: '2048³ (NN)', m: 2048, n: 2048, k: 2048, transposeA: false, transposeB: false, quick: true },
  { name: 'mnist-linear-fwd', kind: 'Linear 784→1024, batch 256: y = x·Wᵀ', m: 256, n: 1024, k: 784, transposeA: false, transposeB: true, quick: true },
  { name: 'llama-up-fwd', kind: 'LLaMA 4096→11008, 4096 tokens: y = x·Wᵀ', m: 4096, n: 11008, k: 4096, transposeA: false, transposeB: true, quick: false },
  { name: 'llama-up-dgrad', kind: 'same layer: dx = dy·W', m: 4096, n: 4096, k: 11008, transposeA: false, transposeB: false, quick: false },
  { name: 'llama-up-wgrad', kind: 'same layer: dW = dyᵀ·x', m: 11008, n: 4096, k: 4096, transposeA: true, transposeB: false, quick: false },
];

/** The case whose ratios the cuBLAS goals (GEMM FP32 and TF32 at 4096³) are stated on. */
export const GEMM_TARGET_CASE = 'square-4096';

export const GEMM_PRECISIONS: readonly GemmPrecision[] = ['fp32', 'tf32', 'bf16'];

/**
 * max |ours − ref| / max |ref| over the sampled entries allowed per precision. fp32: sums of up to 11008 products
 * in another order (~1e-6). tf32: operands rounded to a 10-bit significand (2^-11 each, ~1e-3 on a random sum).
 * bf16: the reference uses the same bf16-rounded operands, so only the output's one rounding (2^-9 ≈ 2e-3) and the
 * float32 sum order remain. A wrong layout or a missing k-tile is an O(1) error.
 */
export const GEMM_TOLERANCE: Record<GemmPrecision, number> = { fp32: 1e-4, tf32: 1e-2, bf16: 1e-2 };

/** Entries of the output checked against the float64 reference (the corners and the rest at random). */
const SAMPLES = 384;

export interface GemmOurs extends Timing {
  tflops: number;
  /** The implementation that ran (cpu: openblas | blocked; cuda: simt | the tensor-core kernel's name). */
  backend: string;
}

export interface GemmRow {
  case: GemmCase;
  precision: GemmPrecision;
  flops: number;
  check: { error: number; tolerance: number; pass: boolean; samples: number } | null;
  ours: GemmOurs | { unavailable: string };
  torch: (Timing & { tflops: number; call: string }) | { unavailable: string };
  /** ours TFLOP/s / torch TFLOP/s (> 1: ours faster). */
  ratio: number | null;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Deterministic sample positions: the four corners, then a linear congruential walk. */
function samplePositions(m: number, n: number, count: number, seed: number): [number, number][] {
  const out: [number, number][] = [[0, 0], [0, n - 1], [m - 1, 0], [m - 1, n - 1]];
  let state = seed >>> 0;
  const next = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  while (out.length < count) out.push([Math.floor(next() * m), Math.floor(next() * n)]);
  return out;
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** x rounded to bfloat16 (nearest, ties to even; x is finite here), as a bf16 kernel reads it. */
function bfloat16Value(x: number): number {
  scratch[0] = x;
  const word = scratchBits[0]!;
  scratchBits[0] = ((word + 0x7fff + ((word >>> 16) & 1)) >>> 16) << 16;
  return scratch[0]!;
}

/**
 * Reference entries in float64 from host copies of a and b (laid out as the case says); with `bf16`, from the
 * operands rounded to bfloat16 (only the sampled rows and columns are rounded).
 */
function referenceEntries(c: GemmCase, a: Float32Array, b: Float32Array, positions: [number, number][], bf16: boolean): Float64Array {
  const ref = new Float64Array(positions.length);
  const read = bf16 ? bfloat16Value : (x: number) => x;
  positions.forEach(([i, j], s) => {
    let sum = 0;
    for (let p = 0; p < c.k; p++) {
      const av = c.transposeA ? a[p * c.m + i]! : a[i * c.k + p]!;
      const bv = c.transposeB ? b[j * c.k + p]! : b[p * c.n + j]!;
      sum += read(av) * read(bv);
    }
    ref[s] = sum;
  });
  return ref;
}

function sampledError(out: Float32Array, n: number, ref: Float64Array, positions: [number, number][]): number {
  let diff = 0;
  let scale = 0;
  positions.forEach(([i, j], s) => {
    const d = Math.abs(out[i * n + j]! - ref[s]!);
    if (!(d <= diff)) diff = d; // also catches NaN
    scale = Math.max(scale, Math.abs(ref[s]!));
  });
  return scale > 0 ? diff / scale : diff;
}

export interface GemmSuiteOptions {
  device: Device;
  plan: RoundPlan;
  seed: number;
  log: (line: string) => void;
}

export async function runGemmSuite(cases: readonly GemmCase[], peer: TorchPeer | null, options: GemmSuiteOptions): Promise<GemmRow[]> {
  const { device, plan } = options;
  const precisions = GEMM_PRECISIONS.filter((p) => device === 'cuda' || p !== 'tf32');
  const rows: GemmRow[] = [];
  for (const [index, c] of cases.entries()) {
    const seed = options.seed + 100 * index;
    const a = native.randn(c.transposeA ? [c.k, c.m] : [c.m, c.k], seed, device, 0, 1);
    const b = native.randn(c.transposeB ? [c.n, c.k] : [c.k, c.n], seed + 1, device, 0, 1);
    try {
      const hostA = floats(a.toArray());
      const hostB = floats(b.toArray());
      const positions = samplePositions(c.m, c.n, SAMPLES, seed);
      const spec = (precision: GemmPrecision): GemmSpec => ({ m: c.m, n: c.n, k: c.k, transposeA: c.transposeA, transposeB: c.transposeB, precision });
      const checks = new Map<GemmPrecision, GemmRow['check']>();
      const backends = new Map<GemmPrecision, string>();
      const unavailable: Record<string, string> = {};
      options.log(`${device} gemm ${c.name}: checking ${precisions.join(', ')} against the float64 reference`);
      for (const precision of precisions) {
        let out: NativeTensor | null = null;
        try {
          const result = gemmOutputs(spec(precision), [a, b]);
          out = result.out;
          // The backend string names the float32 path; the bf16 overload is its own kernel.
          backends.set(precision, precision === 'bf16' ? 'bf16' : result.backend);
          if (precision === 'tf32' && result.backend === 'simt') {
            unavailable[precision] = "TF32 requested but the GEMM backend is still 'simt' (no tensor-core kernel yet)";
            continue;
          }
          const reference = referenceEntries(c, hostA, hostB, positions, precision === 'bf16');
          const error = sampledError(floats(out.toArray()), c.n, reference, positions);
          const tolerance = GEMM_TOLERANCE[precision];
          checks.set(precision, { error, tolerance, pass: error <= tolerance, samples: positions.length });
          if (!(error <= tolerance)) unavailable[precision] = `CHECK FAILED: error ${error.toExponential(2)} > ${tolerance}`;
        } catch (error) {
          unavailable[precision] = errorText(error);
        } finally {
          out?.dispose();
        }
      }
      const ours = Object.fromEntries(
        precisions.filter((p) => !(p in unavailable)).map((p) => [p, (warmup: number, repeats: number) => timeGemm(spec(p), [[a, b]], warmup, repeats)]),
      );
      const timed = await alternate(
        ours,
        unavailable,
        peer,
        (p) => p.task('gemm', { m: c.m, n: c.n, k: c.k, transpose_a: c.transposeA, transpose_b: c.transposeB, precisions, seed }),
        plan,
        (round) => options.log(`${device} gemm ${c.name}: round ${round + 1}/${plan.rounds}`),
      );
      const flops = 2 * c.m * c.n * c.k;
      const tflops = (ms: number) => flops / (ms * 1e9);
      for (const precision of precisions) {
        const o: Measured = timed.ours[precision]!;
        const t: Measured = timed.theirs?.[precision] ?? { unavailable: timed.peerError ?? (timed.theirs ? 'not measured' : 'no torch peer') };
        const oursRow: GemmRow['ours'] = isUnavailable(o) ? o : { ...o, tflops: tflops(o.ms), backend: backends.get(precision) ?? '' };
        const torchRow: GemmRow['torch'] = isUnavailable(t) ? t : { ...t, tflops: tflops(t.ms), call: timed.calls[precision] ?? '' };
        rows.push({
          case: c,
          precision,
          flops,
          check: checks.get(precision) ?? null,
          ours: oursRow,
          torch: torchRow,
          ratio: 'tflops' in oursRow && 'tflops' in torchRow ? oursRow.tflops / torchRow.tflops : null,
        });
      }
    } finally {
      a.dispose();
      b.dispose();
      if (device === 'cuda') native.releaseCachedMemory();
    }
  }
  return rows;
}
