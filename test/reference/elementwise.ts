// Float64 references of the elementwise kernels whose float32 results are not exact (cpu/elementwise.h): those
// that round once or twice (axpby, the tanh pair). The exact ones (add, multiply, fill, ReLU, the bias add) are
// checked bitwise against the same float32 operation by the native test itself.

/** alpha·x + beta·y. */
export function axpby(alpha: number, x: ArrayLike<number>, beta: number, y: ArrayLike<number>): Float64Array {
  return Float64Array.from(x, (v, i) => alpha * v + beta * y[i]!);
}

export function tanhForward(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(x, Math.tanh);
}

/** The backward of y = tanh(x) from the saved output: dx = dy·(1 − y²). */
export function tanhBackward(dy: ArrayLike<number>, y: ArrayLike<number>): Float64Array {
  return Float64Array.from(dy, (g, i) => g * (1 - y[i]! * y[i]!));
}
