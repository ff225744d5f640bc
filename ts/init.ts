// Data-dependent initialization (Salimans & Kingma, 2016, §3): v ~ N(0, 0.05²), then layer by layer, for each
// output unit, the pre-activation t = v·x/‖v‖ on one minibatch gets g ← 1/σ(t) and b ← −μ(t)/σ(t), so every layer
// starts with zero-mean, unit-variance pre-activations on that batch. Plain (not weight-normalized) layers get the
// same weights expressed as w = g·v/‖v‖, which is how the paper initializes its baseline.
import { noGrad } from './autograd.js';
import { rangeError, typeError } from './errors.js';
import { native } from './native.js';
import { Conv2d, Linear, Module, Sequential } from './nn.js';
import { nextSeed } from './random.js';
import { tidy } from './scope.js';
import { floatArray, handleOf, Tensor } from './tensor.js';
import { DEFAULT_EPS } from './weightnorm-options.js';

export interface DataDependentOptions {
  /** Standard deviation of the initial v (paper: 0.05). */
  scale?: number;
  /** Seed of the initial v (default: the next seed of the manualSeed() sequence). */
  seed?: number;
}

function layersOf(model: Module): Module[] {
  return model instanceof Sequential ? model.layers.flatMap(layersOf) : [model];
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

/**
 * How many values of each output unit this layer produces from x: the batch for a Linear, the batch times the
 * output positions for a Conv2d. The unit's σ is measured over them.
 */
function valuesPerUnit(layer: Linear | Conv2d, x: Tensor): number {
  if (layer instanceof Linear || x.rank !== 4) return x.shape[0] ?? 0;
  const k = layer.kernelSize;
  const positions = (size: number) => Math.max(0, Math.floor((size + 2 * layer.padding - k) / layer.stride) + 1);
  return x.shape[0]! * positions(x.shape[2]!) * positions(x.shape[3]!);
}

function initializeLayer(layer: Linear | Conv2d, name: string, x: Tensor, batch: Tensor, scale: number, seed: number): void {
  const where = 'init.dataDependent';
  const count = valuesPerUnit(layer, x);
  if (count < 2) {
    // σ of one value is 0 for every unit: the gains would say nothing about the data.
    throw rangeError(
      `${where}: batch`,
      `at least 2 values per output unit of ${name === '' ? 'the model' : `layer '${name}'`} ` +
        `(${layer.constructor.name}: batch × output positions) to measure σ`,
      `${count} (batch ${shapeText(batch.shape)}, the layer's input ${shapeText(x.shape)})`,
    );
  }
  const shape = [...(layer.v ?? layer.weight)!.shape];
  const channels = shape[0]!;
  const v = new Tensor(native.randn(shape, seed, x.device, 0, scale));
  const ones = new Tensor(native.full([channels], 1, x.device));
  const state = layer.weightNorm;
  if (state && state.dim !== 0) {
    throw rangeError(`${where}: layer`, 'weight norm over dim 0 (one norm per output unit)', `dim ${String(state.dim)}`);
  }
  if (state) {
    layer.v!.replaceHandle(native.scale(handleOf(v, where), 1));
    layer.g!.replaceHandle(native.full([channels], 1, x.device));
  } else {
    const direction = native.weightNorm(handleOf(v, where), handleOf(ones, where), 0, DEFAULT_EPS, true);
    direction.norm.dispose();
    layer.weight!.replaceHandle(direction.w);
  }
  if (layer.bias) layer.bias.replaceHandle(native.full([channels], 0, x.device));

  const { mean, std } = channelStatistics(layer.forward(x));
  const gain = new Float32Array(channels);
  const shift = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    // A unit that is constant on the batch (σ = 0) keeps gain 1 rather than becoming infinite.
    const sigma = std[c]! > 0 ? std[c]! : 1;
    gain[c] = 1 / sigma;
    shift[c] = -mean[c]! / sigma;
  }
  if (state) {
    setData(layer.g!, gain);
  } else {
    const rest = layer.weight!.size / channels;
    const g = new Tensor(native.fromArray(gain, [channels], x.device));
    layer.weight!.replaceHandle(native.channelOp('scale', handleOf(layer.weight!, where), handleOf(g, where), 1, channels, rest));
  }
  if (layer.bias) setData(layer.bias, shift);
}

/**
 * Initializes `model` (a Sequential, nested Sequentials allowed, or a single layer) from one minibatch `batch`,
 * layer by layer. Linear and Conv2d layers (plain, or weight-normalized over dim 0) are initialized; every other
 * layer just runs forward so the next layer sees its output. Layers without a bias only get their gains.
 * Each unit's σ needs at least 2 values (a Linear: 2 examples; a Conv2d: batch × output positions ≥ 2): fewer is a
 * RangeError, as is an empty batch. A unit that is constant on the batch (σ = 0) keeps gain 1 and is only centred.
 * All or nothing: on any error the model is left as it was.
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
  const layers = layersOf(model);
  const names = new Map(model.namedModules().map(([name, m]) => [m, name]));
  // All or nothing: a layer that cannot be initialized restores every layer initialized before it.
  const backup = Object.fromEntries(Object.entries(model.stateDict()).map(([name, t]) => [name, { shape: [...t.shape], data: floatArray(t, 'init.dataDependent') }]));
  const streams = model.namedModules().flatMap(([, m]) => {
    const state = m.randomStreamState();
    return state ? [[m, state] as const] : [];
  });
  try {
    noGrad(() => {
      let x = batch;
      try {
        for (const layer of layers) {
          const next = tidy(() => {
            if (layer instanceof Linear || layer instanceof Conv2d) {
              initializeLayer(layer, names.get(layer) ?? '', x, batch, scale, options.seed ?? nextSeed());
            }
            return layer.forward(x);
          });
          if (x !== batch && x !== next) x.dispose();
          x = next;
        }
      } finally {
        if (x !== batch) x.dispose();
      }
    });
  } catch (error) {
    model.loadStateDict(backup);
    for (const [module, state] of streams) module.restoreRandomStream(state); // dropout and noise layers ran too
    throw error;
  }
}
