// Float64 reference of HiFi-GAN's generator (Kong, Kim and Bae, 2020) for test/hifigan.test.ts: the network as plain
// loops over a state dict under this library's names (v, g, bias; weight after folding), its convolutions the
// convolution family's references (./conv.ts), so a fixture, an import and the example can each be checked against it.
import { type ConvReferenceGeometry, convReference, convTransposeReference } from './conv.js';
import { weightNormRows } from './nn.js';

/** A tensor as the reference reads it: float64 values with their shape. */
export interface HostArray {
  readonly shape: readonly number[];
  readonly data: Float64Array;
}

/** 1-D convolution of one batch item [inChannels, length] by w [out, in, k]: the direct convolution's sum. */
export function conv1d(x: HostArray, w: HostArray, b: Float64Array, options: { padding: number; dilation: number }): HostArray {
  const [inChannels, length] = x.shape as [number, number];
  const [outChannels, , kernel] = w.shape as [number, number, number];
  const { padding, dilation } = options;
  const outLength = length + 2 * padding - dilation * (kernel - 1);
  const geometry = lineGeometry(inChannels, outChannels, length, outLength, kernel, 1, padding, dilation);
  return { shape: [outChannels, outLength], data: convReference(x.data, w.data, b, geometry) };
}

/** The transpose of conv1d, w [in, out, k]: the adjoint of the direct convolution from [out, outLength] to x's shape. */
export function convTranspose1d(x: HostArray, w: HostArray, b: Float64Array, options: { stride: number; padding: number }): HostArray {
  const [inChannels, length] = x.shape as [number, number];
  const [, outChannels, kernel] = w.shape as [number, number, number];
  const { stride, padding } = options;
  const outLength = (length - 1) * stride - 2 * padding + kernel;
  const direct = lineGeometry(outChannels, inChannels, outLength, length, kernel, stride, padding, 1);
  return { shape: [outChannels, outLength], data: convTransposeReference(x.data, w.data, b, direct) };
}

/** A 1-D convolution of one batch item as the height-1 case of the 2-D reference geometry. */
function lineGeometry(
  inChannels: number,
  outChannels: number,
  inLength: number,
  outLength: number,
  kernel: number,
  stride: number,
  padding: number,
  dilation: number,
): ConvReferenceGeometry {
  return {
    batch: 1,
    inChannels,
    outChannels,
    groups: 1,
    inSize: [1, inLength],
    outSize: [1, outLength],
    kernel: [1, kernel],
    stride: [1, stride],
    padding: [0, padding],
    dilation: [1, dilation],
  };
}

const map = (x: HostArray, f: (value: number) => number): HostArray => ({ shape: x.shape, data: x.data.map(f) });
const leakyRelu = (x: HostArray, slope: number) => map(x, (value) => (value >= 0 ? value : slope * value));
const add = (a: HostArray, b: HostArray): HostArray => ({ shape: a.shape, data: a.data.map((value, i) => value + b.data[i]!) });

export interface HifiGanReferenceConfig {
  upsampleRates: readonly number[];
  upsampleKernelSizes: readonly number[];
  resblockKernelSizes: readonly number[];
  resblockDilationSizes: readonly (readonly number[])[];
}

/**
 * The generator on one mel [80, frames] with weights `state` (our names: `<conv>.v` and `<conv>.g` with weight norm
 * dim 0, or `<conv>.weight`; `<conv>.bias`): conv_pre, then per stage LeakyReLU 0.1, ups.<i>, the mean of the
 * stage's ResBlock1s (x ← x + convs2(lrelu(convs1(lrelu(x))))), then LeakyReLU 0.01, conv_post, tanh.
 */
export function hifiGanGenerator(mel: HostArray, state: Record<string, HostArray>, config: HifiGanReferenceConfig): HostArray {
  const weight = (name: string): HostArray => {
    const plain = state[`${name}.weight`];
    if (plain) return plain;
    const v = state[`${name}.v`];
    const g = state[`${name}.g`];
    if (!v || !g) throw new RangeError(`hifiGanGenerator: no weight for '${name}'`);
    return { shape: v.shape, data: weightNormRows(v.data, g.data, v.shape[0]!) };
  };
  const bias = (name: string): Float64Array => state[`${name}.bias`]!.data;
  const conv = (name: string, x: HostArray, padding: number, dilation = 1) => conv1d(x, weight(name), bias(name), { padding, dilation });
  const kernels = config.resblockKernelSizes;
  let x = conv('conv_pre', mel, 3);
  for (const [i, stride] of config.upsampleRates.entries()) {
    const kernel = config.upsampleKernelSizes[i]!;
    x = convTranspose1d(leakyRelu(x, 0.1), weight(`ups.${i}`), bias(`ups.${i}`), { stride, padding: (kernel - stride) / 2 });
    let sum: HostArray | null = null;
    for (const [j, size] of kernels.entries()) {
      const block = `resblocks.${i * kernels.length + j}`;
      let h = x;
      for (const [n, dilation] of config.resblockDilationSizes[j]!.entries()) {
        const branch = conv(`${block}.convs1.${n}`, leakyRelu(h, 0.1), (dilation * (size - 1)) / 2, dilation);
        h = add(h, conv(`${block}.convs2.${n}`, leakyRelu(branch, 0.1), (size - 1) / 2));
      }
      sum = sum ? add(sum, h) : h;
    }
    x = map(sum!, (value) => value / kernels.length);
  }
  return map(conv('conv_post', leakyRelu(x, 0.01), 3), Math.tanh);
}
