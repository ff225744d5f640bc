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
