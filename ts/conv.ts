// Convolutions (1-D and 2-D, direct and transposed; stride, padding, dilation and groups per axis), padding and
// nearest upsampling as differentiable ops, re-exported by functional.ts as nn.functional.*. Argument meanings,
// defaults and weight layouts are PyTorch's: a convolution's weight is [out, in/groups, k...], a transposed one's
// [in, out/groups, k...]. A 1-D op runs the 2-D kernels on height 1 (a free view, nothing copied).
import { record } from './autograd.js';
import { rangeError, shapeText, typeError } from './errors.js';
import { native, type NativeTensor } from './native.js';
import { handleOf, Tensor } from './tensor.js';
import { checkWeightNormEps, DEFAULT_EPS } from './weightnorm-options.js';

const wrap = (handle: NativeTensor): Tensor => new Tensor(handle);

function checkTensor(value: unknown, where: string): Tensor {
  handleOf(value, where);
  return value as Tensor;
}

function checkSameDevice(where: string, reference: Tensor, others: readonly [string, Tensor | null | undefined][]): void {
  for (const [name, t] of others) {
    if (t && t.device !== reference.device) throw typeError(`${where}: ${name}`, `a tensor on '${reference.device}' like the input`, t);
  }
}

/** A value per spatial axis: one number for all, or a tuple of `dims` numbers. */
export type AxisValue = number | readonly number[];

export interface Conv2dOptions {
  stride?: AxisValue;
  /** Zeros added on both sides of each axis, or 'valid' (none) or 'same' (output as long as the input; stride 1). */
  padding?: AxisValue | 'same' | 'valid';
  dilation?: AxisValue;
  groups?: number;
}
export type Conv1dOptions = Conv2dOptions;

export interface ConvTranspose2dOptions {
  stride?: AxisValue;
  padding?: AxisValue;
  /** Positions added at the end of each output axis (each smaller than that axis' stride or dilation). */
  outputPadding?: AxisValue;
  dilation?: AxisValue;
  groups?: number;
}
export type ConvTranspose1dOptions = ConvTranspose2dOptions;

/** A convolution's geometry as the kernels take it: [height, width] pairs (a 1-D op has height 1). */
interface Geometry {
  dims: 1 | 2;
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  groups: number;
}

// Beyond this the padded image, not the data, would decide the output's size.
const MAX_STRIDE_OR_PADDING = 2 ** 16;

function checkInteger(where: string, value: unknown, minimum: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < minimum) throw typeError(where, `an integer >= ${minimum}`, value);
  return value;
}

/** One value per axis, as a [height, width] pair; a 1-D op's height gets `heightValue`. */
function axisPair(where: string, value: unknown, dims: 1 | 2, minimum: number, heightValue: number): [number, number] {
  const expected = dims === 1 ? `an integer >= ${minimum} or [integer]` : `an integer >= ${minimum} or [height, width]`;
  let values: number[];
  if (typeof value === 'number') values = Array<number>(dims).fill(value);
  else if (Array.isArray(value) && value.length === dims) values = [...(value as number[])];
  else throw typeError(where, expected, value);
  for (const v of values) if (typeof v !== 'number' || !Number.isInteger(v) || v < minimum) throw typeError(where, expected, value);
  if (values.some((v) => v > MAX_STRIDE_OR_PADDING)) throw rangeError(where, `values at most ${MAX_STRIDE_OR_PADDING}`, String(value));
  return dims === 1 ? [heightValue, values[0]!] : [values[0]!, values[1]!];
}

function checkOptions(where: string, options: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(`${where}: options`, `an object with the keys ${allowed.join(', ')}`, options);
  }
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) throw typeError(`${where}: options`, `only the keys ${allowed.join(', ')}`, key);
  }
  return options as Record<string, unknown>;
}

const spatialNames = (dims: 1 | 2): string => (dims === 1 ? 'length' : 'height, width');

/** x, weight and bias checked for a convolution or a transposed one; returns its geometry (padding 'same' resolved). */
function checkConvArguments(
  where: string,
  dims: 1 | 2,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
): void {
  checkTensor(x, `${where}: x`);
  checkTensor(weight, `${where}: weight`);
  if (bias !== null) checkTensor(bias, `${where}: bias`);
  checkSameDevice(where, x, [['weight', weight], ['bias', bias]]);
  if (x.rank !== dims + 2) throw rangeError(`${where}: x`, `[batch, channels, ${spatialNames(dims)}]`, shapeText(x.shape));
  if (x.shape.slice(2).some((d) => d === 0)) throw rangeError(`${where}: x`, `a ${spatialNames(dims)} of at least 1`, shapeText(x.shape));
}

function checkGroups(where: string, groups: number, inChannels: number, outChannels: number): void {
  if (inChannels % groups !== 0 || outChannels % groups !== 0) {
    throw rangeError(`${where}: options.groups`, `a divisor of both channel counts (in ${inChannels}, out ${outChannels})`, String(groups));
  }
}

const kernelText = (dims: 1 | 2): string => (dims === 1 ? 'kernelSize' : 'kh, kw');

/** The kernel's spatial sizes as a [height, width] pair. */
function kernelPair(weight: Tensor, dims: 1 | 2): [number, number] {
  return dims === 1 ? [1, weight.shape[2]!] : [weight.shape[2]!, weight.shape[3]!];
}

function spatialPair(x: Tensor, dims: 1 | 2): [number, number] {
  return dims === 1 ? [1, x.shape[2]!] : [x.shape[2]!, x.shape[3]!];
}

/** A 4-D view of a 1-D op's tensor ([n, c, L] -> [n, c, 1, L]); the tensor's own handle for a 2-D op. */
function view4(t: Tensor, dims: 1 | 2, where: string, views: NativeTensor[]): NativeTensor {
  const handle = handleOf(t, where);
  if (dims === 2) return handle;
  const view = native.reshape(handle, [t.shape[0]!, t.shape[1]!, 1, t.shape[2]!]);
  views.push(view);
  return view;
}

/** A kernel result [n, c, 1, L] back in a 1-D op's rank (the 4-D handle itself for a 2-D op). */
function fromView4(handle: NativeTensor, dims: 1 | 2): Tensor {
  if (dims === 2) return wrap(handle);
  const [n, c, , length] = handle.shape as [number, number, number, number];
  const out = native.reshape(handle, [n, c, length]);
  handle.dispose();
  return wrap(out);
}

function disposeAll(views: NativeTensor[]): void {
  for (const v of views) v.dispose();
  views.length = 0;
}

/** Runs a native call on 4-D views made into `views`, and frees the views afterwards, also when the call throws. */
function withViews<T>(views: NativeTensor[], call: () => T): T {
  try {
    return call();
  } finally {
    disposeAll(views);
  }
}

/** The geometry of a direct convolution's options, checked against x and the weight; 'same' may need a pre-pad. */
function convGeometry(
  where: string,
  dims: 1 | 2,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  options: unknown,
): { geometry: Geometry; extraPad: [number, number] } {
  checkConvArguments(where, dims, x, weight, bias);
  const o = checkOptions(where, options, ['stride', 'padding', 'dilation', 'groups']);
  const groups = checkInteger(`${where}: options.groups`, o.groups ?? 1, 1);
  const stride = axisPair(`${where}: options.stride`, o.stride ?? 1, dims, 1, 1);
  const dilation = axisPair(`${where}: options.dilation`, o.dilation ?? 1, dims, 1, 1);
  if (weight.rank !== dims + 2) {
    throw rangeError(`${where}: weight`, `[outChannels, ${Math.floor(x.shape[1]! / groups)}, ${kernelText(dims)}]`, shapeText(weight.shape));
  }
  const inChannels = x.shape[1]!;
  const outChannels = weight.shape[0]!;
  if (outChannels === 0 || weight.shape.slice(2).some((d) => d === 0)) {
    throw rangeError(`${where}: weight`, `[outChannels, inChannels / groups, ${kernelText(dims)}] with outChannels and the kernel sizes at least 1`, shapeText(weight.shape));
  }
  checkGroups(where, groups, inChannels, outChannels);
  if (weight.shape[1]! * groups !== inChannels) {
    throw rangeError(`${where}: weight`, `[outChannels, ${inChannels / groups}, ${kernelText(dims)}]`, shapeText(weight.shape));
  }
  if (bias) checkBias(where, bias, outChannels);
  const kernel = kernelPair(weight, dims);
  const span = [dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1];
  let padding: [number, number];
  const extraPad: [number, number] = [0, 0];
  if (o.padding === 'valid') {
    padding = [0, 0];
  } else if (o.padding === 'same') {
    if (stride[0] !== 1 || stride[1] !== 1) throw rangeError(`${where}: options.padding`, "stride 1 with padding 'same'", `stride ${String(o.stride)}`);
    // PyTorch's split: half of d·(k−1) on each side, the odd one at the end.
    padding = [Math.floor((span[0]! - 1) / 2), Math.floor((span[1]! - 1) / 2)];
    extraPad[0] = (span[0]! - 1) % 2;
    extraPad[1] = (span[1]! - 1) % 2;
  } else {
    if (typeof o.padding === 'string') throw typeError(`${where}: options.padding`, "an integer, a tuple, 'same' or 'valid'", o.padding);
    padding = axisPair(`${where}: options.padding`, o.padding ?? 0, dims, 0, 0);
  }
  const size = spatialPair(x, dims);
  for (let a = 0; a < 2; a++) {
    if (size[a]! + 2 * padding[a]! + extraPad[a]! < span[a]!) {
      throw rangeError(
        `${where}: weight`,
        `a kernel no larger than the padded input ${shapeText(x.shape)} after dilation (padding ${padding[a]}, dilation ${dilation[a]}: span ${span[a]})`,
        shapeText(weight.shape),
      );
    }
  }
  return { geometry: { dims, stride, padding, dilation, groups }, extraPad };
}

function checkBias(where: string, bias: Tensor, channels: number): void {
  if (bias.rank !== 1 || bias.shape[0] !== channels) throw rangeError(`${where}: bias`, `shape [${channels}]`, shapeText(bias.shape));
}

function nativeGeometry(g: Geometry): { stride: number[]; padding: number[]; dilation: number[]; groups: number } {
  return { stride: [...g.stride], padding: [...g.padding], dilation: [...g.dilation], groups: g.groups };
}

function outputSize(size: number, kernel: number, g: Geometry, axis: 0 | 1): number {
  return Math.floor((size + 2 * g.padding[axis] - g.dilation[axis] * (kernel - 1) - 1) / g.stride[axis]) + 1;
}

/**
 * A convolution whose input has no batch or no channels (the kernels need both): y = bias at every output position
 * (an empty tensor for an empty batch); x and the weights then hold no values or touch none, so their gradients
 * are zeros. `zeroGradients` are the inputs before the bias (x, weight; or x, v, g).
 */
function emptyConv(where: string, x: Tensor, weight: Tensor, bias: Tensor | null, g: Geometry, zeroGradients: Tensor[]): Tensor {
  const kernel = kernelPair(weight, g.dims);
  const size = spatialPair(x, g.dims);
  const spatial = [outputSize(size[0], kernel[0], g, 0), outputSize(size[1], kernel[1], g, 1)];
  const outShape = [x.shape[0]!, weight.shape[0]!, ...(g.dims === 1 ? [spatial[1]!] : spatial)];
  const positions = spatial[0]! * spatial[1]!;
  const zeros = native.full(outShape, 0, x.device);
  let y = zeros;
  if (bias) {
    y = native.channelOp('biasAdd', zeros, handleOf(bias, where), x.shape[0]!, weight.shape[0]!, positions);
    zeros.dispose();
  }
  return record(wrap(y), where, [...zeroGradients, bias], (dy, needs) => [
    ...zeroGradients.map((t, i) => (needs[i] ? wrap(native.full([...t.shape], 0, x.device)) : null)),
    needs[zeroGradients.length] ? wrap(native.channelReduce('sum', handleOf(dy, where), null, x.shape[0]!, weight.shape[0]!, positions)) : null,
  ]);
}

/** The direct convolution on checked arguments (x already carries any 'same' pre-pad). */
function convCore(where: string, x: Tensor, weight: Tensor, bias: Tensor | null, g: Geometry): Tensor {
  if (x.shape[0] === 0 || x.shape[1] === 0) return emptyConv(where, x, weight, bias, g, [x, weight]);
  const views: NativeTensor[] = [];
  const y4 = withViews(views, () =>
    native.conv(view4(x, g.dims, where, views), view4(weight, g.dims, where, views), bias ? handleOf(bias, where) : null, nativeGeometry(g)),
  );
  return record(fromView4(y4, g.dims), where, [x, weight, bias], (dy, needs) => {
    const grads = withViews(views, () =>
      native.convBackward(view4(dy, g.dims, where, views), view4(x, g.dims, where, views), view4(weight, g.dims, where, views), {
        ...nativeGeometry(g),
        wantDx: needs[0]!,
        wantDw: needs[1]!,
        wantDbias: needs[2]!,
      }),
    );
    return [
      grads.dx ? fromView4(grads.dx, g.dims) : null,
      grads.dw ? fromView4(grads.dw, g.dims) : null,
      grads.dbias ? wrap(grads.dbias) : null,
    ];
  });
}

function conv(where: string, dims: 1 | 2, x: Tensor, weight: Tensor, bias: Tensor | null, options: unknown): Tensor {
  const { geometry, extraPad } = convGeometry(where, dims, x, weight, bias, options);
  if (extraPad[0] === 0 && extraPad[1] === 0) return convCore(where, x, weight, bias, geometry);
  // 'same' with an even dilated kernel: the odd zero goes at the end, as in PyTorch.
  const padded = pad(x, dims === 1 ? [0, extraPad[1]] : [0, extraPad[1], 0, extraPad[0]]);
  return convCore(where, padded, weight, bias, geometry);
}

/** 1-D convolution: x [batch, inChannels, length], weight [outChannels, inChannels / groups, kernelSize], bias [outChannels] or null. */
export function conv1d(x: Tensor, weight: Tensor, bias: Tensor | null = null, options: Conv1dOptions = {}): Tensor {
  return conv('conv1d', 1, x, weight, bias, options);
}

/** 2-D convolution, NCHW: x [batch, inChannels, H, W], weight [outChannels, inChannels / groups, kh, kw], bias [outChannels] or null. */
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, options: Conv2dOptions = {}): Tensor {
  return conv('conv2d', 2, x, weight, bias, options);
}

/**
 * Weight-normalized convolution over dim 0 that never materializes w = g·v/‖v‖: with s = g/norm per output channel,
 * y = s ⊙ conv(x, v) + b, the scale and bias applied in the convolution GEMM's epilogue; dx is the convolution
 * backward of s ⊙ dy through v. For dv and dg the backward uses whichever is smaller, as saved state:
 *  - the output is no larger than the weight: the forward GEMM also keeps t = conv(x, v); dg = Σ dy ⊙ t / norm and
 *    dv = s·(dy ⋆ x) − (g·dg/norm²)·v is written in the weight-gradient GEMM's epilogue (as weightNormLinear does);
 *  - else (long sequences, images): nothing is kept; the weight-gradient product P = dy ⋆ x (= dL/dw, weight-sized)
 *    goes through the fused weight-norm backward, which writes dv and dg in one pass.
 * `norm` is ‖v‖ per output channel (floored by eps), computed by the caller once per optimizer step.
 */
/** @internal Also what the layers call, with `where` the plain op's name (conv1d, conv2d) for their error messages. */
export function weightNormConv(
  where: string,
  dims: 1 | 2,
  x: Tensor,
  v: Tensor,
  g: Tensor,
  bias: Tensor | null,
  norm: Tensor,
  options: unknown,
  eps: number,
): Tensor {
  const { geometry, extraPad } = convGeometry(where, dims, x, v, bias, options);
  checkWeightNormEps(where, 'eps', eps);
  checkTensor(g, `${where}: g`);
  checkTensor(norm, `${where}: norm`);
  checkSameDevice(where, x, [['g', g], ['norm', norm]]);
  const outChannels = v.shape[0]!;
  if (g.rank !== 1 || g.shape[0] !== outChannels) throw rangeError(`${where}: g`, `shape [${outChannels}]`, shapeText(g.shape));
  if (norm.rank !== 1 || norm.shape[0] !== outChannels) throw rangeError(`${where}: norm`, `shape [${outChannels}]`, shapeText(norm.shape));
  if (extraPad[0] !== 0 || extraPad[1] !== 0) x = pad(x, dims === 1 ? [0, extraPad[1]] : [0, extraPad[1], 0, extraPad[0]]);
  if (x.shape[0] === 0 || x.shape[1] === 0) return emptyConv(where, x, v, bias, geometry, [x, v, g]);
  const views: NativeTensor[] = [];
  const s = wrap(native.weightNormScale(handleOf(g, where), handleOf(norm, where)));
  const y4Shape = (() => {
    const kernel = kernelPair(v, dims);
    const size = spatialPair(x, dims);
    return [x.shape[0]!, outChannels, outputSize(size[0], kernel[0], geometry, 0), outputSize(size[1], kernel[1], geometry, 1)];
  })();
  // What the backward needs besides x, v, g: the raw product t = conv(x, v) (output-sized), or nothing, in which
  // case it forms the weight-gradient product P = dy ⋆ x (weight-sized) and gets dv, dg from P in one fused
  // weight-norm backward pass. The smaller of the two is kept: long sequences (audio) keep no output-sized t.
  const outputElements = y4Shape.reduce((p, d) => p * d, 1);
  const keepsRaw = outputElements <= v.size;
  const t4 = keepsRaw ? native.empty(y4Shape, x.device) : null; // the kernel writes every element
  let y4: NativeTensor;
  try {
    y4 = withViews(views, () =>
      native.conv(view4(x, dims, where, views), view4(v, dims, where, views), bias ? handleOf(bias, where) : null, {
        ...nativeGeometry(geometry),
        channelScale: handleOf(s, where),
        ...(t4 ? { rawOut: t4 } : {}),
      }),
    );
  } catch (error) {
    t4?.dispose();
    s.dispose();
    throw error;
  }
  const t = t4 ? wrap(t4) : null;
  const [batch, , oh, ow] = y4Shape as [number, number, number, number];
  const positions = oh * ow;
  // dx goes through the effective weight w = s ⊙ v (per output channel, weight-sized: cheap to form), so that one
  // convolution backward gives dx with the weight-side products instead of a second pass over an output-sized dy
  // scaled by s.
  const effectiveWeight = (): NativeTensor => {
    const [o, ...rest] = v.shape;
    return native.channelOp('scale', handleOf(v, where), handleOf(s, where), 1, o!, rest.reduce((p, d) => p * d, 1));
  };
  const result = record(fromView4(y4, dims), where, [x, v, g, bias], (dy, needs) => withViews(views, () => {
    const dy4 = view4(dy, dims, where, views);
    const w = needs[0] ? wrap(effectiveWeight()) : null;
    const throughW = w ?? v;
    let dx: Tensor | null = null;
    if (!t) {
      // P = dy ⋆ x is dL/dw; the fused weight-norm backward turns it into dv and dg in one pass.
      const grads = native.convBackward(dy4, view4(x, dims, where, views), view4(throughW, dims, where, views), {
        ...nativeGeometry(geometry),
        wantDx: needs[0]!,
        wantDw: needs[1]! || needs[2]!,
        wantDbias: needs[3]!,
      });
      w?.dispose();
      dx = grads.dx ? fromView4(grads.dx, dims) : null;
      let dv: Tensor | null = null;
      let dg: Tensor | null = null;
      if (grads.dw) {
        const product = fromView4(grads.dw, dims);
        const r = native.weightNormBackward(handleOf(product, where), handleOf(v, where), handleOf(g, where), handleOf(norm, where), 0, eps, true);
        product.dispose();
        dv = needs[1] ? wrap(r.dv) : (r.dv.dispose(), null);
        dg = needs[2] ? wrap(r.dg) : (r.dg.dispose(), null);
      }
      return [dx, dv, dg, grads.dbias ? wrap(grads.dbias) : null];
    }
    // With t: dg = Σ dy ⊙ t / norm, and dv = c1·(dy ⋆ x) − c2·v written by the weight-gradient GEMM's epilogue.
    const dot = native.channelReduce('dot', dy4, handleOf(t, where), batch, outChannels, positions);
    const { dg, c1, c2 } = native.weightNormCoefficients(dot, handleOf(g, where), handleOf(norm, where), eps);
    dot.dispose();
    let dv: Tensor | null = null;
    let dbias: Tensor | null = null;
    if (needs[0] || needs[1] || needs[3]) {
      const v4 = view4(v, dims, where, views);
      const grads = native.convBackward(dy4, view4(x, dims, where, views), view4(throughW, dims, where, views), {
        ...nativeGeometry(geometry),
        wantDx: needs[0]!,
        wantDw: needs[1]!,
        wantDbias: needs[3]!,
        dwScale: c1,
        dwSubtractCoefficient: c2,
        dwSubtractMatrix: v4,
      });
      dx = grads.dx ? fromView4(grads.dx, dims) : null;
      dv = grads.dw ? fromView4(grads.dw, dims) : null;
      dbias = grads.dbias ? wrap(grads.dbias) : null;
    }
    w?.dispose();
    c1.dispose();
    c2.dispose();
    if (!needs[2]) dg.dispose();
    return [dx, dv, needs[2] ? wrap(dg) : null, dbias];
  }));
  if (!result.requiresGrad) {
    // No backward will run: t and s are not needed (inside tidy() they would go anyway; this frees them early).
    s.dispose();
    t?.dispose();
  }
  return result;
}

/** Weight-normalized conv1d (dim 0) with the scale in the GEMM epilogue; see nn.Conv1d. `norm` is ‖v‖ per output channel. */
export function weightNormConv1d(
  x: Tensor,
  v: Tensor,
  g: Tensor,
  bias: Tensor | null,
  norm: Tensor,
  options: Conv1dOptions = {},
  eps: number = DEFAULT_EPS,
): Tensor {
  return weightNormConv('weightNormConv1d', 1, x, v, g, bias, norm, options, eps);
}

/** Weight-normalized conv2d (dim 0) with the scale in the GEMM epilogue; see nn.Conv2d. `norm` is ‖v‖ per output channel. */
export function weightNormConv2d(
  x: Tensor,
  v: Tensor,
  g: Tensor,
  bias: Tensor | null,
  norm: Tensor,
  options: Conv2dOptions = {},
  eps: number = DEFAULT_EPS,
): Tensor {
  return weightNormConv('weightNormConv2d', 2, x, v, g, bias, norm, options, eps);
}

// ---------------------------------------------------------------------------------------------------------------
// Transposed convolutions.

function convTranspose(where: string, dims: 1 | 2, x: Tensor, weight: Tensor, bias: Tensor | null, options: unknown): Tensor {
  checkConvArguments(where, dims, x, weight, bias);
  const o = checkOptions(where, options, ['stride', 'padding', 'outputPadding', 'dilation', 'groups']);
  const groups = checkInteger(`${where}: options.groups`, o.groups ?? 1, 1);
  const stride = axisPair(`${where}: options.stride`, o.stride ?? 1, dims, 1, 1);
  const dilation = axisPair(`${where}: options.dilation`, o.dilation ?? 1, dims, 1, 1);
  const padding = axisPair(`${where}: options.padding`, o.padding ?? 0, dims, 0, 0);
  const outputPadding = axisPair(`${where}: options.outputPadding`, o.outputPadding ?? 0, dims, 0, 0);
  const inChannels = x.shape[1]!;
  if (weight.rank !== dims + 2 || weight.shape[0] !== inChannels) {
    throw rangeError(`${where}: weight`, `[${inChannels}, outChannels / groups, ${kernelText(dims)}]`, shapeText(weight.shape));
  }
  if (weight.shape[1] === 0 || weight.shape.slice(2).some((d) => d === 0)) {
    throw rangeError(`${where}: weight`, `[inChannels, outChannels / groups, ${kernelText(dims)}] with every size at least 1`, shapeText(weight.shape));
  }
  const outChannels = weight.shape[1]! * groups;
  checkGroups(where, groups, inChannels, outChannels);
  if (bias) checkBias(where, bias, outChannels);
  for (let a = 0; a < 2; a++) {
    if (outputPadding[a]! >= stride[a]! && outputPadding[a]! >= dilation[a]!) {
      throw rangeError(
        `${where}: options.outputPadding`,
        `each value smaller than the stride or the dilation of its axis (stride ${stride[a]}, dilation ${dilation[a]})`,
        String(o.outputPadding),
      );
    }
  }
  const kernel = kernelPair(weight, dims);
  const size = spatialPair(x, dims);
  const out = [0, 1].map((a) => (size[a]! - 1) * stride[a]! - 2 * padding[a]! + dilation[a]! * (kernel[a]! - 1) + outputPadding[a]! + 1) as [number, number];
  if (out[0] < 1 || out[1] < 1) {
    throw rangeError(
      `${where}: options.padding`,
      `a padding that leaves an output of at least 1 position (input ${shapeText(x.shape)}, kernel ${shapeText(weight.shape)})`,
      String(o.padding),
    );
  }
  const g: Geometry = { dims, stride, padding, dilation, groups };
  const outShape = [x.shape[0]!, outChannels, ...(dims === 1 ? [out[1]] : out)];
  if (x.shape[0] === 0 || inChannels === 0) {
    // No data: y = bias everywhere (empty for an empty batch); x and the weight get zero gradients.
    const positions = out[0] * out[1];
    const zeros = native.full(outShape, 0, x.device);
    let y = zeros;
    if (bias) {
      y = native.channelOp('biasAdd', zeros, handleOf(bias, where), x.shape[0]!, outChannels, positions);
      zeros.dispose();
    }
    return record(wrap(y), where, [x, weight, bias], (dy, needs) => [
      needs[0] ? wrap(native.full([...x.shape], 0, x.device)) : null,
      needs[1] ? wrap(native.full([...weight.shape], 0, x.device)) : null,
      needs[2] ? wrap(native.channelReduce('sum', handleOf(dy, where), null, x.shape[0]!, outChannels, positions)) : null,
    ]);
  }
  const views: NativeTensor[] = [];
  const y4 = withViews(views, () =>
    native.convTranspose(view4(x, dims, where, views), view4(weight, dims, where, views), bias ? handleOf(bias, where) : null, {
      ...nativeGeometry(g),
      outputSize: [...out],
    }),
  );
  return record(fromView4(y4, dims), where, [x, weight, bias], (dy, needs) => {
    const grads = withViews(views, () =>
      native.convTransposeBackward(view4(dy, dims, where, views), view4(x, dims, where, views), view4(weight, dims, where, views), {
        ...nativeGeometry(g),
        wantDx: needs[0]!,
        wantDw: needs[1]!,
        wantDbias: needs[2]!,
      }),
    );
    return [
      grads.dx ? fromView4(grads.dx, dims) : null,
      grads.dw ? fromView4(grads.dw, dims) : null,
      grads.dbias ? wrap(grads.dbias) : null,
    ];
  });
}

/** 1-D transposed convolution: x [batch, inChannels, length], weight [inChannels, outChannels / groups, kernelSize]. */
export function convTranspose1d(x: Tensor, weight: Tensor, bias: Tensor | null = null, options: ConvTranspose1dOptions = {}): Tensor {
  return convTranspose('convTranspose1d', 1, x, weight, bias, options);
}

/** 2-D transposed convolution, NCHW: x [batch, inChannels, H, W], weight [inChannels, outChannels / groups, kh, kw]. */
export function convTranspose2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, options: ConvTranspose2dOptions = {}): Tensor {
  return convTranspose('convTranspose2d', 2, x, weight, bias, options);
}

// ---------------------------------------------------------------------------------------------------------------
// Padding and upsampling.

export type PadMode = 'constant' | 'reflect' | 'replicate';

export interface PadOptions {
  /** 'constant' (default) fills `value`; 'reflect' mirrors without repeating the edge; 'replicate' repeats the edge. */
  mode?: PadMode;
  /** The fill of 'constant' (default 0). */
  value?: number;
}

/**
 * Pads the last one or two axes, PyTorch's pad-list order (last axis first): [left, right] or [left, right, top,
 * bottom]. Negative constant pads crop. 'reflect' needs each pad smaller than its axis.
 */
export function pad(x: Tensor, pads: readonly number[], options: PadOptions = {}): Tensor {
  const where = 'pad';
  checkTensor(x, `${where}: x`);
  if (!Array.isArray(pads) || (pads.length !== 2 && pads.length !== 4) || pads.some((p) => typeof p !== 'number' || !Number.isInteger(p))) {
    throw typeError(`${where}: pads`, 'an array of 2 or 4 integers ([left, right] or [left, right, top, bottom])', pads);
  }
  const o = checkOptions(where, options, ['mode', 'value']);
  const mode = (o.mode ?? 'constant') as PadMode;
  if (!['constant', 'reflect', 'replicate'].includes(mode)) throw typeError(`${where}: options.mode`, "'constant', 'reflect' or 'replicate'", o.mode);
  const value = o.value ?? 0;
  if (typeof value !== 'number' || Number.isNaN(value)) throw typeError(`${where}: options.value`, 'a number', value);
  if (mode !== 'constant' && value !== 0) throw typeError(`${where}: options.value`, `no value with mode '${mode}'`, value);
  const axes = pads.length / 2;
  if (x.rank < axes + (mode === 'constant' ? 0 : 1)) {
    throw rangeError(`${where}: x`, `at least ${axes + (mode === 'constant' ? 0 : 1)} dimensions for ${pads.length} pads in mode '${mode}'`, shapeText(x.shape));
  }
  const [left, right, top = 0, bottom = 0] = pads as [number, number, number?, number?];
  const width = x.shape[x.rank - 1]!;
  const height = axes === 2 ? x.shape[x.rank - 2]! : 1;
  if (mode !== 'constant' && pads.some((p) => p < 0)) throw rangeError(`${where}: pads`, `non-negative pads in mode '${mode}'`, shapeText(pads));
  if (mode === 'reflect' && (left >= width || right >= width || top >= height || bottom >= height)) {
    throw rangeError(`${where}: pads`, `pads smaller than the padded axes ${shapeText(x.shape.slice(x.rank - axes))} in mode 'reflect'`, shapeText(pads));
  }
  if (x.size === 0 && mode !== 'constant') throw rangeError(`${where}: x`, `a non-empty input in mode '${mode}'`, shapeText(x.shape));
  const outWidth = width + left + right;
  const outHeight = height + top + bottom;
  if (outWidth < 0 || outHeight < 0 || (x.size > 0 && (outWidth === 0 || outHeight === 0))) {
    throw rangeError(`${where}: pads`, `pads that leave at least one position on each axis of ${shapeText(x.shape)}`, shapeText(pads));
  }
  const outShape = [...x.shape.slice(0, x.rank - axes), ...(axes === 2 ? [outHeight, outWidth] : [outWidth])];
  if (x.size === 0 || outShape.includes(0)) {
    // No values to move: an empty result, or the fill alone; the input's gradient is 0.
    return record(wrap(native.full(outShape, value, x.device)), where, [x], () => [wrap(native.full([...x.shape], 0, x.device))]);
  }
  const viewShape = axes === 2 ? [...x.shape] : [...x.shape.slice(0, x.rank - 1), 1, width];
  const nativeOptions = { top, bottom, left, right, mode, value };
  const xView = native.reshape(handleOf(x, where), viewShape);
  let y: NativeTensor;
  try {
    y = native.pad(xView, nativeOptions);
  } finally {
    xView.dispose();
  }
  const yOut = native.reshape(y, outShape);
  y.dispose();
  return record(wrap(yOut), where, [x], (dy) => {
    const dx = native.padBackward(handleOf(dy, where), viewShape, nativeOptions);
    const dxOut = native.reshape(dx, [...x.shape]);
    dx.dispose();
    return [wrap(dxOut)];
  });
}

export interface UpsampleOptions {
  /** Whole factors per spatial axis (one number for all). */
  scaleFactor?: AxisValue;
  /** The output size per spatial axis instead (whole multiples of the input's). */
  size?: AxisValue;
  /** Only 'nearest'. */
  mode?: 'nearest';
}

/** Nearest-neighbour upsampling of [batch, channels, length] or [batch, channels, H, W] by whole factors. */
export function upsample(x: Tensor, options: UpsampleOptions): Tensor {
  return interpolateNearest('upsample', x, options);
}

/** F.interpolate with mode 'nearest' (the only mode): the same as upsample. */
export function interpolate(x: Tensor, options: UpsampleOptions): Tensor {
  return interpolateNearest('interpolate', x, options);
}

function interpolateNearest(where: string, x: Tensor, options: UpsampleOptions): Tensor {
  checkTensor(x, `${where}: x`);
  const o = checkOptions(where, options, ['scaleFactor', 'size', 'mode']);
  if (o.mode !== undefined && o.mode !== 'nearest') throw typeError(`${where}: options.mode`, "'nearest'", o.mode);
  if (x.rank !== 3 && x.rank !== 4) throw rangeError(`${where}: x`, '[batch, channels, length] or [batch, channels, height, width]', shapeText(x.shape));
  const dims = (x.rank - 2) as 1 | 2;
  if ((o.scaleFactor === undefined) === (o.size === undefined)) {
    throw typeError(`${where}: options`, 'exactly one of scaleFactor and size', options);
  }
  const input = spatialPair(x, dims);
  let factors: [number, number];
  if (o.scaleFactor !== undefined) {
    factors = axisPair(`${where}: options.scaleFactor`, o.scaleFactor, dims, 1, 1);
  } else {
    const size = axisPair(`${where}: options.size`, o.size, dims, 1, 1);
    if (size[0] % input[0] !== 0 || size[1] % input[1] !== 0) {
      throw rangeError(`${where}: options.size`, `whole multiples of the input's ${shapeText(x.shape.slice(2))}`, String(o.size));
    }
    factors = [size[0] / input[0], size[1] / input[1]];
  }
  if (x.shape.slice(2).includes(0)) throw rangeError(`${where}: x`, `a non-empty ${spatialNames(dims)}`, shapeText(x.shape));
  const outShape = [x.shape[0]!, x.shape[1]!, ...(dims === 1 ? [input[1] * factors[1]] : [input[0] * factors[0], input[1] * factors[1]])];
  if (x.size === 0) return record(wrap(native.full(outShape, 0, x.device)), where, [x], () => [wrap(native.full([...x.shape], 0, x.device))]);
  const y = native.upsampleNearest(handleOf(x, where), factors[0], factors[1]);
  // A 1-D input [batch, channels, length] runs as planes [batch] of [channels, length] with height factor 1.
  return record(wrap(y), where, [x], (dy) => [wrap(native.upsampleNearestBackward(handleOf(dy, where), [...x.shape], factors[0], factors[1]))]);
}
