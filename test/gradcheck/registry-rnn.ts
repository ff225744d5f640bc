// Gradient-check entries of the recurrent op family (cases: scripts/make_gradcheck_rnn_fixtures.py ->
// test/fixtures/gradcheck_rnn_torch.json). The harness calls layer.forward(x) and differentiates one tensor, so the
// sequence layers and the LSTM cell run inside a probe that shares their parameters under the same names and returns
// their outputs flattened into one vector: [output, h, c] (zero initial states). Initial states, the torch import
// and the error messages are checked by test/rnn.test.ts.
import { type Device, nn, type Tensor } from '../../ts/index.js';
import { concatRows } from '../../ts/rnn.js';
import { accumulation, ELEMENTWISE, type LayerEntry } from './entry.js';
import type { LayerSpec } from './fixture.js';

/** The recurrent fields of a spec (the fixture writes them beside LayerSpec's). */
interface RecurrentSpec extends LayerSpec {
  numLayers?: number;
  batchFirst?: boolean;
  num?: number;
  dim?: number;
  paddingIdx?: number;
}

const flat = (t: Tensor): Tensor => nn.functional.reshape(t, [t.size]);

/** Shares `inner`'s parameters under their own names; forward returns `outputs(inner, x)` as one tensor. */
class Probe<M extends nn.Module<unknown>> extends nn.Module {
  constructor(
    private readonly inner: M,
    private readonly outputs: (inner: M, x: Tensor) => Tensor[],
  ) {
    super();
    for (const [name, p] of inner.namedParameters()) this.registerParameter(name, p);
  }

  forward(x: Tensor): Tensor {
    return concatRows(this.outputs(this.inner, x).map(flat));
  }

  // The inner layer moves the shared tensors and drops its cached norms.
  override to(device: Device): this {
    this.inner.to(device);
    return this;
  }

  override dispose(): void {
    this.inner.dispose();
  }
}

function size(spec: RecurrentSpec, key: 'in' | 'out' | 'num' | 'dim'): number {
  const value = spec[key];
  if (typeof value !== 'number') throw new TypeError(`gradcheck: ${spec.type} spec: ${key}: expected a number, received ${JSON.stringify(value)}`);
  return value;
}

const recurrentOptions = (spec: RecurrentSpec): nn.RecurrentOptions => ({
  numLayers: spec.numLayers ?? 1,
  batchFirst: spec.batchFirst ?? false,
  bias: spec.bias ?? true,
  weightNorm: (spec.weightNorm ?? false) as nn.RecurrentWeightNorm,
});

const SEQUENCE = accumulation(
  200,
  'gates are dot products of ≤ 7 terms; every step (≤ 5, 2 layers) carries the previous roundings on, the backward ' +
    'through time sums over all steps, and v, g add the norm and the projection of dv',
);

export const LAYERS: Record<string, LayerEntry> = {
  LSTM: {
    build: (s: RecurrentSpec) => new Probe(new nn.LSTM(size(s, 'in'), size(s, 'out'), recurrentOptions(s)), (m, x) => {
      const { output, h, c } = m.forward(x);
      return [output, h, c];
    }),
    tolerance: SEQUENCE,
  },
  GRU: {
    build: (s: RecurrentSpec) => new Probe(new nn.GRU(size(s, 'in'), size(s, 'out'), recurrentOptions(s)), (m, x) => {
      const { output, h } = m.forward(x);
      return [output, h];
    }),
    tolerance: SEQUENCE,
  },
  LSTMCell: {
    build: (s: RecurrentSpec) =>
      new Probe(new nn.LSTMCell(size(s, 'in'), size(s, 'out'), { bias: s.bias ?? true, weightNorm: (s.weightNorm ?? false) as nn.RecurrentWeightNorm }), (m, x) => {
        const { h, c } = m.forward(x);
        return [h, c];
      }),
    tolerance: accumulation(24, 'one step: gates are dot products of ≤ 7 terms; v, g add the norm (≤ 4 squares) and the projection of dv'),
  },
  GRUCell: {
    build: (s: RecurrentSpec) => new nn.GRUCell(size(s, 'in'), size(s, 'out'), { bias: s.bias ?? true, weightNorm: (s.weightNorm ?? false) as nn.RecurrentWeightNorm }),
    tolerance: accumulation(24, 'one step: gates are dot products of ≤ 7 terms; v, g add the norm (≤ 4 squares) and the projection of dv'),
  },
  Embedding: {
    build: (s: RecurrentSpec) => new nn.Embedding(size(s, 'num'), size(s, 'dim'), s.paddingIdx === undefined ? {} : { paddingIdx: s.paddingIdx }),
    tolerance: { ...ELEMENTWISE, reason: 'a lookup copies rows exactly; the gradient adds at most 2 rows per index (one rounding)' },
  },
};
