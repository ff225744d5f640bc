// HiFi-GAN's generator (Kong, Kim and Bae, 2020) written with weightnorm: mel spectrogram [batch, 80, frames] in,
// waveform [batch, 1, frames · 256] out (V1's upsampling 8 · 8 · 2 · 2). Copy this file to use it in your project.
//
// Module names follow the reference PyTorch implementation, so its state dict lines up name for name:
//   conv_pre                   Conv1d(80 → C, k7, pad 3)
//   ups.<i>                    ConvTranspose1d(C/2^i → C/2^(i+1), k_i, stride u_i, pad (k_i − u_i)/2)
//   resblocks.<3i + j>         ResBlock1 of stage i with kernel j (3, 7, 11) and dilations (1, 3, 5):
//     .convs1.<n>, .convs2.<n> Conv1d(c → c, k_j, dilation d_n resp. 1, 'same' padding)
//   conv_post                  Conv1d(C/16 → 1, k7, pad 3)
// With weightNorm (the default, as the PyTorch model is trained) every conv holds v and g; a transposed conv's g has
// one entry per INPUT channel, which is what torch.nn.utils.weight_norm's dim=0 means on its [in, out, k] weight.
// Load PyTorch weights with io.importTorchWeightNorm(), then fold with nn.removeWeightNorms() for inference.
import { nn } from 'weightnorm';

const F = nn.functional;

/** V1, the high-quality configuration: upsample_initial_channel (C) 512; V2 is the same with C = 128. */
export const HIFIGAN_V1 = Object.freeze({
  upsampleRates: [8, 8, 2, 2],
  upsampleKernelSizes: [16, 16, 4, 4],
  resblockKernelSizes: [3, 7, 11],
  resblockDilationSizes: [
    [1, 3, 5],
    [1, 3, 5],
    [1, 3, 5],
  ],
  upsampleInitialChannel: 512,
});

/** The slope of every LeakyReLU inside the network; the one before conv_post keeps torch's default 0.01. */
export const LRELU_SLOPE = 0.1;

/** Mel bands of the input. */
export const MEL_BANDS = 80;

/**
 * Three residual units x ← x + conv2(lrelu(conv1(lrelu(x)))), conv1 dilated by 1, 3, 5 in turn: a receptive field
 * of the block's kernel size at three scales. The convolutions keep the length ('same' padding).
 */
export class ResBlock1 extends nn.Module {
  constructor(channels, kernelSize, dilations, { weightNorm = true } = {}) {
    super();
    const conv = (dilation) =>
      new nn.Conv1d(channels, channels, kernelSize, { dilation, padding: Math.floor((dilation * (kernelSize - 1)) / 2), weightNorm });
    this.dilatedConvs = dilations.map((d) => conv(d));
    this.plainConvs = dilations.map(() => conv(1));
    this.registerModule('convs1', new nn.ModuleList(this.dilatedConvs));
    this.registerModule('convs2', new nn.ModuleList(this.plainConvs));
  }

  forward(x) {
    for (let n = 0; n < this.dilatedConvs.length; n++) {
      const branch = this.dilatedConvs[n].forward(F.leakyRelu(x, LRELU_SLOPE));
      x = F.add(x, this.plainConvs[n].forward(F.leakyRelu(branch, LRELU_SLOPE)));
    }
    return x;
  }
}

/** The generator; `config` as HIFIGAN_V1 (override upsampleInitialChannel for a narrower network). */
export class HifiGanGenerator extends nn.Module {
  constructor(config = HIFIGAN_V1, { weightNorm = true } = {}) {
    super();
    const { upsampleRates, upsampleKernelSizes, resblockKernelSizes, resblockDilationSizes, upsampleInitialChannel } = config;
    const width = (stage) => upsampleInitialChannel / 2 ** stage;
    if (!Number.isInteger(width(upsampleRates.length))) {
      throw new RangeError(`HifiGanGenerator: config.upsampleInitialChannel must be divisible by ${2 ** upsampleRates.length}, got ${upsampleInitialChannel}`);
    }
    this.config = config;
    this.hopLength = upsampleRates.reduce((a, b) => a * b, 1);
    this.kernelCount = resblockKernelSizes.length;
    this.convPre = this.registerModule('conv_pre', new nn.Conv1d(MEL_BANDS, width(0), 7, { padding: 3, weightNorm }));
    this.upsamplers = upsampleRates.map(
      (rate, i) =>
        new nn.ConvTranspose1d(width(i), width(i + 1), upsampleKernelSizes[i], {
          stride: rate,
          padding: Math.floor((upsampleKernelSizes[i] - rate) / 2), // as the reference's (k - u) // 2
          weightNorm,
        }),
    );
    this.registerModule('ups', new nn.ModuleList(this.upsamplers));
    // Stage i's blocks are resblocks.<i · kernelCount + j>, as in the reference implementation.
    this.resblocks = upsampleRates.flatMap((_, i) =>
      resblockKernelSizes.map((kernel, j) => new ResBlock1(width(i + 1), kernel, resblockDilationSizes[j], { weightNorm })),
    );
    this.registerModule('resblocks', new nn.ModuleList(this.resblocks));
    this.convPost = this.registerModule('conv_post', new nn.Conv1d(width(upsampleRates.length), 1, 7, { padding: 3, weightNorm }));
  }

  /** mel [batch, 80, frames] → waveform [batch, 1, frames · hopLength] in (−1, 1). */
  forward(mel) {
    let x = this.convPre.forward(mel);
    for (const [i, upsample] of this.upsamplers.entries()) {
      x = upsample.forward(F.leakyRelu(x, LRELU_SLOPE));
      // Multi-receptive-field fusion: the mean of the stage's blocks, each applied to the same input.
      const blocks = this.resblocks.slice(i * this.kernelCount, (i + 1) * this.kernelCount);
      let sum = blocks[0].forward(x);
      for (const block of blocks.slice(1)) sum = F.add(sum, block.forward(x));
      x = F.scale(sum, 1 / this.kernelCount);
    }
    return F.tanh(this.convPost.forward(F.leakyRelu(x, 0.01)));
  }
}
