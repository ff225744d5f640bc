// The Gaussian KL term of a variational autoencoder's evidence lower bound (Kingma & Welling, 2014, appendix B):
// KL(N(μ, σ²) ‖ N(0, 1)) = −½ (1 + log σ² − μ² − σ²) per latent dimension, with the encoder's log-variance as
// input (σ² = exp(logVar) is positive for any real output and needs no clamp). Composed from the differentiable
// tensor ops (exp, mul, add, where, the reductions), so it runs on every device those run on and its backward is theirs:
// dμ = μ, dlogVar = ½(exp(logVar) − 1) per element (near logVar = 0 through a series, see expMinusOneMinus).
import { rangeError, shapeText, typeError } from './errors.js';
import { abs, add, clamp, exp, lt, mul, sub, where } from './pointwise.js';
import { mean, sum } from './reduce.js';
import { handleOf, Tensor } from './tensor.js';
import type { Reduction } from './losses.js';

export interface GaussianKlOptions {
  /** 'mean' (default) over every element, 'sum' over every element, or 'none' (one KL per latent dimension). */
  reduction?: Reduction;
}

const REDUCTIONS: readonly Reduction[] = ['mean', 'sum', 'none'];

/** Below this |t|, e^t − 1 − t comes from its Taylor series; above it from exp (cancelling at most a factor ~2.5). */
const SERIES_LIMIT = 0.5;
/** 1/n! for n = 9 down to 2: the series Σ t^n/n! truncated after n = 9 is within 2^-24 relative for |t| ≤ 0.5. */
const SERIES = [1 / 362880, 1 / 40320, 1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2];

/**
 * e^t − 1 − t per element, differentiable, accurate to a few float32 roundings relative to itself for every t.
 * exp(t) − 1 − t directly would cancel near 0 (for t ≈ 1e-3 the result is 5e-7 of the terms, so float32 leaves
 * 3 digits), and so would its gradient exp(t)·dy − dy. The series branch gets t clamped to the limit, so its
 * value and gradient stay finite where it is not selected.
 */
function expMinusOneMinus(t: Tensor): Tensor {
  const small = clamp(t, -SERIES_LIMIT, SERIES_LIMIT);
  let series: Tensor | number = SERIES[0]!;
  for (const coefficient of SERIES.slice(1)) series = add(mul(series, small), coefficient);
  const nearZero = mul(series, mul(small, small));
  const direct = sub(sub(exp(t), t), 1);
  return where(lt(abs(t), SERIES_LIMIT), nearZero, direct);
}

function checkLatent(where: string, value: unknown): Tensor {
  handleOf(value, where);
  const t = value as Tensor;
  if (t.dtype !== 'float32') throw typeError(where, "a float32 tensor (convert with t.cast('float32'))", t);
  return t;
}

/**
 * KL divergence of the diagonal Gaussian N(mu, exp(logVar)) from the standard normal, per element:
 * ½ (μ² + exp(logVar) − 1 − logVar) ≥ 0. mu and logVar have the same shape (usually [batch, latent]).
 * reduction 'none' keeps that shape ([batch, latent]: sum over axis 1 for the KL of each example), 'sum' and
 * 'mean' (the default, as every loss) give shape [1]. A VAE's per-example bound wants the sum over latent
 * dimensions: `gaussianKl(mu, logVar, { reduction: 'sum' })` divided by the batch size is its batch mean.
 * Float32 limits: exp(logVar) overflows beyond logVar ≈ 88.7 (the KL is then Infinity). Near logVar = 0 the
 * variance term and its gradient keep full relative precision (see expMinusOneMinus).
 */
export function gaussianKl(mu: Tensor, logVar: Tensor, options?: GaussianKlOptions): Tensor {
  const where = 'gaussianKl';
  checkLatent(`${where}: mu`, mu);
  checkLatent(`${where}: logVar`, logVar);
  if (options !== undefined && (typeof options !== 'object' || options === null || Array.isArray(options))) {
    throw typeError(`${where}: options`, 'an object like { reduction }', options);
  }
  for (const key of Object.keys(options ?? {})) {
    if (key !== 'reduction') throw typeError(`${where}: options`, 'only the key reduction', key);
  }
  const reduction = options?.reduction ?? 'mean';
  if (!REDUCTIONS.includes(reduction)) throw typeError(`${where}: options.reduction`, "'mean', 'sum' or 'none'", reduction);
  if (logVar.device !== mu.device) throw typeError(`${where}: logVar`, `a tensor on '${mu.device}' like mu`, logVar);
  if (mu.shape.length !== logVar.shape.length || mu.shape.some((d, i) => d !== logVar.shape[i])) {
    throw rangeError(`${where}: logVar`, `mu's shape ${shapeText(mu.shape)}`, shapeText(logVar.shape));
  }
  if (reduction === 'mean' && mu.size === 0) throw rangeError(`${where}: mu`, "at least one element for reduction 'mean'", shapeText(mu.shape));
  const perElement = mul(add(expMinusOneMinus(logVar), mul(mu, mu)), 0.5);
  if (reduction === 'none') return perElement;
  return reduction === 'sum' ? sum(perElement) : mean(perElement);
}
