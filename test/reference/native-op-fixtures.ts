// The native kernel tests' float64 expected values for the op families other than weight norm, from the one
// TypeScript reference of each op (conv.ts, nn.ts): scripts/make_native_reference.mjs writes one file per family to
// test/fixtures/native_reference/<family>.bin, test/native/<family>_cases.cc reads it (test/native/op_fixture.h),
// and test/native-reference.test.ts checks that the committed files are what these functions produce today.
//
// Inputs are not stored: each is `count` standard normals of the library's seeded generator (randn([count],
// { seed }), cpu::fill_normal natively), with a checksum so that both sides know they hold the same numbers.
// Outputs of up to kFullOutputElements elements are stored whole; larger ones as kSampledElements elements (the
// first and last quarter of them at either end, the rest spread evenly between), each with the sum of |terms|
// behind it (the scale of its float32 rounding bound).
//
// Format (little-endian): "WNOPS001", uint32 case count, then per case
//   uint32 parameter count, int64 parameters[] (the op's geometry, in the order its family's cases list them),
//   uint32 input count, per input: uint64 seed, uint64 element count, float64 checksum,
//   uint32 output count, per output: uint64 element count, uint32 stored count,
//     per stored element: uint32 flat index, float64 expected value, float64 sum of |terms|.
import { convBackwardReference, convReference, type ConvReferenceGeometry } from './conv.js';
import { Writer, type InputSource } from './native-fixtures.js';
import { globalAvgPool, globalAvgPoolBackward, maxPool2d, maxPool2dBackward } from './nn.js';

export const kFullOutputElements = 2048;
export const kSampledElements = 512;
const kMagic = 'WNOPS001';

/** The checksum both sides compute over one input, in this order. */
export function opInputChecksum(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]! * (1 + (i % 7));
  return sum;
}

/** How many elements an output stores: all up to `full`, else `sampled` of them. */
export interface Storage {
  full: number;
  sampled: number;
}

/** The flat indices stored of an output of `count` elements. */
export function storedIndices(count: number, storage: Storage = { full: kFullOutputElements, sampled: kSampledElements }): number[] {
  if (count <= storage.full) return Array.from({ length: count }, (_, i) => i);
  const picked = new Set<number>();
  const end = storage.sampled / 4;
  for (let i = 0; i < end; i++) {
    picked.add(i);
    picked.add(count - 1 - i);
  }
  const spread = storage.sampled - 2 * end;
  for (let i = 0; i < spread; i++) picked.add(end + Math.floor(((i + 0.5) * (count - 2 * end)) / spread));
  return [...picked].sort((a, b) => a - b);
}

export interface OpOutput {
  want: ArrayLike<number>;
  magnitude: ArrayLike<number>;
  storage?: Storage; // this output's own, in place of its file's
}
export interface OpCase {
  parameters: number[];
  inputs: Array<{ seed: number; values: Float32Array }>;
  outputs: OpOutput[];
}

export function writeCases(cases: OpCase[], storage?: Storage): Uint8Array {
  const out = new Writer();
  out.ascii(kMagic);
  out.u32(cases.length);
  for (const c of cases) {
    out.u32(c.parameters.length);
    for (const p of c.parameters) out.i64(p);
    out.u32(c.inputs.length);
    for (const input of c.inputs) {
      out.u64(input.seed);
      out.u64(input.values.length);
      out.f64(opInputChecksum(input.values));
    }
    out.u32(c.outputs.length);
    for (const output of c.outputs) {
      const indices = storedIndices(output.want.length, output.storage ?? storage);
      out.u64(output.want.length);
      out.u32(indices.length);
      for (const i of indices) {
        out.u32(i);
        out.f64(output.want[i]!);
        out.f64(output.magnitude[i]!);
      }
    }
  }
  return out.result();
}

export const normals = (source: InputSource, count: number, seed: number) =>
  count === 0 ? new Float32Array(0) : source.normal(count, seed);

// ---------------------------------------------------------------------------------------------------------------
// conv2d: parameters [batch, inChannels, inHeight, inWidth, outChannels, kernelHeight, kernelWidth, stride, padding,
// bias (0/1)], inputs x, w, bias, dy, outputs y, dx, dw, dbias (test/native/gemm_conv_cases.cc).

export const nativeConv2dCases: number[][] = [
  [2, 3, 8, 8, 4, 3, 3, 1, 1, 1], [3, 2, 9, 7, 5, 3, 3, 2, 1, 1],
  [2, 4, 6, 5, 3, 1, 1, 1, 0, 1], [2, 3, 7, 9, 2, 1, 1, 2, 0, 0],
  [1, 2, 5, 5, 3, 5, 5, 1, 0, 1], [4, 3, 11, 10, 6, 3, 2, 2, 0, 1],
  [5, 8, 16, 16, 16, 3, 3, 1, 1, 0], [2, 3, 4, 4, 2, 3, 3, 3, 2, 1],
  [9, 64, 32, 32, 8, 3, 3, 1, 1, 1], // more than one im2col group
  [0, 3, 8, 8, 4, 3, 3, 1, 1, 1], // empty batch: dw and dbias are zero
];

export function conv2dGeometry(parameters: number[]): ConvReferenceGeometry {
  const [batch, inChannels, height, width, outChannels, kh, kw, stride, padding] = parameters as [
    number, number, number, number, number, number, number, number, number,
  ];
  return {
    batch,
    inChannels,
    outChannels,
    groups: 1,
    inSize: [height, width],
    outSize: [Math.floor((height + 2 * padding - kh) / stride) + 1, Math.floor((width + 2 * padding - kw) / stride) + 1],
    kernel: [kh, kw],
    stride: [stride, stride],
    padding: [padding, padding],
    dilation: [1, 1],
  };
}

export function nativeConv2dFixture(source: InputSource): Uint8Array {
  return writeCases(
    nativeConv2dCases.map((parameters, index) => {
      const g = conv2dGeometry(parameters);
      const withBias = parameters[9] === 1;
      const seed = 5000 + 4 * index;
      const x = normals(source, g.batch * g.inChannels * g.inSize[0] * g.inSize[1], seed);
      const w = normals(source, g.outChannels * g.inChannels * g.kernel[0] * g.kernel[1], seed + 1);
      const bias = normals(source, g.outChannels, seed + 2);
      const dy = normals(source, g.batch * g.outChannels * g.outSize[0] * g.outSize[1], seed + 3);
      const abs = (values: ArrayLike<number>) => Float64Array.from(values, Math.abs);
      const y = convReference(x, w, withBias ? bias : null, g);
      const yMagnitude = convReference(abs(x), abs(w), withBias ? abs(bias) : null, g);
      const grads = convBackwardReference(dy, x, w, g);
      const magnitudes = convBackwardReference(abs(dy), abs(x), abs(w), g);
      return {
        parameters,
        inputs: [
          { seed, values: x },
          { seed: seed + 1, values: w },
          { seed: seed + 2, values: bias },
          { seed: seed + 3, values: dy },
        ],
        outputs: [
          { want: y, magnitude: yMagnitude },
          { want: grads.dx, magnitude: magnitudes.dx },
          { want: grads.dw, magnitude: magnitudes.dw },
          { want: grads.dbias, magnitude: magnitudes.dbias },
        ],
      };
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// max_pool2d: parameters [planes, height, width, kernel, stride, ties (0/1), nans (0/1)], inputs x (as drawn: the
// edits below are made on both sides), dy, outputs y (exact: a maximum is one of the inputs; magnitude 0), dx.
// 2x2 stride 2 has a vectorized CPU path (4 windows a step, then one at a time): rows of 7 and 5 windows reach its
// tail, odd sizes leave an uncovered last row and column, NaNs and ties exercise its selection rule.

export const nativeMaxPool2dCases: number[][] = [
  [6, 8, 8, 2, 2, 0, 0], [4, 9, 7, 3, 2, 0, 0], [3, 6, 6, 3, 1, 1, 0], [5, 10, 9, 2, 3, 0, 0],
  [2, 8, 8, 2, 2, 1, 0], [3, 7, 11, 3, 2, 1, 0], [1, 5, 5, 5, 1, 0, 0], [64, 16, 16, 2, 2, 0, 0],
  [3, 10, 14, 2, 2, 1, 0], [2, 9, 11, 2, 2, 0, 0], [4, 28, 28, 2, 2, 1, 1], [3, 9, 9, 3, 2, 0, 1],
];

/** The pooling input as both sides edit it: ties put every value in {0, 1, 2} (comparisons of float32 values, exact
 *  on both sides), so many windows hold their maximum twice or more; nans make about one element in 12 NaN. */
export function maxPoolInput(drawn: Float32Array, ties: boolean, nans: boolean): Float32Array {
  const x = Float32Array.from(drawn);
  if (ties) for (let i = 0; i < x.length; i++) x[i] = x[i]! < -0.5 ? 0 : x[i]! < 0.5 ? 1 : 2;
  if (nans) for (let i = 0; i < x.length; i++) if ((i * 2654435761) % 12 === 5) x[i] = NaN;
  return x;
}

export function nativeMaxPool2dFixture(source: InputSource): Uint8Array {
  return writeCases(
    nativeMaxPool2dCases.map((parameters, index) => {
      const [planes, height, width, kernel, stride, ties, nans] = parameters as [number, number, number, number, number, number, number];
      const seed = 6000 + 2 * index;
      const outCount = planes * (Math.floor((height - kernel) / stride) + 1) * (Math.floor((width - kernel) / stride) + 1);
      const drawn = normals(source, planes * height * width, seed);
      const dy = normals(source, outCount, seed + 1);
      const x = maxPoolInput(drawn, ties === 1, nans === 1);
      const y = maxPool2d(new Float64Array(x), planes, height, width, kernel, stride);
      const { dx, magnitude } = maxPool2dBackward(dy, x, planes, height, width, kernel, stride);
      return {
        parameters,
        inputs: [
          { seed, values: drawn },
          { seed: seed + 1, values: dy },
        ],
        outputs: [
          { want: y, magnitude: new Float64Array(y.length) },
          { want: dx, magnitude },
        ],
      };
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// global_avg_pool: parameters [planes, size], inputs x, dy, outputs y (magnitude: mean |x|), dx (|dy| / size).

export const nativeGlobalAvgPoolCases: number[][] = [[1, 1], [7, 49], [64, 64], [3, 5000]];

export function nativeGlobalAvgPoolFixture(source: InputSource): Uint8Array {
  return writeCases(
    nativeGlobalAvgPoolCases.map((parameters, index) => {
      const [planes, size] = parameters as [number, number];
      const seed = 6100 + 2 * index;
      const x = normals(source, planes * size, seed);
      const dy = normals(source, planes, seed + 1);
      const abs = (values: ArrayLike<number>) => Float64Array.from(values, Math.abs);
      return {
        parameters,
        inputs: [
          { seed, values: x },
          { seed: seed + 1, values: dy },
        ],
        outputs: [
          { want: globalAvgPool(new Float64Array(x), planes, size), magnitude: globalAvgPool(abs(x), planes, size) },
          { want: globalAvgPoolBackward(dy, planes, size), magnitude: globalAvgPoolBackward(abs(dy), planes, size) },
        ],
      };
    }),
  );
}

/** Every op family's fixture file: its name under test/fixtures/native_reference/ and what writes it. */
export const nativeOpFixtures: Array<{ file: string; write: (source: InputSource) => Uint8Array }> = [
  { file: 'conv2d.bin', write: nativeConv2dFixture },
  { file: 'max_pool2d.bin', write: nativeMaxPool2dFixture },
  { file: 'global_avg_pool.bin', write: nativeGlobalAvgPoolFixture },
];
