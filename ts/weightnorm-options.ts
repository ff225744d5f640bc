// The weight-norm option rules, written once: which axis keeps one norm per index (dim), the floor of the norm (eps)
// and its default, and how a dim lays v out as [outer, channels, inner]. ops, functional, the nn layers' weightNorm
// config, init and optim all call these, so the same bad value gets the same error class and wording everywhere:
//   dim: not an integer (and not null) -> TypeError; an integer outside [-rank, rank - 1] -> RangeError.
//   eps: not a positive finite number (a string, NaN, ±Infinity, 0, a negative) -> TypeError;
//        positive and finite but below MIN_EPS -> RangeError.
// Every message names the function and the parameter, what was expected and what was received.
import { rangeError, typeError } from './errors.js';

/** Default floor of ‖v‖: a zero channel then gives w = 0 and finite gradients instead of NaN. */
export const DEFAULT_EPS = 1e-12;
/**
 * Smallest eps accepted: the kernels work in float32, where a zero channel's g/eps must stay finite (it overflows
 * for |g| > ~3e8 at this bound, far beyond any trained gain) and eps itself must not round to 0.
 */
export const MIN_EPS = 1e-30;

/**
 * The kept axis of a tensor of rank `rank`: an integer, negative counting from the end, or null for one norm over
 * the whole tensor. Returns it non-negative (or null). `parameter` is how the caller's user spells it
 * ("options.dim", "options.weightNorm.dim").
 */
export function checkWeightNormDim(where: string, parameter: string, dim: unknown, rank: number): number | null {
  if (dim === null) return null;
  if (typeof dim !== 'number' || !Number.isInteger(dim)) throw typeError(`${where}: ${parameter}`, 'an integer or null', dim);
  if (dim < -rank || dim >= rank) {
    throw rangeError(`${where}: ${parameter}`, `an axis in [${-rank}, ${rank - 1}] for a tensor of rank ${rank}`, String(dim));
  }
  return dim < 0 ? dim + rank : dim;
}

/** The floor of ‖v‖: a positive finite number >= MIN_EPS. */
export function checkWeightNormEps(where: string, parameter: string, eps: unknown): number {
  if (typeof eps !== 'number' || !Number.isFinite(eps) || eps <= 0) {
    throw typeError(`${where}: ${parameter}`, 'a positive finite number', eps);
  }
  if (eps < MIN_EPS) {
    throw rangeError(`${where}: ${parameter}`, `a positive finite number >= ${MIN_EPS} (float32 must hold g/eps)`, String(eps));
  }
  return eps;
}

/**
 * [outer, channels, inner] of a tensor of this shape normalized over every axis but `dim` (a checked, non-negative
 * dim or null): the kernels read v in place as that 3-D layout, one norm per channel, nothing transposed.
 */
export function weightNormLayout(shape: readonly number[], dim: number | null): [number, number, number] {
  const product = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);
  if (dim === null) return [1, 1, product(shape)];
  return [product(shape.slice(0, dim)), shape[dim]!, product(shape.slice(dim + 1))];
}
