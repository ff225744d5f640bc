// HiFi-GAN's generator from PyTorch: the example network (examples/hifigan/generator.mjs) imports torch's weights
// under both weight-norm namings and reproduces torch's waveform, with weight norm and after folding it. The fixtures
// (scripts/make_hifigan_fixtures.py): V1's generator at width 32 with random weights, a mel [1, 80, 32] and torch's
// float64 outputs [1, 1, 8192].
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { HifiGanGenerator, type HifiGanConfig } from '../examples/hifigan/generator.mjs';
import { backend, type Device, io, nn, noGrad, type Tensor, tidy } from '../ts/index.js';
import { runVocoderSuite } from '../weightnorm-cli/src/bench/vocoder.js';
import { expectCheckpointError } from './expect-checkpoint-error.js';
import { maxAbs } from './helpers.js';
import { type HostArray, hifiGanGenerator } from './reference/hifigan.js';

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/hifigan/generator.${name}.safetensors`, import.meta.url));
const NAMINGS = ['weight_norm', 'parametrizations'] as const;
const info = backend();
const devices: Device[] = info.cuda.usable ? ['cpu', 'cuda'] : ['cpu'];
if (!info.cuda.usable) console.log(`hifigan.test: CUDA cases skipped: ${info.cuda.reason ?? 'CUDA not compiled in'}`);

const ioFile = io.load(fixture('io'));
// Stored as float64, read as float32: the rounding (≤ 2^-24 relative, 6e-8 here) is far below every tolerance below.
const { mel, output, output_removed: outputRemoved } = ioFile.tensors as Record<'mel' | 'output' | 'output_removed', Tensor>;
const torchConfig = JSON.parse(ioFile.metadata.config!) as Record<string, unknown>;
const config: HifiGanConfig = {
  upsampleRates: torchConfig.upsample_rates as number[],
  upsampleKernelSizes: torchConfig.upsample_kernel_sizes as number[],
  resblockKernelSizes: torchConfig.resblock_kernel_sizes as number[],
  resblockDilationSizes: torchConfig.resblock_dilation_sizes as number[][],
  upsampleInitialChannel: torchConfig.upsample_initial_channel as number,
};
/** max |y32 − y64| of torch itself: the same weights and mel run in float32 against float64. */
const torchFloat32Error = Number(ioFile.metadata.float32_error);

/**
 * Max |ours − torch float64| allowed on the waveform (|y| < 1). The chain is 4 stages deep, each a transposed conv and
 * nine residual convs (plus conv_pre and conv_post): about 40 float32 convolutions in sequence, each summing up to
 * 32·11 = 352 products. torch itself, running the same weights in float32, lands 1.1e-6 from its float64 result
 * (torchFloat32Error); ours sums in other orders (im2col GEMM tiles, the weight-norm scale in the GEMM epilogue), so
 * its error is a random walk of the same size, not the same values (1.2e-6 measured through the functional convs
 * with materialized weights). 1e-5 allows ~9× torch's own error; a wrong slope, padding, tap or norm axis moves the
 * waveform by 1e-2 or more (a final LeakyReLU slope of 0.1 instead of 0.01: 0.15).
 */
const TOLERANCE = 1e-5;

function hostArray(t: Tensor): HostArray {
  return { shape: t.shape, data: Float64Array.from(t.toArray()) };
}

function maxAbsDifference(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  return Number.isNaN(worst) ? Infinity : worst;
}

function torchStateUnderOurNames(naming: (typeof NAMINGS)[number]): Record<string, Tensor> {
  return io.mapTorchStateDict(io.load(fixture(naming)).tensors);
}

describe('HiFi-GAN fixtures', () => {
  it('torch measured its own float32 error, and the tolerance leaves a margin over it', () => {
    expect(torchFloat32Error).toBeGreaterThan(0);
    expect(TOLERANCE).toBeGreaterThan(4 * torchFloat32Error);
    expect(mel.shape).toEqual([1, 80, 32]);
    expect(output.shape).toEqual([1, 1, 32 * 256]);
    expect(maxAbs(output.toArray())).toBeGreaterThan(0.5); // a waveform, not a silent one
  });

  it.each(NAMINGS)("%s naming: our names, per-input-channel g on ups, and the float64 reference gives torch's output", (naming) => {
    const state = torchStateUnderOurNames(naming);
    const other = torchStateUnderOurNames(naming === 'weight_norm' ? 'parametrizations' : 'weight_norm');
    expect(Object.keys(state).sort()).toEqual(Object.keys(other).sort());
    for (const [name, t] of Object.entries(state)) expect(t.toArray(), name).toEqual(other[name]!.toArray());
    // torch's weight_norm dim=0 on a ConvTranspose1d weight [in, out, k]: one g per INPUT channel.
    const channels = config.upsampleInitialChannel;
    for (let i = 0; i < config.upsampleRates.length; i++) {
      expect(state[`ups.${i}.v`]!.shape).toEqual([channels >> i, channels >> (i + 1), config.upsampleKernelSizes[i]!]);
      expect(state[`ups.${i}.g`]!.shape).toEqual([channels >> i]);
    }
    expect(state['resblocks.11.convs2.2.g']!.shape).toEqual([channels >> 4]);
    const reference = hiFiReference(state);
    // Float64 against float64 from the same float32 weights: only the stored output's float32 rounding remains.
    expect(maxAbsDifference(reference.data, output.toArray())).toBeLessThan(1e-7);
    expect(maxAbsDifference(reference.data, outputRemoved.toArray())).toBeLessThan(1e-7);
  });
});

function hiFiReference(state: Record<string, Tensor>): HostArray {
  const host = Object.fromEntries(Object.entries(state).map(([name, t]) => [name, hostArray(t)]));
  const [, bands, frames] = mel.shape as [number, number, number];
  return hifiGanGenerator({ shape: [bands, frames], data: Float64Array.from(mel.toArray()) }, host, config);
}

function waveform(generator: HifiGanGenerator, device: Device): Float32Array {
  return tidy(() => noGrad(() => generator.forward(mel.to(device)).toArray()));
}

describe.each(devices)('HiFi-GAN generator from PyTorch on %s', (device) => {
  it.each(NAMINGS)("imports the %s naming and matches torch's waveform, with weight norm and after removeWeightNorms", (naming) => {
    const generator = new HifiGanGenerator(config).eval();
    try {
      io.importTorchWeightNorm(fixture(naming), generator);
      generator.to(device);
      const ups = generator.upsamplers[0]!;
      expect(ups.isWeightNormalized).toBe(true);
      expect(ups.g!.shape).toEqual([config.upsampleInitialChannel]); // per input channel, as torch's dim 0
      const y = waveform(generator, device);
      expect(maxAbsDifference(y, output.toArray()), `weight norm, ${naming}`).toBeLessThan(TOLERANCE);

      nn.removeWeightNorms(generator);
      const names = Object.keys(generator.stateDict());
      expect(names.filter((name) => name.endsWith('.v') || name.endsWith('.g'))).toEqual([]);
      expect(names).toContain('ups.3.weight');
      expect(names).toContain('resblocks.11.convs2.2.weight');
      const folded = waveform(generator, device);
      expect(maxAbsDifference(folded, outputRemoved.toArray()), `folded, ${naming}`).toBeLessThan(TOLERANCE);
    } finally {
      generator.dispose();
    }
  });
});

describe('HiFi-GAN import from a toolkit checkpoint', () => {
  it("a generator nested under 'generator.' beside other networks' weights loads with prefixMap and allowExtraKeys", () => {
    const { tensors } = io.load(fixture('weight_norm'));
    const extra = tensors['conv_post.bias']!; // stands in for a discriminator's tensor
    const nested = { ...Object.fromEntries(Object.entries(tensors).map(([name, t]) => [`generator.${name}`, t])), 'mpd.discriminators.0.convs.0.bias': extra };
    const generator = new HifiGanGenerator(config).eval();
    try {
      io.importTorchWeightNorm(nested, generator, { prefixMap: { 'generator.': '' }, allowExtraKeys: true });
      expect(maxAbsDifference(waveform(generator, 'cpu'), output.toArray())).toBeLessThan(TOLERANCE);
    } finally {
      generator.dispose();
      for (const t of Object.values(tensors)) t.dispose();
    }
  });
});

describe('HiFi-GAN import errors', () => {
  it("a generator whose convs normalize another axis than torch's dim 0 is refused, naming file and key", () => {
    const generator = new HifiGanGenerator(config, { weightNorm: { dim: 1 } });
    try {
      const before = generator.stateDict()['ups.0.v']!.toArray();
      expectCheckpointError(
        () => io.importTorchWeightNorm(fixture('weight_norm'), generator),
        'generator.weight_norm.safetensors',
        /'conv_pre\.weight_g' has shape \[32, 1, 1\] \(torch weight_norm dim=0\), but the layer 'conv_pre' normalizes with dim 1/,
      );
      expect(generator.stateDict()['ups.0.v']!.toArray()).toEqual(before); // all or nothing
    } finally {
      generator.dispose();
    }
  });

  it('a generator of another width is refused with the first mismatched shape', () => {
    const generator = new HifiGanGenerator({ ...config, upsampleInitialChannel: 64 });
    try {
      expectCheckpointError(() => io.importTorchWeightNorm(fixture('parametrizations'), generator), /expected shape \[64/);
    } finally {
      generator.dispose();
    }
  });
});

describe('vocoder benchmark suite (weightnorm bench --suites vocoder)', () => {
  it('checks and times inference and the WN and plain training steps at a small width (no torch peer here)', async () => {
    const plan = { rounds: 1, warmup: 0, repeats: 1 };
    const rows = await runVocoderSuite(null, { device: 'cpu', plan, seed: 5, log: () => undefined }, 16);
    expect(rows.map((r) => `${r.task} ${r.variant}`)).toEqual(['inference folded', 'training plain', 'training wn']);
    const [inference, , wn] = rows as [(typeof rows)[0], (typeof rows)[0], (typeof rows)[0]];
    expect(inference.samples).toBe(86 * 256); // one second of 22,050 Hz audio, less a partial frame
    expect(inference.realTimeFactor).toBeGreaterThan(0);
    expect(inference.torch).toEqual({ unavailable: 'no torch peer' });
    expect(wn.check).toMatchObject({ pass: true }); // the WN step's loss and bias gradient equal the plain one's
    expect(wn.wnOverPlain).toBeGreaterThan(0);
  });
});
