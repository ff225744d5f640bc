// Mel spectrogram → 16-bit WAV with a HiFi-GAN generator trained in PyTorch. Copy this file to start your own.
//
//   node examples/hifigan/synthesize.mjs [generator.safetensors] [mel.safetensors] [out.wav]
//
// Without arguments it uses the test fixtures (a width-32 generator with random weights and a random mel), so it runs
// as is; the result is noise. For real speech, export a trained generator's state dict to safetensors in Python,
// e.g. the reference implementation's V1 checkpoint:
//   import torch; from safetensors.torch import save_file
//   save_file(torch.load('g_02500000', map_location='cpu')['generator'], 'generator.safetensors')
// and a mel spectrogram [1, 80, frames] (or [80, frames]) computed as that model was trained, saved under the key
// 'mel'. Both of PyTorch's weight-norm namings load (weight_g/weight_v and parametrizations.weight.original0/1).
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { backend, io, nn, noGrad, tidy } from 'weightnorm';

import { HIFIGAN_V1, HifiGanGenerator, MEL_BANDS } from './generator.mjs';

const fixture = (name) => fileURLToPath(new URL(`../../test/fixtures/hifigan/generator.${name}.safetensors`, import.meta.url));
const [weightsPath = fixture('weight_norm'), melPath = fixture('io'), outPath = 'hifigan.wav'] = process.argv.slice(2);
const SAMPLE_RATE = 22_050;
const device = backend().cuda.usable ? 'cuda' : 'cpu';

// 1. The network's width is conv_pre's output channels, read from the file (512 for V1, 128 for V2).
const { tensors } = io.load(weightsPath);
const convPre = tensors['conv_pre.weight_v'] ?? tensors['conv_pre.parametrizations.weight.original1'];
if (!convPre) throw new Error(`${weightsPath}: no weight-normalized conv_pre (weight_v or parametrizations.weight.original1)`);
const generator = new HifiGanGenerator({ ...HIFIGAN_V1, upsampleInitialChannel: convPre.shape[0] });

// 2. Import torch's (g, v) pairs; ConvTranspose1d's g is per input channel, as torch's weight_norm dim=0 makes it.
io.importTorchWeightNorm(tensors, generator);
for (const t of Object.values(tensors)) t.dispose();

// 3. Fold w = g·v/‖v‖ into plain weights once: inference then runs plain convolutions (same outputs).
nn.removeWeightNorms(generator);
generator.eval().to(device);

// 4. Mel in, waveform out.
const melFile = io.load(melPath, { device });
const mel = melFile.tensors.mel;
if (!mel) throw new Error(`${melPath}: no tensor named 'mel'`);
const frames = mel.shape[mel.shape.length - 1];
if (mel.shape.at(-2) !== MEL_BANDS) throw new Error(`${melPath}: 'mel' must be [1, ${MEL_BANDS}, frames], got [${mel.shape}]`);
const started = performance.now();
const batched = mel.shape.length === 2 ? nn.functional.reshape(mel, [1, MEL_BANDS, frames]) : mel;
const samples = tidy(() => noGrad(() => generator.forward(batched).toArray()));
const seconds = (performance.now() - started) / 1000;

// 5. 16-bit PCM, mono.
const pcm = Buffer.alloc(44 + 2 * samples.length);
pcm.write('RIFF', 0);
pcm.writeUInt32LE(36 + 2 * samples.length, 4);
pcm.write('WAVEfmt ', 8);
pcm.writeUInt32LE(16, 16); // fmt chunk size
pcm.writeUInt16LE(1, 20); // PCM
pcm.writeUInt16LE(1, 22); // mono
pcm.writeUInt32LE(SAMPLE_RATE, 24);
pcm.writeUInt32LE(2 * SAMPLE_RATE, 28); // bytes per second
pcm.writeUInt16LE(2, 32); // bytes per frame
pcm.writeUInt16LE(16, 34); // bits per sample
pcm.write('data', 36);
pcm.writeUInt32LE(2 * samples.length, 40);
samples.forEach((s, i) => pcm.writeInt16LE(Math.round(32767 * Math.max(-1, Math.min(1, s))), 44 + 2 * i));
writeFileSync(outPath, pcm);
const audio = samples.length / SAMPLE_RATE;
console.log(`${outPath}: ${samples.length} samples (${audio.toFixed(2)} s) in ${seconds.toFixed(2)} s on ${device}: ${(audio / seconds).toFixed(1)}× real time`);
generator.dispose();
for (const t of Object.values(melFile.tensors)) t.dispose();
