// Error helpers: every message names the function and parameter, what was expected and what was received.

/** Thrown when a tensor is used after dispose(). */
export class DisposedTensorError extends Error {
  override name = 'DisposedTensorError';
}

/** A short description of any JS value for error messages ("number[] of length 3", "Tensor [2, 3] on cpu"). */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : `the number ${value}`;
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value)}`;
  if (typeof value === 'bigint') return `the bigint ${value}`;
  if (typeof value === 'boolean') return `the boolean ${value}`;
  if (typeof value === 'function') return 'a function';
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as unknown as ArrayLike<unknown>).length}`;
  const name = (value as object).constructor?.name;
  if (name === 'Tensor') return String(value);
  return name && name !== 'Object' ? `a ${name}` : 'an object';
}

/** A shape as messages write it: [2, 3]. */
export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function typeError(where: string, expected: string, received: unknown): TypeError {
  return new TypeError(`${where}: expected ${expected}, received ${describe(received)}`);
}

export function rangeError(where: string, expected: string, received: string): RangeError {
  return new RangeError(`${where}: expected ${expected}, received ${received}`);
}
