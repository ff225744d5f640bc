// Gradient-check entries of the VAE family: nn.functional.gaussianKl (ts/gaussian-kl.ts), cases in
// test/fixtures/gradcheck_vae_torch.json (scripts/make_gradcheck_vae_fixtures.py): random inputs, |logVar| up to
// 80, logVar near 0, every reduction. Both mu and logVar are differentiable.
import { nn, type Tensor } from '../../ts/index.js';
import type { OpConfig } from './fixture.js';
import { type OpEntry, UNIT_ROUNDOFF } from './entry.js';

const F = nn.functional;

function need(t: Record<string, Tensor>, name: string): Tensor {
  const tensor = t[name];
  if (!tensor) throw new RangeError(`gradcheck: the fixture case has no input '${name}'`);
  return tensor;
}

export const VAE_OPS: Record<string, OpEntry> = {
  gaussianKl: {
    run: (t: Record<string, Tensor>, c: OpConfig) => ({
      y: F.gaussianKl(need(t, 'mu'), need(t, 'logVar'), { reduction: c.reduction as F.Reduction }),
    }),
    tolerance: {
      // Per element: exp (a few ulp), two subtractions, a square, an addition and the halving, then sums of up to
      // 24 elements (8·(24 + 8)·u, as accumulation()). The logVar gradient ½(exp(logVar) − 1)·dy is formed as
      // exp(logVar)·dy − dy: where logVar ≈ 1e-3 (the near-0 case) the two terms cancel to 1e-3 of their size, so
      // float32's u·|dy| error is ~1e3·u relative to the gradient's scale; 2^-14 covers |logVar| down to ~1e-3.
      forward: 8 * (24 + 8) * UNIT_ROUNDOFF,
      gradient: 2 ** -14,
      reason:
        'a few roundings per element then sums of up to 24 elements (forward); the logVar gradient exp(logVar)·dy − dy cancels ' +
        'where |logVar| ≈ 1e-3, leaving float32 error ~u/|logVar| of its scale (gradient 2^-14)',
    },
  },
};
