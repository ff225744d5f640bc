// The convolution family's gradient-check entries (cases: scripts/make_gradcheck_conv_fixtures.py ->
// test/fixtures/gradcheck_conv_torch.json), spread into OPS, LAYERS and the exclusions of registry.ts.
import { nn, noGrad, type Tensor } from '../../ts/index.js';
import { accumulation, ELEMENTWISE, type LayerEntry, type OpEntry } from './entry.js';
import type { LayerSpec, OpConfig } from './fixture.js';

const F = nn.functional;

function need(t: Record<string, Tensor>, name: string): Tensor {
  const tensor = t[name];
  if (!tensor) throw new RangeError(`gradcheck: the fixture case has no input '${name}'`);
  return tensor;
}

const optional = (t: Record<string, Tensor>, name: string): Tensor | null => t[name] ?? null;

/** The options a conv case was made with, in our names (the config holds them as the fixture wrote them). */
function convOptions(c: OpConfig): Record<string, unknown> {
  const keys = ['stride', 'padding', 'dilation', 'groups', 'outputPadding'];
  return Object.fromEntries(keys.filter((k) => c[k] !== undefined).map((k) => [k, c[k]]));
}

/** ‖v‖ per output channel, outside the graph: the precomputed norm weightNormConv takes. */
function detachedNorm(v: Tensor, g: Tensor): Tensor {
  return noGrad(() => {
    const { w, norm } = F.weightNorm(v, g, { dim: 0 });
    w.dispose();
    return norm;
  });
}

const CONV = accumulation(100, 'dot products of up to 24 terms (channels/groups × kernel) forward and for dx; up to ~80 positions × batch for the weight gradient');
const WEIGHT_NORM_CONV = accumulation(
  120,
  'the convolution sums (up to ~50 terms), the norm and the projection of dv, which subtracts two terms of similar size',
);

export const CONV_OPS: Record<string, OpEntry> = {
  conv1d: { run: (t, c) => ({ y: F.conv1d(need(t, 'x'), need(t, 'weight'), optional(t, 'bias'), convOptions(c)) }), tolerance: CONV },
  conv2d: { run: (t, c) => ({ y: F.conv2d(need(t, 'x'), need(t, 'weight'), optional(t, 'bias'), convOptions(c)) }), tolerance: CONV },
  convTranspose1d: {
    run: (t, c) => ({ y: F.convTranspose1d(need(t, 'x'), need(t, 'weight'), optional(t, 'bias'), convOptions(c)) }),
    tolerance: CONV,
  },
  convTranspose2d: {
    run: (t, c) => ({ y: F.convTranspose2d(need(t, 'x'), need(t, 'weight'), optional(t, 'bias'), convOptions(c)) }),
    tolerance: CONV,
  },
  weightNormConv1d: {
    run: (t, c) => {
      const v = need(t, 'v');
      const g = need(t, 'g');
      return { y: F.weightNormConv1d(need(t, 'x'), v, g, optional(t, 'bias'), detachedNorm(v, g), convOptions(c)) };
    },
    tolerance: WEIGHT_NORM_CONV,
  },
  weightNormConv2d: {
    run: (t, c) => {
      const v = need(t, 'v');
      const g = need(t, 'g');
      return { y: F.weightNormConv2d(need(t, 'x'), v, g, optional(t, 'bias'), detachedNorm(v, g), convOptions(c)) };
    },
    tolerance: WEIGHT_NORM_CONV,
  },
  pad: {
    run: (t, c) => ({
      y: F.pad(need(t, 'x'), c.pads as number[], { mode: c.mode as nn.functional.PadMode, ...(c.value === undefined ? {} : { value: c.value as number }) }),
    }),
    tolerance: {
      forward: ELEMENTWISE.forward,
      gradient: 16 * 2 ** -24,
      reason: 'the forward copies (exact); an element mirrored or replicated into up to ~12 positions sums their gradients',
    },
  },
  upsample: {
    run: (t, c) => ({ y: F.upsample(need(t, 'x'), { scaleFactor: c.scaleFactor as number | number[] }) }),
    tolerance: { forward: ELEMENTWISE.forward, gradient: 8 * 2 ** -24, reason: 'the forward copies (exact); the gradient sums up to 6 copies' },
  },
  interpolate: {
    run: (t, c) => ({ y: F.interpolate(need(t, 'x'), { size: c.size as number[] }) }),
    tolerance: { forward: ELEMENTWISE.forward, gradient: 8 * 2 ** -24, reason: 'the forward copies (exact); the gradient sums up to 6 copies' },
  },
};

/** A conv layer spec as the fixture writes it (LayerSpec's fields, some as per-axis lists). */
interface ConvSpec {
  in: number;
  out: number;
  kernel: number | number[];
  stride?: number | number[];
  padding?: number | number[];
  dilation?: number | number[];
  groups?: number;
  outputPadding?: number | number[];
  value?: number;
  scaleFactor?: number | number[];
}

const spec = (s: LayerSpec): ConvSpec => s as unknown as ConvSpec;
const common = (s: LayerSpec) => ({
  bias: s.bias ?? true,
  weightNorm: s.weightNorm ?? false,
  ...(spec(s).stride === undefined ? {} : { stride: spec(s).stride }),
  ...(spec(s).padding === undefined ? {} : { padding: spec(s).padding }),
  ...(spec(s).dilation === undefined ? {} : { dilation: spec(s).dilation }),
  ...(spec(s).groups === undefined ? {} : { groups: spec(s).groups }),
});
const transposedOptions = (s: LayerSpec) => ({
  ...common(s),
  ...(spec(s).outputPadding === undefined ? {} : { outputPadding: spec(s).outputPadding }),
});
type Pads4 = [number, number, number, number];
const pads = (s: LayerSpec) => spec(s).padding as number & [number, number] & Pads4;

const COPY = CONV_OPS.pad!.tolerance;

export const CONV_LAYERS: Record<string, LayerEntry> = {
  Conv1d: { build: (s) => new nn.Conv1d(spec(s).in, spec(s).out, spec(s).kernel, common(s)), tolerance: WEIGHT_NORM_CONV },
  ConvTranspose1d: { build: (s) => new nn.ConvTranspose1d(spec(s).in, spec(s).out, spec(s).kernel, transposedOptions(s)), tolerance: WEIGHT_NORM_CONV },
  ConvTranspose2d: { build: (s) => new nn.ConvTranspose2d(spec(s).in, spec(s).out, spec(s).kernel, transposedOptions(s)), tolerance: WEIGHT_NORM_CONV },
  ReflectionPad1d: { build: (s) => new nn.ReflectionPad1d(pads(s)), tolerance: COPY },
  ReflectionPad2d: { build: (s) => new nn.ReflectionPad2d(pads(s)), tolerance: COPY },
  ReplicationPad1d: { build: (s) => new nn.ReplicationPad1d(pads(s)), tolerance: COPY },
  ReplicationPad2d: { build: (s) => new nn.ReplicationPad2d(pads(s)), tolerance: COPY },
  ConstantPad1d: { build: (s) => new nn.ConstantPad1d(pads(s), spec(s).value ?? 0), tolerance: COPY },
  ConstantPad2d: { build: (s) => new nn.ConstantPad2d(pads(s), spec(s).value ?? 0), tolerance: COPY },
  ZeroPad2d: { build: (s) => new nn.ZeroPad2d(pads(s)), tolerance: COPY },
  Upsample: { build: (s) => new nn.Upsample({ scaleFactor: spec(s).scaleFactor! }), tolerance: CONV_OPS.upsample!.tolerance },
};

/** The Conv2d entry, now built with the per-axis options too (it replaces the core registry's). */
export const CONV2D_LAYER: LayerEntry = {
  build: (s) => new nn.Conv2d(spec(s).in, spec(s).out, spec(s).kernel, common(s)),
  tolerance: WEIGHT_NORM_CONV,
};

export const CONV_EXCLUDED_MODULES: Record<string, string> = {
  ModuleList: 'a container without a forward of its own (its modules run in their holder\'s forward); covered by test/conv.test.ts',
  WeightedLayer: 'the abstract base of Linear and the convolutions; every concrete layer is registered',
};
