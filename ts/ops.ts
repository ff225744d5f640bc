// Weight-norm ops (Salimans & Kingma, 2016, "Weight Normalization: A Simple Reparameterization to Accelerate
// Training of Deep Neural Networks", §2) and the plain GEMM, on float32 or bfloat16 tensors. Every argument is
// validated here before the native call (the dim and eps rules in weightnorm-options.ts). With bfloat16, the
// per-element tensors (v, w, dw, dv; matmul's operands and result) are bfloat16 while norms, gains and every sum
// stay float32: each output element is rounded once.
import { rangeError, typeError } from './errors.js';
import { native } from './native.js';
import { handleOf, Tensor, type DType } from './tensor.js';
import { checkWeightNormDim, checkWeightNormEps, DEFAULT_EPS } from './weightnorm-options.js';

export { DEFAULT_EPS, MIN_EPS } from './weightnorm-options.js';

export interface WeightNormOptions {
  /**
   * The axis that keeps one norm per index (the norm is over every other axis). Negative counts from the end;
   * null gives one norm for the whole tensor. Default 0 (one norm per output unit of a Linear or Conv weight).
   */
  dim?: number | null;
  /** Floor of ‖v‖ (default DEFAULT_EPS, 1e-12). A positive finite number >= MIN_EPS (1e-30). */
  eps?: number;
  /**
   * true (default): one fused kernel. false: the same result from separate primitive passes (norm reduction,
   * reciprocal and scale, multiply), as chaining ordinary tensor ops would give; for benchmarks and tests.
   */
  fused?: boolean;
}

export interface WeightNormResult {
  /** w = g · v / max(‖v‖, eps), the shape of v. */
  w: Tensor;
  /** max(‖v‖, eps) per index of dim: shape [v.shape[dim]] ([1] for dim null). Saved for the backward. */
  norm: Tensor;
}

export interface WeightNormGradients {
  /** ∂L/∂v = (g/‖v‖)·∂L/∂w − (g·∂L/∂g/‖v‖²)·v, the shape of v. */
  dv: Tensor;
  /** ∂L/∂g = (∂L/∂w · v)/‖v‖, the shape of g. */
  dg: Tensor;
}

function checkOptions(where: string, options: unknown, rank: number): { dim: number | null; eps: number; fused: boolean } {
  if (options === undefined) return { dim: rank === 0 ? null : 0, eps: DEFAULT_EPS, fused: true };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(`${where}: options`, 'an object like { dim, eps, fused }', options);
  }
  for (const key of Object.keys(options)) {
    if (!['dim', 'eps', 'fused'].includes(key)) throw typeError(`${where}: options`, 'only the keys dim, eps, fused', key);
  }
  const { dim = rank === 0 ? null : 0, eps = DEFAULT_EPS, fused = true } = options as WeightNormOptions;
  const axis = checkWeightNormDim(where, 'options.dim', dim, rank);
  checkWeightNormEps(where, 'options.eps', eps);
  if (typeof fused !== 'boolean') throw typeError(`${where}: options.fused`, 'a boolean', fused);
  return { dim: axis, eps, fused };
}

function checkChannelVector(where: string, parameter: string, t: Tensor, v: Tensor, dim: number | null): void {
  const channels = dim === null ? 1 : v.shape[dim]!;
  if (t.shape.length !== 1 || t.shape[0] !== channels) {
    const meaning = dim === null ? 'one value for dim null' : `one per index of v's dim ${dim}`;
    throw rangeError(`${where}: ${parameter}`, `shape [${channels}] (${meaning})`, `[${t.shape.join(', ')}]`);
  }
}

function checkFloat32(where: string, parameter: string, t: Tensor): void {
  if (t.dtype !== 'float32') throw typeError(`${where}: ${parameter}`, 'a float32 tensor (norms and gains stay float32)', t);
}

function checkBfloat16Fused(where: string, dtype: DType, fused: boolean): void {
  if (dtype !== 'float32' && !fused) {
    throw typeError(`${where}: options.fused`, `true for a ${dtype} v (the unfused path is float32 only)`, fused);
  }
}

function checkSameDevice(where: string, parameter: string, t: Tensor, v: Tensor): void {
  if (t.device !== v.device) {
    throw typeError(`${where}: ${parameter}`, `a tensor on v's device '${v.device}'`, t);
  }
}

/** Weight norm forward: w = g · v / max(‖v‖, eps), one norm per index of `dim`. */
export function weightNorm(v: Tensor, g: Tensor, options?: WeightNormOptions): WeightNormResult {
  const where = 'weightNorm';
  const vHandle = handleOf(v, `${where}: v`, 'floating');
  const gHandle = handleOf(g, `${where}: g`, 'floating');
  const { dim, eps, fused } = checkOptions(where, options, v.rank);
  checkFloat32(where, 'g', g);
  checkBfloat16Fused(where, v.dtype, fused);
  checkSameDevice(where, 'g', g, v);
  checkChannelVector(where, 'g', g, v, dim);
  const { w, norm } = native.weightNorm(vHandle, gHandle, dim, eps, fused);
  return { w: new Tensor(w), norm: new Tensor(norm) };
}

/**
 * Weight norm backward, given dw = ∂L/∂w and the forward's v, g and saved norm. Channels whose norm sat on the
 * eps floor are treated as w = g·v/eps (the projection term is 0 there).
 */
export function weightNormBackward(
  dw: Tensor,
  v: Tensor,
  g: Tensor,
  norm: Tensor,
  options?: WeightNormOptions,
): WeightNormGradients {
  const where = 'weightNormBackward';
  const dwHandle = handleOf(dw, `${where}: dw`, 'floating');
  const vHandle = handleOf(v, `${where}: v`, 'floating');
  const gHandle = handleOf(g, `${where}: g`, 'floating');
  const normHandle = handleOf(norm, `${where}: norm`, 'floating');
  const { dim, eps, fused } = checkOptions(where, options, v.rank);
  if (dw.dtype !== v.dtype) throw typeError(`${where}: dw`, `a ${v.dtype} tensor like v`, dw);
  checkFloat32(where, 'g', g);
  checkFloat32(where, 'norm', norm);
  checkBfloat16Fused(where, v.dtype, fused);
  if (dw.shape.length !== v.shape.length || dw.shape.some((d, i) => d !== v.shape[i])) {
    throw rangeError(`${where}: dw`, `v's shape [${v.shape.join(', ')}]`, `[${dw.shape.join(', ')}]`);
  }
  for (const [name, t] of [['dw', dw], ['g', g], ['norm', norm]] as const) checkSameDevice(where, name, t, v);
  checkChannelVector(where, 'g', g, v, dim);
  checkChannelVector(where, 'norm', norm, v, dim);
  const { dv, dg } = native.weightNormBackward(dwHandle, vHandle, gHandle, normHandle, dim, eps, fused);
  return { dv: new Tensor(dv), dg: new Tensor(dg) };
}

export interface MatmulOptions {
  /** Use aᵀ: a is [k, m] instead of [m, k]. */
  transposeA?: boolean;
  /** Use bᵀ: b is [n, k] instead of [k, n]. */
  transposeB?: boolean;
}

/**
 * The plain matrix product op(a)·op(b) of two 2-D tensors of one element type (float32 or bfloat16, same device),
 * without autograd (functional.matmul is the differentiable float32 one). bfloat16 operands are multiplied with
 * float32 accumulation and the result rounded once to bfloat16. On CUDA, float32 products follow
 * setMatmulPrecision ('highest': full float32; 'high': TF32 tensor cores).
 */
export function matmul(a: Tensor, b: Tensor, options?: MatmulOptions): Tensor {
  const where = 'ops.matmul';
  const aHandle = handleOf(a, `${where}: a`, 'floating');
  const bHandle = handleOf(b, `${where}: b`, 'floating');
  if (options !== undefined && (typeof options !== 'object' || options === null || Array.isArray(options))) {
    throw typeError(`${where}: options`, 'an object like { transposeA, transposeB }', options);
  }
  for (const key of Object.keys(options ?? {})) {
    if (key !== 'transposeA' && key !== 'transposeB') throw typeError(`${where}: options`, 'only the keys transposeA, transposeB', key);
  }
  const { transposeA = false, transposeB = false } = options ?? {};
  if (typeof transposeA !== 'boolean') throw typeError(`${where}: options.transposeA`, 'a boolean', transposeA);
  if (typeof transposeB !== 'boolean') throw typeError(`${where}: options.transposeB`, 'a boolean', transposeB);
  if (a.rank !== 2) throw rangeError(`${where}: a`, 'a 2-D tensor', `[${a.shape.join(', ')}]`);
  if (b.rank !== 2) throw rangeError(`${where}: b`, 'a 2-D tensor', `[${b.shape.join(', ')}]`);
  if (b.dtype !== a.dtype) throw typeError(`${where}: b`, `a ${a.dtype} tensor like a`, b);
  checkSameDevice(where, 'b', b, a);
  const [m, k] = transposeA ? [a.shape[1]!, a.shape[0]!] : [a.shape[0]!, a.shape[1]!];
  const [kb, n] = transposeB ? [b.shape[1]!, b.shape[0]!] : [b.shape[0]!, b.shape[1]!];
  if (kb !== k) {
    throw rangeError(`${where}: b`, `${k} rows in op(b) to match op(a) [${m}, ${k}]`, `op(b) of shape [${kb}, ${n}]`);
  }
  return new Tensor(native.gemm(aHandle, bHandle, { m, n, k, transposeA, transposeB }));
}
