// Learning-rate schedules, as torch.optim.lr_scheduler defines them: create one on an optimizer (it sets each
// group's lr for step 0 at once), call schedule.step() after each optimizer.step(). Each computes a group's lr
// from the step count in closed form (from the group's lr when the first schedule was created, like torch's
// initial_lr), so a resumed run gets the very same numbers. The optimizer keeps its schedule (the last one created
// for it; a SequentialLR holds its parts) and saves it with its state: io.save({ model, optimizer }) then
// io.loadInto restores where it stood, once the same schedule has been created on the new optimizer.
import { rangeError, typeError } from './errors.js';
import { type AttachedSchedule, Optimizer, type ScheduleState } from './optim.js';

function checkOptions<T extends object>(where: string, options: unknown, keys: readonly string[]): Partial<T> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(`${where}: options`, `an object with the keys ${keys.join(', ')}`, options);
  }
  for (const key of Object.keys(options)) if (!keys.includes(key)) throw typeError(`${where}: options`, `only the keys ${keys.join(', ')}`, key);
  return options as Partial<T>;
}

function checkInteger(where: string, value: unknown, minimum: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < minimum) throw typeError(where, `an integer >= ${minimum}`, value);
  return value;
}

function checkFinite(where: string, value: unknown, minimum: number, maximum = Infinity): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < minimum || value > maximum) {
    throw typeError(where, `a number in [${minimum}, ${maximum}]`, value);
  }
  return value;
}

/** The base of the schedules: the step count, each group's base lr, and saving/restoring both. */
export abstract class LRSchedule implements AttachedSchedule {
  readonly optimizer: Optimizer;
  /** Each group's lr at step 0 (from the optimizer's first schedule, if it had one before this). */
  baseLrs: number[];
  /** How many times step() was called. */
  lastStep = 0;

  protected constructor(where: string, optimizer: unknown) {
    if (!(optimizer instanceof Optimizer)) throw typeError(`${where}: optimizer`, 'an Optimizer', optimizer);
    this.optimizer = optimizer;
    const previous = optimizer.schedule;
    this.baseLrs = previous instanceof LRSchedule ? [...previous.baseLrs] : optimizer.paramGroups.map((g) => g.lr);
  }

  /** Group `group`'s lr after `step` steps. */
  abstract lrAt(step: number, group: number): number;

  /** Makes this the optimizer's schedule and sets the lr of step lastStep. Subclass constructors end with it. */
  protected attach(): void {
    this.optimizer.schedule = this;
    this.apply();
  }

  protected apply(): void {
    this.optimizer.paramGroups.forEach((g, i) => (g.lr = this.lrAt(this.lastStep, i)));
  }

  /** Advances one step (call it after optimizer.step()) and returns each group's new lr. */
  step(): number[] {
    this.lastStep += 1;
    this.apply();
    return this.lastLrs();
  }

  /** Each group's current lr. */
  lastLrs(): number[] {
    return this.optimizer.paramGroups.map((g) => g.lr);
  }

  stateDict(): ScheduleState {
    return { type: this.constructor.name, step: this.lastStep, baseLrs: [...this.baseLrs] };
  }

  /** Checks a saved state against this schedule; the returned function applies it (the lrs come with the groups). */
  prepareLoad(state: ScheduleState, where: string): () => void {
    if (typeof state !== 'object' || state === null) throw typeError(where, '{ type, step, baseLrs }', state);
    if (state.type !== this.constructor.name) {
      throw new TypeError(`${where}: expected the state of a ${this.constructor.name}, found the state of ${String(state.type)}`);
    }
    const step = checkInteger(`${where}.step`, state.step, 0);
    const groups = this.optimizer.paramGroups.length;
    if (!Array.isArray(state.baseLrs) || state.baseLrs.length !== groups) {
      throw rangeError(`${where}.baseLrs`, `${groups} learning rate(s), one per parameter group`, JSON.stringify(state.baseLrs));
    }
    const baseLrs = state.baseLrs.map((lr, i) => checkFinite(`${where}.baseLrs[${i}]`, lr, 0));
    return () => {
      this.lastStep = step;
      this.baseLrs = baseLrs;
    };
  }
}

export interface StepLROptions {
  /** Steps between two decays (>= 1). */
  stepSize: number;
  /** The factor of each decay (default 0.1). */
  gamma?: number;
}

/** lr = base · gamma^floor(step / stepSize) (torch.optim.lr_scheduler.StepLR). */
export class StepLR extends LRSchedule {
  readonly stepSize: number;
  readonly gamma: number;

  constructor(optimizer: Optimizer, options: StepLROptions) {
    const where = 'optim.StepLR';
    super(where, optimizer);
    const o = checkOptions<StepLROptions>(where, options, ['stepSize', 'gamma']);
    this.stepSize = checkInteger(`${where}: options.stepSize`, o.stepSize, 1);
    this.gamma = checkFinite(`${where}: options.gamma`, o.gamma ?? 0.1, 0);
    this.attach();
  }

  lrAt(step: number, group: number): number {
    return this.baseLrs[group]! * this.gamma ** Math.floor(step / this.stepSize);
  }
}

export interface CosineAnnealingLROptions {
  /** The steps of one half cosine, from base down to etaMin (>= 1). */
  tMax: number;
  /** The lowest lr (default 0). */
  etaMin?: number;
}

/**
 * lr = etaMin + (base − etaMin) · (1 + cos(π · step / tMax)) / 2 (torch.optim.lr_scheduler.CosineAnnealingLR; past
 * tMax the cosine goes on, back up, as torch's closed form does).
 */
export class CosineAnnealingLR extends LRSchedule {
  readonly tMax: number;
  readonly etaMin: number;

  constructor(optimizer: Optimizer, options: CosineAnnealingLROptions) {
    const where = 'optim.CosineAnnealingLR';
    super(where, optimizer);
    const o = checkOptions<CosineAnnealingLROptions>(where, options, ['tMax', 'etaMin']);
    this.tMax = checkInteger(`${where}: options.tMax`, o.tMax, 1);
    this.etaMin = checkFinite(`${where}: options.etaMin`, o.etaMin ?? 0, 0);
    this.attach();
  }

  lrAt(step: number, group: number): number {
    return this.etaMin + ((this.baseLrs[group]! - this.etaMin) * (1 + Math.cos((Math.PI * step) / this.tMax))) / 2;
  }
}

export interface LinearLROptions {
  /** The factor of base at step 0 (default 1/3, in (0, 1]). */
  startFactor?: number;
  /** The factor from step totalIters on (default 1, in [0, 1]). */
  endFactor?: number;
  /** Steps of the linear change (default 5). */
  totalIters?: number;
}

/**
 * lr = base · (start + (end − start) · min(step, totalIters) / totalIters) (torch.optim.lr_scheduler.LinearLR): a
 * linear warmup with startFactor < 1 and endFactor 1, or a linear decay.
 */
export class LinearLR extends LRSchedule {
  readonly startFactor: number;
  readonly endFactor: number;
  readonly totalIters: number;

  constructor(optimizer: Optimizer, options?: LinearLROptions) {
    const where = 'optim.LinearLR';
    super(where, optimizer);
    const o = checkOptions<LinearLROptions>(where, options, ['startFactor', 'endFactor', 'totalIters']);
    this.startFactor = checkFinite(`${where}: options.startFactor`, o.startFactor ?? 1 / 3, 0, 1);
    if (this.startFactor === 0) throw typeError(`${where}: options.startFactor`, 'a number in (0, 1]', 0);
    this.endFactor = checkFinite(`${where}: options.endFactor`, o.endFactor ?? 1, 0, 1);
    this.totalIters = checkInteger(`${where}: options.totalIters`, o.totalIters ?? 5, 1);
    this.attach();
  }

  lrAt(step: number, group: number): number {
    const progress = Math.min(step, this.totalIters) / this.totalIters;
    return this.baseLrs[group]! * (this.startFactor + (this.endFactor - this.startFactor) * progress);
  }
}

export interface SequentialLROptions {
  /** The schedules, in order, each created on the same optimizer. */
  schedules: LRSchedule[];
  /** The steps where each next schedule takes over (one fewer than the schedules, increasing). */
  milestones: number[];
}

/**
 * Runs schedules one after another (torch.optim.lr_scheduler.SequentialLR): from milestones[i − 1] on, schedule i
 * runs from its own step 0. A warmup then a cosine: see warmupCosine.
 */
export class SequentialLR extends LRSchedule {
  readonly schedules: readonly LRSchedule[];
  readonly milestones: readonly number[];

  constructor(optimizer: Optimizer, options: SequentialLROptions) {
    const where = 'optim.SequentialLR';
    super(where, optimizer);
    const o = checkOptions<SequentialLROptions>(where, options, ['schedules', 'milestones']);
    if (!Array.isArray(o.schedules) || o.schedules.length === 0) throw typeError(`${where}: options.schedules`, 'a non-empty array of schedules', o.schedules);
    o.schedules.forEach((s, i) => {
      if (!(s instanceof LRSchedule)) throw typeError(`${where}: options.schedules[${i}]`, 'a schedule (optim.StepLR, ...)', s);
      if (s.optimizer !== optimizer) throw new TypeError(`${where}: options.schedules[${i}]: expected a schedule of the same optimizer`);
    });
    const milestones = o.milestones;
    if (!Array.isArray(milestones) || milestones.length !== o.schedules.length - 1) {
      throw typeError(`${where}: options.milestones`, `${o.schedules.length - 1} step(s), one fewer than the schedules`, milestones);
    }
    milestones.forEach((m, i) => {
      checkInteger(`${where}: options.milestones[${i}]`, m, 1);
      if (i > 0 && m <= milestones[i - 1]!) throw rangeError(`${where}: options.milestones`, 'increasing steps', JSON.stringify(milestones));
    });
    this.schedules = [...o.schedules];
    this.milestones = [...milestones];
    this.baseLrs = [...this.schedules[0]!.baseLrs];
    this.attach();
  }

  override prepareLoad(state: ScheduleState, where: string): () => void {
    const apply = super.prepareLoad(state, where);
    return () => {
      apply();
      for (const s of this.schedules) s.baseLrs = [...this.baseLrs];
    };
  }

  lrAt(step: number, group: number): number {
    let index = 0;
    while (index < this.milestones.length && step >= this.milestones[index]!) index++;
    const start = index === 0 ? 0 : this.milestones[index - 1]!;
    return this.schedules[index]!.lrAt(step - start, group);
  }
}

export interface WarmupCosineOptions {
  /** Steps of the linear warmup (>= 1). */
  warmupSteps: number;
  /** All steps, warmup included (> warmupSteps): the cosine runs over the rest. */
  totalSteps: number;
  /** The warmup's first factor of the base lr (default 0.01). */
  startFactor?: number;
  /** The lr the cosine ends at (default 0). */
  etaMin?: number;
}

/**
 * A linear warmup from startFactor · base to base over warmupSteps, then a cosine down to etaMin at totalSteps: a
 * SequentialLR of LinearLR and CosineAnnealingLR, as one would build it in PyTorch.
 */
export function warmupCosine(optimizer: Optimizer, options: WarmupCosineOptions): SequentialLR {
  const where = 'optim.warmupCosine';
  const o = checkOptions<WarmupCosineOptions>(where, options, ['warmupSteps', 'totalSteps', 'startFactor', 'etaMin']);
  const warmupSteps = checkInteger(`${where}: options.warmupSteps`, o.warmupSteps, 1);
  const totalSteps = checkInteger(`${where}: options.totalSteps`, o.totalSteps, warmupSteps + 1);
  const warmup = new LinearLR(optimizer, { startFactor: o.startFactor ?? 0.01, endFactor: 1, totalIters: warmupSteps });
  const cosine = new CosineAnnealingLR(optimizer, { tMax: totalSteps - warmupSteps, etaMin: o.etaMin ?? 0 });
  return new SequentialLR(optimizer, { schedules: [warmup, cosine], milestones: [warmupSteps] });
}
