// Recurrent layers and embeddings: nn.LSTM, nn.GRU (stacked, over whole sequences), nn.LSTMCell, nn.GRUCell and
// nn.Embedding, with PyTorch's parameter names, layouts and gate order, so that state dicts import.
//
// How a layer runs: each layer of the stack is ONE native call over all T steps (binding/rnn.cc -> cpu/rnn.cc or
// cuda/rnn.cu): one GEMM for the input projection of every step, then per step one recurrent GEMM and one fused
// pointwise kernel for all gates; its backward through time is one native call too, from the gates the forward
// saved. A weight-normalized matrix with one norm per gate row (dim 0, the default) is never materialized: the
// kernels run on v and apply s = g/‖v‖ per gate row in the GEMM epilogue (the norm comes from the layer's cache,
// valid until v changes), as nn.Linear does; the backward returns the gradient dw of the effective weight, which
// one fused weight-norm backward pass turns into dv and dg. Other weight-norm dims (not a per-row scale of the
// products) materialize w = g·v/‖v‖ once per forward instead.
import { noGrad, record } from './autograd.js';
import { rangeError, shapeText, typeError } from './errors.js';
import * as F from './functional.js';
import { native, type RnnCell } from './native.js';
import { Module, WeightNormState, type WeightNormConfig } from './nn.js';
import { nextSeed } from './random.js';
import { tidy } from './scope.js';
import { handleOf, Tensor } from './tensor.js';
import { checkWeightNormDim, checkWeightNormEps, DEFAULT_EPS } from './weightnorm-options.js';

const wrap = (handle: ReturnType<typeof native.empty>): Tensor => new Tensor(handle);

// ---------------------------------------------------------------------------------------------------------------
// Differentiable building blocks (internal: the layers below are the public API).

/** @internal Rows [start, start + count) of x along axis 0, as a new tensor; the gradient scatters back. */
export function sliceRows(x: Tensor, start: number, count: number): Tensor {
  const where = 'sliceRows';
  const out = wrap(native.empty([count, ...x.shape.slice(1)], x.device));
  native.copyRows(handleOf(out, where), 0, handleOf(x, where), start, count);
  return record(out, 'sliceRows', [x], (dy) => {
    const dx = wrap(native.zeros([...x.shape], x.device));
    native.copyRows(handleOf(dx, where), start, handleOf(dy, where), 0, count);
    return [dx];
  }, []);
}

/** @internal The tensors stacked along axis 0 (each [rows_i, ...rest] with the same rest). */
export function concatRows(parts: readonly Tensor[]): Tensor {
  const where = 'concatRows';
  const rows = parts.map((p) => p.shape[0]!);
  const total = rows.reduce((a, b) => a + b, 0);
  const out = wrap(native.empty([total, ...parts[0]!.shape.slice(1)], parts[0]!.device));
  let offset = 0;
  parts.forEach((p, i) => {
    native.copyRows(handleOf(out, where), offset, handleOf(p, where), 0, rows[i]!);
    offset += rows[i]!;
  });
  return record(out, 'concatRows', parts, (dy, needs) => {
    let start = 0;
    return parts.map((p, i) => {
      const first = start;
      start += rows[i]!;
      if (!needs[i]) return null;
      const dp = wrap(native.empty([...p.shape], p.device));
      native.copyRows(handleOf(dp, where), 0, handleOf(dy, where), first, rows[i]!);
      return dp;
    });
  }, []);
}

/** @internal x [a, b, ...] -> [b, a, ...]: batch-first sequences to time-major and back. */
export function swapLeadingAxes(x: Tensor): Tensor {
  const where = 'swapLeadingAxes';
  const out = wrap(native.swapLeadingAxes(handleOf(x, where)));
  return record(out, 'swapLeadingAxes', [x], (dy) => [wrap(native.swapLeadingAxes(handleOf(dy, where)))], []);
}

/**
 * @internal A layer matrix as recurrentLayer takes it: the plain w, or a weight-normalized v with one norm per gate
 * row, its g, the norm ‖v‖ it uses (the layer's cache) and eps.
 */
export interface LayerMatrix {
  weight: Tensor;
  normalized: { g: Tensor; norm: Tensor; eps: number } | null;
}

/**
 * @internal One recurrent layer over a whole time-major sequence x [T, N, I] from h0 (and c0) [N, H]: returns y
 * [T, N, H] (the hidden state of every step) followed, for an LSTM, by one more row [1, N, H], the final cell state.
 * Differentiable in x, h0, c0, the matrices (w, or v and g) and the biases; the backward is one native call over all
 * steps, plus one fused weight-norm backward per weight-normalized matrix.
 */
export function recurrentLayer(
  cell: RnnCell,
  x: Tensor,
  h0: Tensor,
  c0: Tensor | null,
  ih: LayerMatrix,
  hh: LayerMatrix,
  bIh: Tensor | null,
  bHh: Tensor | null,
): Tensor {
  const where = 'recurrentLayer';
  const h = (t: Tensor | null) => (t ? handleOf(t, where) : null);
  // s = g/‖v‖ per gate row, a Tensor so that an enclosing tidy() frees it with the graph.
  const scaleOf = (m: LayerMatrix): Tensor | null =>
    m.normalized ? wrap(native.weightNormScale(handleOf(m.normalized.g, where), handleOf(m.normalized.norm, where))) : null;
  const scaleIh = scaleOf(ih);
  const scaleHh = scaleOf(hh);
  const weights = {
    wIh: handleOf(ih.weight, where),
    wHh: handleOf(hh.weight, where),
    scaleIh: h(scaleIh),
    scaleHh: h(scaleHh),
    bIh: h(bIh),
    bHh: h(bHh),
  };
  const { y, savedGates, savedState } = native.rnnForward(cell, handleOf(x, where), handleOf(h0, where), h(c0), weights);
  const output = wrap(y);
  const gates = wrap(savedGates);
  const state = wrap(savedState);
  const gIh = ih.normalized?.g ?? null;
  const gHh = hh.normalized?.g ?? null;
  const recorded = record(
    output,
    cell === 'lstm' ? 'lstm' : 'gru',
    [x, h0, c0, ih.weight, hh.weight, bIh, bHh, gIh, gHh],
    (dy, needs) => {
      const grads = native.rnnBackward(cell, handleOf(dy, where), handleOf(x, where), handleOf(h0, where), h(c0), weights, handleOf(output, where), handleOf(gates, where), handleOf(state, where), {
        wantDx: needs[0]!,
        wantDh0: needs[1]!,
        wantDc0: needs[2]!,
        wantDwIh: needs[3]! || needs[7]!,
        wantDwHh: needs[4]! || needs[8]!,
        wantDbIh: needs[5]!,
        wantDbHh: needs[6]!,
      });
      const take = (t: ReturnType<typeof native.empty> | undefined) => (t ? wrap(t) : null);
      // dw of the effective weight -> (dv, dg) of a weight-normalized matrix: one fused pass reducing Σ dw·v per
      // row, then dv = s·(dw − v·(Σ dw·v)/‖v‖²) (Salimans & Kingma 2016, §2.1).
      const split = (m: LayerMatrix, dw: Tensor | null, wantV: boolean, wantG: boolean): [Tensor | null, Tensor | null] => {
        if (!m.normalized || !dw) return [dw, null];
        const { g, norm, eps } = m.normalized;
        const r = native.weightNormBackward(handleOf(dw, where), handleOf(m.weight, where), handleOf(g, where), handleOf(norm, where), 0, eps, true);
        dw.dispose();
        return [wantV ? wrap(r.dv) : (r.dv.dispose(), null), wantG ? wrap(r.dg) : (r.dg.dispose(), null)];
      };
      const [dIh, dgIh] = split(ih, take(grads.dwIh), needs[3]!, needs[7]!);
      const [dHh, dgHh] = split(hh, take(grads.dwHh), needs[4]!, needs[8]!);
      return [take(grads.dx), take(grads.dh0), take(grads.dc0), dIh, dHh, take(grads.dbIh), take(grads.dbHh), dgIh, dgHh];
    },
    [x, h0, c0, ih.weight, hh.weight, gIh, gHh],
  );
  // Without a graph the saved gates and the scales are not needed: free them now instead of at garbage collection.
  if (!recorded.gradNode) {
    gates.dispose();
    state.dispose();
    scaleIh?.dispose();
    scaleHh?.dispose();
  }
  return recorded;
}

// ---------------------------------------------------------------------------------------------------------------
// Options.

/** Weight norm on one matrix: true (one norm per gate row, dim 0), false, or { dim, eps }. */
export type MatrixWeightNorm = boolean | WeightNormConfig;

/**
 * Weight norm of a recurrent layer's matrices: true or { dim, eps } for both the input-to-hidden and the
 * hidden-to-hidden matrices, or per matrix { ih, hh }. The default, dim 0, keeps one norm per gate row, as
 * torch.nn.utils.weight_norm(lstm, 'weight_hh_l0') does.
 */
export type RecurrentWeightNorm = MatrixWeightNorm | { ih?: MatrixWeightNorm; hh?: MatrixWeightNorm };

export interface RecurrentOptions {
  /** Stacked layers (default 1); layer k > 0 reads layer k − 1's hidden states. */
  numLayers?: number;
  /** Biases b_ih and b_hh (default true). */
  bias?: boolean;
  /** x and output as [batch, steps, features] (default false: [steps, batch, features]); states stay [layers, batch, hidden]. */
  batchFirst?: boolean;
  weightNorm?: RecurrentWeightNorm;
}

export interface CellOptions {
  bias?: boolean;
  weightNorm?: RecurrentWeightNorm;
}

interface ParsedNorm {
  dim: number | null;
  eps: number;
}

function checkOptions(where: string, options: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(`${where}: options`, `an object with the keys ${allowed.join(', ')}`, options);
  }
  for (const key of Object.keys(options)) if (!allowed.includes(key)) throw typeError(`${where}: options`, `only the keys ${allowed.join(', ')}`, key);
  return options as Record<string, unknown>;
}

function checkSize(where: string, value: unknown, minimum = 1): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < minimum) throw typeError(where, `an integer >= ${minimum}`, value);
  return value;
}

function checkBoolean(where: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw typeError(where, 'a boolean', value);
  return value;
}

function parseMatrixNorm(where: string, parameter: string, option: unknown): ParsedNorm | null {
  if (option === undefined || option === false) return null;
  if (option === true) return { dim: 0, eps: DEFAULT_EPS };
  if (typeof option !== 'object' || option === null || Array.isArray(option)) throw typeError(`${where}: ${parameter}`, 'true, false or { dim, eps }', option);
  for (const key of Object.keys(option)) if (key !== 'dim' && key !== 'eps') throw typeError(`${where}: ${parameter}`, 'only the keys dim, eps', key);
  const { dim = 0, eps = DEFAULT_EPS } = option as WeightNormConfig;
  return { dim: checkWeightNormDim(where, `${parameter}.dim`, dim, 2), eps: checkWeightNormEps(where, `${parameter}.eps`, eps) };
}

/** The weight norm of the [ih, hh] matrices. */
function parseWeightNorm(where: string, option: unknown): [ParsedNorm | null, ParsedNorm | null] {
  if (typeof option === 'object' && option !== null && !Array.isArray(option) && ('ih' in option || 'hh' in option)) {
    for (const key of Object.keys(option)) if (key !== 'ih' && key !== 'hh') throw typeError(`${where}: options.weightNorm`, 'only the keys ih, hh (or dim, eps for both)', key);
    const { ih, hh } = option as { ih?: unknown; hh?: unknown };
    return [parseMatrixNorm(where, 'options.weightNorm.ih', ih), parseMatrixNorm(where, 'options.weightNorm.hh', hh)];
  }
  const both = parseMatrixNorm(where, 'options.weightNorm', option);
  return [both, both];
}

// ---------------------------------------------------------------------------------------------------------------
// Parameters shared by the layers and the cells.

/** A weight matrix held plain or as (v, g), and how a forward gets its w. */
class RecurrentMatrix {
  constructor(
    readonly name: string,
    public weight: Tensor | null,
    public state: WeightNormState | null,
  ) {}

  /** w for this forward: the plain weight, or g·v/‖v‖ materialized once (differentiable in v and g). */
  effective(): Tensor {
    if (!this.state) return this.weight!;
    const s = this.state;
    return F.weightNorm(s.v, s.g, { dim: s.dim, eps: s.eps, norm: s.currentNorm() }).w;
  }

  /**
   * The matrix as the recurrent kernels take it: with one norm per gate row (dim 0) v itself, scaled per gate row in
   * the GEMM epilogue; with any other weight-norm dim (no per-row scale of the products) w materialized once.
   */
  operand(): LayerMatrix {
    const s = this.state;
    if (s && s.dim === 0) return { weight: s.v, normalized: { g: s.g, norm: s.currentNorm(), eps: s.eps } };
    return { weight: this.effective(), normalized: null };
  }

  /** Drops the cached norm (after a move to another device, or when the layer is disposed). */
  resetNorm(): void {
    if (!this.state) return;
    this.state.norm?.dispose();
    this.state.norm = null;
    this.state.normVersion = -1;
  }
}

/**
 * PyTorch's initialization spreads every weight and bias over U(−1/√H, 1/√H); this library draws from its
 * counter-based normal generator instead, with the same variance (1/(3H)).
 */
function initialValues(shape: number[], hidden: number): Tensor {
  return new Tensor(native.randn(shape, nextSeed(), 'cpu', 0, 1 / Math.sqrt(3 * hidden)));
}

/** Base of the recurrent layers and cells: registers PyTorch-named parameters, plain or weight-normalized. */
abstract class RecurrentParameters<Output> extends Module<any[], Output> {
  protected readonly matrices: RecurrentMatrix[] = [];

  /** Registers `name` ([rows, columns]) as a plain weight, or as name_v / name_g with g = ‖v‖ (so w = v at first). */
  protected addMatrix(name: string, rows: number, columns: number, hidden: number, norm: ParsedNorm | null): RecurrentMatrix {
    const w = initialValues([rows, columns], hidden);
    let matrix: RecurrentMatrix;
    if (!norm) {
      matrix = new RecurrentMatrix(name, this.registerParameter(name, w), null);
    } else {
      const v = this.registerParameter(`${name}_v`, w);
      const channels = norm.dim === null ? 1 : [rows, columns][norm.dim]!;
      const gNorm = noGrad(() => tidy(() => {
        const ones = new Tensor(native.full([channels], 1, 'cpu'));
        return F.weightNorm(v, ones, { dim: norm.dim, eps: norm.eps }).norm;
      }));
      const g = this.registerParameter(`${name}_g`, gNorm);
      const state = new WeightNormState(v, g, norm.dim, norm.eps);
      state.attachTo(v);
      matrix = new RecurrentMatrix(name, null, state);
    }
    this.matrices.push(matrix);
    return matrix;
  }

  /** Whether any matrix is held as (v, g). */
  get isWeightNormalized(): boolean {
    return this.matrices.some((m) => m.state !== null);
  }

  /**
   * Folds every weight-normalized matrix into a plain weight w = g·v/‖v‖ under its PyTorch name, at the place
   * name_v held in the state dict (what nn.removeWeightNorm(s) calls; torch's remove_weight_norm does the same).
   */
  foldWeightNorm(): void {
    for (const m of this.matrices) {
      const state = m.state;
      if (!state) continue;
      const w = noGrad(() => tidy(() => m.effective()));
      m.resetNorm();
      state.detach();
      m.state = null;
      m.weight = w;
      this.replaceParameter(`${m.name}_v`, [[m.name, w]]);
      this.replaceParameter(`${m.name}_g`, []);
    }
  }

  protected addBias(name: string, size: number, hidden: number): Tensor {
    return this.registerParameter(name, initialValues([size], hidden));
  }

  /** The device of the parameters (the first one's). */
  protected get parameterDevice(): Tensor['device'] {
    return this.parameters()[0]!.device;
  }

  override dispose(): void {
    for (const m of this.matrices) m.resetNorm();
    super.dispose();
  }

  protected override afterMove(): void {
    for (const m of this.matrices) m.resetNorm();
    super.afterMove();
  }
}

function checkTensorInput(where: string, x: unknown): Tensor {
  handleOf(x, where);
  return x as Tensor;
}

function checkStateTensor(where: string, t: unknown, shape: readonly number[], device: Tensor['device']): Tensor {
  const tensor = checkTensorInput(where, t);
  if (tensor.rank !== shape.length || tensor.shape.some((d, i) => d !== shape[i])) throw rangeError(where, `shape ${shapeText(shape)}`, shapeText(tensor.shape));
  if (tensor.device !== device) throw typeError(where, `a tensor on '${device}' like the layer's parameters`, tensor);
  return tensor;
}

function checkStateObject(where: string, state: unknown, keys: readonly string[]): Record<string, unknown> {
  if (state === undefined || state === null) return {};
  if (typeof state !== 'object' || Array.isArray(state) || state instanceof Tensor) throw typeTextError(where, keys, state);
  for (const key of Object.keys(state)) if (!keys.includes(key)) throw typeTextError(where, keys, key);
  return state as Record<string, unknown>;
}

function typeTextError(where: string, keys: readonly string[], received: unknown): TypeError {
  return typeError(where, `an object { ${keys.join(', ')} } of state tensors`, received);
}

// ---------------------------------------------------------------------------------------------------------------
// Stacked layers over whole sequences.

/** What nn.LSTM.forward returns: the last layer's hidden state at every step, and every layer's final states. */
export interface LSTMOutput {
  /** [T, N, H], or [N, T, H] with batchFirst. */
  output: Tensor;
  /** [numLayers, N, H]: the hidden state after the last step. */
  h: Tensor;
  /** [numLayers, N, H]: the cell state after the last step. */
  c: Tensor;
}

export interface GRUOutput {
  output: Tensor;
  h: Tensor;
}

/** Initial states of an LSTM ([numLayers, N, H] each; zeros when absent). */
export interface LSTMState {
  h?: Tensor;
  c?: Tensor;
}

export interface GRUState {
  h?: Tensor;
}

abstract class RecurrentLayer<Output> extends RecurrentParameters<Output> {
  readonly numLayers: number;
  readonly bias: boolean;
  readonly batchFirst: boolean;
  protected readonly layers: { ih: RecurrentMatrix; hh: RecurrentMatrix; bIh: Tensor | null; bHh: Tensor | null }[] = [];

  constructor(
    protected readonly cell: RnnCell,
    readonly inputSize: number,
    readonly hiddenSize: number,
    options: RecurrentOptions,
  ) {
    super();
    const where = `nn.${RecurrentLayer.classNameOf(cell)}`;
    checkSize(`${where}: inputSize`, inputSize);
    checkSize(`${where}: hiddenSize`, hiddenSize);
    const o = checkOptions(where, options, ['numLayers', 'bias', 'batchFirst', 'weightNorm']);
    this.numLayers = checkSize(`${where}: options.numLayers`, o.numLayers ?? 1);
    this.bias = checkBoolean(`${where}: options.bias`, o.bias, true);
    this.batchFirst = checkBoolean(`${where}: options.batchFirst`, o.batchFirst, false);
    const [ihNorm, hhNorm] = parseWeightNorm(where, o.weightNorm);
    const gates = cell === 'lstm' ? 4 : 3;
    if (gates * hiddenSize * Math.max(inputSize, hiddenSize) > 2 ** 40) throw rangeError(where, 'at most 2^40 weights per matrix', `${gates} × ${hiddenSize} × ${Math.max(inputSize, hiddenSize)}`);
    for (let k = 0; k < this.numLayers; k++) {
      const columns = k === 0 ? inputSize : hiddenSize;
      const ih = this.addMatrix(`weight_ih_l${k}`, gates * hiddenSize, columns, hiddenSize, ihNorm);
      const hh = this.addMatrix(`weight_hh_l${k}`, gates * hiddenSize, hiddenSize, hiddenSize, hhNorm);
      const bIh = this.bias ? this.addBias(`bias_ih_l${k}`, gates * hiddenSize, hiddenSize) : null;
      const bHh = this.bias ? this.addBias(`bias_hh_l${k}`, gates * hiddenSize, hiddenSize) : null;
      this.layers.push({ ih, hh, bIh, bHh });
    }
  }

  private static classNameOf(cell: RnnCell): string {
    return cell === 'lstm' ? 'LSTM' : 'GRU';
  }

  private get className(): string {
    return RecurrentLayer.classNameOf(this.cell);
  }

  /** Runs the stack; returns the output sequence (layout as x) and the final h (and c) [numLayers, N, H]. */
  protected run(x: unknown, h0: unknown, c0: unknown): { output: Tensor; h: Tensor; c: Tensor | null } {
    const where = `nn.${this.className}.forward`;
    const input = checkTensorInput(`${where}: x`, x);
    const device = this.parameterDevice;
    const expected = this.batchFirst ? `[batch, steps, ${this.inputSize}]` : `[steps, batch, ${this.inputSize}]`;
    if (input.rank !== 3 || input.shape[2] !== this.inputSize) throw rangeError(`${where}: x`, expected, shapeText(input.shape));
    if (input.device !== device) throw typeError(`${where}: x`, `a tensor on '${device}' like the layer's parameters`, input);
    const steps = input.shape[this.batchFirst ? 1 : 0]!;
    const batch = input.shape[this.batchFirst ? 0 : 1]!;
    if (steps < 1) throw rangeError(`${where}: x`, `${expected} with at least one step`, shapeText(input.shape));
    const stateShape = [this.numLayers, batch, this.hiddenSize];
    const h = h0 === undefined ? null : checkStateTensor(`${where}: state.h`, h0, stateShape, device);
    const c = c0 === undefined ? null : checkStateTensor(`${where}: state.c`, c0, stateShape, device);
    const lstm = this.cell === 'lstm';
    const zeros = (): Tensor => new Tensor(native.zeros([batch, this.hiddenSize], device));
    const layerState = (all: Tensor | null, k: number): Tensor => {
      if (!all) return zeros();
      const rows = this.numLayers === 1 ? all : sliceRows(all, k, 1);
      return F.reshape(rows, [batch, this.hiddenSize]);
    };
    let sequence = this.batchFirst ? swapLeadingAxes(input) : input;
    const finalH: Tensor[] = [];
    const finalC: Tensor[] = [];
    this.layers.forEach((layer, k) => {
      const y = recurrentLayer(
        this.cell,
        sequence,
        layerState(h, k),
        lstm ? layerState(c, k) : null,
        layer.ih.operand(),
        layer.hh.operand(),
        layer.bIh,
        layer.bHh,
      );
      finalH.push(sliceRows(y, steps - 1, 1));
      if (lstm) finalC.push(sliceRows(y, steps, 1));
      sequence = lstm ? sliceRows(y, 0, steps) : y;
    });
    const stack = (parts: Tensor[]): Tensor => (parts.length === 1 ? parts[0]! : concatRows(parts));
    return {
      output: this.batchFirst ? swapLeadingAxes(sequence) : sequence,
      h: stack(finalH),
      c: lstm ? stack(finalC) : null,
    };
  }
}

/**
 * Long short-term memory over whole sequences, PyTorch's nn.LSTM: gates i, f, g, o in rows [0, H), [H, 2H), ... of
 * weight_ih_l{k} [4H, in] and weight_hh_l{k} [4H, H]; c' = f⊙c + i⊙g, h' = o⊙tanh(c'). With weightNorm the state
 * dict holds weight_ih_l{k}_v / _g and weight_hh_l{k}_v / _g instead of the weights.
 */
export class LSTM extends RecurrentLayer<LSTMOutput> {
  constructor(inputSize: number, hiddenSize: number, options: RecurrentOptions = {}) {
    super('lstm', inputSize, hiddenSize, options);
  }

  forward(x: Tensor, state?: LSTMState): LSTMOutput {
    const s = checkStateObject('nn.LSTM.forward: state', state, ['h', 'c']);
    const { output, h, c } = this.run(x, s.h, s.c);
    return { output, h, c: c! };
  }
}

/**
 * Gated recurrent unit over whole sequences, PyTorch's nn.GRU: gates r, z, n; n = tanh(W_in x + b_in + r ⊙ (W_hn h
 * + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h.
 */
export class GRU extends RecurrentLayer<GRUOutput> {
  constructor(inputSize: number, hiddenSize: number, options: RecurrentOptions = {}) {
    super('gru', inputSize, hiddenSize, options);
  }

  forward(x: Tensor, state?: GRUState): GRUOutput {
    const s = checkStateObject('nn.GRU.forward: state', state, ['h']);
    const { output, h } = this.run(x, s.h, undefined);
    return { output, h };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Cells: one step.

abstract class RecurrentCell<Output> extends RecurrentParameters<Output> {
  readonly bias: boolean;
  protected readonly ih: RecurrentMatrix;
  protected readonly hh: RecurrentMatrix;
  protected readonly bIh: Tensor | null;
  protected readonly bHh: Tensor | null;

  constructor(
    protected readonly cell: RnnCell,
    readonly inputSize: number,
    readonly hiddenSize: number,
    options: CellOptions,
  ) {
    super();
    const where = `nn.${cell === 'lstm' ? 'LSTMCell' : 'GRUCell'}`;
    checkSize(`${where}: inputSize`, inputSize);
    checkSize(`${where}: hiddenSize`, hiddenSize);
    const o = checkOptions(where, options, ['bias', 'weightNorm']);
    this.bias = checkBoolean(`${where}: options.bias`, o.bias, true);
    const [ihNorm, hhNorm] = parseWeightNorm(where, o.weightNorm);
    const gates = cell === 'lstm' ? 4 : 3;
    this.ih = this.addMatrix('weight_ih', gates * hiddenSize, inputSize, hiddenSize, ihNorm);
    this.hh = this.addMatrix('weight_hh', gates * hiddenSize, hiddenSize, hiddenSize, hhNorm);
    this.bIh = this.bias ? this.addBias('bias_ih', gates * hiddenSize, hiddenSize) : null;
    this.bHh = this.bias ? this.addBias('bias_hh', gates * hiddenSize, hiddenSize) : null;
  }

  /** One step: y [1 (+1 for an LSTM), N, H] from x [N, I] and the states [N, H] (zeros when absent). */
  protected step(where: string, x: unknown, h0: unknown, c0: unknown): { y: Tensor; batch: number } {
    const input = checkTensorInput(`${where}: x`, x);
    const device = this.parameterDevice;
    if (input.rank !== 2 || input.shape[1] !== this.inputSize) throw rangeError(`${where}: x`, `[batch, ${this.inputSize}]`, shapeText(input.shape));
    if (input.device !== device) throw typeError(`${where}: x`, `a tensor on '${device}' like the layer's parameters`, input);
    const batch = input.shape[0]!;
    const shape = [batch, this.hiddenSize];
    const state = (t: unknown, name: string): Tensor =>
      t === undefined ? new Tensor(native.zeros(shape, device)) : checkStateTensor(`${where}: ${name}`, t, shape, device);
    const y = recurrentLayer(
      this.cell,
      F.reshape(input, [1, batch, this.inputSize]),
      state(h0, this.cell === 'lstm' ? 'state.h' : 'h'),
      this.cell === 'lstm' ? state(c0, 'state.c') : null,
      this.ih.operand(),
      this.hh.operand(),
      this.bIh,
      this.bHh,
    );
    return { y, batch };
  }
}

/** One LSTM step, PyTorch's nn.LSTMCell (weight_ih [4H, I], weight_hh [4H, H], bias_ih, bias_hh). */
export class LSTMCell extends RecurrentCell<{ h: Tensor; c: Tensor }> {
  constructor(inputSize: number, hiddenSize: number, options: CellOptions = {}) {
    super('lstm', inputSize, hiddenSize, options);
  }

  /** x [N, I], state { h, c } [N, H] each (zeros when absent) -> the next { h, c }. */
  forward(x: Tensor, state?: LSTMState): { h: Tensor; c: Tensor } {
    const where = 'nn.LSTMCell.forward';
    const s = checkStateObject(`${where}: state`, state, ['h', 'c']);
    const { y, batch } = this.step(where, x, s.h, s.c);
    return {
      h: F.reshape(sliceRows(y, 0, 1), [batch, this.hiddenSize]),
      c: F.reshape(sliceRows(y, 1, 1), [batch, this.hiddenSize]),
    };
  }
}

/** One GRU step, PyTorch's nn.GRUCell (weight_ih [3H, I], weight_hh [3H, H], bias_ih, bias_hh). */
export class GRUCell extends RecurrentCell<Tensor> {
  constructor(inputSize: number, hiddenSize: number, options: CellOptions = {}) {
    super('gru', inputSize, hiddenSize, options);
  }

  /** x [N, I], h [N, H] (zeros when absent) -> the next h [N, H]. */
  forward(x: Tensor, h?: Tensor): Tensor {
    const where = 'nn.GRUCell.forward';
    const { y, batch } = this.step(where, x, h ?? undefined, undefined);
    return F.reshape(y, [batch, this.hiddenSize]);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Embedding.

export interface EmbeddingOptions {
  /** This row's vector gets no gradient (PyTorch's padding_idx; it is initialized to zeros). Negative counts from the end. */
  paddingIdx?: number;
}

/** A lookup table [numEmbeddings, embeddingDim] (PyTorch's nn.Embedding, weight ~ N(0, 1)); its gradient scatter-adds rows. */
export class Embedding extends Module {
  readonly weight: Tensor;
  readonly paddingIdx: number | null;

  constructor(
    readonly numEmbeddings: number,
    readonly embeddingDim: number,
    options: EmbeddingOptions = {},
  ) {
    super();
    const where = 'nn.Embedding';
    checkSize(`${where}: numEmbeddings`, numEmbeddings);
    checkSize(`${where}: embeddingDim`, embeddingDim);
    if (numEmbeddings > 2 ** 24) throw rangeError(`${where}: numEmbeddings`, 'at most 2^24 rows (the kernels read indices as float32)', String(numEmbeddings));
    const o = checkOptions(where, options, ['paddingIdx']);
    if (o.paddingIdx === undefined || o.paddingIdx === null) {
      this.paddingIdx = null;
    } else {
      const p = o.paddingIdx;
      if (typeof p !== 'number' || !Number.isInteger(p)) throw typeError(`${where}: options.paddingIdx`, 'an integer', p);
      if (p < -numEmbeddings || p >= numEmbeddings) throw rangeError(`${where}: options.paddingIdx`, `an index in [${-numEmbeddings}, ${numEmbeddings - 1}]`, String(p));
      this.paddingIdx = p < 0 ? p + numEmbeddings : p;
    }
    const weight = new Tensor(native.randn([numEmbeddings, embeddingDim], nextSeed(), 'cpu', 0, 1));
    if (this.paddingIdx !== null) {
      const zeroRow = native.zeros([1, embeddingDim], 'cpu');
      native.copyRows(handleOf(weight, where), this.paddingIdx, zeroRow, 0, 1);
      zeroRow.dispose();
    }
    this.weight = this.registerParameter('weight', weight);
  }

  /**
   * indices: an int32 tensor (or a float32 one holding integers; any shape), an Int32Array or a number[] (1-D) ->
   * [...indices.shape, embeddingDim]. Each index must be an integer in [0, numEmbeddings). The kernels take the
   * indices as float32 (exact up to 2^24 rows), copied once per forward.
   */
  forward(indices: Tensor | Int32Array | readonly number[]): Tensor {
    const where = 'nn.Embedding.forward';
    const device = this.weight.device;
    let values: ArrayLike<number>;
    let shape: number[];
    if (indices instanceof Tensor) {
      handleOf(indices, `${where}: indices`, 'any');
      if (indices.dtype !== 'int32' && indices.dtype !== 'float32') {
        throw typeError(`${where}: indices`, 'an int32 tensor (or float32 holding integers)', indices);
      }
      values = indices.toArray();
      shape = [...indices.shape];
    } else if (indices instanceof Int32Array || Array.isArray(indices)) {
      values = indices as ArrayLike<number>;
      shape = [values.length];
    } else {
      throw typeError(`${where}: indices`, 'a Tensor, an Int32Array or a number[] of indices', indices);
    }
    for (let i = 0; i < values.length; i++) {
      const index = values[i]!;
      if (!Number.isInteger(index) || index < 0 || index >= this.numEmbeddings) {
        throw rangeError(`${where}: indices`, `integers in [0, ${this.numEmbeddings - 1}]`, `${index} at position ${i}`);
      }
    }
    // A Tensor (not a bare handle), so that the enclosing tidy() frees it with the graph's other saved tensors.
    const indexTensor = wrap(native.fromArray(Float32Array.from(values), shape, device));
    const out = wrap(native.embedding(handleOf(indexTensor, where), handleOf(this.weight, where)));
    const padding = this.paddingIdx ?? -1;
    const recorded = record(out, 'embedding', [this.weight], (dy) => [wrap(native.embeddingBackward(handleOf(dy, where), handleOf(indexTensor, where), this.numEmbeddings, padding))], []);
    if (!recorded.gradNode) indexTensor.dispose();
    return recorded;
  }
}
