// Runs one fixture case of the gradient-check harness on a device: builds the op or layer from the case's float32
// inputs (a fresh graph each time), takes L = Σ y ⊙ c for the stored cotangent c, runs backward(), and compares y,
// the op's other outputs, the layer's buffers and the gradient of every differentiable input and parameter with
// torch's float64 results. Random ops in training mode are checked against the mask or noise they drew.
import { type Device, nn, type Tensor, tensor, tidy } from '../../ts/index.js';
import { maxAbs, relativeError } from '../helpers.js';
import type { FixtureCase, LayerCase, OpCase, StoredTensor } from './fixture.js';
import { applyWeightNormRemovals, buildLayer, layerTolerance, OPS, type Tolerance, UNIT_ROUNDOFF } from './registry.js';

const F = nn.functional;

/** What a case found: every mismatch as a sentence (empty when it passed), and the errors measured. */
export interface CaseResult {
  problems: string[];
  errors: Record<string, number>;
}

interface Evaluated {
  y: Float32Array;
  yShape: readonly number[];
  /** Other outputs (an op's statistics, a layer's buffers after the forward) by the fixture's names. */
  extras: Record<string, Float32Array>;
  /** Gradient of each differentiable input or parameter; null where backward() left none. */
  grads: Record<string, Float32Array | null>;
  /** Why backward() could not run (the output does not require a gradient, ...), if it threw. */
  backwardError: string | null;
  /** Parameter names of a layer, to compare with those the fixture differentiated. */
  parameterNames?: string[];
}

const shapeText = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

function toTensor(stored: StoredTensor, device: Device): Tensor {
  return tensor(Float32Array.from(stored.data), stored.shape, { device });
}

/** L = Σ y ⊙ c and its backward; returns the error message instead of throwing (a missing backward is a finding). */
function backwardOfDotProduct(y: Tensor, cotangent: StoredTensor, device: Device): string | null {
  try {
    F.sum(F.mul(y, toTensor(cotangent, device))).backward();
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

function evaluateOp(c: OpCase, device: Device, seed: number): Evaluated {
  const entry = OPS[c.config.op];
  if (!entry) throw new RangeError(`gradcheck: case '${c.name}' names op '${c.config.op}', which is not in the registry`);
  const inputs: Record<string, Tensor> = {};
  const result = tidy(() => {
    for (const [name, stored] of Object.entries(c.inputs)) {
      const t = toTensor(stored, device);
      t.requiresGrad = c.differentiable.includes(name);
      inputs[name] = t;
    }
    const { y, extras = {} } = entry.run(inputs, c.config, seed);
    const backwardError = backwardOfDotProduct(y, c.cotangent, device);
    return {
      y: y.toArray(),
      yShape: [...y.shape],
      extras: Object.fromEntries(Object.entries(extras).map(([name, t]) => [name, t.toArray()])),
      grads: Object.fromEntries(c.differentiable.map((name) => [name, inputs[name]?.grad?.toArray() ?? null])),
      backwardError,
    };
  });
  for (const t of Object.values(inputs)) t.grad?.dispose();
  return result;
}

function evaluateLayer(c: LayerCase, device: Device, seed: number): Evaluated {
  const { spec, mode } = c.config;
  const layer = buildLayer(spec, seed);
  // x and the layer's parameters by the fixture's names: the tensors whose gradients are checked.
  const checked: Record<string, Tensor> = {};
  try {
    const state = Object.fromEntries(
      Object.entries(c.inputs)
        .filter(([name]) => name !== 'x')
        .map(([name, stored]) => [name, { shape: stored.shape, data: Float32Array.from(stored.data) }]),
    );
    layer.loadStateDict(state);
    applyWeightNormRemovals(layer, spec);
    layer.to(device);
    if (mode === 'train') layer.train();
    else layer.eval();
    Object.assign(checked, Object.fromEntries(layer.namedParameters()));
    const x = toTensor(c.inputs.x!, device);
    x.requiresGrad = true;
    checked.x = x;
    return tidy(() => {
      const y = layer.forward(x);
      const backwardError = backwardOfDotProduct(y, c.cotangent, device);
      const buffers = Object.fromEntries(layer.namedBuffers());
      const extras: Record<string, Float32Array> = {};
      for (const name of Object.keys(c.extras ?? {})) {
        const buffer = buffers[name.replace(/^buffer /, '')];
        if (buffer) extras[name] = buffer.toArray();
      }
      const grads = Object.fromEntries(c.differentiable.map((name) => [name, checked[name]?.grad?.toArray() ?? null]));
      const parameterNames = layer.namedParameters().map(([name]) => name);
      return { y: y.toArray(), yShape: [...y.shape], extras, grads, backwardError, parameterNames };
    });
  } finally {
    // The layer frees its parameters and their gradients; x and its gradient are ours (x is in no tidy scope).
    checked.x?.grad?.dispose();
    checked.x?.dispose();
    layer.dispose();
  }
}

function compare(
  problems: string[],
  errors: Record<string, number>,
  what: string,
  got: ArrayLike<number> | null | undefined,
  want: readonly number[],
  tolerance: number,
  scale?: number,
): void {
  if (!got) {
    const why = what.startsWith('gradient') ? 'backward() gave none' : 'not returned';
    problems.push(`${what}: missing, ${why} (torch's has max|·| = ${maxAbs(want).toPrecision(3)})`);
    return;
  }
  if (got.length !== want.length) {
    problems.push(`${what}: ${got.length} values, torch has ${want.length}`);
    return;
  }
  const error = relativeError(got, want, scale);
  errors[what] = error;
  if (!(error <= tolerance)) {
    const worst = worstIndex(got, want);
    problems.push(
      `${what}: max|ours − torch| / ${scale === undefined ? 'max|torch|' : `its scale ${scale.toPrecision(3)}`} = ${error.toPrecision(3)} > ${tolerance.toPrecision(3)} ` +
        `(worst at ${worst}: ours ${got[worst]}, torch ${want[worst]})`,
    );
  }
}

function worstIndex(got: ArrayLike<number>, want: readonly number[]): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i]! - want[i]!);
    if (!(e <= Math.abs(got[worst]! - want[worst]!))) worst = i;
  }
  return worst;
}

/**
 * Inverted dropout: each y_i is 0 (dropped) or x_i/(1 − p) (kept), and the gradient is c_i/(1 − p) where kept and 0
 * where dropped. The kept fraction must be 1 − p within 5 binomial standard deviations (a false alarm about once in
 * 3 million runs).
 */
function checkDropout(problems: string[], c: FixtureCase, p: number, got: Evaluated): void {
  const x = c.inputs.x!.data;
  const cot = c.cotangent.data;
  const keepScale = 1 / (1 - p);
  const bound = 4 * UNIT_ROUNDOFF; // the scale 1/(1 − p) rounded to float32, then one rounding of the product
  let kept = 0;
  let valueErrors = 0;
  let gradErrors = 0;
  const dx = got.grads.x;
  for (let i = 0; i < x.length; i++) {
    const isKept = got.y[i] !== 0;
    if (isKept) kept++;
    const wantY = isKept ? x[i]! * keepScale : 0;
    if (Math.abs(got.y[i]! - wantY) > bound * Math.abs(wantY)) valueErrors++;
    const wantGrad = isKept ? cot[i]! * keepScale : 0;
    if (dx && Math.abs(dx[i]! - wantGrad) > bound * Math.abs(wantGrad)) gradErrors++;
  }
  if (valueErrors > 0) problems.push(`y: ${valueErrors} of ${x.length} values are neither 0 nor x/(1 − p)`);
  if (!dx) problems.push('gradient of x: missing (expected the cotangent times the mask / (1 − p))');
  else if (gradErrors > 0) problems.push(`gradient of x: ${gradErrors} of ${x.length} values differ from cotangent · mask / (1 − p) (mask recovered from y)`);
  const n = x.length;
  const spread = 5 * Math.sqrt(n * p * (1 - p));
  if (Math.abs(kept - n * (1 - p)) > spread) {
    problems.push(`kept ${kept} of ${n} values, expected ${(n * (1 - p)).toFixed(1)} ± ${spread.toFixed(1)} for p = ${p}`);
  }
}

/**
 * Additive noise: n = (y − x)/std must look standard normal (mean within 5/√N of 0, standard deviation within 0.3
 * of 1: more than 6 standard errors for N = 256), and the gradient is the cotangent itself.
 */
function checkNoise(problems: string[], c: FixtureCase, std: number, got: Evaluated): void {
  const x = c.inputs.x!.data;
  const n = x.length;
  let total = 0;
  let squares = 0;
  for (let i = 0; i < n; i++) {
    const noise = (got.y[i]! - x[i]!) / std;
    total += noise;
    squares += noise * noise;
  }
  const mean = total / n;
  const deviation = Math.sqrt(squares / n - mean * mean);
  if (!(Math.abs(mean) <= 5 / Math.sqrt(n))) problems.push(`noise mean ${mean.toFixed(3)}, expected 0 ± ${(5 / Math.sqrt(n)).toFixed(3)}`);
  if (!(Math.abs(deviation - 1) <= 0.3)) problems.push(`noise standard deviation ${deviation.toFixed(3)} (in units of std), expected 1 ± 0.3`);
  const dx = got.grads.x;
  if (!dx) problems.push('gradient of x: missing (expected the cotangent: the noise does not depend on x)');
  else if (relativeError(dx, c.cotangent.data) !== 0) problems.push('gradient of x: differs from the cotangent (the noise does not depend on x)');
}

/** The option a random case was made with: from the op's config or the layer's spec. */
function randomParameter(c: FixtureCase, key: 'p' | 'std'): number {
  const value = c.kind === 'op' ? c.config[key] : c.config.spec[key];
  if (typeof value !== 'number') throw new TypeError(`gradcheck: case '${c.name}': ${key} missing`);
  return value;
}

function randomKind(c: FixtureCase): 'dropout' | 'noise' {
  if (c.kind === 'op') {
    const kind = OPS[c.config.op]?.random;
    if (!kind) throw new RangeError(`gradcheck: case '${c.name}' is random but op '${c.config.op}' has no random check`);
    return kind;
  }
  if (c.config.spec.type === 'Dropout') return 'dropout';
  if (c.config.spec.type === 'GaussianNoise') return 'noise';
  throw new RangeError(`gradcheck: case '${c.name}' is random but ${c.config.spec.type} has no random check`);
}

export function toleranceOf(c: FixtureCase): Tolerance {
  if (c.kind === 'layer') return layerTolerance(c.config.spec);
  const entry = OPS[c.config.op];
  if (!entry) throw new RangeError(`gradcheck: case '${c.name}' names op '${c.config.op}', which is not in the registry`);
  return entry.tolerance;
}

/** Runs one case on `device`; `seed` drives the random ops' masks and noise (fresh each run). */
export function runCase(c: FixtureCase, device: Device, seed: number): CaseResult {
  const problems: string[] = [];
  const errors: Record<string, number> = {};
  const got = c.kind === 'op' ? evaluateOp(c, device, seed) : evaluateLayer(c, device, seed);
  if (got.backwardError !== null) problems.push(`backward() failed: ${got.backwardError}`);
  if (got.parameterNames) {
    const expected = c.differentiable.filter((name) => name !== 'x').sort();
    const actual = [...got.parameterNames].sort();
    if (expected.join() !== actual.join()) {
      problems.push(`parameters: the layer has [${actual.join(', ')}], the fixture differentiated [${expected.join(', ')}] (regenerate the fixture?)`);
    }
  }
  if (c.random) {
    if (randomKind(c) === 'dropout') checkDropout(problems, c, randomParameter(c, 'p'), got);
    else checkNoise(problems, c, randomParameter(c, 'std'), got);
    return { problems, errors };
  }
  const tolerance = toleranceOf(c);
  const output = c.output!;
  if (shapeText(got.yShape) !== shapeText(output.shape)) problems.push(`y: shape ${shapeText(got.yShape)}, torch's is ${shapeText(output.shape)}`);
  else compare(problems, errors, 'y', got.y, output.data, tolerance.forward);
  for (const [name, stored] of Object.entries(c.extras ?? {})) compare(problems, errors, name, got.extras[name], stored.data, tolerance.forward);
  const scales = c.gradScales!;
  const largestScale = Math.max(...Object.values(scales));
  for (const name of c.differentiable) {
    // A parameter that cannot change y (a bias right before a batch normalization) has an all-zero Jacobian: its
    // float64 scale is rounding noise, while our float32 backward still sums (and cancels) terms of the size of the
    // case's other gradients. Its error is measured against those.
    const scale = scales[name]! < 2 ** -20 * largestScale ? largestScale : scales[name]!;
    compare(problems, errors, `gradient of ${name}`, got.grads[name], c.grads![name]!, tolerance.gradient, scale);
  }
  return { problems, errors };
}
