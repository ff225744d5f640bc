// bfloat16 rounding by arithmetic (not by bit manipulation, which is how the library does it): the float32 value
// rounded to 8 significant bits, ties to even, with float32's exponent range (subnormals below 2^-126).
export function roundToBfloat16(value: number): number {
  const x = Math.fround(value);
  if (!Number.isFinite(x) || x === 0) return x; // NaN, ±Infinity, ±0 stay as they are
  const magnitude = Math.abs(x);
  let exponent = Math.floor(Math.log2(magnitude));
  if (2 ** exponent > magnitude) exponent -= 1; // log2 may round up just below a power of two
  if (2 ** (exponent + 1) <= magnitude) exponent += 1;
  const ulp = 2 ** (Math.max(exponent, -126) - 7);
  const scaled = magnitude / ulp; // exact: a float32 divided by a power of two
  const floor = Math.floor(scaled);
  const remainder = scaled - floor;
  const rounded = remainder > 0.5 || (remainder === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
  const result = rounded * ulp;
  // The largest bfloat16 is (2 − 2^-7)·2^127; anything that rounds beyond it overflows.
  return Math.sign(x) * (result >= 2 ** 128 ? Infinity : result);
}

export function roundAllToBfloat16(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values, roundToBfloat16);
}

const wordView = new DataView(new ArrayBuffer(4));

/** The float32 whose bit pattern is `bits`. */
export function float32OfBits(bits: number): number {
  wordView.setUint32(0, bits >>> 0);
  return wordView.getFloat32(0);
}

/** The bit pattern of Math.fround(value). */
export function bitsOfFloat32(value: number): number {
  wordView.setFloat32(0, value);
  return wordView.getUint32(0);
}

/** The bfloat16 bits a float32 (given by its bits) converts to: roundToBfloat16's value, whose float32 pattern has
 *  a zero low half, so its high half is the bfloat16. A NaN gives the quiet NaN of its sign (0x7fc0 | sign): IEEE
 *  754 §6.2.3 only recommends keeping the payload, so a kernel may keep it or not, and a comparison of NaNs looks
 *  at the class and the sign alone (isBfloat16QuietNaN). */
export function bfloat16BitsOf(float32Bits: number): number {
  const x = float32OfBits(float32Bits);
  const sign = (float32Bits >>> 16) & 0x8000;
  if (Number.isNaN(x)) return sign | 0x7fc0;
  const bits = bitsOfFloat32(roundToBfloat16(x));
  if ((bits & 0xffff) !== 0) throw new RangeError(`roundToBfloat16(${x}) is not a bfloat16 value`);
  return bits >>> 16;
}

/** Whether bfloat16 `bits` is a quiet NaN (all exponent bits set, the top mantissa bit set). */
export function isBfloat16QuietNaN(bits: number): boolean {
  return (bits & 0x7fc0) === 0x7fc0;
}
