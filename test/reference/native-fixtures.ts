// The native kernel tests' weight-norm cases and their float64 expected values, from the one reference
// (weightnorm.ts): scripts/make_native_reference.mjs writes them to test/fixtures/native_reference/weightnorm.bin,
// test/native/weightnorm_cases.cc reads them, and test/native-reference.test.ts checks that the committed file is
// what this module produces today (so the two cannot drift apart).
//
// Inputs are not stored: v, dw and g are the library's seeded counter-based normals (randn, cpu::fill_normal), which
// the native test draws again from the same seeds, then edits as the case says (one channel zeroed, one scaled by a
// stored float32 factor, rounded to bfloat16 by the library's cast, float_to_bfloat16 there); a checksum of the final
// inputs guards that both sides hold the same numbers. Cases up to kFullCaseElements elements store every output; larger ones (the kernels' routes and their
// edges, up to millions of elements) store a few channels whole (norm, dg, error scales) and a few elements of each,
// and the native test compares every element of every backend with the CPU's separate-pass path besides.
//
// Format (little-endian): "WNREF001", uint32 case count, then per case
//   uint32 rank, int64 shape[rank], int32 dim (-1: null), uint32 flags (1: bfloat16 inputs, 2: every output stored),
//   uint64 seed (v: seed, dw: seed + 1, g: seed + 2), int64 zeroed channel (-1: none),
//   int64 scaled channel (-1: none), float32 scale, float64 eps, float64 input checksum,
//   uint32 channel count, per channel: uint32 k, float64 norm, dg, wScale, dvScale, dgScale,
//   uint32 element count, per element: uint32 flat index, float64 w, dv.
import {
  channelDot,
  channelIndices,
  channelLayout,
  directionGradientTerms,
  normalizedWeight,
  weightNormChannel,
  type ChannelLayout,
} from './weightnorm.js';

/** Where the inputs come from: the library itself, as in the native test. */
export interface InputSource {
  /** count standard normals of the library's generator for `seed` (randn([count], { seed })). */
  normal(count: number, seed: number): Float32Array;
  /** values rounded to bfloat16 by the library (cast('bfloat16')), widened back. */
  bfloat16(values: Float32Array): Float32Array;
}

/** What libraryInputSource needs of the library (the script passes dist/, the tests ts/). */
interface LibraryTensor {
  toArray(): ArrayLike<number>; // the library's toArray types every dtype's array; randn and cast give float32
  cast(dtype: 'bfloat16'): LibraryTensor;
  dispose(): void;
}
export interface Library {
  randn(shape: number[], options: { seed: number }): LibraryTensor;
  tensor(data: Float32Array, shape: number[]): LibraryTensor;
}

function float32Array(values: ArrayLike<number>, what: string): Float32Array {
  if (!(values instanceof Float32Array)) throw new TypeError(`${what} must give a Float32Array, got ${values.constructor.name}`);
  return values;
}

/** The inputs as the native test draws them: the library's randn and its bfloat16 cast. */
export function libraryInputSource({ randn, tensor }: Library): InputSource {
  return {
    normal(count, seed) {
      const t = randn([count], { seed });
      const values = t.toArray();
      t.dispose();
      return float32Array(values, 'randn');
    },
    bfloat16(values) {
      const t = tensor(values, [values.length]);
      const rounded = t.cast('bfloat16');
      const widened = rounded.toArray();
      t.dispose();
      rounded.dispose();
      return float32Array(widened, "cast('bfloat16').toArray()");
    },
  };
}

export interface NativeCase {
  shape: number[];
  dim: number | null;
  bfloat16: boolean;
}

/** Float32 kernels: every case stores every output up to this many elements (the fixture stays under 1 MiB). */
export const kFullCaseElements = 4096;
const kEps = Math.fround(1e-12); // kDefaultNormEps, a float32
const kMagic = 'WNREF001';

const caseOf = (shape: number[], dim: number | null, bfloat16 = false): NativeCase => ({ shape, dim, bfloat16 });

// Shapes and the dim of each (null: one norm over everything). Why each is here:
const float32Shapes: Array<[number[], number | null]> = [
  [[1], 0], [[7], 0], [[7], null], [[5, 1], 0], [[3, 1023], 0],
  [[2, 4097], 0], [[64, 16], 0], [[1000, 16], 0], [[33, 7], 0], [[4, 12], 1],
  [[300, 7], 1], [[513, 65], 1], [[8, 9, 5], 1], [[6, 40, 3], 1], [[5, 3, 100], 1],
  [[3, 4, 5, 6], 2], [[16, 8, 3, 3], 3], [[16, 8, 3, 3], 0], [[2, 3, 40000], 1], [[3, 70000], 0],
  [[4, 33000], null], [[70, 300], 1], [[5000, 40], 1], [[40, 5000], 0], [[2, 20000, 3], 2],
  [[1, 1, 1], 1], [[0, 5], 1], [[4, 0], 0],
  // Routes and their edges (CUDA on sm_90; the CPU checks the same shapes). Rows kernel at 8192 floats (the cluster
  // threshold), cluster rows just above it (one block) and with 5/9 and 16-block clusters, a row count of 13 and
  // odd lengths (1-element items); the largest forward slice (1M floats, 16 x 250 KB) whose backward falls back to
  // the split route, and dim null the same way.
  [[7, 8192], 0], [[3, 8196], 0], [[2, 262144], 0], [[13, 65537], 0], [[1, 1000000], 0],
  [[3, 200000], null], [[20000, 16], 0],
  // Column view (split route, outer > 1): last dims with 1, 2 and 3 channels, aligned and odd element counts, a very
  // tall last dim, 1024 channels (one tile), 1025 (five tiles, rows repeated to whole 16-byte items), folded middle
  // dims, many partials per channel (the finalize's whole-block group), and outer 64/65 on either side of the
  // short-column kernel.
  [[4099, 1], 1], [[65536, 1], 1], [[50001, 2], 1], [[65536, 2], 1], [[100003, 3], 1],
  [[131072, 3], 1], [[700001, 3], 1], [[3000, 1024], 1], [[2000, 1025], 1], [[4096, 300], 1],
  [[200, 6, 5], 1], [[70, 64, 40], 1], [[20, 4, 3000], 1], [[64, 33, 3], 1], [[65, 33, 3], 1],
  // CPU short rows (outer 1, rows under 32: groups of four channels, expanded blocks, chunk edges, streamed when
  // >= 4 MB, a group of 1-3 at the end) and the last dim of a tall matrix split into row parts.
  [[40001, 1], 0], [[40001, 2], 0], [[40001, 3], 0], [[40001, 5], 0], [[40001, 13], 0],
  [[40001, 16], 0], [[40001, 27], 0], [[40001, 31], 0], [[300007, 13], 0], [[262147, 16], 0],
  [[4097, 1000], 1], [[4096, 1024], 1], [[8, 512, 9], 1],
];

/** Every case: the float32 shapes, then in bfloat16 the same shapes plus a column-mode reduction split into parts,
 *  outputs large enough (>= 4 MB) for the streaming stores, aligned and not, and every short row length. */
export function nativeWeightNormCases(): NativeCase[] {
  const bfloat16Extra: Array<[number[], number | null]> = [
    [[100000, 3], 1], [[70000, 2, 5], 1], [[16, 140000], 0], [[1500, 1401], 0], [[262144, 16], 0], [[262144, 8], 1],
  ];
  for (let inner = 1; inner < 32; inner++) bfloat16Extra.push([[40001, inner], 0]);
  return [
    ...float32Shapes.map(([shape, dim]) => caseOf(shape, dim)),
    ...[...float32Shapes, ...bfloat16Extra].map(([shape, dim]) => caseOf(shape, dim, true)),
  ];
}

const reduceSize = (layout: ChannelLayout) => layout.outer * layout.inner;

interface CaseInputs {
  v: Float64Array;
  dw: Float64Array;
  g: Float64Array;
  zeroedChannel: number;
  scaledChannel: number;
  scale: number;
}

/** The inputs of case `index`: the normals of its seeds, edited as the native test edits them. */
function caseInputs(c: NativeCase, seed: number, layout: ChannelLayout, source: InputSource): CaseInputs {
  const count = c.shape.reduce((a, b) => a * b, 1);
  let v = new Float64Array(source.normal(count, seed));
  let dw = new Float64Array(source.normal(count, seed + 1));
  const g = new Float64Array(source.normal(layout.channels, seed + 2));
  let zeroedChannel = -1;
  let scaledChannel = -1;
  let scale = 0;
  // One all-zero channel: the eps floor must keep every output finite. In bfloat16 also one channel scaled to norm
  // eps/2: the floor is active there too, with v nonzero (the second term of dv would otherwise be visible).
  if (layout.channels > (c.bfloat16 ? 3 : 2) && reduceSize(layout) > 0) {
    zeroedChannel = 1;
    if (c.bfloat16) {
      scaledChannel = 2;
      scale = Math.fround((0.5 * kEps) / Math.sqrt(channelDot(v, v, layout, scaledChannel)));
    }
  }
  for (let k = 0; k < layout.channels; k++) {
    if (k !== zeroedChannel && k !== scaledChannel) continue;
    for (const index of channelIndices(layout, k)) v[index] = k === zeroedChannel ? 0 : Math.fround(v[index]! * scale);
  }
  if (c.bfloat16) {
    v = new Float64Array(source.bfloat16(new Float32Array(v)));
    dw = new Float64Array(source.bfloat16(new Float32Array(dw)));
  }
  return { v, dw, g, zeroedChannel, scaledChannel, scale };
}

/** What the native test recomputes from its own copy of the inputs, to know that it holds the same numbers. */
export function inputChecksum(v: ArrayLike<number>, dw: ArrayLike<number>, g: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i]! * (1 + (i % 7));
  for (let i = 0; i < dw.length; i++) sum += dw[i]! * (1 + (i % 5));
  for (let k = 0; k < g.length; k++) sum += g[k]! * (1 + (k % 3));
  return sum;
}

/** Channels kept whole for a large case: the first three (the zeroed and scaled ones among them), the middle one
 *  and the last. */
function sampledChannels(layout: ChannelLayout): number[] {
  const wanted = [0, 1, 2, Math.floor(layout.channels / 2), layout.channels - 1];
  return [...new Set(wanted.filter((k) => k >= 0 && k < layout.channels))].sort((a, b) => a - b);
}

/** Elements kept of a sampled channel: its first 8, its last 8 and 8 spread between. */
function sampledElements(indices: number[]): number[] {
  if (indices.length <= 24) return indices;
  const picked = new Set<number>();
  for (let i = 0; i < 8; i++) {
    picked.add(indices[i]!);
    picked.add(indices[indices.length - 1 - i]!);
    picked.add(indices[Math.floor(((i + 1) * indices.length) / 9)]!);
  }
  return [...picked].sort((a, b) => a - b);
}

export class Writer {
  private bytes = new Uint8Array(1 << 16);
  private view = new DataView(this.bytes.buffer);
  length = 0;
  private room(n: number): number {
    if (this.length + n > this.bytes.length) {
      const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.length + n));
      grown.set(this.bytes);
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  ascii(text: string) {
    const at = this.room(text.length);
    for (let i = 0; i < text.length; i++) this.bytes[at + i] = text.charCodeAt(i);
  }
  // room() first: it may replace the view.
  u32(x: number) {
    const at = this.room(4);
    this.view.setUint32(at, x, true);
  }
  u16(x: number) {
    const at = this.room(2);
    this.view.setUint16(at, x, true);
  }
  i32(x: number) {
    const at = this.room(4);
    this.view.setInt32(at, x, true);
  }
  i64(x: number) {
    const at = this.room(8);
    this.view.setBigInt64(at, BigInt(x), true);
  }
  u64(x: number) {
    const at = this.room(8);
    this.view.setBigUint64(at, BigInt(x), true);
  }
  f32(x: number) {
    const at = this.room(4);
    this.view.setFloat32(at, x, true);
  }
  f64(x: number) {
    const at = this.room(8);
    this.view.setFloat64(at, x, true);
  }
  result(): Uint8Array { return this.bytes.slice(0, this.length); }
}

/** The fixture file's bytes. */
export function nativeWeightNormFixture(source: InputSource): Uint8Array {
  const cases = nativeWeightNormCases();
  const out = new Writer();
  out.ascii(kMagic);
  out.u32(cases.length);
  cases.forEach((c, index) => {
    const seed = 1000 + 3 * index;
    const layout = channelLayout(c.shape, c.dim);
    const inputs = caseInputs(c, seed, layout, source);
    const { v, dw, g } = inputs;
    const full = v.length <= kFullCaseElements;
    out.u32(c.shape.length);
    for (const d of c.shape) out.i64(d);
    out.i32(c.dim === null ? -1 : c.dim);
    out.u32((c.bfloat16 ? 1 : 0) | (full ? 2 : 0));
    out.u64(seed);
    out.i64(inputs.zeroedChannel);
    out.i64(inputs.scaledChannel);
    out.f32(inputs.scale);
    out.f64(kEps);
    out.f64(inputChecksum(v, dw, g));
    const channels = full ? Array.from({ length: layout.channels }, (_, k) => k) : sampledChannels(layout);
    const elements: Array<[number, number, number]> = [];
    out.u32(channels.length);
    for (const k of channels) {
      const channel = weightNormChannel(v, g, dw, layout, k, kEps);
      // Error scales, per channel (a scale over the whole tensor would let an error in one channel hide behind
      // another's large values: a zero channel's dv is g/eps·dw, ~1e12). w: the channel's largest |w|. dv: its
      // largest term, since the two terms cancel (a 1-element channel gives dv = 0). dg: ‖dw_k‖, which bounds |dg|
      // and the rounding of its float32 sum (Cauchy-Schwarz).
      let wScale = 0;
      let dvScale = 0;
      const indices = channelIndices(layout, k);
      const kept = new Set(full ? indices : sampledElements(indices));
      for (const e of indices) {
        const w = normalizedWeight(v[e]!, g[k]!, channel);
        const [term1, term2] = directionGradientTerms(dw[e]!, v[e]!, channel);
        wScale = Math.max(wScale, Math.abs(w));
        dvScale = Math.max(dvScale, Math.abs(term1), Math.abs(term2));
        if (kept.has(e)) elements.push([e, w, term1 - term2]);
      }
      out.u32(k);
      for (const x of [channel.norm, channel.dg, wScale, dvScale, Math.sqrt(channelDot(dw, dw, layout, k))]) out.f64(x);
    }
    elements.sort((a, b) => a[0] - b[0]);
    out.u32(elements.length);
    for (const [e, w, dv] of elements) {
      out.u32(e);
      out.f64(w);
      out.f64(dv);
    }
  });
  return out.result();
}
