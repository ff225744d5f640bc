// The float32 -> bfloat16 conversion's expected bits for the native kernel tests, from the one reference
// (bfloat16.ts, rounding by arithmetic): scripts/make_native_reference.mjs writes them to
// test/fixtures/native_reference/bfloat16.bin, test/native/ops_cases.cc (test_convert) converts the stored inputs
// with each backend's kernel and compares bit for bit, and test/native-reference.test.ts checks that the committed
// file is what this module produces today.
//
// The inputs are stored (they are bit patterns, not draws of the library's generator), grouped in classes so that a
// failure names what broke: hand-picked cases, every exponent field with the low halves around a tie, zeros and
// infinities, NaNs, and a seeded random sample.
//
// Format (little-endian): "WNBF1601", uint32 class count, then per class
//   uint32 name length, name (ASCII), uint32 entry count, per entry: uint32 float32 bits, uint16 bfloat16 bits.
// An expected NaN (0x7fc0 | sign) stands for any quiet NaN of that sign (bfloat16.ts, bfloat16BitsOf).
import { bfloat16BitsOf } from './bfloat16.js';
import { Writer } from './native-fixtures.js';

const kMagic = 'WNBF1601';
/** Random sample size: odd, so that the whole input set (one buffer natively) ends in a partial vector. */
export const kRandomSamples = 16387;
const kRandomSeed = 0x5eed_bf16;

export interface ConvertClass {
  name: string;
  inputs: number[]; // float32 bit patterns
}

/** Cases whose result follows from the definition by hand (IEEE 754 §4.3.1, roundTiesToEven, with float32's
 *  exponent range): the fixture writer refuses to run when the reference disagrees with one. */
export const handPickedConversions: Array<{ in: number; out: number; what: string }> = [
  { in: 0x3f800000, out: 0x3f80, what: '1' },
  { in: 0x3f808000, out: 0x3f80, what: '1 + 2^-8 (a tie) rounds down to even 1' },
  { in: 0x3f818000, out: 0x3f82, what: '1 + 3*2^-8 (a tie) rounds up to even 1 + 2^-6' },
  { in: 0x3f808001, out: 0x3f81, what: 'just above a tie rounds up' },
  { in: 0x3f807fff, out: 0x3f80, what: 'just below a tie rounds down' },
  { in: 0xbf818000, out: 0xbf82, what: '-(1 + 3*2^-8) rounds to even, away from 0' },
  { in: 0x00000000, out: 0x0000, what: '+0' },
  { in: 0x80000000, out: 0x8000, what: '-0 keeps its sign' },
  { in: 0x7f800000, out: 0x7f80, what: '+inf' },
  { in: 0xff800000, out: 0xff80, what: '-inf' },
  { in: 0x7f7f0000, out: 0x7f7f, what: 'the largest finite bfloat16' },
  { in: 0x7f7f7fff, out: 0x7f7f, what: 'just below the overflow threshold stays finite' },
  { in: 0x7f7f8000, out: 0x7f80, what: 'the overflow threshold (a tie, odd below) overflows to inf' },
  { in: 0x7f7fffff, out: 0x7f80, what: 'FLT_MAX overflows to inf' },
  { in: 0xff7fffff, out: 0xff80, what: '-FLT_MAX overflows to -inf' },
  { in: 0x00000001, out: 0x0000, what: 'the smallest subnormal rounds to +0' },
  { in: 0x80000001, out: 0x8000, what: 'the smallest negative subnormal rounds to -0' },
  { in: 0x00010000, out: 0x0001, what: 'the smallest bfloat16 subnormal is exact' },
  { in: 0x00008000, out: 0x0000, what: 'half the smallest bfloat16 subnormal (a tie) rounds to even 0' },
  { in: 0x00018000, out: 0x0002, what: 'a subnormal tie with odd below rounds up' },
  { in: 0x007fffff, out: 0x0080, what: 'the largest subnormal rounds up to the smallest normal' },
  { in: 0x80418000, out: 0x8042, what: 'a negative subnormal tie rounds to even' },
  { in: 0x7fc00000, out: 0x7fc0, what: 'the quiet NaN' },
  { in: 0xffc00000, out: 0xffc0, what: 'a negative quiet NaN keeps its sign' },
];

/** A seeded stream of uniform numbers in [0, 1) with 32 random bits each (the library's uniformStream, ts/rl/random.ts:
 *  the script passes dist/'s, the test ts/'s), so that the sample is the same on every machine and run. */
export type UniformStream = (seed: number) => () => number;

export function nativeConvertClasses(uniformStream: UniformStream): ConvertClass[] {
  // Every exponent field 0..254 (subnormals at 0) of either sign, with kept mantissas 0 (even), 1 (odd) and 0x7f
  // (odd, all ones: rounding up carries into the next binade, and from exponent 254 to infinity), and low halves on
  // either side of a tie and on it.
  const exponents: number[] = [];
  for (const sign of [0, 0x80000000])
    for (let exponent = 0; exponent < 255; exponent++)
      for (const kept of [0x00, 0x01, 0x7f])
        for (const low of [0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff])
          exponents.push((sign | (exponent << 23) | (kept << 16) | low) >>> 0);
  const special = [0x00000000, 0x80000000, 0x7f800000, 0xff800000];
  // NaNs: quiet and signalling of either sign; patterns whose high half alone reads as inf (0x7f800001, 0x7f808000)
  // or would carry into the sign (0x7fffffff) or past it (0xffffffff) under a plain add-and-truncate.
  const nans: number[] = [];
  for (const sign of [0, 0x80000000])
    for (const magnitude of [0x7fc00000, 0x7f800001, 0x7f808000, 0x7f8fffff, 0x7fbfffff, 0x7fffffff, 0x7fc08000])
      nans.push((sign | magnitude) >>> 0);
  // Random: uniform bit patterns (every class, NaNs included), float32 normals (Box-Muller from the same stream) and
  // patterns on a tie or one bit off one.
  const uniform = uniformStream(kRandomSeed);
  const next = () => uniform() * 2 ** 32; // exact: 32 bits over a power of two
  const view = new DataView(new ArrayBuffer(4));
  const random: number[] = [];
  for (let i = 0; i < kRandomSamples; i++) {
    let bits = next();
    if (i % 3 === 1) {
      const u = (next() + 1) / 2 ** 32;
      view.setFloat32(0, Math.sqrt(-2 * Math.log(u)) * Math.cos((2 * Math.PI * bits) / 2 ** 32));
      bits = view.getUint32(0);
    }
    if (i % 3 === 2) bits = ((bits & 0xffff0000) | (0x8000 + (bits & 3) - 1)) >>> 0; // low half 7fff, 8000, 8001, 8002
    random.push(bits);
  }
  return [
    { name: 'hand-picked', inputs: handPickedConversions.map((c) => c.in) },
    { name: 'every exponent, kept mantissa even/odd/all ones, low half around a tie', inputs: exponents },
    { name: 'zeros and infinities', inputs: special },
    { name: 'NaN', inputs: nans },
    { name: 'seeded random', inputs: random },
  ];
}

/** The fixture file's bytes. */
export function nativeBfloat16Fixture(uniformStream: UniformStream): Uint8Array {
  for (const c of handPickedConversions) {
    const got = bfloat16BitsOf(c.in);
    if (got !== c.out)
      throw new Error(`bfloat16 reference: 0x${c.in.toString(16)} -> 0x${got.toString(16)}, want 0x${c.out.toString(16)} (${c.what})`);
  }
  const classes = nativeConvertClasses(uniformStream);
  const out = new Writer();
  out.ascii(kMagic);
  out.u32(classes.length);
  for (const c of classes) {
    out.u32(c.name.length);
    out.ascii(c.name);
    out.u32(c.inputs.length);
    for (const bits of c.inputs) {
      out.u32(bits);
      out.u16(bfloat16BitsOf(bits));
    }
  }
  return out.result();
}
