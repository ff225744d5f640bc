// The LSTM training-step suite: nn.LSTM (hidden 256, batch 64, 28 and 100 steps), plain and weight-normalized,
// against PyTorch's eager CPU/CUDA LSTM on the same threads. A step is what training does: zero grads, the forward
// over the whole sequence (one native call per layer: the input projection as one GEMM, per step one recurrent GEMM
// and one fused gate kernel; a weight-normalized matrix runs as v with g/‖v‖ in the GEMM epilogue), loss = sum of
// the output, the backward through time (one native call, then one fused weight-norm backward per normalized
// matrix), an Adam update. Before timing, the weight-normalized LSTM is checked at the benchmark's own size against
// the plain LSTM on its effective weights followed by the unfused weight-norm backward (the float64 torch checks of
// small layers are test/rnn.test.ts's).
import { nn, noGrad, ops, optim, randn, synchronize, type Tensor, tensor, tidy } from 'weightnorm';
import { type Device, native } from 'weightnorm/native';

import { relativeError } from './measure.js';
import type { TorchPeer } from './peer.js';
import { alternate, isUnavailable, type Measured, type RoundPlan, wallTimes } from './rounds.js';
import { LAYER_TOLERANCE, type LayerCheck } from './training.js';

export interface LstmCase {
  name: string;
  batch: number;
  steps: number;
  input: number;
  hidden: number;
  quick: boolean;
}

export const LSTM_CASES: readonly LstmCase[] = [
  { name: 'lstm-b64-t28-i28-h256', batch: 64, steps: 28, input: 28, hidden: 256, quick: true },
  { name: 'lstm-b64-t100-i64-h256', batch: 64, steps: 100, input: 64, hidden: 256, quick: true },
];

export interface LstmRow {
  case: LstmCase;
  /** The weight-normalized LSTM against the plain one on its effective weights, before timing. */
  check: LayerCheck | { skipped: string };
  plain: Measured;
  wn: Measured;
  /** wn ms / plain ms. */
  ratio: number | null;
  torchPlain: Measured;
  torchWn: Measured;
  /** torch ms / ours ms, per variant (> 1: ours faster). */
  plainVsTorch: number | null;
  wnVsTorch: number | null;
  calls: Record<string, string>;
}

const ms = (m: Measured | undefined): number | null => (m && !isUnavailable(m) ? m.ms : null);
const ratioOf = (a: number | null, b: number | null): number | null => (a === null || b === null || b === 0 ? null : a / b);

const copyOf = (t: Tensor): Tensor => tensor(t.toArray(), t.shape, { device: t.device });

function clearGradients(tensors: readonly Tensor[]): void {
  for (const t of tensors) {
    t.grad?.dispose();
    t.grad = null;
  }
}

/**
 * output, final h and c, dx, dv and dg of both matrices and db of a weight-normalized LSTM (v with g/‖v‖ in the
 * GEMM epilogue, dv and dg from the fused weight-norm backward) against a plain LSTM holding w = g·v/‖v‖, whose
 * weight gradients go through the unfused weight-norm backward. Its own layer of the case's shape, with every g
 * moved off ‖v‖ (× 0.5 to 1.5, from `seed`): a fresh layer has g = ‖v‖, a scale of exactly 1, which would not show a
 * scale applied to the wrong axis or not at all.
 */
function checkWeightNormLstm(c: LstmCase, x: Tensor, seed: number): LayerCheck {
  const errors: Record<string, number> = {};
  const model = new nn.LSTM(c.input, c.hidden, { weightNorm: true }).to(x.device);
  const params = model.namedParameters();
  const named = Object.fromEntries(params);
  const matrices = ['weight_ih_l0', 'weight_hh_l0'] as const;
  let state = seed >>> 0;
  const uniform = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;  // an LCG: enough to spread the factors
    return state / 2 ** 32;
  };
  noGrad(() =>
    tidy(() => {
      const moved = matrices.map((m) => {
        const g = named[`${m}_g`]!;
        const factors = tensor(Float32Array.from({ length: g.size }, () => 0.5 + uniform()), [g.size], { device: x.device });
        return [`${m}_g`, nn.functional.mul(g, factors)] as const;
      });
      model.loadStateDict(Object.fromEntries(moved), { allowMissingKeys: true });
    }),
  );
  const plain = new nn.LSTM(c.input, c.hidden).to(x.device);
  const xWn = copyOf(x);
  const xPlain = copyOf(x);
  try {
    tidy(() => {
      xWn.requiresGrad = true;
      xPlain.requiresGrad = true;
      const f32 = (t: Tensor) => Float32Array.from(t.toArray());
      const ours = model.forward(xWn);
      nn.functional.sum(ours.output).backward();
      const norms = matrices.map((m) => noGrad(() => nn.functional.weightNorm(named[`${m}_v`]!, named[`${m}_g`]!, { dim: 0 })));
      plain.loadStateDict({
        weight_ih_l0: norms[0]!.w,
        weight_hh_l0: norms[1]!.w,
        bias_ih_l0: named.bias_ih_l0!,
        bias_hh_l0: named.bias_hh_l0!,
      });
      const theirs = plain.forward(xPlain);
      nn.functional.sum(theirs.output).backward();
      const plainParams = Object.fromEntries(plain.namedParameters());
      errors.output = relativeError(f32(ours.output), f32(theirs.output));
      errors.h = relativeError(f32(ours.h), f32(theirs.h));
      errors.c = relativeError(f32(ours.c), f32(theirs.c));
      errors.dx = relativeError(f32(xWn.grad!), f32(xPlain.grad!));
      errors.db = relativeError(f32(named.bias_ih_l0!.grad!), f32(plainParams.bias_ih_l0!.grad!));
      matrices.forEach((m, i) => {
        const { dv, dg } = ops.weightNormBackward(plainParams[m]!.grad!, named[`${m}_v`]!, named[`${m}_g`]!, norms[i]!.norm, { dim: 0, fused: false });
        errors[`dv ${m}`] = relativeError(f32(named[`${m}_v`]!.grad!), f32(dv));
        errors[`dg ${m}`] = relativeError(f32(named[`${m}_g`]!.grad!), f32(dg));
      });
    });
  } finally {
    clearGradients([...params.map(([, t]) => t), ...plain.parameters(), xWn, xPlain]);
    model.dispose();
    plain.dispose();
    xWn.dispose();
    xPlain.dispose();
  }
  return { errors, tolerance: LAYER_TOLERANCE, pass: Object.values(errors).every((e) => e <= LAYER_TOLERANCE) };
}

export async function runLstmSuite(
  cases: readonly LstmCase[],
  peer: TorchPeer | null,
  options: { device: Device; plan: RoundPlan; seed: number; log: (line: string) => void },
): Promise<LstmRow[]> {
  const { device, plan } = options;
  const rows: LstmRow[] = [];
  for (const [index, c] of cases.entries()) {
    const seed = options.seed + 100 * index;
    const x: Tensor = randn([c.steps, c.batch, c.input], { seed, device });
    const models = (['plain', 'wn'] as const).map((variant) => {
      const model = new nn.LSTM(c.input, c.hidden, { weightNorm: variant === 'wn' }).to(device);
      return { variant, model, optimizer: new optim.Adam(model.parameters(), { lr: 1e-3 }) };
    });
    try {
      options.log(`${device} ${c.name}: checking the weight-normalized LSTM against plain on its effective weights`);
      let check: LstmRow['check'];
      const unavailable: Record<string, string> = {};
      try {
        check = checkWeightNormLstm(c, x, seed + 1);
        if (!check.pass) unavailable.wn = `CHECK FAILED: ${JSON.stringify(check.errors)}`;
      } catch (error) {
        check = { skipped: (error as Error).message };
      }
      const ours = Object.fromEntries(
        models.map(({ variant, model, optimizer }) => [
          variant,
          (warmup: number, repeats: number) =>
            wallTimes(
              () =>
                tidy(() => {
                  optimizer.zeroGrad();
                  nn.functional.sum(model.forward(x).output).backward();
                  optimizer.step();
                }),
              synchronize,
              warmup,
              repeats,
            ),
        ]),
      );
      const timed = await alternate(
        ours,
        unavailable,
        peer,
        (p) => p.task('lstm', { batch: c.batch, steps: c.steps, input: c.input, hidden: c.hidden, seed }),
        plan,
        (round) => options.log(`${device} ${c.name}: round ${round + 1}/${plan.rounds}`),
      );
      const torch = (name: string): Measured => timed.theirs?.[name] ?? { unavailable: timed.peerError ?? 'no torch peer' };
      const plain = timed.ours.plain!;
      const wn = timed.ours.wn!;
      rows.push({
        case: c,
        check,
        plain,
        wn,
        ratio: ratioOf(ms(wn), ms(plain)),
        torchPlain: torch('plain'),
        torchWn: torch('wn'),
        plainVsTorch: ratioOf(ms(torch('plain')), ms(plain)),
        wnVsTorch: ratioOf(ms(torch('wn')), ms(wn)),
        calls: timed.calls,
      });
    } finally {
      for (const { model, optimizer } of models) {
        optimizer.dispose();
        model.dispose();
      }
      x.dispose();
      if (device === 'cuda') native.releaseCachedMemory();
    }
  }
  return rows;
}
