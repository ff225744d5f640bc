// The benchmark's shape suite: the weights weight norm is applied to in practice, plus the layouts that stress a
// kernel (few long rows, many short rows, strided last-dim channels, one norm for the whole tensor).

export interface BenchCase {
  /** Stable id used in tables, JSON and the chart. */
  name: string;
  /** What the weight is, for readers of the results. */
  kind: string;
  shape: number[];
  /** The axis as the user passes it (negative counts from the end); null: one norm for the whole tensor. */
  dim: number | null;
  /** Part of the --quick subset. */
  quick: boolean;
}

export const CASES: readonly BenchCase[] = [
  { name: 'linear-1024x1024', kind: 'Linear', shape: [1024, 1024], dim: 0, quick: true },
  { name: 'linear-4096x4096', kind: 'Linear', shape: [4096, 4096], dim: 0, quick: true },
  { name: 'linear-11008x4096', kind: 'Linear (LLaMA up)', shape: [11008, 4096], dim: 0, quick: false },
  { name: 'linear-4096x11008', kind: 'Linear (LLaMA down)', shape: [4096, 11008], dim: 0, quick: false },
  { name: 'conv2d-512x512x3x3', kind: 'Conv2d', shape: [512, 512, 3, 3], dim: 0, quick: true },
  { name: 'conv1d-512x512x7', kind: 'Conv1d', shape: [512, 512, 7], dim: 0, quick: false },
  { name: 'convT1d-512x256x16', kind: 'ConvTranspose1d (HiFi-GAN up 1)', shape: [512, 256, 16], dim: 0, quick: false },
  { name: 'conv1d-512x80x7', kind: 'Conv1d (HiFi-GAN conv_pre)', shape: [512, 80, 7], dim: 0, quick: false },
  { name: 'convT1d-256x128x16', kind: 'ConvTranspose1d (HiFi-GAN up 2)', shape: [256, 128, 16], dim: 0, quick: false },
  { name: 'conv1d-128x512x3', kind: 'Conv1d (HiFi-GAN)', shape: [128, 512, 3], dim: 0, quick: false },
  { name: 'conv1d-768x48x128-dim2', kind: 'Conv1d (wav2vec2 pos_conv, dim 2)', shape: [768, 48, 128], dim: 2, quick: false },
  { name: 'few-long-rows-64x512x512', kind: 'few long rows', shape: [64, 512, 512], dim: 0, quick: false },
  { name: 'many-short-rows-262144x16', kind: 'many short rows', shape: [262144, 16], dim: 0, quick: true },
  { name: 'last-dim-4096x1024', kind: 'last dim', shape: [4096, 1024], dim: -1, quick: true },
  { name: 'last-dim-512x512x3x3', kind: 'last dim (Conv2d)', shape: [512, 512, 3, 3], dim: 3, quick: false },
  { name: 'whole-4096x4096', kind: 'dim null', shape: [4096, 4096], dim: null, quick: false },
];

export function elementsOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** dim in [0, rank) or null, as the native calls want it. */
export function normalizeDim(dim: number | null, rank: number): number | null {
  return dim === null ? null : dim < 0 ? dim + rank : dim;
}

/** Number of norms (per-channel vector length). */
export function channelsOf(c: BenchCase): number {
  const axis = normalizeDim(c.dim, c.shape.length);
  return axis === null ? 1 : c.shape[axis]!;
}

/**
 * Minimal bytes each op must move: forward reads v and g, writes w and norm; backward reads dw, v, g
 * and norm, writes dv and dg; copy reads and writes N.
 */
export function minimalBytes(op: 'forward' | 'backward' | 'copy', elements: number, channels: number, storage: 'f32' | 'bf16' = 'f32'): number {
  // bf16: the per-element tensors (v, w, dw, dv) take 2 bytes; g, norm and dg stay float32.
  const element = storage === 'bf16' ? 2 : 4;
  if (op === 'copy') return 2 * element * elements;
  if (op === 'forward') return 2 * element * elements + 4 * 2 * channels;
  return 3 * element * elements + 4 * 3 * channels;
}

/**
 * A smaller shape with the same rank and dim for the cross-check against PyTorch (the data goes through files):
 * halve the largest axis until at most `limit` elements remain.
 */
export function checkShape(shape: readonly number[], limit = 1 << 18): number[] {
  const out = [...shape];
  while (elementsOf(out) > limit) {
    let largest = 0;
    for (let i = 1; i < out.length; i++) if (out[i]! > out[largest]!) largest = i;
    out[largest] = Math.ceil(out[largest]! / 2);
  }
  return out;
}
