// vocoder: HiFi-GAN V1's generator (examples/hifigan, full width 512, random weights made at run time) against the
// same network in PyTorch (peer_torch.py hifigan_generator), on the same thread count:
//   inference: one second of 22,050 Hz audio (86 mel frames → 22,016 samples) from 80-band mels, weight norm folded
//              (nn.removeWeightNorms; torch: plain convs), no autograd; reported as the real-time factor
//              (audio seconds / compute seconds) of both and torch ms / ours;
//   training:  one generator forward + backward with an L1 loss on the waveform (HiFi-GAN's 8,192-sample training
//              segment, 32 frames, batch 1), weight norm on every conv against plain convs.
// Checked before timing: our folded generator's waveform against torch's on our weights and mel; the weight-norm
// generator's waveform, loss and conv_post bias gradient against the plain one holding the same effective weights.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manualSeed, nn, noGrad, synchronize, type Tensor, tensor, tidy } from 'weightnorm';
import { type Device, native } from 'weightnorm/native';

// The example a user copies from, imported as it is: the benchmark times exactly that network.
import { HIFIGAN_V1, HifiGanGenerator, MEL_BANDS } from '../../../examples/hifigan/generator.mjs';
import { floats } from './floats.js';
import { relativeError, type Timing } from './measure.js';
import type { TorchPeer } from './peer.js';
import { alternate, isUnavailable, type Measured, type RoundPlan, wallTimes } from './rounds.js';
import { LAYER_TOLERANCE, type LayerCheck, type TrainingSuiteOptions } from './training.js';

export const VOCODER_SAMPLE_RATE = 22_050;
/** One second of audio at V1's hop of 256 samples per frame. */
export const VOCODER_INFERENCE_FRAMES = 86;
/** HiFi-GAN's training segment: 8,192 samples. */
export const VOCODER_TRAINING_FRAMES = 32;

export interface VocoderRow {
  task: 'inference' | 'training';
  /** folded: weight norm removed (inference); plain / wn: the training step without and with weight norm. */
  variant: 'folded' | 'plain' | 'wn';
  channels: number;
  frames: number;
  samples: number;
  check: LayerCheck | { skipped: string };
  ours: Measured;
  torch: Measured;
  /** Audio seconds per compute second (inference; > 1: faster than real time). */
  realTimeFactor: number | null;
  torchRealTimeFactor: number | null;
  /** torch ms / ours (> 1: ours faster). */
  vsTorch: number | null;
  /** training wn row: our WN step / our plain step; torch's likewise. */
  wnOverPlain: number | null;
  torchWnOverPlain: number | null;
  call: string | null;
}

const ms = (m: Measured | undefined): number | null => (m && !isUnavailable(m) ? (m as Timing).ms : null);
const ratioOf = (a: number | null, b: number | null) => (a === null || b === null ? null : a / b);

function writeF32(path: string, data: Float32Array): void {
  writeFileSync(path, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
}

function readF32(path: string): Float32Array {
  const bytes = readFileSync(path);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

function randomTensor(shape: number[], seed: number, device: Device, mean = 0, std = 1): Tensor {
  const host = native.randn(shape, seed, 'cpu', mean, std);
  const t = tensor(host.toArray(), shape, { device });
  host.dispose();
  return t;
}

/** mean |y − target|, composed from the differentiable ops every build has: |d| = relu(d) + relu(−d). */
function l1Loss(y: Tensor, target: Tensor): Tensor {
  const F = nn.functional;
  const d = F.add(y, F.scale(target, -1));
  return F.mean(F.add(F.relu(d), F.relu(F.scale(d, -1))));
}

function clearGradients(tensors: readonly Tensor[]): void {
  for (const t of tensors) {
    t.grad?.dispose();
    t.grad = null;
  }
}

/** Our folded generator's waveform against torch's on the same weights (our state dict = torch's plain names). */
async function checkAgainstTorch(peer: TorchPeer, generator: HifiGanGenerator, mel: Tensor, channels: number): Promise<LayerCheck> {
  const dir = mkdtempSync(join(tmpdir(), 'weightnorm-bench-vocoder-'));
  try {
    const state = Object.entries(generator.stateDict());
    for (const [name, t] of state) writeF32(join(dir, `${name}.bin`), t.toFloat32Array());
    writeF32(join(dir, 'mel.bin'), mel.toFloat32Array());
    const ours = tidy(() => noGrad(() => generator.forward(mel).toFloat32Array()));
    await peer.vocoderCheck(dir, channels, mel.shape[2]!, state.map(([name, t]) => [name, [...t.shape]]));
    const errors = { waveform: relativeError(ours, readF32(join(dir, 'y.bin'))) };
    return { errors, tolerance: LAYER_TOLERANCE, pass: errors.waveform <= LAYER_TOLERANCE };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * g ← g · U(0.5, 1.5)-like factors: at initialization g = ‖v‖, so w = v and the scale g/‖v‖ is exactly 1, which would
 * make the weight-norm check compare two identical computations.
 */
function spreadGains(generator: HifiGanGenerator, seed: number): void {
  const gains = Object.entries(generator.stateDict()).filter(([name]) => name.endsWith('.g'));
  const spread = gains.map(([name, g], i): [string, { shape: number[]; data: Float32Array }] => {
    const noise = native.randn([g.size], seed + i, 'cpu', 0, 0.25);
    const factors = floats(noise.toArray());
    noise.dispose();
    return [name, { shape: [...g.shape], data: g.toFloat32Array().map((value, j) => value * (1 + Math.max(-0.5, Math.min(0.5, factors[j]!)))) }];
  });
  generator.loadStateDict(Object.fromEntries(spread), { allowMissingKeys: true });
}

/**
 * The weight-norm generator against the plain one holding the same effective weights: the waveform, the loss
 * mean(y ⊙ target) and conv_post's bias gradient. Deeper gradients are not comparable between two float32
 * computations of this network: a LeakyReLU input within rounding of 0 takes slope 0.1 in one and 1 in the other,
 * so a 1e-7 relative change of the plain network's own weights already moves the bias gradients of ups.0 and conv_pre
 * by ~1e-3 relative (measured at width 512); each layer's gradients are checked against PyTorch in the gradient-check
 * harness instead. (A smooth loss, because L1's gradient has the same kink at y = target.)
 */
function checkWeightNormStep(wn: HifiGanGenerator, plain: HifiGanGenerator, mel: Tensor, target: Tensor): LayerCheck {
  const F = nn.functional;
  const run = (generator: HifiGanGenerator) =>
    tidy(() => {
      clearGradients(generator.parameters());
      const y = generator.forward(mel);
      const loss = F.mean(F.mul(y, target));
      loss.backward();
      const result = { waveform: y.toFloat32Array(), loss: loss.toFloat32Array(), dbiasConvPost: generator.convPost.bias!.grad!.toFloat32Array() };
      clearGradients(generator.parameters());
      return result;
    });
  const ours = run(wn);
  const reference = run(plain);
  const errors = {
    waveform: relativeError(ours.waveform, reference.waveform),
    loss: relativeError(ours.loss, reference.loss),
    dbiasConvPost: relativeError(ours.dbiasConvPost, reference.dbiasConvPost),
  };
  return { errors, tolerance: LAYER_TOLERANCE, pass: Object.values(errors).every((e) => e <= LAYER_TOLERANCE) };
}

function trainingStep(generator: HifiGanGenerator, mel: Tensor, target: Tensor): () => void {
  const params = generator.parameters();
  return () =>
    tidy(() => {
      clearGradients(params);
      l1Loss(generator.forward(mel), target).backward();
    });
}

export async function runVocoderSuite(peer: TorchPeer | null, options: TrainingSuiteOptions, channels = HIFIGAN_V1.upsampleInitialChannel): Promise<VocoderRow[]> {
  const { device, plan, seed } = options;
  const config = { ...HIFIGAN_V1, upsampleInitialChannel: channels };
  manualSeed(seed);
  const wn = new HifiGanGenerator(config).to(device);
  spreadGains(wn, seed + 4);
  // Plain and folded twins with the weight-norm generator's effective weights (the same names as torch's plain ones).
  const folded = new HifiGanGenerator(config).to(device);
  folded.loadStateDict(wn.stateDict());
  nn.removeWeightNorms(folded);
  folded.eval();
  const plain = new HifiGanGenerator(config, { weightNorm: false }).to(device);
  plain.loadStateDict(folded.stateDict());
  const hop = wn.hopLength;
  const inferenceMel = randomTensor([1, MEL_BANDS, VOCODER_INFERENCE_FRAMES], seed + 1, device);
  const trainingMel = randomTensor([1, MEL_BANDS, VOCODER_TRAINING_FRAMES], seed + 2, device);
  const target = randomTensor([1, 1, VOCODER_TRAINING_FRAMES * hop], seed + 3, device, 0, 0.3);
  const rows: VocoderRow[] = [];
  try {
    // Inference.
    const samples = VOCODER_INFERENCE_FRAMES * hop;
    let inferenceCheck: VocoderRow['check'] = { skipped: 'no torch peer' };
    const unavailable: Record<string, string> = {};
    if (peer) {
      options.log(`${device} vocoder: checking the folded generator's waveform against torch on our weights`);
      try {
        inferenceCheck = await checkAgainstTorch(peer, folded, inferenceMel, channels);
        if (!inferenceCheck.pass) unavailable.folded = `CHECK FAILED: ${JSON.stringify(inferenceCheck.errors)}`;
      } catch (error) {
        inferenceCheck = { skipped: `torch check failed: ${(error as Error).message}` };
      }
    }
    const inference = await alternate(
      unavailable.folded
        ? {}
        : { folded: (warmup, repeats) => wallTimes(() => tidy(() => void noGrad(() => folded.forward(inferenceMel))), synchronize, warmup, repeats) },
      unavailable,
      peer,
      (p) => p.task('vocoder', { task: 'inference', channels, frames: VOCODER_INFERENCE_FRAMES, seed }),
      plan,
      (round) => options.log(`${device} vocoder inference: round ${round + 1}/${plan.rounds}`),
    );
    const audioSeconds = samples / VOCODER_SAMPLE_RATE;
    const torchInference = inference.theirs?.folded ?? { unavailable: inference.peerError ?? 'no torch peer' };
    const rtf = (m: Measured | undefined) => (ms(m) === null ? null : audioSeconds / (ms(m)! / 1000));
    rows.push({
      task: 'inference',
      variant: 'folded',
      channels,
      frames: VOCODER_INFERENCE_FRAMES,
      samples,
      check: inferenceCheck,
      ours: inference.ours.folded!,
      torch: torchInference,
      realTimeFactor: rtf(inference.ours.folded),
      torchRealTimeFactor: rtf(torchInference),
      vsTorch: ratioOf(ms(torchInference), ms(inference.ours.folded)),
      wnOverPlain: null,
      torchWnOverPlain: null,
      call: inference.calls.folded ?? null,
    });

    // Training step, weight norm against plain.
    options.log(`${device} vocoder: checking the weight-norm training step against the plain one`);
    const trainingUnavailable: Record<string, string> = {};
    let trainingCheck: VocoderRow['check'];
    try {
      trainingCheck = checkWeightNormStep(wn, plain, trainingMel, target);
      if (!trainingCheck.pass) trainingUnavailable.wn = `CHECK FAILED: ${JSON.stringify(trainingCheck.errors)}`;
    } catch (error) {
      trainingCheck = { skipped: (error as Error).message };
      trainingUnavailable.wn = (error as Error).message;
    }
    const training = await alternate(
      {
        plain: (warmup, repeats) => wallTimes(trainingStep(plain, trainingMel, target), synchronize, warmup, repeats),
        ...(trainingUnavailable.wn ? {} : { wn: (warmup: number, repeats: number) => wallTimes(trainingStep(wn, trainingMel, target), synchronize, warmup, repeats) }),
      },
      trainingUnavailable,
      peer,
      (p) => p.task('vocoder', { task: 'training', channels, frames: VOCODER_TRAINING_FRAMES, seed }),
      plan,
      (round) => options.log(`${device} vocoder training step: round ${round + 1}/${plan.rounds}`),
    );
    for (const variant of ['plain', 'wn'] as const) {
      const torch = training.theirs?.[variant] ?? { unavailable: training.peerError ?? 'no torch peer' };
      rows.push({
        task: 'training',
        variant,
        channels,
        frames: VOCODER_TRAINING_FRAMES,
        samples: VOCODER_TRAINING_FRAMES * hop,
        check: variant === 'wn' ? trainingCheck : { skipped: 'the reference of the wn check' },
        ours: training.ours[variant]!,
        torch,
        realTimeFactor: null,
        torchRealTimeFactor: null,
        vsTorch: ratioOf(ms(torch), ms(training.ours[variant])),
        wnOverPlain: variant === 'wn' ? ratioOf(ms(training.ours.wn), ms(training.ours.plain)) : null,
        torchWnOverPlain: variant === 'wn' ? ratioOf(ms(training.theirs?.wn), ms(training.theirs?.plain)) : null,
        call: training.calls[variant] ?? null,
      });
    }
  } finally {
    for (const generator of [wn, folded, plain]) generator.dispose();
    for (const t of [inferenceMel, trainingMel, target]) t.dispose();
    if (device === 'cuda') native.releaseCachedMemory();
  }
  return rows;
}

export const VOCODER_HEADERS = ['task', 'variant', 'ours ms', 'torch ms', 'torch/ours', 'RTF ours', 'RTF torch', 'WN/plain', 'torch WN/plain', 'check'];

/** Table rows for the terminal and the markdown report. */
export function vocoderRows(rows: readonly VocoderRow[]): string[][] {
  const fixed = (x: number | null, digits = 2) => (x === null ? 'n/a' : x.toFixed(digits));
  const timing = (m: Measured) => (isUnavailable(m) ? `n/a (${(m as { unavailable: string }).unavailable.slice(0, 60)})` : (m as Timing).ms.toFixed(1));
  return rows.map((r) => [
    `${r.task} ${r.frames} frames`,
    r.variant,
    timing(r.ours),
    timing(r.torch),
    r.vsTorch === null ? 'n/a' : `${r.vsTorch.toFixed(2)}×`,
    fixed(r.realTimeFactor),
    fixed(r.torchRealTimeFactor),
    r.wnOverPlain === null ? '' : `${r.wnOverPlain.toFixed(3)}×`,
    r.torchWnOverPlain === null ? '' : `${r.torchWnOverPlain.toFixed(3)}×`,
    'skipped' in r.check ? `skipped: ${r.check.skipped.slice(0, 60)}` : `${Math.max(...Object.values(r.check.errors)).toExponential(1)} ${r.check.pass ? 'pass' : 'FAIL'}`,
  ]);
}

/** What the markdown report says about the suite, above its table. */
export function vocoderDescription(rows: readonly VocoderRow[]): string {
  const call = (variant: string) => rows.find((r) => r.variant === variant)?.call ?? 'n/a';
  return (
    `HiFi-GAN V1's generator (examples/hifigan, width ${rows[0]?.channels ?? 'n/a'}, random weights). Inference: ` +
    `${VOCODER_INFERENCE_FRAMES} mel frames → ${VOCODER_INFERENCE_FRAMES * 256} samples (one second at ` +
    `${VOCODER_SAMPLE_RATE} Hz), weight norm folded (nn.removeWeightNorms), under noGrad; RTF = audio seconds / compute ` +
    `seconds. Training: forward + backward of an L1 loss on ${VOCODER_TRAINING_FRAMES * 256} samples, weight norm on ` +
    `every conv vs plain convs. Wall clock per step with a synchronize, both sides alike. torch: ${call('folded')}; ` +
    `${call('wn')}. Checked before timing: our folded waveform against torch's on our weights (relative ` +
    `${LAYER_TOLERANCE}); the WN generator's waveform, loss mean(y ⊙ target) and conv_post bias gradient against ` +
    "the plain one's (deeper gradients differ by ~1e-3 between any two float32 runs: LeakyReLU kinks)."
  );
}
