// The LSTM training-step suite: nn.LSTM (hidden 256, batch 64, 28 and 100 steps), plain and weight-normalized,
// against PyTorch's eager CPU/CUDA LSTM on the same threads. A step is what training does: zero grads, the forward
// over the whole sequence (one native call per layer: the input projection as one GEMM, per step one recurrent GEMM
// and one fused gate kernel), loss = sum of the output, the backward through time (one native call), an Adam update.
// The forward and gradients are checked against torch by test/rnn.test.ts (float64 fixtures), not again here.
import { nn, optim, randn, synchronize, type Tensor, tidy } from 'weightnorm';
import { type Device, native } from 'weightnorm/native';

import type { TorchPeer } from './peer.js';
import { alternate, type Measured, type RoundPlan, wallTimes } from './rounds.js';
import { isUnavailable } from './rounds.js';

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
        {},
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
