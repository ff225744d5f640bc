// The convolution layers' training step, weight norm against plain (the `conv` suite): one step = clear the
// gradients, y = layer(x), sum(y).backward() with x requiring its gradient (dx, dW or dv/dg, db), then a device
// synchronize. Goal: the weight-normalized layer within 5% of the plain one. For a direct convolution with weight
// norm over dim 0, g/‖v‖ scales the convolution GEMM's output rows in its epilogue and dv comes from the
// weight-gradient GEMM's epilogue (w never exists); the transposed convolution materializes w (one fused pass over
// the weight, cheap next to the convolution). Each layer is checked before it is timed against the plain layer on
// its effective weight followed by the unfused weight-norm backward. No torch peer here (n/a).
import { manualSeed, nn, noGrad, ops, synchronize, type Tensor, tensor, tidy } from 'weightnorm';
import { type Device, native } from 'weightnorm/native';

import { relativeError, type Timing } from './measure.js';
import { alternate, isUnavailable, type Measured, type RoundPlan, wallTimes } from './rounds.js';
import { LAYER_TOLERANCE, type LayerCheck } from './training.js';

export interface ConvLayerCase {
  name: string;
  kind: 'Conv1d' | 'Conv2d' | 'ConvTranspose1d';
  batch: number;
  in: number;
  out: number;
  kernel: number;
  /** Input length (1-D) or side (2-D). */
  size: number;
  options: { stride?: number; padding?: number; dilation?: number };
  quick: boolean;
}

export const CONV_LAYER_CASES: readonly ConvLayerCase[] = [
  // HiFi-GAN generator shapes at a CPU-friendly length: the resblock conv (k3, dilation 3) and the 7-tap convs.
  { name: 'conv1d-128-k3-d3-L4096', kind: 'Conv1d', batch: 2, in: 128, out: 128, kernel: 3, size: 4096, options: { dilation: 3, padding: 3 }, quick: true },
  { name: 'conv1d-256-k7-L2048', kind: 'Conv1d', batch: 2, in: 256, out: 256, kernel: 7, size: 2048, options: { padding: 3 }, quick: false },
  { name: 'convT1d-256-128-k16-s8-L256', kind: 'ConvTranspose1d', batch: 2, in: 256, out: 128, kernel: 16, size: 256, options: { stride: 8, padding: 4 }, quick: false },
  { name: 'conv2d-64-k3-32x32', kind: 'Conv2d', batch: 8, in: 64, out: 64, kernel: 3, size: 32, options: { padding: 1 }, quick: true },
];

/** The goal: weight-normalized step time at most this × the plain layer's. */
export const CONV_RATIO_GOAL = 1.05;

export interface ConvLayerRow {
  case: ConvLayerCase;
  check: LayerCheck | { skipped: string };
  plain: Measured;
  wn: Measured;
  /** wn ms / plain ms (goal ≤ 1.05). */
  ratio: number | null;
}

type ConvLayer = nn.Conv1d | nn.Conv2d | nn.ConvTranspose1d;

function build(c: ConvLayerCase, weightNorm: boolean): ConvLayer {
  const options = { ...c.options, weightNorm };
  if (c.kind === 'Conv1d') return new nn.Conv1d(c.in, c.out, c.kernel, options);
  if (c.kind === 'Conv2d') return new nn.Conv2d(c.in, c.out, c.kernel, options);
  return new nn.ConvTranspose1d(c.in, c.out, c.kernel, options);
}

function functional(c: ConvLayerCase, x: Tensor, w: Tensor, b: Tensor): Tensor {
  const F = nn.functional;
  if (c.kind === 'Conv1d') return F.conv1d(x, w, b, c.options);
  if (c.kind === 'Conv2d') return F.conv2d(x, w, b, c.options);
  return F.convTranspose1d(x, w, b, c.options);
}

function clearGradients(tensors: readonly Tensor[]): void {
  for (const t of tensors) {
    t.grad?.dispose();
    t.grad = null;
  }
}

const copyOf = (t: Tensor): Tensor => tensor(t.toArray(), t.shape, { device: t.device });

/** y, dx, dv, dg, db of the weight-normalized layer against the plain convolution on its w + the unfused backward. */
function checkLayer(c: ConvLayerCase, layer: ConvLayer, x: Tensor): LayerCheck {
  const state = layer.weightNorm!;
  const errors: Record<string, number> = {};
  tidy(() => {
    const y = layer.forward(x);
    nn.functional.sum(y).backward();
    const ours = { y: y.toArray(), dx: x.grad!.toArray(), dv: state.v.grad!.toArray(), dg: state.g.grad!.toArray(), db: layer.bias!.grad!.toArray() };
    clearGradients([x, ...layer.parameters()]);
    const w = noGrad(() => layer.effectiveWeight());
    w.requiresGrad = true;
    const x2 = copyOf(x);
    x2.requiresGrad = true;
    const b2 = copyOf(layer.bias!);
    b2.requiresGrad = true;
    const y2 = functional(c, x2, w, b2);
    nn.functional.sum(y2).backward();
    const { dv, dg } = ops.weightNormBackward(w.grad!, state.v, state.g, state.currentNorm(), { dim: 0, eps: state.eps, fused: false });
    const f32 = (values: ArrayLike<number>) => Float32Array.from(values);
    errors.y = relativeError(f32(ours.y), f32(y2.toArray()));
    errors.dx = relativeError(f32(ours.dx), f32(x2.grad!.toArray()));
    errors.dv = relativeError(f32(ours.dv), f32(dv.toArray()));
    errors.dg = relativeError(f32(ours.dg), f32(dg.toArray()));
    errors.db = relativeError(f32(ours.db), f32(b2.grad!.toArray()));
    clearGradients([w, x2, b2]);
  });
  return { errors, tolerance: LAYER_TOLERANCE, pass: Object.values(errors).every((e) => e <= LAYER_TOLERANCE) };
}

function step(layer: ConvLayer, x: Tensor): () => void {
  const params = layer.parameters();
  return () =>
    tidy(() => {
      clearGradients([x, ...params]);
      nn.functional.sum(layer.forward(x)).backward();
    });
}

const ms = (m: Measured | undefined): number | null => (m && !isUnavailable(m) ? (m as Timing).ms : null);

export async function runConvLayerSuite(
  cases: readonly ConvLayerCase[],
  options: { device: Device; plan: RoundPlan; seed: number; log: (line: string) => void },
): Promise<ConvLayerRow[]> {
  const { device, plan } = options;
  const rows: ConvLayerRow[] = [];
  for (const [index, c] of cases.entries()) {
    const seed = options.seed + 100 * index;
    manualSeed(seed);
    const plain = build(c, false).to(device);
    const wn = build(c, true).to(device);
    const shape = c.kind === 'Conv2d' ? [c.batch, c.in, c.size, c.size] : [c.batch, c.in, c.size];
    const x = tensor(native.randn(shape, seed, 'cpu', 0, 1).toArray(), shape, { device });
    x.requiresGrad = true;
    try {
      options.log(`${device} conv ${c.name}: checking the weight-normalized layer against plain + unfused backward`);
      let check: ConvLayerRow['check'];
      const unavailable: Record<string, string> = {};
      try {
        check = checkLayer(c, wn, x);
        if (!check.pass) unavailable.wn = `CHECK FAILED: ${JSON.stringify(check.errors)}`;
      } catch (error) {
        check = { skipped: (error as Error).message };
        unavailable.wn = (error as Error).message;
      }
      const timed = await alternate(
        {
          plain: (warmup, repeats) => wallTimes(step(plain, x), synchronize, warmup, repeats),
          ...(unavailable.wn ? {} : { wn: (warmup: number, repeats: number) => wallTimes(step(wn, x), synchronize, warmup, repeats) }),
        },
        unavailable,
        null,
        null,
        plan,
        (round) => options.log(`${device} conv ${c.name}: round ${round + 1}/${plan.rounds}`),
      );
      const wnMs = ms(timed.ours.wn);
      const plainMs = ms(timed.ours.plain);
      rows.push({ case: c, check, plain: timed.ours.plain!, wn: timed.ours.wn!, ratio: wnMs === null || plainMs === null ? null : wnMs / plainMs });
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
