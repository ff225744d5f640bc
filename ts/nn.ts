// Layers. A Module owns parameters (tensors that require gradients) and buffers (running statistics), both kept
// out of tidy(); forward() is built from the differentiable ops in functional.ts.
import { noGrad } from './autograd.js';
import { rangeError, shapeText, typeError } from './errors.js';
import { weightNormConv } from './conv.js';
import * as F from './functional.js';
import { native, type NativeTensor, type OptimizerNormOutput } from './native.js';
import { nextSeed } from './random.js';
import { keep, tidy } from './scope.js';
import { type Device, handleOf, Tensor } from './tensor.js';
import { checkDevice } from './tensor.js';
import { checkWeightNormDim, checkWeightNormEps, DEFAULT_EPS, weightNormLayout } from './weightnorm-options.js';

export { F as functional };
export { crossEntropy } from './functional.js';

// ---------------------------------------------------------------------------------------------------------------
// Weight-norm state of a layer: v, g and the cached ‖v‖ (valid while v.version matches).

/** How a layer is weight-normalized: the kept axis of v (default 0, one norm per output unit) and the norm floor. */
export interface WeightNormConfig {
  dim?: number | null;
  eps?: number;
}

/**
 * @internal
 * The (v, g) of a weight-normalized layer and its cache of ‖v‖ per channel. The layer creates it and links it to
 * its direction as `v.weightNormState` (attachTo), because optimizers and checkpoints see only parameter tensors:
 *  - `norm` is valid while `normVersion === v.version`; anything that changes v in place bumps v.version.
 *  - Writers of `norm`: currentNorm() recomputes it when stale (a forward after a load or a manual change of v);
 *    an optimizer's fused step writes the new ‖v‖ in the same pass that updates v and then calls normUpdated(),
 *    so the next forward does not read v again; optim's loadStateDict adopts a checkpoint's saved norm through
 *    normUpdated() when it matches v as loaded.
 *  - Readers: the layer's forward (currentNorm()), the optimizers (normOutputFor() for the step; norm for
 *    stateDict()'s 'norm' slot) and io's torch import (dim, to check torch's weight_norm dim against the layer's).
 */
export class WeightNormState {
  /** ‖v‖ per channel (floored by eps), shape [channels]; see normVersion. */
  norm: Tensor | null = null;
  /** The v.version that `norm` was computed for (-1: none yet). */
  normVersion = -1;
  /** The last normOutputFor() result. */
  #normOutput: OptimizerNormOutput | null = null;

  constructor(
    readonly v: Tensor,
    readonly g: Tensor,
    readonly dim: number | null,
    readonly eps: number,
  ) {}

  /** The state linked to `param`, if `param` is the direction v of a weight-normalized layer. */
  static of(param: Tensor): WeightNormState | null {
    return param.weightNormState;
  }

  /** Links this state to its v (the layer calls it when it becomes weight-normalized). */
  attachTo(v: Tensor): void {
    v.weightNormState = this;
  }

  /** Unlinks it from its v (the layer calls it when it stops being weight-normalized). */
  detach(): void {
    if (this.v.weightNormState === this) this.v.weightNormState = null;
  }

  /** [outer, channels, inner] of v for this dim. */
  layout(): [number, number, number] {
    return weightNormLayout(this.v.shape, this.dim);
  }

  /** ‖v‖ per channel; recomputed only when v changed since (an optimizer step keeps it current itself). */
  currentNorm(): Tensor {
    if (this.norm && !this.norm.disposed && this.normVersion === this.v.version) return this.norm;
    const fresh = noGrad(() => tidy(() => F.weightNorm(this.v, this.g, { dim: this.dim, eps: this.eps }).norm));
    this.norm?.dispose();
    this.norm = keep(fresh);
    this.normVersion = this.v.version;
    return this.norm;
  }

  /** Called by optimizers after they updated v and wrote its new norm into `norm` (or loaded a matching one). */
  normUpdated(norm: Tensor): void {
    // Every step writes into the same kept tensor: keep() only a new one.
    if (this.norm !== norm) {
      this.norm?.dispose();
      this.norm = keep(norm);
    }
    this.normVersion = this.v.version;
  }

  /**
   * What an optimizer step passes to write ‖v‖ into `norm`: the same object from step to step while `norm` keeps
   * its handle (v's layout, dim and eps never change), instead of a new one and v's layout worked out each step.
   */
  normOutputFor(norm: Tensor, where: string): OptimizerNormOutput {
    const handle = handleOf(norm, where);
    if (this.#normOutput?.norm !== handle) {
      const [outer, channels, inner] = this.layout();
      this.#normOutput = { norm: handle, outer, channels, inner, eps: this.eps };
    }
    return this.#normOutput;
  }
}

function parseWeightNorm(where: string, option: unknown, rank: number): { dim: number | null; eps: number } | null {
  if (option === undefined || option === false) return null;
  if (option === true) return { dim: 0, eps: DEFAULT_EPS };
  if (typeof option !== 'object' || option === null) {
    throw typeError(`${where}: options.weightNorm`, 'true, false or { dim, eps }', option);
  }
  const { dim = 0, eps = DEFAULT_EPS } = option as WeightNormConfig;
  return {
    dim: checkWeightNormDim(where, 'options.weightNorm.dim', dim, rank),
    eps: checkWeightNormEps(where, 'options.weightNorm.eps', eps),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Checkpoint types (io.ts reads and writes them as safetensors files).

/** Host data with its shape: what a loader stages without making a tensor first. */
export interface HostTensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

export interface LoadStateDictOptions {
  /** Ignore entries the module has no parameter or buffer for (default false: they are an error). */
  allowExtraKeys?: boolean;
  /** Leave parameters and buffers that have no entry as they are (default false: they are an error). */
  allowMissingKeys?: boolean;
}

/** @internal A load that passed every check and has its new storage ready: commit() cannot fail. */
export interface StagedLoad {
  commit(): void;
  discard(): void;
}

/** Where a dropout or noise layer is in its random stream: its seed and how many masks it has drawn. */
export interface RandomStreamState {
  seed: number;
  calls: number;
}

function listKeys(keys: readonly string[]): string {
  const shown = keys.slice(0, 10).map((k) => `'${k}'`).join(', ');
  return keys.length > 10 ? `${shown} and ${keys.length - 10} more` : shown;
}

function checkLoadOptions(where: string, options: unknown): Required<LoadStateDictOptions> {
  if (options === undefined) return { allowExtraKeys: false, allowMissingKeys: false };
  if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object', options);
  const allowed = ['allowExtraKeys', 'allowMissingKeys'];
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) throw typeError(`${where}: options`, `only the keys ${allowed.join(', ')}`, key);
  }
  const { allowExtraKeys = false, allowMissingKeys = false } = options as LoadStateDictOptions;
  if (typeof allowExtraKeys !== 'boolean') throw typeError(`${where}: options.allowExtraKeys`, 'a boolean', allowExtraKeys);
  if (typeof allowMissingKeys !== 'boolean') throw typeError(`${where}: options.allowMissingKeys`, 'a boolean', allowMissingKeys);
  return { allowExtraKeys, allowMissingKeys };
}

/** @internal The shape of a Tensor or HostTensor to load, checked; `what` names it in errors. */
export function loadSourceShape(where: string, what: string, value: unknown): readonly number[] {
  if (value instanceof Tensor) {
    handleOf(value, `${where}: ${what}`);
    return value.shape;
  }
  const host = value as HostTensor | null;
  if (typeof host !== 'object' || host === null || !Array.isArray(host.shape) || !(host.data instanceof Float32Array)) {
    throw typeError(`${where}: ${what}`, 'a Tensor or { shape, data: Float32Array }', value);
  }
  const size = host.shape.reduce((a, b) => a * b, 1);
  if (host.data.length !== size) {
    throw rangeError(`${where}: ${what}`, `${size} values for shape ${shapeText(host.shape)}`, `${host.data.length}`);
  }
  return host.shape;
}

/** @internal A copy of a Tensor's or HostTensor's values in new storage on `device` (validated by loadSourceShape). */
export function stageCopy(value: Tensor | HostTensor, device: Device): NativeTensor {
  const data = value instanceof Tensor ? value.toArray() : value.data;
  return native.fromArray(data, [...value.shape], device);
}

// ---------------------------------------------------------------------------------------------------------------
// Module.

/** Any module, whatever its forward takes and returns (containers and tools that never call forward take these). */
export type AnyModule = Module<any[], any>;

/**
 * The base of every layer and model. To write one's own: extend Module, register trainable tensors with
 * registerParameter (they then appear in parameters(), stateDict(), checkpoints and optimizers), running
 * statistics with registerBuffer and sub-layers with registerModule (their parameters are named 'child.name'),
 * and implement forward. `Inputs` types forward's arguments (default: anything) and `Output` its result (default a
 * Tensor), e.g. `class Gate extends Module<[Tensor, Tensor]>` for two inputs, or `Module<[Tensor], Tensor[]>` for
 * several outputs. The built-in layers declare `forward(x: Tensor): Tensor`; the loss layers take (input, target).
 */
export abstract class Module<Inputs extends unknown[] = any[], Output = Tensor> {
  training = true;
  private readonly parameterSlots = new Map<string, Tensor>();
  private readonly bufferSlots = new Map<string, Tensor>();
  private readonly moduleSlots = new Map<string, AnyModule>();

  abstract forward(...inputs: Inputs): Output;

  /** Registers (or replaces) a trainable tensor under `name`. */
  protected registerParameter(name: string, tensor: Tensor): Tensor {
    keep(tensor);
    tensor.requiresGrad = true;
    this.parameterSlots.set(name, tensor);
    return tensor;
  }

  /**
   * Puts `replacements` where parameter `name` was in the registration order and frees `name`'s tensor (and its
   * gradient): folding weight norm turns name_v / name_g into one weight at the same place, so the state dict keeps
   * PyTorch's order.
   */
  protected replaceParameter(name: string, replacements: readonly [string, Tensor][]): void {
    if (!this.parameterSlots.has(name)) throw new RangeError(`${this.constructor.name}: no parameter '${name}' to replace`);
    const entries = [...this.parameterSlots];
    const old = this.parameterSlots.get(name)!;
    this.parameterSlots.clear();
    for (const [key, tensor] of entries) {
      if (key !== name) {
        this.parameterSlots.set(key, tensor);
        continue;
      }
      for (const [newName, replacement] of replacements) {
        keep(replacement);
        replacement.requiresGrad = true;
        this.parameterSlots.set(newName, replacement);
      }
    }
    old.grad?.dispose();
    old.dispose();
  }

  protected unregisterParameter(name: string): void {
    const tensor = this.parameterSlots.get(name);
    tensor?.grad?.dispose();
    tensor?.dispose();
    this.parameterSlots.delete(name);
  }

  protected registerBuffer(name: string, tensor: Tensor): Tensor {
    keep(tensor);
    this.bufferSlots.set(name, tensor);
    return tensor;
  }

  protected registerModule<M extends AnyModule>(name: string, module: M): M {
    if (!(module instanceof Module)) throw typeError(`${this.constructor.name}: ${name}`, 'a Module', module);
    this.moduleSlots.set(name, module);
    return module;
  }

  /** Direct children, in registration order. */
  children(): AnyModule[] {
    return [...this.moduleSlots.values()];
  }

  namedParameters(prefix = ''): [string, Tensor][] {
    const own = [...this.parameterSlots].map(([name, t]): [string, Tensor] => [prefix + name, t]);
    const nested = [...this.moduleSlots].flatMap(([name, m]) => m.namedParameters(`${prefix}${name}.`));
    return [...own, ...nested];
  }

  /** Every trainable tensor of this module and its children (each once). */
  parameters(): Tensor[] {
    return [...new Set(this.namedParameters().map(([, t]) => t))];
  }

  namedBuffers(prefix = ''): [string, Tensor][] {
    const own = [...this.bufferSlots].map(([name, t]): [string, Tensor] => [prefix + name, t]);
    return [...own, ...[...this.moduleSlots].flatMap(([name, m]) => m.namedBuffers(`${prefix}${name}.`))];
  }

  /** Training mode (batch statistics, dropout active) for this module and its children. */
  train(mode = true): this {
    this.training = mode;
    for (const child of this.moduleSlots.values()) child.train(mode);
    return this;
  }

  /** Evaluation mode (running statistics, dropout off). */
  eval(): this {
    return this.train(false);
  }

  /** Moves every parameter and buffer to `device` in place (the tensor objects stay the same). */
  to(device: Device): this {
    checkDevice(device, `${this.constructor.name}.to`, 'device');
    for (const [, t] of [...this.namedParameters(), ...this.namedBuffers()]) {
      if (t.device === device) continue;
      t.grad?.dispose();
      t.grad = null;
      t.replaceHandle(handleOf(t, 'to').to(device));
    }
    this.afterMove();
    return this;
  }

  /** @internal Hook for layers holding derived state (cached norms). */
  protected afterMove(): void {
    for (const child of this.moduleSlots.values()) child.afterMove();
  }

  /** Frees every parameter and buffer. */
  dispose(): void {
    for (const t of [...this.parameterSlots.values(), ...this.bufferSlots.values()]) {
      t.grad?.dispose();
      t.dispose();
    }
    // Each child frees its own derived state too (weight-norm layers: the cached norm).
    for (const child of this.moduleSlots.values()) child.dispose();
  }

  /** This module ('') and every descendant, by dotted name ('0', '1', '1.0', ...). */
  namedModules(prefix = ''): [string, AnyModule][] {
    const own: [string, AnyModule] = [prefix.endsWith('.') ? prefix.slice(0, -1) : prefix, this];
    return [own, ...[...this.moduleSlots].flatMap(([name, m]) => m.namedModules(`${prefix}${name}.`))];
  }

  /**
   * Parameters and buffers by name ('0.v', '0.g', '0.bias', '1.runningMean', ...): the live tensors, not copies.
   * A tensor registered under two names appears under the first.
   */
  stateDict(): Record<string, Tensor> {
    const seen = new Set<Tensor>();
    const entries: [string, Tensor][] = [];
    for (const [name, t] of [...this.namedParameters(), ...this.namedBuffers()]) {
      if (seen.has(t)) continue;
      seen.add(t);
      entries.push([name, t]);
    }
    return Object.fromEntries(entries);
  }

  /**
   * Copies values into the parameters and buffers of the same names. Everything is checked (names, shapes) and
   * copied to each target's device before the first tensor changes: on any error the module is left as it was.
   * The tensor objects stay the same (optimizers keep working); cached weight norms are recomputed.
   */
  loadStateDict(tensors: Record<string, Tensor | HostTensor>, options?: LoadStateDictOptions): void {
    this.prepareLoadStateDict(tensors, options, `${this.constructor.name}.loadStateDict`).commit();
  }

  /** @internal Validates and stages a load: commit() swaps the new storage in and cannot fail; discard() frees it. */
  prepareLoadStateDict(tensors: Record<string, Tensor | HostTensor>, options: LoadStateDictOptions | undefined, where: string): StagedLoad {
    const { allowExtraKeys, allowMissingKeys } = checkLoadOptions(where, options);
    if (typeof tensors !== 'object' || tensors === null) throw typeError(`${where}: tensors`, 'a record of tensors', tensors);
    const targets = new Map(Object.entries(this.stateDict()));
    const given = Object.keys(tensors);
    const unexpected = given.filter((key) => !targets.has(key));
    const missing = [...targets.keys()].filter((key) => !Object.prototype.hasOwnProperty.call(tensors, key));
    if (unexpected.length > 0 && !allowExtraKeys) {
      throw new RangeError(
        `${where}: ${unexpected.length} unexpected key(s) ${listKeys(unexpected)}: the ${this.constructor.name} has no ` +
          `parameter or buffer of that name (it has ${listKeys([...targets.keys()])}; allowExtraKeys skips them)`,
      );
    }
    if (missing.length > 0 && !allowMissingKeys) {
      throw new RangeError(`${where}: ${missing.length} missing key(s) ${listKeys(missing)} (allowMissingKeys leaves them as they are)`);
    }
    const pairs: [Tensor, Tensor | HostTensor][] = [];
    for (const key of given) {
      const target = targets.get(key);
      if (!target) continue;
      const shape = loadSourceShape(where, `'${key}'`, tensors[key]);
      if (shape.length !== target.shape.length || shape.some((d, i) => d !== target.shape[i])) {
        throw rangeError(`${where}: '${key}'`, `shape ${shapeText(target.shape)}`, shapeText(shape));
      }
      handleOf(target, `${where}: the module's '${key}'`);
      pairs.push([target, tensors[key]!]);
    }
    const staged: [Tensor, NativeTensor][] = [];
    try {
      for (const [target, source] of pairs) staged.push([target, stageCopy(source, target.device)]);
    } catch (error) {
      for (const [, handle] of staged) handle.dispose();
      throw error;
    }
    return {
      // replaceHandle bumps each tensor's version, which invalidates the weight-norm caches derived from it.
      commit: () => {
        for (const [target, handle] of staged) target.replaceHandle(handle);
      },
      discard: () => {
        for (const [, handle] of staged) handle.dispose();
      },
    };
  }

  /** Random streams of the dropout and noise layers in this module, by module name. */
  namedRandomStreams(): [string, RandomStreamState][] {
    return this.namedModules().flatMap(([name, m]): [string, RandomStreamState][] => {
      const state = m.randomStreamState();
      return state ? [[name, state]] : [];
    });
  }

  /** @internal This layer's own random stream (null for layers without one). */
  randomStreamState(): RandomStreamState | null {
    return null;
  }

  /** @internal Moves this layer's random stream to `state` (layers without one throw). */
  restoreRandomStream(state: RandomStreamState): void {
    void state;
    throw new TypeError(`${this.constructor.name}.restoreRandomStream: this layer has no random stream`);
  }

  /**
   * A table of this module and its descendants: name, type, output shape (when `inputShape` is given: one shape,
   * or one per forward input; a forward of zeros runs in eval mode without recording the graph, and changes
   * nothing), the parameters each holds itself, then the totals: trainable (parameters) and non-trainable
   * (buffers: running statistics) element counts.
   */
  summary(inputShape?: readonly number[] | readonly (readonly number[])[]): string {
    return moduleSummary(this as AnyModule, inputShape);
  }
}

/** The number of trainable values (elements of every parameter, each tensor once), as Σ p.numel() in PyTorch. */
export function parameterCount(model: AnyModule): number {
  if (!(model instanceof Module)) throw typeError('nn.parameterCount: model', 'a Module', model);
  return model.parameters().reduce((sum, p) => sum + p.size, 0);
}

function moduleSummary(model: AnyModule, inputShape: unknown): string {
  const where = `${model.constructor.name}.summary`;
  let shapes: number[][] | null = null;
  if (inputShape !== undefined) {
    const isShape = (v: unknown): v is number[] => Array.isArray(v) && v.every((d) => Number.isSafeInteger(d) && d >= 0);
    if (isShape(inputShape)) shapes = [inputShape];
    else if (Array.isArray(inputShape) && inputShape.length > 0 && inputShape.every(isShape)) shapes = inputShape as number[][];
    else throw typeError(`${where}: inputShape`, 'a shape like [1, 784] or one shape per input', inputShape);
  }
  const modules = model.namedModules();
  const outputs = new Map<AnyModule, string>();
  if (shapes) {
    const device = model.parameters()[0]?.device ?? 'cpu';
    const modes = modules.map(([, m]) => m.training);
    // Each module's forward is wrapped on the instance for the one call, to see what it returns.
    const wrapped = modules.map(([, m]) => {
      const own = Object.prototype.hasOwnProperty.call(m, 'forward');
      const original = m.forward;
      m.forward = function (this: AnyModule, ...inputs: unknown[]) {
        const result = original.apply(this, inputs);
        outputs.set(m, describeOutput(result));
        return result;
      };
      return { m, own, original };
    });
    try {
      model.eval();
      noGrad(() => tidy(() => {
        const inputs = shapes.map((shape) => new Tensor(native.full(shape, 0, device)));
        model.forward(...inputs);
      }));
    } finally {
      for (const { m, own, original } of wrapped) {
        if (own) m.forward = original;
        else delete (m as { forward?: unknown }).forward;
      }
      modules.forEach(([, m], i) => (m.training = modes[i]!));
    }
  }
  const ownCount = (m: AnyModule, buffers: boolean): number => {
    const children = new Set(m.children().flatMap((c) => (buffers ? c.namedBuffers() : c.namedParameters()).map(([, t]) => t)));
    return (buffers ? m.namedBuffers() : m.namedParameters()).filter(([, t]) => !children.has(t)).reduce((sum, [, t]) => sum + t.size, 0);
  };
  const rows = modules.map(([name, m]) => {
    const depth = name === '' ? 0 : name.split('.').length;
    return [`${'  '.repeat(depth)}${name === '' ? '(model)' : name}`, m.constructor.name, outputs.get(m) ?? '-', ownCount(m, false).toLocaleString('en-US')];
  });
  const header = ['Layer', 'Type', 'Output shape', 'Params'];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: readonly string[]): string =>
    cells.map((cell, c) => (c === 3 ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd();
  const rule = '-'.repeat(widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1));
  const trainable = parameterCount(model);
  const nonTrainable = [...new Set(model.namedBuffers().map(([, t]) => t))].reduce((sum, t) => sum + t.size, 0);
  return [
    line(header),
    rule,
    ...rows.map(line),
    rule,
    `Total params: ${(trainable + nonTrainable).toLocaleString('en-US')}`,
    `Trainable params: ${trainable.toLocaleString('en-US')}`,
    `Non-trainable params: ${nonTrainable.toLocaleString('en-US')} (buffers)`,
  ].join('\n');
}

function describeOutput(value: unknown): string {
  if (value instanceof Tensor) return shapeText(value.shape);
  if (Array.isArray(value)) return value.map(describeOutput).join(', ');
  return typeof value;
}

function checkCount(where: string, value: unknown, minimum = 1): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < minimum) {
    throw typeError(where, `an integer >= ${minimum}`, value);
  }
  return value;
}

function checkInput(where: string, x: unknown): Tensor {
  handleOf(x, `${where}: x`); // a Tensor, not disposed
  return x as Tensor;
}

/** The options object of a layer constructor: undefined or a plain object with only the known keys. */
function checkLayerOptions<T extends object>(where: string, options: unknown, allowed: readonly string[]): Partial<T> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(`${where}: options`, `an object with the keys ${allowed.join(', ')}`, options);
  }
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) throw typeError(`${where}: options`, `only the keys ${allowed.join(', ')}`, key);
  }
  return options as Partial<T>;
}

function checkFraction(where: string, value: unknown, name: string): number {
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) throw typeError(`${where}: ${name}`, 'a number in [0, 1]', value);
  return value;
}

function checkSeed(where: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > 2 ** 32) {
    throw typeError(`${where}: options.seed`, 'an integer in [0, 2^32]', value);
  }
  return value;
}

/** Initial weights: N(0, 1/fanIn) (LeCun normal), drawn from the global seed sequence (see manualSeed()). */
function initialWeight(shape: number[], fanIn: number): Tensor {
  return new Tensor(native.randn(shape, nextSeed(), 'cpu', 0, 1 / Math.sqrt(Math.max(fanIn, 1))));
}

/**
 * Shared by Linear and the convolutions: a weight that is either plain or held as (v, g). Exported for init and
 * removeWeightNorm(s), which handle every kind alike.
 */
export abstract class WeightedLayer extends Module {
  /** Plain weight (null when weight-normalized). */
  weight: Tensor | null = null;
  bias: Tensor | null = null;
  /** Direction and gain of a weight-normalized layer (null when plain). */
  v: Tensor | null = null;
  g: Tensor | null = null;
  /**
   * v, g, dim, eps and the ‖v‖ cache of a weight-normalized layer (null when plain); also linked from v as
   * v.weightNormState, where the optimizers write the norm of their fused step (see WeightNormState).
   */
  protected weightNormState: WeightNormState | null = null;

  /**
   * @internal The output unit each element of the weight feeds (its row for Linear and a convolution; for a
   * transposed convolution [in, out/groups, k...] the output channel of its group and column): init measures and
   * scales per output unit.
   */
  outputUnits(): { count: number; unitOf(index: number): number } {
    const shape = (this.v ?? this.weight)!.shape;
    const rest = shape.slice(1).reduce((a, b) => a * b, 1);
    return { count: shape[0]!, unitOf: (index) => Math.floor(index / rest) };
  }

  protected initialize(where: string, shape: number[], fanIn: number, bias: boolean, weightNorm: unknown, biasChannels = shape[0]!): void {
    const config = parseWeightNorm(where, weightNorm, shape.length);
    const w = initialWeight(shape, fanIn);
    if (config) {
      const { dim, eps } = config;
      this.v = this.registerParameter('v', w);
      // g = ‖v‖ per channel, so that w = v at initialization (as torch.nn.utils.weight_norm does).
      const ones = new Tensor(native.full([dim === null ? 1 : shape[dim]!], 1, 'cpu'));
      const initial = noGrad(() => F.weightNorm(w, ones, { dim, eps }));
      initial.w.dispose();
      ones.dispose();
      this.g = this.registerParameter('g', initial.norm);
      this.setWeightNormState(new WeightNormState(this.v, this.g, dim, eps));
    } else {
      this.weight = this.registerParameter('weight', w);
    }
    if (bias) this.bias = this.registerParameter('bias', new Tensor(native.full([biasChannels], 0, 'cpu')));
  }

  /** Replaces the state and moves the v → state link with it, so optimizers never see a folded layer's old state. */
  protected setWeightNormState(state: WeightNormState | null): void {
    this.weightNormState?.detach();
    this.weightNormState = state;
    state?.attachTo(state.v);
  }

  /** Whether the layer holds (v, g) instead of a weight. */
  get isWeightNormalized(): boolean {
    return this.weightNormState !== null;
  }

  /** @internal The layer's WeightNormState (null when plain): init and the tests read dim, eps and the cached norm. */
  get weightNorm(): WeightNormState | null {
    return this.weightNormState;
  }

  /** The effective weight w (materialized; for inspection and removeWeightNorm). */
  effectiveWeight(): Tensor {
    const state = this.weightNormState;
    if (!state) return this.weight!;
    return F.weightNorm(state.v, state.g, { dim: state.dim, eps: state.eps, norm: state.currentNorm() }).w;
  }

  /** @internal Replaces (v, g) by the plain weight they represent (see removeWeightNorm()). */
  foldWeightNorm(): void {
    const state = this.weightNormState;
    if (!state) return;
    const w = noGrad(() => tidy(() => this.effectiveWeight()));
    this.setWeightNormState(null);
    state.norm?.dispose();
    this.unregisterParameter('v');
    this.unregisterParameter('g');
    this.v = null;
    this.g = null;
    // Keep registration order stable for checkpoints: weight first, bias after.
    const bias = this.bias;
    if (bias) this.unregisterBiasSlot();
    this.weight = this.registerParameter('weight', w);
    if (bias) this.bias = this.registerParameter('bias', bias);
  }

  private unregisterBiasSlot(): void {
    // The bias tensor itself survives; only its slot is re-created after the weight's.
    (this as unknown as { parameterSlots: Map<string, Tensor> }).parameterSlots.delete('bias');
  }

  /** Frees the parameters and the cached ‖v‖ too. */
  override dispose(): void {
    this.weightNormState?.norm?.dispose();
    super.dispose();
  }

  protected override afterMove(): void {
    this.weightNormState?.norm?.dispose();
    if (this.weightNormState) this.weightNormState.norm = null;
    super.afterMove();
  }
}

export interface LinearOptions {
  bias?: boolean;
  /** true or { dim, eps }: hold v and g instead of the weight (Salimans & Kingma, 2016, §2). */
  weightNorm?: boolean | WeightNormConfig;
}

// The checks every weighted layer's constructor shares.

/** options.bias: a boolean when given (the default, true, is the caller's). */
function checkBiasOption(where: string, bias: unknown): void {
  if (bias !== undefined && typeof bias !== 'boolean') throw typeError(`${where}: options.bias`, 'a boolean', bias);
}

/** A weight of `rows` × `perRow` elements must stay within the 2^40 elements a tensor may hold. */
function checkWeightCount(where: string, rows: number, perRow: number): void {
  if (rows * perRow > 2 ** 40) throw rangeError(where, 'at most 2^40 weights', `${rows} × ${perRow}`);
}

/** y = x·wᵀ + b. With weightNorm (dim 0), w = g·v/‖v‖ is never materialized: the scale goes into the GEMM epilogue. */
export class Linear extends WeightedLayer {
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: LinearOptions = {},
  ) {
    super();
    const where = 'nn.Linear';
    checkCount(`${where}: inFeatures`, inFeatures);
    checkCount(`${where}: outFeatures`, outFeatures);
    const o = checkLayerOptions<LinearOptions>(where, options, ['bias', 'weightNorm']);
    checkBiasOption(where, o.bias);
    checkWeightCount(where, inFeatures, outFeatures);
    this.initialize(where, [outFeatures, inFeatures], inFeatures, o.bias ?? true, o.weightNorm);
  }

  forward(x: Tensor): Tensor {
    checkInput('nn.Linear.forward', x);
    const state = this.weightNormState;
    if (!state) return F.linear(x, this.weight!, this.bias);
    if (state.dim === 0) return F.weightNormLinear(x, state.v, state.g, this.bias, state.currentNorm(), state.eps);
    // Other dims: one norm per input feature or for the whole matrix; w is materialized.
    const w = F.weightNorm(state.v, state.g, { dim: state.dim, eps: state.eps, norm: state.currentNorm() }).w;
    return F.linear(x, w, this.bias);
  }
}

/** A layer's value per spatial axis: one number for all axes, or one per axis ([h, w] for 2-D). */
export type AxisSize = number | readonly number[];

export interface Conv2dOptions extends LinearOptions {
  stride?: AxisSize;
  /** Zeros on both sides of each axis, or 'valid' (none) or 'same' (output as long as the input; stride 1). */
  padding?: AxisSize | 'same' | 'valid';
  dilation?: AxisSize;
  groups?: number;
}
export type Conv1dOptions = Conv2dOptions;

export interface ConvTranspose2dOptions extends LinearOptions {
  stride?: AxisSize;
  padding?: AxisSize;
  /** Positions added at the end of each output axis (smaller than that axis' stride or dilation). */
  outputPadding?: AxisSize;
  dilation?: AxisSize;
  groups?: number;
}
export type ConvTranspose1dOptions = ConvTranspose2dOptions;

/** One value per spatial axis, checked (an integer >= minimum each), as given (number or tuple of `dims`). */
function checkAxisSize(where: string, value: unknown, dims: number, minimum: number): number | number[] {
  const expected = `an integer >= ${minimum} or ${dims === 1 ? '[integer]' : '[height, width]'}`;
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < minimum) throw typeError(where, expected, value);
    return value;
  }
  if (!Array.isArray(value) || value.length !== dims || value.some((v) => typeof v !== 'number' || !Number.isInteger(v) || v < minimum)) {
    throw typeError(where, expected, value);
  }
  return [...(value as number[])];
}

/** A convolution layer's input: [batch, inChannels, length] (1-D) or [batch, inChannels, height, width] (2-D). */
function checkConvInput(where: string, x: unknown, dims: 1 | 2, inChannels: number): void {
  const t = checkInput(where, x);
  if (t.rank !== dims + 2 || t.shape[1] !== inChannels) {
    throw rangeError(`${where}: x`, `[batch, ${inChannels}, ${dims === 1 ? 'length' : 'height, width'}]`, shapeText(t.shape));
  }
}

/** A convolution layer's channel counts and kernel size, checked in that order; the kernel size as given. */
function checkConvShape(where: string, dims: 1 | 2, inChannels: number, outChannels: number, kernelSize: unknown): number | number[] {
  checkCount(`${where}: inChannels`, inChannels);
  checkCount(`${where}: outChannels`, outChannels);
  return checkAxisSize(`${where}: kernelSize`, kernelSize, dims, 1);
}

/** options.groups (default 1): a count that divides both channel counts. */
function checkGroups(where: string, groups: unknown, inChannels: number, outChannels: number): number {
  const count = checkCount(`${where}: options.groups`, groups ?? 1);
  if (inChannels % count !== 0 || outChannels % count !== 0) {
    throw rangeError(`${where}: options.groups`, `a divisor of both channel counts (in ${inChannels}, out ${outChannels})`, String(count));
  }
  return count;
}

const axisList = (value: number | readonly number[], dims: number): number[] => (typeof value === 'number' ? Array<number>(dims).fill(value) : [...value]);

/**
 * The direct convolutions (Conv1d, Conv2d): weight [out, in/groups, k...]. With weightNorm over dim 0 (one norm per
 * output channel, PyTorch's default) w = g·v/‖v‖ is never materialized: g/‖v‖ scales the convolution GEMM's output
 * rows in its epilogue and dv comes from the weight-gradient GEMM's epilogue; other dims materialize w.
 */
abstract class ConvNd extends WeightedLayer {
  readonly stride: number | number[];
  readonly padding: number | number[] | 'same' | 'valid';
  readonly dilation: number | number[];
  readonly groups: number;
  readonly kernelSize: number | number[];

  constructor(
    where: string,
    readonly dims: 1 | 2,
    readonly inChannels: number,
    readonly outChannels: number,
    kernelSize: AxisSize,
    options: Conv2dOptions,
  ) {
    super();
    this.kernelSize = checkConvShape(where, dims, inChannels, outChannels, kernelSize);
    const o = checkLayerOptions<Conv2dOptions>(where, options, ['bias', 'weightNorm', 'stride', 'padding', 'dilation', 'groups']);
    checkBiasOption(where, o.bias);
    this.stride = checkAxisSize(`${where}: options.stride`, o.stride ?? 1, dims, 1);
    this.padding = o.padding === 'same' || o.padding === 'valid' ? o.padding : checkAxisSize(`${where}: options.padding`, o.padding ?? 0, dims, 0);
    this.dilation = checkAxisSize(`${where}: options.dilation`, o.dilation ?? 1, dims, 1);
    this.groups = checkGroups(where, o.groups, inChannels, outChannels);
    if (this.padding === 'same' && axisList(this.stride, dims).some((v) => v !== 1)) {
      throw rangeError(`${where}: options.padding`, "stride 1 with padding 'same'", `stride ${String(this.stride)}`);
    }
    const kernel = axisList(this.kernelSize, dims);
    const perOutput = (inChannels / this.groups) * kernel.reduce((a, b) => a * b, 1);
    checkWeightCount(where, outChannels, perOutput);
    this.initialize(where, [outChannels, inChannels / this.groups, ...kernel], perOutput, o.bias ?? true, o.weightNorm);
  }

  /** The functional options of this layer. */
  protected functionalOptions(): F.Conv2dOptions {
    return { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups };
  }

  forward(x: Tensor): Tensor {
    const where = `nn.${this.constructor.name}.forward`;
    checkConvInput(where, x, this.dims, this.inChannels);
    const state = this.weightNormState;
    const conv = this.dims === 1 ? F.conv1d : F.conv2d;
    if (!state) return conv(x, this.weight!, this.bias, this.functionalOptions());
    if (state.dim === 0) {
      // Errors name the plain op (conv1d, conv2d): the layer runs a convolution, the epilogue is an implementation detail.
      const name = this.dims === 1 ? 'conv1d' : 'conv2d';
      return weightNormConv(name, this.dims, x, state.v, state.g, this.bias, state.currentNorm(), this.functionalOptions(), state.eps);
    }
    // Other dims: one norm per input channel, kernel position or for the whole weight; w is materialized.
    return conv(x, this.effectiveWeight(), this.bias, this.functionalOptions());
  }
}

/** 1-D convolution over [batch, channels, length]: weight [outChannels, inChannels / groups, kernelSize]. */
export class Conv1d extends ConvNd {
  constructor(inChannels: number, outChannels: number, kernelSize: AxisSize, options: Conv1dOptions = {}) {
    super('nn.Conv1d', 1, inChannels, outChannels, kernelSize, options);
  }
}

/** NCHW 2-D convolution: weight [outChannels, inChannels / groups, kh, kw]; kernelSize, stride, padding, dilation a number or [h, w]. */
export class Conv2d extends ConvNd {
  constructor(inChannels: number, outChannels: number, kernelSize: AxisSize, options: Conv2dOptions = {}) {
    super('nn.Conv2d', 2, inChannels, outChannels, kernelSize, options);
  }
}

/**
 * The transposed convolutions: weight [in, out/groups, k...] as in PyTorch. weightNorm's default dim 0 is one norm
 * per INPUT channel (weight axis 0), PyTorch's meaning, so imported weights keep theirs; w is materialized by the
 * fused weight-norm kernel before the convolution (cheap next to it).
 */
abstract class ConvTransposeNd extends WeightedLayer {
  readonly stride: number | number[];
  readonly padding: number | number[];
  readonly outputPadding: number | number[];
  readonly dilation: number | number[];
  readonly groups: number;
  readonly kernelSize: number | number[];

  constructor(
    where: string,
    readonly dims: 1 | 2,
    readonly inChannels: number,
    readonly outChannels: number,
    kernelSize: AxisSize,
    options: ConvTranspose2dOptions,
  ) {
    super();
    this.kernelSize = checkConvShape(where, dims, inChannels, outChannels, kernelSize);
    const o = checkLayerOptions<ConvTranspose2dOptions>(where, options, ['bias', 'weightNorm', 'stride', 'padding', 'outputPadding', 'dilation', 'groups']);
    checkBiasOption(where, o.bias);
    this.stride = checkAxisSize(`${where}: options.stride`, o.stride ?? 1, dims, 1);
    this.padding = checkAxisSize(`${where}: options.padding`, o.padding ?? 0, dims, 0);
    this.outputPadding = checkAxisSize(`${where}: options.outputPadding`, o.outputPadding ?? 0, dims, 0);
    this.dilation = checkAxisSize(`${where}: options.dilation`, o.dilation ?? 1, dims, 1);
    this.groups = checkGroups(where, o.groups, inChannels, outChannels);
    const strides = axisList(this.stride, dims);
    const dilations = axisList(this.dilation, dims);
    axisList(this.outputPadding, dims).forEach((p, a) => {
      if (p >= strides[a]! && p >= dilations[a]!) {
        throw rangeError(`${where}: options.outputPadding`, `values smaller than the stride or the dilation of their axis (stride ${strides[a]}, dilation ${dilations[a]})`, String(this.outputPadding));
      }
    });
    const kernel = axisList(this.kernelSize, dims);
    const perInput = (outChannels / this.groups) * kernel.reduce((a, b) => a * b, 1);
    checkWeightCount(where, inChannels, perInput);
    // PyTorch's fan-in of a transposed weight: its dims after the first (out/groups · k).
    this.initialize(where, [inChannels, outChannels / this.groups, ...kernel], perInput, o.bias ?? true, o.weightNorm, outChannels);
  }

  /** @internal Output channel o = group · out/groups + column, for the rows of its group. */
  override outputUnits(): { count: number; unitOf(index: number): number } {
    const shape = (this.v ?? this.weight)!.shape;
    const kernel = shape.slice(2).reduce((a, b) => a * b, 1);
    const perGroupIn = this.inChannels / this.groups;
    const columns = shape[1]!;
    return {
      count: this.outChannels,
      unitOf: (index) => {
        const row = Math.floor(index / (columns * kernel));
        const column = Math.floor(index / kernel) % columns;
        return Math.floor(row / perGroupIn) * columns + column;
      },
    };
  }

  forward(x: Tensor): Tensor {
    checkConvInput(`nn.${this.constructor.name}.forward`, x, this.dims, this.inChannels);
    const options = { stride: this.stride, padding: this.padding, outputPadding: this.outputPadding, dilation: this.dilation, groups: this.groups };
    const w = this.effectiveWeight();
    return this.dims === 1 ? F.convTranspose1d(x, w, this.bias, options) : F.convTranspose2d(x, w, this.bias, options);
  }
}

/** 1-D transposed convolution: weight [inChannels, outChannels / groups, kernelSize]. */
export class ConvTranspose1d extends ConvTransposeNd {
  constructor(inChannels: number, outChannels: number, kernelSize: AxisSize, options: ConvTranspose1dOptions = {}) {
    super('nn.ConvTranspose1d', 1, inChannels, outChannels, kernelSize, options);
  }
}

/** 2-D transposed convolution, NCHW: weight [inChannels, outChannels / groups, kh, kw]. */
export class ConvTranspose2d extends ConvTransposeNd {
  constructor(inChannels: number, outChannels: number, kernelSize: AxisSize, options: ConvTranspose2dOptions = {}) {
    super('nn.ConvTranspose2d', 2, inChannels, outChannels, kernelSize, options);
  }
}

/** Folds a weight-normalized layer (any kind: Linear, the convolutions) back into a plain weight w = g·v/‖v‖. */
/** A layer that can hold weight-normalized matrices and fold them into plain weights (weighted and recurrent layers). */
export interface WeightNormFoldable {
  readonly isWeightNormalized: boolean;
  foldWeightNorm(): void;
}

function isFoldable(value: unknown): value is AnyModule & WeightNormFoldable {
  return value instanceof Module && typeof (value as Partial<WeightNormFoldable>).foldWeightNorm === 'function';
}

export function removeWeightNorm<L extends AnyModule & WeightNormFoldable>(layer: L): L {
  if (!isFoldable(layer)) {
    throw typeError(
      'nn.removeWeightNorm: layer',
      'a Linear, Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, LSTM, GRU, LSTMCell or GRUCell',
      layer,
    );
  }
  if (!layer.isWeightNormalized) throw new TypeError(`nn.removeWeightNorm: the ${layer.constructor.name} is not weight-normalized`);
  layer.foldWeightNorm();
  return layer;
}

/**
 * Folds every weight-normalized layer of a module tree (the module itself and all descendants) into plain weights,
 * for inference or export; plain layers are left alone. Returns the module.
 */
export function removeWeightNorms<M extends Module>(model: M): M {
  if (!(model instanceof Module)) throw typeError('nn.removeWeightNorms: model', 'a Module', model);
  for (const [, module] of model.namedModules()) {
    if (isFoldable(module) && module.isWeightNormalized) module.foldWeightNorm();
  }
  return model;
}

// ---------------------------------------------------------------------------------------------------------------
// Stateless layers.

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return F.relu(checkInput('nn.ReLU.forward', x));
  }
}

export class LeakyReLU extends Module {
  constructor(readonly negativeSlope = 0.01) {
    super();
  }
  forward(x: Tensor): Tensor {
    return F.leakyRelu(checkInput('nn.LeakyReLU.forward', x), this.negativeSlope);
  }
}

export class Tanh extends Module {
  forward(x: Tensor): Tensor {
    return F.tanh(checkInput('nn.Tanh.forward', x));
  }
}

// Activation layers of the pointwise family (PyTorch's names and defaults); parameters are checked when built.

function finiteLayerParameter(where: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw typeError(where, 'a finite number', value);
  return value;
}

export class Sigmoid extends Module {
  forward(x: Tensor): Tensor {
    return F.sigmoid(checkInput('nn.Sigmoid.forward', x));
  }
}

export class GELU extends Module {
  readonly approximate: 'none' | 'tanh';
  /** approximate: 'none' (default, the exact erf form) or 'tanh'. */
  constructor(options: F.GeluOptions = {}) {
    super();
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      throw typeError('nn.GELU: options', "an object like { approximate: 'tanh' }", options);
    }
    const approximate = options.approximate ?? 'none';
    if (approximate !== 'none' && approximate !== 'tanh') throw typeError('nn.GELU: options.approximate', "'none' or 'tanh'", approximate);
    this.approximate = approximate;
  }
  forward(x: Tensor): Tensor {
    return F.gelu(checkInput('nn.GELU.forward', x), { approximate: this.approximate });
  }
}

export class SiLU extends Module {
  forward(x: Tensor): Tensor {
    return F.silu(checkInput('nn.SiLU.forward', x));
  }
}

export class ELU extends Module {
  readonly alpha: number;
  constructor(alpha = 1) {
    super();
    this.alpha = finiteLayerParameter('nn.ELU: alpha', alpha);
  }
  forward(x: Tensor): Tensor {
    return F.elu(checkInput('nn.ELU.forward', x), this.alpha);
  }
}

export class Softplus extends Module {
  readonly beta: number;
  readonly threshold: number;
  constructor(beta = 1, threshold = 20) {
    super();
    this.beta = finiteLayerParameter('nn.Softplus: beta', beta);
    if (this.beta === 0) throw rangeError('nn.Softplus: beta', 'a non-zero number', '0');
    this.threshold = finiteLayerParameter('nn.Softplus: threshold', threshold);
  }
  forward(x: Tensor): Tensor {
    return F.softplus(checkInput('nn.Softplus.forward', x), this.beta, this.threshold);
  }
}

export class MaxPool2d extends Module {
  constructor(
    readonly kernelSize: number,
    readonly stride: number = kernelSize,
  ) {
    super();
    checkCount('nn.MaxPool2d: kernelSize', kernelSize);
    checkCount('nn.MaxPool2d: stride', stride);
  }
  forward(x: Tensor): Tensor {
    return F.maxPool2d(checkInput('nn.MaxPool2d.forward', x), this.kernelSize, this.stride);
  }
}

export class GlobalAvgPool2d extends Module {
  forward(x: Tensor): Tensor {
    return F.globalAvgPool2d(checkInput('nn.GlobalAvgPool2d.forward', x));
  }
}

export class Flatten extends Module {
  forward(x: Tensor): Tensor {
    return F.flatten(checkInput('nn.Flatten.forward', x));
  }
}

// A layer that draws a new random stream on every call (Dropout, GaussianNoise): call n of a layer seeded s draws
// from seed s · 1_000_003 + n, and (seed, calls) is its state in checkpoints. `checkArguments` validates the
// layer's own arguments, before its options (errors name the first bad parameter in argument order).
abstract class RandomStreamLayer extends Module {
  private calls = 0;
  private seed: number;
  protected constructor(where: string, options: { seed?: number }, checkArguments: () => void) {
    super();
    checkArguments();
    const o = checkLayerOptions<{ seed: number }>(where, options, ['seed']);
    this.seed = o.seed === undefined ? nextSeed() % 2 ** 32 : checkSeed(where, o.seed);
  }

  /** The seed of this call's stream (and the next call gets the next one). */
  protected nextCallSeed(): number {
    return this.seed * 1_000_003 + this.calls++;
  }

  /** @internal */
  override randomStreamState(): RandomStreamState {
    return { seed: this.seed, calls: this.calls };
  }

  /** @internal */
  override restoreRandomStream(state: RandomStreamState): void {
    this.seed = state.seed;
    this.calls = state.calls;
  }
}

/** Inverted dropout in training mode (a new mask each call, from the seed sequence); identity in evaluation. */
export class Dropout extends RandomStreamLayer {
  constructor(
    readonly p: number,
    options: { seed?: number } = {},
  ) {
    super('nn.Dropout', options, () => {
      if (typeof p !== 'number' || !(p >= 0 && p < 1)) throw typeError('nn.Dropout: p', 'a probability in [0, 1)', p);
    });
  }
  forward(x: Tensor): Tensor {
    checkInput('nn.Dropout.forward', x);
    if (!this.training || this.p === 0) return x;
    return F.dropout(x, this.p, this.nextCallSeed());
  }
}

/** Additive Gaussian noise (the paper's MNIST/CIFAR regularizer) in training mode; identity in evaluation. */
export class GaussianNoise extends RandomStreamLayer {
  constructor(
    readonly std: number,
    options: { seed?: number } = {},
  ) {
    super('nn.GaussianNoise', options, () => {
      if (typeof std !== 'number' || !(std >= 0) || !Number.isFinite(std)) throw typeError('nn.GaussianNoise: std', 'a finite number >= 0', std);
    });
  }
  forward(x: Tensor): Tensor {
    checkInput('nn.GaussianNoise.forward', x);
    if (!this.training || this.std === 0) return x;
    return F.gaussianNoise(x, this.std, this.nextCallSeed());
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Normalization layers. Statistics per channel (dim 1) over the batch and any spatial positions.

function checkFeatures(where: string, x: Tensor, features: number): void {
  if (x.rank < 2 || x.shape[1] !== features) {
    throw rangeError(`${where}: x`, `[batch, ${features}, ...]`, `[${x.shape.join(', ')}]`);
  }
}

/** Full batch normalization (for comparison with weight norm): running mean/variance with `momentum` (0.1). */
export class BatchNorm extends Module {
  readonly gamma: Tensor;
  readonly beta: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  readonly eps: number;
  readonly momentum: number;

  constructor(
    readonly numFeatures: number,
    options: { eps?: number; momentum?: number } = {},
  ) {
    super();
    checkCount('nn.BatchNorm: numFeatures', numFeatures);
    const o = checkLayerOptions<{ eps: number; momentum: number }>('nn.BatchNorm', options, ['eps', 'momentum']);
    this.eps = o.eps === undefined ? 1e-5 : o.eps;
    if (typeof this.eps !== 'number' || !(this.eps > 0) || !Number.isFinite(this.eps)) {
      throw typeError('nn.BatchNorm: options.eps', 'a positive finite number', this.eps);
    }
    this.momentum = checkFraction('nn.BatchNorm', o.momentum === undefined ? 0.1 : o.momentum, 'options.momentum');
    this.gamma = this.registerParameter('gamma', new Tensor(native.full([numFeatures], 1, 'cpu')));
    this.beta = this.registerParameter('beta', new Tensor(native.full([numFeatures], 0, 'cpu')));
    this.runningMean = this.registerBuffer('runningMean', new Tensor(native.full([numFeatures], 0, 'cpu')));
    this.runningVar = this.registerBuffer('runningVar', new Tensor(native.full([numFeatures], 1, 'cpu')));
  }

  forward(x: Tensor): Tensor {
    const where = 'nn.BatchNorm.forward';
    checkFeatures(where, checkInput(where, x), this.numFeatures);
    // Differentiable in x, gamma and beta (fine-tuning with frozen statistics, saliency); the statistics are constants.
    if (!this.training) return F.batchNormInference(x, this.runningMean, this.runningVar, this.gamma, this.beta, this.eps);
    F.checkTrainingCount(where, x);
    const { y, mean, variance } = F.batchNorm(x, this.gamma, this.beta, this.eps);
    const count = x.size / this.numFeatures;
    if (count > 0) {
      // Running variance is unbiased, as PyTorch keeps it. An empty batch has no statistics to add.
      const unbiased = count / (count - 1);
      native.axpby(handleOf(this.runningMean, where), this.momentum, handleOf(mean, where), 1 - this.momentum);
      native.axpby(handleOf(this.runningVar, where), this.momentum * unbiased, handleOf(variance, where), 1 - this.momentum);
    }
    // The batch mean is saved for the backward; only a forward that records no graph can free it now.
    if (!y.requiresGrad) mean.dispose();
    variance.dispose();
    return y;
  }
}

/**
 * Mean-only batch normalization (Salimans & Kingma, 2016, §4): subtracts the batch mean per channel and adds a
 * bias; no division by the standard deviation. The running mean (0.9 · old + 0.1 · batch) is used in evaluation.
 */
export class MeanOnlyBatchNorm extends Module {
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly momentum: number;

  constructor(
    readonly numFeatures: number,
    options: { momentum?: number } = {},
  ) {
    super();
    checkCount('nn.MeanOnlyBatchNorm: numFeatures', numFeatures);
    const o = checkLayerOptions<{ momentum: number }>('nn.MeanOnlyBatchNorm', options, ['momentum']);
    this.momentum = checkFraction('nn.MeanOnlyBatchNorm', o.momentum === undefined ? 0.1 : o.momentum, 'options.momentum');
    this.bias = this.registerParameter('bias', new Tensor(native.full([numFeatures], 0, 'cpu')));
    this.runningMean = this.registerBuffer('runningMean', new Tensor(native.full([numFeatures], 0, 'cpu')));
  }

  forward(x: Tensor): Tensor {
    const where = 'nn.MeanOnlyBatchNorm.forward';
    checkFeatures(where, checkInput(where, x), this.numFeatures);
    if (!this.training) {
      // Differentiable in x and the bias (dx = dy); the running mean is a constant.
      const { y, mean } = F.meanOnlyBatchNorm(x, this.bias, this.runningMean);
      mean.dispose();
      return y;
    }
    const { y, mean } = F.meanOnlyBatchNorm(x, this.bias, null);
    // An empty batch has no mean to add.
    if (x.size > 0) native.axpby(handleOf(this.runningMean, where), this.momentum, handleOf(mean, where), 1 - this.momentum);
    mean.dispose();
    return y;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Containers.

export class Sequential extends Module {
  readonly layers: readonly Module[];

  constructor(...layers: Module[]) {
    super();
    layers.forEach((layer, i) => {
      if (!(layer instanceof Module)) throw typeError(`nn.Sequential: layer ${i}`, 'a Module', layer);
      this.registerModule(String(i), layer);
    });
    this.layers = layers;
  }

  forward(x: Tensor): Tensor {
    let y = checkInput('nn.Sequential.forward', x);
    for (let i = 0; i < this.layers.length; ++i) {
      const layer = this.layers[i]!;
      const next = this.layers[i + 1];
      // A ReLU straight into a max pooling (the usual CNN block) runs as one fused op: the ReLU's output would only
      // be read by the pooling, so it is never stored (bitwise the same values and gradients). Exact classes only:
      // a subclass may have changed either forward.
      if (layer.constructor === ReLU && next?.constructor === MaxPool2d) {
        const pool = next as MaxPool2d;
        y = F.reluMaxPool2d(checkInput('nn.ReLU.forward', y), pool.kernelSize, pool.stride);
        ++i;
        continue;
      }
      y = layer.forward(y);
    }
    return y;
  }
}

/** softmax along `dim` (torch.nn.Softmax; here `dim` is required). */
export class Softmax extends Module {
  constructor(readonly dim: number) {
    super();
    if (typeof dim !== 'number' || !Number.isInteger(dim)) throw typeError('nn.Softmax: dim', 'an integer', dim);
  }
  forward(x: Tensor): Tensor {
    return F.softmax(checkInput('nn.Softmax.forward', x), this.dim);
  }
}

/** logSoftmax along `dim` (torch.nn.LogSoftmax; here `dim` is required). */
export class LogSoftmax extends Module {
  constructor(readonly dim: number) {
    super();
    if (typeof dim !== 'number' || !Number.isInteger(dim)) throw typeError('nn.LogSoftmax: dim', 'an integer', dim);
  }
  forward(x: Tensor): Tensor {
    return F.logSoftmax(checkInput('nn.LogSoftmax.forward', x), this.dim);
  }
}

/**
 * An indexable list of modules, registered as children '0', '1', … like PyTorch's, so that state-dict names line up
 * ('blocks.0.v', 'blocks.1.bias'). It has no forward of its own: the module holding it decides how to call them.
 */
export class ModuleList extends Module implements Iterable<Module> {
  private readonly items: Module[] = [];

  constructor(modules: Iterable<Module> = []) {
    super();
    for (const module of modules) this.append(module);
  }

  /** Adds a module at the end (child name: its index). */
  append(module: Module): this {
    if (!(module instanceof Module)) throw typeError(`nn.ModuleList.append: module ${this.items.length}`, 'a Module', module);
    this.registerModule(String(this.items.length), module);
    this.items.push(module);
    return this;
  }

  get length(): number {
    return this.items.length;
  }

  /** The module at `index` (negative counts from the end). */
  at(index: number): Module {
    if (!Number.isInteger(index) || index < -this.items.length || index >= this.items.length) {
      throw rangeError('nn.ModuleList.at: index', `an integer in [${-this.items.length}, ${this.items.length - 1}]`, String(index));
    }
    return this.items[index < 0 ? index + this.items.length : index]!;
  }

  [Symbol.iterator](): Iterator<Module> {
    return this.items[Symbol.iterator]();
  }

  forward(x: Tensor): Tensor {
    void x;
    throw new TypeError('nn.ModuleList.forward: a ModuleList has no forward; iterate over it in the forward of the module that holds it');
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Losses as layers (torch.nn.MSELoss, ...): each keeps its options and calls the functional form (losses.ts).

/** A loss as a layer: forward(prediction, target) calls the functional form with the options kept here. */
export interface LossLayer<Target, Options extends object> extends Module<[Tensor, Target]> {
  readonly options: Options;
  forward(input: Tensor, target: Target): Tensor;
}

// Every loss layer is the same class but for its name, its options' keys and its functional form, so one factory
// builds them all; the class is named after the PyTorch layer (constructor.name appears in summaries and errors).
function lossLayer<Target, Options extends object>(
  name: string,
  allowed: readonly (keyof Options & string)[],
  loss: (input: Tensor, target: Target, options: Options) => Tensor,
): new (options?: Options) => LossLayer<Target, Options> {
  const where = `nn.${name}`;
  class Loss extends Module<[Tensor, Target]> implements LossLayer<Target, Options> {
    readonly options: Options;
    constructor(options?: Options) {
      super();
      this.options = checkLayerOptions<Options>(where, options, allowed) as Options;
    }
    forward(input: Tensor, target: Target): Tensor {
      return loss(input, target, this.options);
    }
  }
  Object.defineProperty(Loss, 'name', { value: name });
  return Loss;
}

/** nn.MSELoss: (input, target) -> mseLoss with the options given here. */
export const MSELoss = lossLayer<Tensor, F.LossOptions>('MSELoss', ['reduction'], F.mseLoss);
export type MSELoss = LossLayer<Tensor, F.LossOptions>;

/** nn.L1Loss: (input, target) -> l1Loss. */
export const L1Loss = lossLayer<Tensor, F.LossOptions>('L1Loss', ['reduction'], F.l1Loss);
export type L1Loss = LossLayer<Tensor, F.LossOptions>;

/** nn.HuberLoss: (input, target) -> huberLoss ({ delta, reduction }). */
export const HuberLoss = lossLayer<Tensor, F.HuberLossOptions>('HuberLoss', ['reduction', 'delta'], F.huberLoss);
export type HuberLoss = LossLayer<Tensor, F.HuberLossOptions>;

/** nn.SmoothL1Loss: (input, target) -> smoothL1Loss ({ beta, reduction }). */
export const SmoothL1Loss = lossLayer<Tensor, F.SmoothL1LossOptions>('SmoothL1Loss', ['reduction', 'beta'], F.smoothL1Loss);
export type SmoothL1Loss = LossLayer<Tensor, F.SmoothL1LossOptions>;

/** nn.BCELoss: (probabilities, target) -> binaryCrossEntropy ({ weight, reduction }). */
export const BCELoss = lossLayer<Tensor, F.BinaryCrossEntropyOptions>('BCELoss', ['reduction', 'weight'], F.binaryCrossEntropy);
export type BCELoss = LossLayer<Tensor, F.BinaryCrossEntropyOptions>;

/** nn.BCEWithLogitsLoss: (logits, target) -> binaryCrossEntropyWithLogits ({ weight, posWeight, reduction }). */
export const BCEWithLogitsLoss = lossLayer<Tensor, F.BinaryCrossEntropyWithLogitsOptions>(
  'BCEWithLogitsLoss',
  ['reduction', 'weight', 'posWeight'],
  F.binaryCrossEntropyWithLogits,
);
export type BCEWithLogitsLoss = LossLayer<Tensor, F.BinaryCrossEntropyWithLogitsOptions>;

/** nn.NLLLoss: (logProbs, labels) -> nllLoss ({ weight, ignoreIndex, reduction }). */
export const NLLLoss = lossLayer<F.Labels, F.NllLossOptions>('NLLLoss', ['reduction', 'ignoreIndex', 'weight'], F.nllLoss);
export type NLLLoss = LossLayer<F.Labels, F.NllLossOptions>;

/** nn.CrossEntropyLoss: (logits, labels) -> crossEntropy ({ weight, ignoreIndex, labelSmoothing, reduction }). */
export const CrossEntropyLoss = lossLayer<F.Labels, F.CrossEntropyOptions>(
  'CrossEntropyLoss',
  ['reduction', 'ignoreIndex', 'weight', 'labelSmoothing'],
  F.crossEntropy,
);
export type CrossEntropyLoss = LossLayer<F.Labels, F.CrossEntropyOptions>;

// Padding and upsampling layers (PyTorch's names; pads are [left, right] for 1-D, [left, right, top, bottom] 2-D).

function padList(where: string, padding: unknown, axes: 1 | 2): number[] {
  const count = 2 * axes;
  if (typeof padding === 'number') {
    if (!Number.isInteger(padding)) throw typeError(`${where}: padding`, `an integer or ${count} integers`, padding);
    return Array<number>(count).fill(padding);
  }
  if (!Array.isArray(padding) || padding.length !== count || padding.some((p) => typeof p !== 'number' || !Number.isInteger(p))) {
    throw typeError(`${where}: padding`, `an integer or ${count} integers (${axes === 1 ? '[left, right]' : '[left, right, top, bottom]'})`, padding);
  }
  return [...(padding as number[])];
}

abstract class PadNd extends Module {
  readonly padding: readonly number[];
  constructor(
    where: string,
    padding: number | readonly number[],
    axes: 1 | 2,
    readonly mode: F.PadMode,
    readonly value = 0,
  ) {
    super();
    this.padding = padList(where, padding, axes);
    if (mode !== 'constant' && this.padding.some((p) => p < 0)) throw rangeError(`${where}: padding`, 'non-negative pads', shapeText(this.padding));
    if (typeof value !== 'number' || Number.isNaN(value)) throw typeError(`${where}: value`, 'a number', value);
  }
  forward(x: Tensor): Tensor {
    checkInput(`nn.${this.constructor.name}.forward`, x);
    return F.pad(x, this.padding, this.mode === 'constant' ? { mode: 'constant', value: this.value } : { mode: this.mode });
  }
}

/** Pads the last axis by mirroring without repeating the edge: [left, right] or one number for both. */
export class ReflectionPad1d extends PadNd {
  constructor(padding: number | readonly [number, number]) {
    super('nn.ReflectionPad1d', padding, 1, 'reflect');
  }
}
/** Pads the last two axes by mirroring: [left, right, top, bottom] or one number for all. */
export class ReflectionPad2d extends PadNd {
  constructor(padding: number | readonly [number, number, number, number]) {
    super('nn.ReflectionPad2d', padding, 2, 'reflect');
  }
}
/** Pads the last axis by repeating the edge value. */
export class ReplicationPad1d extends PadNd {
  constructor(padding: number | readonly [number, number]) {
    super('nn.ReplicationPad1d', padding, 1, 'replicate');
  }
}
/** Pads the last two axes by repeating the edge values. */
export class ReplicationPad2d extends PadNd {
  constructor(padding: number | readonly [number, number, number, number]) {
    super('nn.ReplicationPad2d', padding, 2, 'replicate');
  }
}
/** Pads the last axis with `value` (negative pads crop). */
export class ConstantPad1d extends PadNd {
  constructor(padding: number | readonly [number, number], value: number) {
    super('nn.ConstantPad1d', padding, 1, 'constant', value);
  }
}
/** Pads the last two axes with `value` (negative pads crop). */
export class ConstantPad2d extends PadNd {
  constructor(padding: number | readonly [number, number, number, number], value: number) {
    super('nn.ConstantPad2d', padding, 2, 'constant', value);
  }
}
/** Pads the last two axes with zeros (negative pads crop). */
export class ZeroPad2d extends PadNd {
  constructor(padding: number | readonly [number, number, number, number]) {
    super('nn.ZeroPad2d', padding, 2, 'constant', 0);
  }
}

/** Nearest-neighbour upsampling by whole factors ({ scaleFactor } or { size }), of 1-D or 2-D inputs. */
export class Upsample extends Module {
  readonly options: F.UpsampleOptions;
  constructor(options: F.UpsampleOptions) {
    super();
    const o = checkLayerOptions<F.UpsampleOptions>('nn.Upsample', options, ['scaleFactor', 'size', 'mode']);
    if (o.mode !== undefined && o.mode !== 'nearest') throw typeError('nn.Upsample: options.mode', "'nearest'", o.mode);
    if ((o.scaleFactor === undefined) === (o.size === undefined)) throw typeError('nn.Upsample: options', 'exactly one of scaleFactor and size', options);
    this.options = { ...o };
  }
  forward(x: Tensor): Tensor {
    return F.upsample(checkInput('nn.Upsample.forward', x), this.options);
  }
}
