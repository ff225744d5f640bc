// Gradient-check entries of the VAE family: nn.functional.gaussianKl (ts/gaussian-kl.ts), cases in
// test/fixtures/gradcheck_vae_torch.json (scripts/make_gradcheck_vae_fixtures.py): random inputs, |logVar| up to
// 80, logVar near 0 (where a direct exp(logVar) − 1 − logVar would cancel), every reduction. Both mu and logVar are differentiable.
import { nn, type Tensor } from '../../ts/index.js';
import type { OpConfig } from './fixture.js';
import { accumulation, type OpEntry } from './entry.js';

const F = nn.functional;

function need(t: Record<string, Tensor>, name: string): Tensor {
  const tensor = t[name];
  if (!tensor) throw new RangeError(`gradcheck: the fixture case has no input '${name}'`);
  return tensor;
}

export const VAE_OPS: Record<string, OpEntry> = {
  gaussianKl: {
    run: (t: Record<string, Tensor>, c: OpConfig) => ({
      y: F.gaussianKl(need(t, 'mu'), need(t, 'logVar'), { reduction: c.reduction as 'mean' | 'sum' | 'none' }),
    }),
    // Near logVar = 0 the variance term and its gradient come from a series (no cancellation), elsewhere exp's
    // result loses at most a factor ~2.5 to the subtraction of 1 + logVar.
    tolerance: accumulation(24, 'a few roundings per element (exp or a 9-term series, the square, the halving), then sums of up to 24 elements'),
  },
};
