// Layer and training-step suites, through the public TypeScript API as a user runs them:
//   linear: a weight-normalized nn.Linear against a plain one (forward + backward, x requiring its gradient, so the
//           three products of a hidden layer run), goal: within 5% of the plain layer's time;
//   mnist:  the CLI's CNN (`train --model cnn`) training step, trainStep() with Adam, weight norm on and off, against
//           the same network in PyTorch eager; goal: ours at least as fast.
// Each is checked before it is timed: the weight-normalized Linear against the plain Linear on its effective weight
// followed by the unfused weight-norm backward; the CNN's loss and every gradient against torch's on our weights.
import { floats } from './floats.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manualSeed, nn, noGrad, ops, optim, synchronize, type Tensor, tensor, tidy, trainStep } from 'weightnorm';
import { type Device, native } from 'weightnorm/native';

import { buildModel } from '../commands/common.js';
import { DEFAULT_MAX_SPREAD, roundSpread } from '../commands/timing.js';
import { relativeError, type Timing } from './measure.js';
import type { PeerTask, TorchPeer } from './peer.js';
import { alternate, type AlternateResult, isUnavailable, type Measured, type RoundPlan, wallTimes } from './rounds.js';

export interface LinearCase {
  name: string;
  batch: number;
  in: number;
  out: number;
  quick: boolean;
}

export const LINEAR_CASES: readonly LinearCase[] = [
  { name: 'linear-256x784-1024', batch: 256, in: 784, out: 1024, quick: true },
  { name: 'linear-1024x1024-1024', batch: 1024, in: 1024, out: 1024, quick: true },
  { name: 'linear-4096x4096-4096', batch: 4096, in: 4096, out: 4096, quick: false },
  { name: 'linear-8192x1024-4096', batch: 8192, in: 1024, out: 4096, quick: false },
];

export const MNIST_BATCHES: readonly number[] = [64, 256];

/** The goal for the weight-normalized Linear: at most this × the plain Linear's time. */
export const LINEAR_RATIO_GOAL = 1.05;

/**
 * Relative error (max |a − b| / max |b|) allowed between two float32 computations of a layer's outputs and
 * gradients: GEMMs over k up to 8192 in different blockings and split-K orders, and (MNIST) torch's convolution
 * algorithms, differ by ~1e-6-1e-5 relative; a wrong term or layout is O(1).
 */
export const LAYER_TOLERANCE = 1e-3;

export interface LayerCheck {
  errors: Record<string, number>;
  tolerance: number;
  pass: boolean;
}

export interface LinearRow {
  case: LinearCase;
  /** 3 GEMMs of 2·batch·in·out each. */
  flopsPerStep: number;
  check: LayerCheck | { skipped: string };
  plain: Measured;
  wn: Measured;
  /** wn ms / plain ms (goal ≤ 1.05). */
  ratio: number | null;
  torchPlain: Measured;
  torchWn: Measured;
  torchRatio: number | null;
  /** torch wn ms / our wn ms (> 1: ours faster). */
  wnVsTorch: number | null;
  calls: Record<string, string>;
}

export interface MnistRow {
  batch: number;
  norm: 'plain' | 'wn';
  check: LayerCheck | { skipped: string };
  ours: Measured;
  torch: Measured;
  /** torch ms / ours ms (goal ≥ 1). */
  vsTorch: number | null;
  call: string | null;
}

export interface TrainingSuiteOptions {
  device: Device;
  plan: RoundPlan;
  seed: number;
  log: (line: string) => void;
}

const ms = (m: Measured | undefined): number | null => (m && !isUnavailable(m) ? (m as Timing).ms : null);
const ratioOf = (a: number | null, b: number | null) => (a === null || b === null ? null : a / b);
const unavailableFrom = (m: Measured | undefined, fallback: string): Measured => m ?? { unavailable: fallback };

function clearGradients(tensors: readonly Tensor[]): void {
  for (const t of tensors) {
    t.grad?.dispose();
    t.grad = null;
  }
}

function copyOf(t: Tensor): Tensor {
  return tensor(t.toArray(), t.shape, { device: t.device });
}

/** The weight-normalized layer's y, dx, dv, dg, db against the plain Linear on w = g·v/‖v‖ plus the unfused backward. */
function checkWeightNormLinear(layer: nn.Linear, x: Tensor): LayerCheck {
  const state = layer.weightNorm!;
  const errors: Record<string, number> = {};
  tidy(() => {
    const y = layer.forward(x);
    nn.functional.sum(y).backward();
    const ours = { y: y.toFloat32Array(), dx: x.grad!.toFloat32Array(), dv: state.v.grad!.toFloat32Array(), dg: state.g.grad!.toFloat32Array(), db: layer.bias!.grad!.toFloat32Array() };
    clearGradients([x, ...layer.parameters()]);
    const w = noGrad(() => layer.effectiveWeight());
    w.requiresGrad = true;
    const x2 = copyOf(x);
    x2.requiresGrad = true;
    const b2 = copyOf(layer.bias!);
    b2.requiresGrad = true;
    const y2 = nn.functional.linear(x2, w, b2);
    nn.functional.sum(y2).backward();
    const { dv, dg } = ops.weightNormBackward(w.grad!, state.v, state.g, state.currentNorm(), { dim: 0, eps: state.eps, fused: false });
    errors.y = relativeError(ours.y, floats(y2.toArray()));
    errors.dx = relativeError(ours.dx, floats(x2.grad!.toArray()));
    errors.dv = relativeError(ours.dv, floats(dv.toArray()));
    errors.dg = relativeError(ours.dg, floats(dg.toArray()));
    errors.db = relativeError(ours.db, floats(b2.grad!.toArray()));
    clearGradients([w, x2, b2]);
  });
  return { errors, tolerance: LAYER_TOLERANCE, pass: Object.values(errors).every((e) => e <= LAYER_TOLERANCE) };
}

function linearStep(layer: nn.Linear, x: Tensor): () => void {
  const params = layer.parameters();
  return () =>
    tidy(() => {
      clearGradients([x, ...params]);
      nn.functional.sum(layer.forward(x)).backward();
    });
}

export async function runLinearSuite(cases: readonly LinearCase[], peer: TorchPeer | null, options: TrainingSuiteOptions): Promise<LinearRow[]> {
  const { device, plan } = options;
  const rows: LinearRow[] = [];
  for (const [index, c] of cases.entries()) {
    const seed = options.seed + 100 * index;
    manualSeed(seed);
    const plain = new nn.Linear(c.in, c.out).to(device);
    const wn = new nn.Linear(c.in, c.out, { weightNorm: true }).to(device);
    const x = tensor(native.randn([c.batch, c.in], seed, 'cpu', 0, 1).toArray(), [c.batch, c.in], { device });
    x.requiresGrad = true;
    try {
      options.log(`${device} linear ${c.name}: checking the weight-normalized layer against plain + unfused backward`);
      let check: LinearRow['check'];
      const unavailable: Record<string, string> = {};
      try {
        check = checkWeightNormLinear(wn, x);
        if (!check.pass) unavailable.wn = `CHECK FAILED: ${JSON.stringify(check.errors)}`;
      } catch (error) {
        check = { skipped: (error as Error).message };
        unavailable.wn = (error as Error).message;
      }
      const timed = await alternate(
        {
          plain: (warmup, repeats) => wallTimes(linearStep(plain, x), synchronize, warmup, repeats),
          ...(unavailable.wn ? {} : { wn: (warmup: number, repeats: number) => wallTimes(linearStep(wn, x), synchronize, warmup, repeats) }),
        },
        unavailable,
        peer,
        (p) => p.task('linear', { batch: c.batch, in: c.in, out: c.out, seed }),
        plan,
        (round) => options.log(`${device} linear ${c.name}: round ${round + 1}/${plan.rounds}`),
      );
      const noPeer = timed.peerError ?? 'no torch peer';
      const torchPlain = unavailableFrom(timed.theirs?.plain, noPeer);
      const torchWn = unavailableFrom(timed.theirs?.wn, noPeer);
      rows.push({
        case: c,
        flopsPerStep: 3 * 2 * c.batch * c.in * c.out,
        check,
        plain: timed.ours.plain!,
        wn: timed.ours.wn!,
        ratio: ratioOf(ms(timed.ours.wn), ms(timed.ours.plain)),
        torchPlain,
        torchWn,
        torchRatio: ratioOf(ms(torchWn), ms(torchPlain)),
        wnVsTorch: ratioOf(ms(torchWn), ms(timed.ours.wn)),
        calls: timed.calls,
      });
    } finally {
      plain.dispose();
      wn.dispose();
      x.grad?.dispose();
      x.dispose();
      if (device === 'cuda') native.releaseCachedMemory();
    }
  }
  return rows;
}

function writeF32(path: string, data: Float32Array): void {
  writeFileSync(path, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
}

function readF32(path: string): Float32Array {
  const bytes = readFileSync(path);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/**
 * A network's loss and gradients on one batch against torch's with the same weights and batch: `runPeer` asks the
 * peer to build its copy of the network from the files written to `dir` and to write loss.bin, grad_<name>.bin.
 */
async function checkNetworkAgainstTorch(
  model: nn.Module,
  x: Tensor,
  labels: Int32Array,
  runPeer: (dir: string, params: [string, number[]][]) => Promise<unknown>,
): Promise<LayerCheck> {
  const dir = mkdtempSync(join(tmpdir(), 'weightnorm-bench-network-'));
  try {
    const params = model.namedParameters();
    for (const [name, t] of params) writeF32(join(dir, `${name}.bin`), floats(t.toArray()));
    writeF32(join(dir, 'x.bin'), floats(x.toArray()));
    writeF32(join(dir, 'labels.bin'), Float32Array.from(labels));
    const ours = tidy(() => {
      const loss = nn.functional.crossEntropy(model.forward(x), labels);
      loss.backward();
      return { loss: loss.toFloat32Array(), grads: params.map(([name, t]) => [name, t.grad!.toFloat32Array()] as const) };
    });
    clearGradients(params.map(([, t]) => t));
    await runPeer(dir, params.map(([name, t]) => [name, [...t.shape]]));
    const errors: Record<string, number> = { loss: relativeError(ours.loss, readF32(join(dir, 'loss.bin'))) };
    for (const [name, grad] of ours.grads) errors[`d${name}`] = relativeError(grad, readF32(join(dir, `grad_${name}.bin`)));
    return { errors, tolerance: LAYER_TOLERANCE, pass: Object.values(errors).every((e) => e <= LAYER_TOLERANCE) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `batch` images of digit-like pixels: normal(0.5, 0.25) clamped to [0, 1], drawn from `seed`. */
function digitLikePixels(batch: number, seed: number): Float32Array {
  const drawn = native.randn([batch * 28 * 28], seed, 'cpu', 0.5, 0.25);
  try {
    return Float32Array.from(drawn.toArray(), (p) => Math.min(1, Math.max(0, p)));
  } finally {
    drawn.dispose();
  }
}

type Norm = 'plain' | 'wn';
interface StepVariant {
  norm: Norm;
  model: nn.Module;
  optimizer: optim.Optimizer;
}

/**
 * What the training-step suites share: each variant's loss and gradients checked against torch (`check` has the
 * peer compute its side; a variant that fails is kept out of the timing and reported), then trainStep() of the
 * others timed against the peer's task (`task`) in alternating rounds.
 */
async function checkThenTimeSteps(
  variants: readonly StepVariant[],
  x: Tensor,
  labels: Int32Array,
  peer: TorchPeer | null,
  options: TrainingSuiteOptions,
  label: string,
  check: (peer: TorchPeer, norm: Norm, dir: string, params: [string, number[]][]) => Promise<unknown>,
  task: (peer: TorchPeer) => Promise<PeerTask>,
): Promise<{ checks: Record<Norm, LayerCheck | { skipped: string }>; timed: AlternateResult }> {
  const { device, plan } = options;
  const checks = {} as Record<Norm, LayerCheck | { skipped: string }>;
  const unavailable: Record<string, string> = {};
  for (const { norm, model } of variants) {
    if (!peer) {
      checks[norm] = { skipped: 'no torch peer' };
      continue;
    }
    options.log(`${device} ${label} ${norm}: checking loss and gradients against torch`);
    try {
      const result = await checkNetworkAgainstTorch(model, x, labels, (dir, params) => check(peer, norm, dir, params));
      checks[norm] = result;
      if (!result.pass) unavailable[norm] = `CHECK FAILED: ${JSON.stringify(result.errors)}`;
    } catch (error) {
      checks[norm] = { skipped: `torch check failed: ${(error as Error).message}` };
    }
  }
  const ours = Object.fromEntries(
    variants
      .filter(({ norm }) => !(norm in unavailable))
      .map(({ norm, model, optimizer }) => [
        norm,
        (warmup: number, repeats: number) => wallTimes(() => void trainStep(model, optimizer, x, labels), synchronize, warmup, repeats),
      ]),
  );
  const timed = await alternate(ours, unavailable, peer, task, plan, (round) =>
    options.log(`${device} ${label}: round ${round + 1}/${plan.rounds}`),
  );
  return { checks, timed };
}

/** Frees the variants' models and optimizer state and the batch (and, on CUDA, the cached device memory). */
export function disposeVariants(variants: readonly { model: nn.Module; optimizer: optim.Optimizer }[], x: Tensor): void {
  for (const { model, optimizer } of variants) {
    optimizer.dispose();
    model.dispose();
  }
  const device = x.device;
  x.dispose();
  if (device === 'cuda') native.releaseCachedMemory();
}

export async function runMnistSuite(batches: readonly number[], peer: TorchPeer | null, options: TrainingSuiteOptions): Promise<MnistRow[]> {
  const { device } = options;
  const rows: MnistRow[] = [];
  for (const [index, batch] of batches.entries()) {
    const seed = options.seed + 100 * index;
    const labels = Int32Array.from({ length: batch }, (_, i) => (i * 7 + seed) % 10);
    const x = tensor(digitLikePixels(batch, seed), [batch, 1, 28, 28], { device });
    const variants = (['plain', 'wn'] as const).map((norm) => {
      manualSeed(seed);
      const { model } = buildModel('cnn', norm === 'wn' ? 'wn' : 'none');
      model.to(device);
      return { norm, model, optimizer: new optim.Adam(model.parameters(), { lr: 3e-3 }) };
    });
    try {
      const { checks, timed } = await checkThenTimeSteps(variants, x, labels, peer, options, `mnist batch ${batch}`,
        (p, norm, dir, params) => p.mnistCheck(dir, batch, norm === 'wn', params),
        (p) => p.task('mnist', { batch, seed }));
      for (const norm of ['plain', 'wn'] as const) {
        const torch = unavailableFrom(timed.theirs?.[norm], timed.peerError ?? 'no torch peer');
        rows.push({
          batch,
          norm,
          check: checks[norm],
          ours: timed.ours[norm]!,
          torch,
          vsTorch: ratioOf(ms(torch), ms(timed.ours[norm])),
          call: timed.calls[norm] ?? null,
        });
      }
    } finally {
      disposeVariants(variants, x);
    }
  }
  return rows;
}

// The training suite: whole training steps of two small networks as a user trains them, against PyTorch eager on
// the same threads, plain and weight-normalized (weight norm over dim 0 on every conv and Linear, as
// torch.nn.utils.weight_norm):
//   cnn: conv 1→32 3×3 pad 1, ReLU, maxpool 2, conv 32→64 3×3 pad 1, ReLU, maxpool 2, flatten, Linear 3136→128,
//        ReLU, Linear 128→10;
//   mlp: the demo's network (`npm run demo` = compare --model mlp): 784→256→256→10 with ReLU.
// A step is trainStep()'s on both sides: forward, cross-entropy, loss read back, zero grads, backward, Adam.

export const TRAINING_NETWORKS = ['cnn', 'mlp'] as const;
export type TrainingNetwork = (typeof TRAINING_NETWORKS)[number];
export const TRAINING_BATCH = 100;
/** Adam's learning rate on both sides (the same update; its value does not change the step's cost). */
export const TRAINING_LR = 1e-3;
/** Goals: the CNN step at least this × faster than torch's (torch ms / ours), plain and weight-normalized. */
export const TRAINING_VS_TORCH_GOAL = 1.2;
/** The weight-normalized step at most this × the plain one (ours, both networks). */
export const TRAINING_WN_GOAL = 1.05;
/**
 * A ratio whose per-round values spread more than this was disturbed within rounds (a busy neighbour slowed one side
 * of a round and not the other): the goal that rests on it is reported as noisy, not judged. The spread is that of
 * the middle half of the rounds (upper quartile / lower quartile − 1; with fewer than 4 rounds, largest / smallest −
 * 1): the reported median survives a stray round or two, but not a middle half that disagrees. Load that changes
 * between rounds slows both sides of a round alike and leaves the paired ratios alone. compare applies the same limit
 * to its round medians (commands/timing.ts).
 */
export const TRAINING_MAX_SPREAD = DEFAULT_MAX_SPREAD;
/**
 * The same limit for the weight-norm goal (WN / plain ≤ 1.05): a ratio judged against a line 5% away cannot rest on
 * rounds whose middle half spans more than twice that. On the 2-core VM the MLP's rounds spanned 3-4% in quiet runs
 * and 13-19% in disturbed ones, whose medians read anywhere in 0.94-1.13.
 */
export const TRAINING_WN_MAX_SPREAD = 0.1;
/**
 * The MLP runs this many times the plan's rounds: its step is ~15× shorter than the CNN's, and its weight-norm ratio
 * sits a few points from its goal. With the CNN's 25 rounds the median of its round ratios moved by 2-5 points between
 * runs minutes apart on the 2-core VM (1.005-1.072 in eight runs of one afternoon).
 */
export const TRAINING_MLP_ROUND_FACTOR = 4;

export const TRAINING_DESCRIPTIONS: Record<TrainingNetwork, string> = {
  cnn: 'conv 1→32 3×3 pad 1, ReLU, maxpool 2, conv 32→64 3×3 pad 1, ReLU, maxpool 2, Linear 3136→128, ReLU, Linear 128→10',
  mlp: "the demo's MLP 784→256→256→10, ReLU",
};

export interface TrainingRow {
  network: TrainingNetwork;
  batch: number;
  checks: Record<'plain' | 'wn', LayerCheck | { skipped: string }>;
  ours: Record<'plain' | 'wn', Measured>;
  torch: Record<'plain' | 'wn', Measured>;
  /** torch ms / ours ms per variant (> 1: ours faster): the median over rounds of the ratio within each round. */
  vsTorch: Record<'plain' | 'wn', number | null>;
  /** weight-normalized ms / plain ms, per side, paired by round like vsTorch. */
  wnOverPlain: Record<'ours' | 'torch', number | null>;
  /** (largest / smallest) − 1 of the per-round ratios behind vsTorch and wnOverPlain; null when not measured or with
   * fewer than 2 rounds. */
  ratioSpread: { vsTorch: Record<'plain' | 'wn', number | null>; wnOverPlain: Record<'ours' | 'torch', number | null> };
  calls: Record<string, string>;
}

/** The network of the training suite (peer_torch.py training_network builds the same with the same indices). */
export function trainingNetwork(network: TrainingNetwork, wn: boolean): nn.Sequential {
  if (network === 'mlp') return buildModel('mlp', wn ? 'wn' : 'none').model;
  return new nn.Sequential(
    new nn.Conv2d(1, 32, 3, { padding: 1, weightNorm: wn }), new nn.ReLU(), new nn.MaxPool2d(2),
    new nn.Conv2d(32, 64, 3, { padding: 1, weightNorm: wn }), new nn.ReLU(), new nn.MaxPool2d(2),
    new nn.Flatten(),
    new nn.Linear(64 * 7 * 7, 128, { weightNorm: wn }), new nn.ReLU(),
    new nn.Linear(128, 10, { weightNorm: wn }),
  );
}

/** The ratios a / b round by round (the values pairedRatio takes the median of); [] when either is unavailable. */
function roundRatios(a: Measured, b: Measured): number[] {
  if (isUnavailable(a) || isUnavailable(b)) return [];
  const x = (a as Timing).roundMedians, y = (b as Timing).roundMedians;
  return x.slice(0, Math.min(x.length, y.length)).map((v, i) => v / y[i]!);
}

/** The spread TRAINING_MAX_SPREAD limits, of the per-round ratios a / b; null when either is unavailable or with
 * fewer than 2 rounds. */
export function pairedRatioSpread(a: Measured, b: Measured): number | null {
  const ratios = roundRatios(a, b).filter((x) => Number.isFinite(x) && x > 0).sort((p, q) => p - q);
  if (ratios.length < 4) return roundSpread(ratios);
  const quantile = (q: number) => {
    const at = q * (ratios.length - 1), low = Math.floor(at);
    return ratios[low]! + (at - low) * (ratios[Math.min(low + 1, ratios.length - 1)]! - ratios[low]!);
  };
  return quantile(0.75) / quantile(0.25) - 1;
}

/** "rounds' ratios 41% apart" when `spread` is above `limit` (TRAINING_MAX_SPREAD, or TRAINING_WN_MAX_SPREAD for
 * the weight-norm goal), else null (rows written before spreads were recorded have none: undefined). */
export function noisyRatio(spread: number | null | undefined, limit: number = TRAINING_MAX_SPREAD): string | null {
  return spread != null && spread > limit ? `rounds' ratios ${(100 * spread).toFixed(0)}% apart` : null;
}

/**
 * a / b paired by round: the median over rounds of a's round median / b's (rounds alternate the variants, so load
 * that spoils a round spoils both sides of its ratio); null when either is unavailable.
 */
export function pairedRatio(a: Measured, b: Measured): number | null {
  const ratios = roundRatios(a, b).sort((p, q) => p - q);
  if (ratios.length === 0) return null;
  const mid = ratios.length >> 1;
  return ratios.length % 2 ? ratios[mid]! : (ratios[mid - 1]! + ratios[mid]!) / 2;
}

export async function runTrainingSuite(peer: TorchPeer | null, options: TrainingSuiteOptions): Promise<TrainingRow[]> {
  const { device } = options;
  const rows: TrainingRow[] = [];
  for (const [index, network] of TRAINING_NETWORKS.entries()) {
    const seed = options.seed + 100 * index;
    const batch = TRAINING_BATCH;
    const labels = Int32Array.from({ length: batch }, (_, i) => (i * 7 + seed) % 10);
    const x = tensor(digitLikePixels(batch, seed), network === 'cnn' ? [batch, 1, 28, 28] : [batch, 28 * 28], { device });
    const variants = (['plain', 'wn'] as const).map((norm) => {
      manualSeed(seed);
      const model = trainingNetwork(network, norm === 'wn').to(device);
      return { norm, model, optimizer: new optim.Adam(model.parameters(), { lr: TRAINING_LR }) };
    });
    try {
      const plan = network === 'mlp' ? { ...options.plan, rounds: options.plan.rounds * TRAINING_MLP_ROUND_FACTOR } : options.plan;
      const { checks, timed } = await checkThenTimeSteps(variants, x, labels, peer, { ...options, plan }, `training ${network}`,
        (p, norm, dir, params) => p.trainingCheck(dir, network, batch, norm === 'wn', params),
        (p) => p.task('training', { network, batch, seed }));
      const noPeer = timed.peerError ?? 'no torch peer';
      const torch = { plain: unavailableFrom(timed.theirs?.plain, noPeer), wn: unavailableFrom(timed.theirs?.wn, noPeer) };
      const oursTimed = { plain: timed.ours.plain!, wn: timed.ours.wn! };
      rows.push({
        network,
        batch,
        checks,
        ours: oursTimed,
        torch,
        vsTorch: { plain: pairedRatio(torch.plain, oursTimed.plain), wn: pairedRatio(torch.wn, oursTimed.wn) },
        wnOverPlain: { ours: pairedRatio(oursTimed.wn, oursTimed.plain), torch: pairedRatio(torch.wn, torch.plain) },
        ratioSpread: {
          vsTorch: { plain: pairedRatioSpread(torch.plain, oursTimed.plain), wn: pairedRatioSpread(torch.wn, oursTimed.wn) },
          wnOverPlain: { ours: pairedRatioSpread(oursTimed.wn, oursTimed.plain), torch: pairedRatioSpread(torch.wn, torch.plain) },
        },
        calls: timed.calls,
      });
    } finally {
      disposeVariants(variants, x);
    }
  }
  return rows;
}
