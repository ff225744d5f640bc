// The benchmarks compare float32 results: a host array that is not float32 means a wrong dtype reached them.
import type { TensorArray } from 'weightnorm';

export function floats(values: TensorArray): Float32Array {
  if (!(values instanceof Float32Array)) throw new TypeError(`benchmark: expected float32 values, received a ${values.constructor.name}`);
  return values;
}
