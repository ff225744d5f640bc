// Data-dependent initialization (Salimans & Kingma, 2016, §3): v ~ N(0, 0.05²), then layer by layer, for each
// output unit, the pre-activation t = v·x/‖v‖ on one minibatch gets g ← 1/σ(t) and b ← −μ(t)/σ(t), so every layer
// starts with zero-mean, unit-variance pre-activations on that batch. Plain (not weight-normalized) layers get the
// same weights expressed as w = g·v/‖v‖, which is how the paper initializes its baseline. Layers are initialized in
// the order a forward pass of the model calls them, so any module tree works.
import { noGrad } from './autograd.js';
import { rangeError, typeError } from './errors.js';
import { native } from './native.js';
import { ConvTranspose1d, ConvTranspose2d, Module, WeightedLayer } from './nn.js';
import { nextSeed } from './random.js';
import { tidy } from './scope.js';
import { handleOf, Tensor } from './tensor.js';
import { DEFAULT_EPS } from './weightnorm-options.js';

export interface DataDependentOptions {
  /** Standard deviation of the initial v (paper: 0.05). */
  scale?: number;
  /** Seed of the initial v (default: the next seed of the manualSeed() sequence). */
  seed?: number;
}

/** Per-channel mean and biased standard deviation of t [batch, channels, ...] over batch and spatial positions. */
function channelStatistics(t: Tensor): { mean: Float64Array; std: Float64Array } {
  const [batch = 1, channels = 1, ...spatial] = t.shape;
  const inner = spatial.reduce((a, b) => a * b, 1);
  const values = t.toArray();
  const mean = new Float64Array(channels);
  const std = new Float64Array(channels);
  const count = batch * inner; // at least 2 (checked by initializeLayer)
  for (let c = 0; c < channels; c++) {
    let sum = 0;
    for (let b = 0; b < batch; b++) for (let i = 0; i < inner; i++) sum += values[(b * channels + c) * inner + i]!;
    const mu = sum / count;
    let squares = 0;
    for (let b = 0; b < batch; b++) {
      for (let i = 0; i < inner; i++) squares += (values[(b * channels + c) * inner + i]! - mu) ** 2;
    }
    mean[c] = mu;
    std[c] = Math.sqrt(squares / count);
  }
  return { mean, std };
}

const shapeText = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

function setData(target: Tensor, values: Float32Array): void {
  target.replaceHandle(native.fromArray(values, [...target.shape], target.device));
}

/** ‖v‖ of each output unit (host arithmetic on a weight's values; init runs once, on small tensors). */
function unitNorms(values: ArrayLike<number>, units: { count: number; unitOf(index: number): number }): Float64Array {
  const squares = new Float64Array(units.count);
  for (let e = 0; e < values.length; e++) squares[units.unitOf(e)]! += values[e]! ** 2;
  return squares.map(Math.sqrt);
}

function scaledPerUnit(values: ArrayLike<number>, units: { count: number; unitOf(index: number): number }, factor: ArrayLike<number>): Float32Array {
  return Float32Array.from(values, (v, e) => v * factor[units.unitOf(e)]!);
}

/**
 * One layer from the input x it receives in the initializing forward pass. The paper's scheme for layers normalized
 * per output unit (Linear and the direct convolutions with weightNorm dim 0): v ~ N(0, scale²), g = 1, then
 * g ← 1/σ(t), b ← −μ(t)/σ(t) with t the pre-activation per output unit. Every other kind (plain layers, other
 * dims, transposed convolutions, whose dim 0 is per input channel) gets the same effective weight
 * w = v/‖v‖_unit / σ(t) per output unit, held as the layer holds it (for weight norm: v = w, g = ‖w‖ over its dim).
 */
function initializeLayer(layer: WeightedLayer, name: string, x: Tensor, batch: Tensor, scale: number, seed: number): void {
  const where = 'init.dataDependent';
  const target = (layer.v ?? layer.weight)!;
  const shape = [...target.shape];
  const units = layer.outputUnits();
  const state = layer.weightNorm;
  const paperScheme = state !== null && state.dim === 0 && units.count === shape[0] && !isTransposed(layer);
  const v = new Tensor(native.randn(shape, seed, x.device, 0, scale));
  const direction = scaledPerUnit(v.toArray(), units, unitNorms(v.toArray(), units).map((n) => (n > 0 ? 1 / n : 0)));
  if (paperScheme) {
    layer.v!.replaceHandle(native.scale(handleOf(v, where), 1));
    layer.g!.replaceHandle(native.full([units.count], 1, x.device));
  } else {
    setWeight(layer, direction);
  }
  if (layer.bias) layer.bias.replaceHandle(native.full([units.count], 0, x.device));

  const t = layer.forward(x);
  const count = t.size / Math.max(units.count, 1);
  if (count < 2) {
    // σ of one value is 0 for every unit: the gains would say nothing about the data.
    throw rangeError(
      `${where}: batch`,
      `at least 2 values per output unit of ${name === '' ? 'the model' : `layer '${name}'`} ` +
        `(${layer.constructor.name}: batch × output positions) to measure σ`,
      `${count} (batch ${shapeText(batch.shape)}, the layer's input ${shapeText(x.shape)})`,
    );
  }
  const { mean, std } = channelStatistics(t);
  const gain = new Float32Array(units.count);
  const shift = new Float32Array(units.count);
  for (let c = 0; c < units.count; c++) {
    // A unit that is constant on the batch (σ = 0) keeps gain 1 rather than becoming infinite.
    const sigma = std[c]! > 0 ? std[c]! : 1;
    gain[c] = 1 / sigma;
    shift[c] = -mean[c]! / sigma;
  }
  if (paperScheme) setData(layer.g!, gain);
  else setWeight(layer, scaledPerUnit(direction, units, gain));
  if (layer.bias) setData(layer.bias, shift);
}

function isTransposed(layer: WeightedLayer): boolean {
  return layer instanceof ConvTranspose1d || layer instanceof ConvTranspose2d;
}

/** The layer's effective weight set to `w`: the plain weight, or v = w with g = ‖w‖ over the layer's dim. */
function setWeight(layer: WeightedLayer, w: Float32Array): void {
  const target = (layer.v ?? layer.weight)!;
  setData(target, w);
  const state = layer.weightNorm;
  if (!state) return;
  const where = 'init.dataDependent';
  const channels = layer.g!.shape[0]!;
  const ones = native.full([channels], 1, target.device);
  const r = native.weightNorm(handleOf(target, where), ones, state.dim, state.eps, true);
  ones.dispose();
  r.w.dispose();
  layer.g!.replaceHandle(r.norm);
}

/**
 * Initializes `model` (any module tree: Sequential, ModuleList inside a custom Module, a single layer) from one
 * minibatch `batch`, in one forward pass of the model: every weighted layer (Linear, Conv1d, Conv2d,
 * ConvTranspose1d, ConvTranspose2d; plain or weight-normalized over any dim) is initialized when it is first
 * called, from the input it receives there, before its output goes on; a layer the forward never calls is left as
 * it is. Layers without a bias only get their gains. Each unit's σ needs at least 2 values (a Linear: 2 examples;
 * a convolution: batch × output positions ≥ 2): fewer is a RangeError, as is an empty batch. A unit that is
 * constant on the batch (σ = 0) keeps gain 1 and is only centred. All or nothing: on any error the model is left
 * as it was.
 */
export function dataDependent(model: Module, batch: Tensor, options: DataDependentOptions = {}): void {
  const where = 'init.dataDependent';
  if (!(model instanceof Module)) throw typeError(`${where}: model`, 'a Module (e.g. nn.Sequential)', model);
  if (!(batch instanceof Tensor)) throw typeError(`${where}: batch`, 'a Tensor', batch);
  handleOf(batch, `${where}: batch`);
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(`${where}: options`, 'an object like { scale, seed }', options);
  }
  if (options.seed !== undefined && (typeof options.seed !== 'number' || !Number.isSafeInteger(options.seed) || options.seed < 0)) {
    throw typeError(`${where}: options.seed`, 'a non-negative safe integer', options.seed);
  }
  const scale = options.scale ?? 0.05;
  if (typeof scale !== 'number' || !(scale > 0)) throw typeError(`${where}: options.scale`, 'a positive number', scale);
  if (batch.rank < 1 || batch.size === 0) throw rangeError(`${where}: batch`, 'a non-empty batch', shapeText(batch.shape));
  const names = new Map(model.namedModules().map(([name, m]) => [m, name]));
  const weighted = model.namedModules().map(([, m]) => m).filter((m): m is WeightedLayer => m instanceof WeightedLayer);
  // All or nothing: a layer that cannot be initialized restores every layer initialized before it.
  const backup = Object.fromEntries(Object.entries(model.stateDict()).map(([name, t]) => [name, { shape: [...t.shape], data: t.toArray() }]));
  const streams = model.namedModules().flatMap(([, m]) => {
    const state = m.randomStreamState();
    return state ? [[m, state] as const] : [];
  });
  // One forward pass of the whole model, whatever its structure: each weighted layer is initialized when it is
  // first called, from the input it receives there (already produced by the layers initialized before it).
  const done = new Set<WeightedLayer>();
  const own = Object.getOwnPropertyDescriptor;
  try {
    for (const layer of weighted) {
      if (own(layer, 'forward')) continue; // already intercepted (a layer registered twice)
      const forward = layer.forward;
      Object.defineProperty(layer, 'forward', {
        configurable: true,
        writable: true,
        value: (x: Tensor): Tensor => {
          if (!done.has(layer)) {
            done.add(layer);
            tidy(() => initializeLayer(layer, names.get(layer) ?? '', x, batch, scale, options.seed ?? nextSeed()));
          }
          return forward.call(layer, x);
        },
      });
    }
    noGrad(() => tidy(() => void model.forward(batch)));
  } catch (error) {
    model.loadStateDict(backup);
    for (const [module, state] of streams) module.restoreRandomStream(state); // dropout and noise layers ran too
    throw error;
  } finally {
    for (const layer of weighted) delete (layer as { forward?: unknown }).forward;
  }
}
