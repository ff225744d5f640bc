// Gradient-check entries of the loss functions (ts/losses.ts): cases in test/fixtures/gradcheck_loss_torch.json
// (scripts/make_gradcheck_loss_fixtures.py). Only the prediction is differentiable; targets, labels and the
// optional weight / posWeight inputs are constants. The loss layers (nn.MSELoss, ...) call these same functions.
import { nn, type Tensor } from '../../ts/index.js';
import type { OpConfig } from './fixture.js';
import { accumulation, type OpEntry } from './entry.js';

const F = nn.functional;

function need(t: Record<string, Tensor>, name: string): Tensor {
  const tensor = t[name];
  if (!tensor) throw new RangeError(`gradcheck: the fixture case has no input '${name}'`);
  return tensor;
}

function reduction(c: OpConfig): F.Reduction | undefined {
  return c.reduction as F.Reduction | undefined;
}

/** The fixture's labels ([N] or nested [N, d1, ...]) as one flat array, the order of the positions. */
function labels(c: OpConfig): number[] {
  return (c.labels as unknown[]).flat(8) as number[];
}

// Sums and means of at most 24 elements (each computed with a few roundings).
const REDUCED = accumulation(30, 'each element within a few roundings (log1p, exp, log), then sums and means of up to 24 of them');
// Log-sum-exp over up to 5 classes per position, the smoothing sum over the classes, then sums over up to 8 positions
// and the weighted mean's division.
const CLASS = accumulation(48, 'log-sum-exp and the smoothing sum over up to 5 classes, then sums over up to 8 positions and the weighted mean');

export const LOSS_OPS: Record<string, OpEntry> = {
  mseLoss: { run: (t, c) => ({ y: F.mseLoss(need(t, 'input'), need(t, 'target'), { reduction: reduction(c) }) }), tolerance: REDUCED },
  l1Loss: { run: (t, c) => ({ y: F.l1Loss(need(t, 'input'), need(t, 'target'), { reduction: reduction(c) }) }), tolerance: REDUCED },
  huberLoss: {
    run: (t, c) => ({ y: F.huberLoss(need(t, 'input'), need(t, 'target'), { reduction: reduction(c), delta: c.delta as number }) }),
    tolerance: REDUCED,
  },
  smoothL1Loss: {
    run: (t, c) => ({ y: F.smoothL1Loss(need(t, 'input'), need(t, 'target'), { reduction: reduction(c), beta: c.beta as number }) }),
    tolerance: REDUCED,
  },
  binaryCrossEntropy: {
    run: (t, c) => ({ y: F.binaryCrossEntropy(need(t, 'input'), need(t, 'target'), { reduction: reduction(c), weight: t.weight ?? null }) }),
    tolerance: REDUCED,
  },
  binaryCrossEntropyWithLogits: {
    run: (t, c) => ({
      y: F.binaryCrossEntropyWithLogits(need(t, 'input'), need(t, 'target'), {
        reduction: reduction(c),
        weight: t.weight ?? null,
        posWeight: t.posWeight ?? null,
      }),
    }),
    tolerance: REDUCED,
  },
  nllLoss: {
    run: (t, c) => ({
      y: F.nllLoss(need(t, 'logProbs'), labels(c), {
        reduction: reduction(c),
        weight: t.weight ?? null,
        ...(c.ignoreIndex === undefined ? {} : { ignoreIndex: c.ignoreIndex as number }),
      }),
    }),
    tolerance: CLASS,
  },
  // The core fixture's case (labels only) runs here too, checking the defaults.
  crossEntropy: {
    run: (t, c) => ({
      y: F.crossEntropy(need(t, 'logits'), labels(c), {
        reduction: reduction(c),
        weight: t.weight ?? null,
        ...(c.ignoreIndex === undefined ? {} : { ignoreIndex: c.ignoreIndex as number }),
        ...(c.labelSmoothing === undefined ? {} : { labelSmoothing: c.labelSmoothing as number }),
      }),
    }),
    tolerance: CLASS,
  },
};

const LAYER_REASON = (fn: string): string => `a loss layer: its forward calls nn.functional.${fn} (checked above) with the options it keeps`;

/** The loss layers take two inputs (prediction, target), which the single-input layer harness does not feed. */
export const LOSS_EXCLUDED_MODULES: Record<string, string> = {
  MSELoss: LAYER_REASON('mseLoss'),
  L1Loss: LAYER_REASON('l1Loss'),
  HuberLoss: LAYER_REASON('huberLoss'),
  SmoothL1Loss: LAYER_REASON('smoothL1Loss'),
  BCELoss: LAYER_REASON('binaryCrossEntropy'),
  BCEWithLogitsLoss: LAYER_REASON('binaryCrossEntropyWithLogits'),
  NLLLoss: LAYER_REASON('nllLoss'),
  CrossEntropyLoss: LAYER_REASON('crossEntropy'),
};
