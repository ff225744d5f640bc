// Float64 reference of HiFi-GAN's generator (Kong, Kim and Bae, 2020) for test/hifigan.test.ts: 1-D convolution,
// transposed convolution and the network itself as plain loops over a state dict under this library's names
// (v, g, bias; weight after folding), so a fixture, an import and the example can each be checked against it.
import { weightNormRows } from './nn.js';

/** A tensor as the reference reads it: float64 values with their shape. */
export interface HostArray {
  readonly shape: readonly number[];
  readonly data: Float64Array;
}

/** y[o, t] = b[o] + Σ_{i,k} w[o, i, k] · x[i, t·stride + k·dilation − padding] (zero outside x); one batch item. */
export function conv1d(x: HostArray, w: HostArray, b: Float64Array, options: { padding: number; dilation: number }): HostArray {
  const [inChannels, length] = x.shape as [number, number];
  const [outChannels, wIn, kernel] = w.shape as [number, number, number];
  if (wIn !== inChannels) throw new RangeError(`conv1d: weight has ${wIn} input channels, x has ${inChannels}`);
  const { padding, dilation } = options;
  const outLength = length + 2 * padding - dilation * (kernel - 1);
  const y = new Float64Array(outChannels * outLength);
  for (let o = 0; o < outChannels; o++) {
    for (let t = 0; t < outLength; t++) {
      let s = b[o]!;
      for (let i = 0; i < inChannels; i++) {
        for (let k = 0; k < kernel; k++) {
          const at = t + k * dilation - padding;
          if (at >= 0 && at < length) s += w.data[(o * inChannels + i) * kernel + k]! * x.data[i * length + at]!;
        }
      }
      y[o * outLength + t] = s;
    }
  }
  return { shape: [outChannels, outLength], data: y };
}

/** The transpose of conv1d (weight [in, out, k]): x[i, s] scatters into y[o, s·stride + k − padding]; one batch item. */
export function convTranspose1d(x: HostArray, w: HostArray, b: Float64Array, options: { stride: number; padding: number }): HostArray {
  const [inChannels, length] = x.shape as [number, number];
  const [wIn, outChannels, kernel] = w.shape as [number, number, number];
  if (wIn !== inChannels) throw new RangeError(`convTranspose1d: weight has ${wIn} input channels, x has ${inChannels}`);
  const { stride, padding } = options;
  const outLength = (length - 1) * stride - 2 * padding + kernel;
  const y = new Float64Array(outChannels * outLength);
  for (let o = 0; o < outChannels; o++) y.fill(b[o]!, o * outLength, (o + 1) * outLength);
  for (let i = 0; i < inChannels; i++) {
    for (let s = 0; s < length; s++) {
      const value = x.data[i * length + s]!;
      for (let o = 0; o < outChannels; o++) {
        for (let k = 0; k < kernel; k++) {
          const at = s * stride + k - padding;
          if (at >= 0 && at < outLength) y[o * outLength + at] += value * w.data[(i * outChannels + o) * kernel + k]!;
        }
      }
    }
  }
  return { shape: [outChannels, outLength], data: y };
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
