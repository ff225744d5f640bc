// The Gaussian KL term of a variational autoencoder's evidence lower bound (Kingma & Welling, 2014, appendix B):
// KL(N(μ, σ²) ‖ N(0, 1)) = −½ (1 + log σ² − μ² − σ²) per latent dimension, with the encoder's log-variance as
// input (σ² = exp(logVar) is positive for any real output and needs no clamp). Composed from the differentiable
// tensor ops (exp, sub, mul, the reductions), so it runs on every device those run on and its backward is theirs:
// dμ = μ, dlogVar = ½(exp(logVar) − 1) per element.
import { rangeError, shapeText, typeError } from './errors.js';
import { exp, mul, sub, add } from './pointwise.js';
import { mean, sum } from './reduce.js';
import { handleOf, Tensor } from './tensor.js';
import type { Reduction } from './losses.js';

export interface GaussianKlOptions {
  /** 'mean' (default) over every element, 'sum' over every element, or 'none' (one KL per latent dimension). */
  reduction?: Reduction;
}

const REDUCTIONS: readonly Reduction[] = ['mean', 'sum', 'none'];

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
 * Float32 limits: exp(logVar) overflows beyond logVar ≈ 88.7 (the KL is then Infinity); for logVar near 0 the
 * term exp(logVar) − 1 − logVar ≈ logVar²/2 is computed with an absolute error of a few 2^-24.
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
  // (exp(logVar) − logVar) − 1 first: both terms are ≥ 1 there, so the one cancellation is against an exact 1.
  const varianceTerm = sub(sub(exp(logVar), logVar), 1);
  const perElement = mul(add(varianceTerm, mul(mu, mu)), 0.5);
  if (reduction === 'none') return perElement;
  return reduction === 'sum' ? sum(perElement) : mean(perElement);
}
