// Float64 reference of the GEMM with its epilogue (include/weightnorm/gemm.h): out = op(a)·op(b) scaled by
// row_scale[i]·column_scale[j] (the weight-norm scale g/‖v‖ of a row or column), plus row_bias[i] and
// column_bias[j], minus subtract_coefficient[i]·subtract_matrix (or subtract_matrix alone), plus beta·out0. Each
// element comes with the sum of |terms| behind it: the scale of its float32 rounding bound.

export interface GemmEpilogueInputs {
  rowScale: ArrayLike<number>;
  columnScale: ArrayLike<number>;
  rowBias: ArrayLike<number>;
  columnBias: ArrayLike<number>;
  subtractCoefficient: ArrayLike<number>;
  subtractMatrix: ArrayLike<number>;
  out0: ArrayLike<number>;
}

/** The epilogue's fields, as bits of a mask: which of the inputs above take part. */
export const GemmField = {
  rowScale: 1, columnScale: 2, rowBias: 4, columnBias: 8, subtract: 16, subtractNoCoefficient: 32, beta: 64,
} as const;

/** Element (i, j) of the epilogue's output for op(a) = A [m, k] and op(b) = B [k, n], both row-major. */
export function gemmElement(
  A: ArrayLike<number>, B: ArrayLike<number>, n: number, k: number, e: GemmEpilogueInputs, fields: number, beta: number,
  i: number, j: number,
): { want: number; magnitude: number } {
  let product = 0;
  let productMagnitude = 0;
  for (let q = 0; q < k; q++) {
    const term = A[i * k + q]! * B[q * n + j]!;
    product += term;
    productMagnitude += Math.abs(term);
  }
  let scale = 1;
  if (fields & GemmField.rowScale) scale *= e.rowScale[i]!;
  if (fields & GemmField.columnScale) scale *= e.columnScale[j]!;
  let want = product * scale;
  let magnitude = productMagnitude * Math.abs(scale);
  const add = (term: number) => {
    want += term;
    magnitude += Math.abs(term);
  };
  const x = i * n + j;
  if (fields & GemmField.rowBias) add(e.rowBias[i]!);
  if (fields & GemmField.columnBias) add(e.columnBias[j]!);
  if (fields & GemmField.subtract) add(-e.subtractCoefficient[i]! * e.subtractMatrix[x]!);
  if (fields & GemmField.subtractNoCoefficient) add(-e.subtractMatrix[x]!);
  if (fields & GemmField.beta) add(beta * e.out0[x]!);
  return { want, magnitude };
}
