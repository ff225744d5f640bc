// Types of generator.mjs, for TypeScript users of the example (and the benchmark runner, which imports it).
import { nn, type Tensor } from 'weightnorm';

export interface HifiGanConfig {
  readonly upsampleRates: readonly number[];
  readonly upsampleKernelSizes: readonly number[];
  readonly resblockKernelSizes: readonly number[];
  readonly resblockDilationSizes: readonly (readonly number[])[];
  readonly upsampleInitialChannel: number;
}

export interface GeneratorOptions {
  /** Weight norm on every convolution (default true, as the PyTorch model is trained; { dim, eps } as for any layer). */
  weightNorm?: boolean | nn.WeightNormConfig;
}

export declare const HIFIGAN_V1: HifiGanConfig;
export declare const LRELU_SLOPE: number;
export declare const MEL_BANDS: number;

export declare class ResBlock1 extends nn.Module {
  constructor(channels: number, kernelSize: number, dilations: readonly number[], options?: GeneratorOptions);
  readonly dilatedConvs: nn.Conv1d[];
  readonly plainConvs: nn.Conv1d[];
  forward(x: Tensor): Tensor;
}

export declare class HifiGanGenerator extends nn.Module {
  constructor(config?: HifiGanConfig, options?: GeneratorOptions);
  readonly config: HifiGanConfig;
  /** Waveform samples per mel frame (256 in V1). */
  readonly hopLength: number;
  readonly kernelCount: number;
  readonly convPre: nn.Conv1d;
  readonly upsamplers: nn.ConvTranspose1d[];
  readonly resblocks: ResBlock1[];
  readonly convPost: nn.Conv1d;
  forward(mel: Tensor): Tensor;
}
