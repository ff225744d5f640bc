// Optimizers: one fused native kernel per parameter tensor per step. When a parameter is a weight-norm direction v,
// the same pass also writes the new ‖v‖, so the next forward does not read v to normalize it.
import { typeError } from './errors.js';
import { native } from './native.js';
import { weightNormStateOf } from './nn.js';
import { keep } from './scope.js';
import { handleOf, Tensor } from './tensor.js';

function checkParams(where: string, params: unknown): Tensor[] {
  if (!Array.isArray(params) || params.length === 0) throw typeError(`${where}: params`, 'a non-empty array of Tensors', params);
  params.forEach((p, i) => {
    if (!(p instanceof Tensor)) throw typeError(`${where}: params[${i}]`, 'a Tensor', p);
    if (!p.requiresGrad) throw typeError(`${where}: params[${i}]`, 'a tensor with requiresGrad (a module parameter)', p);
  });
  return [...new Set(params as Tensor[])];
}

function checkNumber(where: string, value: unknown, minimum: number, maximum = Infinity, exclusiveMaximum = false): number {
  const ok =
    typeof value === 'number' && Number.isFinite(value) && value >= minimum && (exclusiveMaximum ? value < maximum : value <= maximum);
  if (!ok) {
    throw typeError(where, `a number in [${minimum}, ${maximum}${exclusiveMaximum ? ')' : ']'}`, value);
  }
  return value as number;
}

export abstract class Optimizer {
  readonly params: readonly Tensor[];
  /** The learning rate of the next step (a schedule may change it between steps). */
  lr: number;
  /** Steps taken so far. */
  stepCount = 0;
  protected readonly state = new Map<Tensor, Tensor[]>();

  protected constructor(where: string, params: unknown, lr: unknown) {
    this.params = checkParams(where, params);
    this.lr = checkNumber(`${where}: options.lr`, lr, 0);
  }

  /** Clears every parameter's gradient (frees it; the next backward() creates a new one). */
  zeroGrad(): void {
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** One update of every parameter that has a gradient. */
  step(): void {
    this.stepCount += 1;
    for (const p of this.params) {
      if (!p.grad) continue;
      const wn = weightNormStateOf(p);
      const norm = wn ? (wn.norm && !wn.norm.disposed ? wn.norm : keep(new Tensor(native.full([wn.layout()[1]], 0, p.device)))) : null;
      const [outer, channels, inner] = wn ? wn.layout() : [1, 1, 1];
      this.update(p, p.grad, norm, outer, channels, inner, wn?.eps ?? 1e-12);
      p.version += 1;
      if (wn && norm) wn.normUpdated(norm);
    }
  }

  /** State tensors of a parameter, created (zero) on first use and kept out of tidy(). */
  protected stateOf(p: Tensor, count: number): Tensor[] {
    let tensors = this.state.get(p);
    if (!tensors) {
      tensors = Array.from({ length: count }, () => keep(new Tensor(native.full([...p.shape], 0, p.device))));
      this.state.set(p, tensors);
    }
    return tensors;
  }

  protected abstract update(p: Tensor, grad: Tensor, norm: Tensor | null, outer: number, channels: number, inner: number, normEps: number): void;

  /** Frees the optimizer's state tensors. */
  dispose(): void {
    for (const tensors of this.state.values()) for (const t of tensors) t.dispose();
    this.state.clear();
  }
}

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/** Stochastic gradient descent with optional momentum (and Nesterov) and L2 weight decay, as PyTorch defines them. */
export class SGD extends Optimizer {
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;

  constructor(params: Tensor[], options: SGDOptions) {
    const where = 'optim.SGD';
    if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object like { lr }', options);
    super(where, params, options.lr);
    this.momentum = checkNumber(`${where}: options.momentum`, options.momentum ?? 0, 0);
    this.dampening = checkNumber(`${where}: options.dampening`, options.dampening ?? 0, 0, 1);
    this.weightDecay = checkNumber(`${where}: options.weightDecay`, options.weightDecay ?? 0, 0);
    this.nesterov = options.nesterov ?? false;
    if (typeof this.nesterov !== 'boolean') throw typeError(`${where}: options.nesterov`, 'a boolean', this.nesterov);
    if (this.nesterov && (this.momentum === 0 || this.dampening !== 0)) {
      throw new RangeError(`${where}: options.nesterov needs momentum > 0 and dampening 0`);
    }
  }

  protected update(p: Tensor, grad: Tensor, norm: Tensor | null, outer: number, channels: number, inner: number, normEps: number): void {
    const where = 'optim.SGD.step';
    const velocity = this.momentum !== 0 ? this.stateOf(p, 1)[0]! : null;
    native.optimizerStep(
      'sgd',
      handleOf(p, where),
      handleOf(grad, where),
      velocity ? handleOf(velocity, where) : null,
      null,
      { lr: this.lr, momentum: this.momentum, dampening: this.dampening, weightDecay: this.weightDecay, nesterov: this.nesterov },
      this.stepCount,
      norm ? handleOf(norm, where) : null,
      outer,
      channels,
      inner,
      normEps,
    );
  }
}

export interface AdamOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

abstract class AdamFamily extends Optimizer {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;

  protected constructor(
    private readonly kind: 'adam' | 'adamax',
    where: string,
    params: Tensor[],
    options: AdamOptions,
    defaultLr: number,
  ) {
    if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object', options);
    super(where, params, options.lr ?? defaultLr);
    const [beta1, beta2] = options.betas ?? [0.9, 0.999];
    this.beta1 = checkNumber(`${where}: options.betas[0]`, beta1, 0, 1, true);
    this.beta2 = checkNumber(`${where}: options.betas[1]`, beta2, 0, 1, true);
    this.eps = checkNumber(`${where}: options.eps`, options.eps ?? 1e-8, 0);
    this.weightDecay = checkNumber(`${where}: options.weightDecay`, options.weightDecay ?? 0, 0);
  }

  protected update(p: Tensor, grad: Tensor, norm: Tensor | null, outer: number, channels: number, inner: number, normEps: number): void {
    const where = `optim.${this.constructor.name}.step`;
    const [m, second] = this.stateOf(p, 2) as [Tensor, Tensor];
    native.optimizerStep(
      this.kind,
      handleOf(p, where),
      handleOf(grad, where),
      handleOf(m, where),
      handleOf(second, where),
      { lr: this.lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay },
      this.stepCount,
      norm ? handleOf(norm, where) : null,
      outer,
      channels,
      inner,
      normEps,
    );
  }
}

/** Adam (Kingma & Ba, 2015) with bias correction. Default lr 1e-3. */
export class Adam extends AdamFamily {
  constructor(params: Tensor[], options: AdamOptions = {}) {
    super('adam', 'optim.Adam', params, options, 1e-3);
  }
}

/** Adamax, the infinity-norm variant of Adam that the paper uses for its VAE and DQN experiments. Default lr 2e-3. */
export class Adamax extends AdamFamily {
  constructor(params: Tensor[], options: AdamOptions = {}) {
    super('adamax', 'optim.Adamax', params, options, 2e-3);
  }
}

/**
 * Linear learning-rate decay (the paper's schedule): after each call of step(), the optimizer's lr is
 * initial + (final − initial) · min(1, t / totalSteps).
 */
export function linearDecay(optimizer: Optimizer, options: { totalSteps: number; finalLr?: number }): { step(): number } {
  const where = 'optim.linearDecay';
  if (!(optimizer instanceof Optimizer)) throw typeError(`${where}: optimizer`, 'an Optimizer', optimizer);
  if (typeof options?.totalSteps !== 'number' || !Number.isInteger(options.totalSteps) || options.totalSteps < 1) {
    throw typeError(`${where}: options.totalSteps`, 'an integer >= 1', options?.totalSteps);
  }
  const initial = optimizer.lr;
  const final = checkNumber(`${where}: options.finalLr`, options.finalLr ?? 0, 0);
  let t = 0;
  return {
    step(): number {
      t += 1;
      optimizer.lr = initial + (final - initial) * Math.min(1, t / options.totalSteps);
      return optimizer.lr;
    },
  };
}
