// Optimizers: one fused pass per parameter tensor per step, every tensor of a parameter group in one native call
// (native.optimizerSteps, the same bits as one call per tensor). When a parameter is a weight-norm direction v
// (v.weightNormState is its layer's WeightNormState, see nn.ts), the same pass also writes the new ‖v‖ there, so the
// next forward does not read v to normalize it.
import { noGrad } from './autograd.js';
import { rangeError, shapeText, typeError } from './errors.js';
import * as F from './functional.js';
import { native, type NativeTensor, type OptimizerNormOutput } from './native.js';
import { type HostTensor, loadSourceShape, type StagedLoad, stageCopy, WeightNormState } from './nn.js';
import { keep, tidy } from './scope.js';
import { handleOf, Tensor } from './tensor.js';

function checkParams(where: string, params: unknown): Tensor[] {
  if (!Array.isArray(params) || params.length === 0) throw typeError(`${where}: params`, 'a non-empty array of Tensors', params);
  params.forEach((p, i) => {
    if (!(p instanceof Tensor)) throw typeError(`${where}: params[${i}]`, 'a Tensor', p);
    if (!p.requiresGrad) throw typeError(`${where}: params[${i}]`, 'a tensor with requiresGrad (a module parameter)', p);
    if (p.dtype !== 'float32') throw typeError(`${where}: params[${i}]`, 'a float32 tensor (optimizers update float32 parameters)', p);
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

/**
 * What an optimizer needs to resume exactly where it stopped (io.save({ model, optimizer }) writes it). Per
 * parameter, its state tensors by slot: 'momentumBuffer' (SGD with momentum), 'expAvg' and 'expAvgSq' (Adam),
 * 'expAvg' and 'expInf' (Adamax), and for a weight-norm direction v 'norm', the ‖v‖ its last step wrote (the next
 * forward uses it; recomputing it could differ in the last bit).
 */
export interface OptimizerStateDict {
  /** The optimizer's class: 'SGD', 'Adam' or 'Adamax'. */
  type: string;
  /** How many times step() was called. */
  stepCount: number;
  /**
   * By parameter key, how many steps updated that parameter (PyTorch's state['step']): a parameter counts only the
   * steps where it had a gradient, and its bias correction and momentum start from its own first step. Absent in
   * checkpoints written before it existed: then each parameter with state tensors counts stepCount.
   */
  steps?: Record<string, number>;
  lr: number;
  /** The constructor's options, for the record: loading keeps the receiving optimizer's own. */
  hyperparameters: Record<string, number | boolean>;
  /** By parameter key (its index in params, or the name given), then by slot. Parameters never stepped are absent. */
  state: Record<string, Record<string, Tensor | HostTensor>>;
  /**
   * Per parameter group: its parameters' keys, its lr (which a schedule moves) and its options. Absent in
   * checkpoints written before groups existed: then every group takes `lr`.
   */
  paramGroups?: SavedParamGroup[];
  /** The optimizer's learning-rate schedule (optim.StepLR, ...), if it has one: where it stands. */
  schedule?: ScheduleState;
}

/** A parameter group as a state dict records it. */
export interface SavedParamGroup {
  params: string[];
  lr: number;
  options: Record<string, number | boolean | number[]>;
}

/** What a schedule saves: its class, how many times step() ran, and the lr of each group it started from. */
export interface ScheduleState {
  type: string;
  step: number;
  baseLrs: number[];
}

/** The options every optimizer's parameter groups have. */
export interface ParamGroupBase {
  /** The group's tensors (each in one group only). */
  readonly params: readonly Tensor[];
  /** The group's learning rate for the next step (a schedule changes it). */
  lr: number;
  weightDecay: number;
}

/** A group as given to a constructor: its params, and any option to set differently from the constructor's defaults. */
export type ParamGroupSpec<Options> = { params: Tensor[] } & Partial<Options>;

/** Implemented by the learning-rate schedules (schedule.ts): the optimizer saves and restores its schedule. */
export interface AttachedSchedule {
  stateDict(): ScheduleState;
  /** Checks a saved state (throws on a mismatch) and returns how to apply it. */
  prepareLoad(state: ScheduleState, where: string): () => void;
}

/**
 * One parameter's part of a step: its gradient, its own step count (this one included: 1 on its first gradient),
 * and for a weight-norm v where the step writes ‖v‖.
 */
export interface ParamUpdate {
  p: Tensor;
  grad: Tensor;
  step: number;
  normOutput: OptimizerNormOutput | null;
}

/** A norm saved with the optimizer is used only if it is this close (relative) to ‖v‖ recomputed now. */
const SAVED_NORM_TOLERANCE = 1e-5;

function listOf(keys: readonly unknown[]): string {
  const shown = keys.slice(0, 6).map((k) => `'${String(k)}'`).join(', ');
  return `[${shown}${keys.length > 6 ? `, … (${keys.length})` : ''}]`;
}

function checkParamKeys(where: string, keys: unknown, count: number): string[] {
  if (keys === undefined) return Array.from({ length: count }, (_, i) => String(i));
  if (!Array.isArray(keys) || keys.length !== count || keys.some((k) => typeof k !== 'string')) {
    throw typeError(`${where}: paramKeys`, `an array of ${count} strings (one per parameter)`, keys);
  }
  if (new Set(keys).size !== keys.length) throw new TypeError(`${where}: paramKeys: expected distinct names`);
  return keys as string[];
}

function isGroupSpec(value: unknown): value is { params: unknown } {
  return typeof value === 'object' && value !== null && !(value instanceof Tensor) && !Array.isArray(value) && 'params' in value;
}

export abstract class Optimizer<Group extends ParamGroupBase = ParamGroupBase> {
  /** Every parameter of every group, in order. */
  readonly params: readonly Tensor[];
  /**
   * The parameter groups (PyTorch's param_groups): one when the constructor got a plain array of tensors, else one
   * per { params, ...options } given, each option defaulting to the constructor's. A group's lr and options may be
   * changed between steps.
   */
  readonly paramGroups: readonly Group[];
  /** How many times step() was called (each parameter also counts its own steps, those where it had a gradient). */
  stepCount = 0;
  /** The learning-rate schedule driving this optimizer (set by the schedule's constructor), saved with it. */
  schedule: AttachedSchedule | null = null;
  protected readonly state = new Map<Tensor, Tensor[]>();
  /** Per parameter, the steps that updated it (PyTorch's state['step']); absent until its first gradient. */
  private readonly paramSteps = new Map<Tensor, number>();
  private readonly groupOfParam = new Map<Tensor, Group>();

  /**
   * `makeGroup` builds one group from its tensors and its own options (checked, with the constructor's defaults
   * for the rest); `optionKeys` are the options a group may set.
   */
  protected constructor(
    where: string,
    params: unknown,
    optionKeys: readonly string[],
    makeGroup: (params: Tensor[], overrides: Record<string, unknown>, where: string) => Group,
  ) {
    const groups: Group[] = [];
    if (Array.isArray(params) && params.length > 0 && params.every(isGroupSpec)) {
      const seen = new Set<Tensor>();
      params.forEach((spec, i) => {
        const name = `${where}: params[${i}]`;
        for (const key of Object.keys(spec)) {
          if (key !== 'params' && !optionKeys.includes(key)) throw typeError(name, `a group with the keys params, ${optionKeys.join(', ')}`, key);
        }
        const tensors = checkParams(`${name}.params`, spec.params);
        for (const t of tensors) {
          if (seen.has(t)) throw new TypeError(`${name}.params: a tensor appears in more than one parameter group`);
          seen.add(t);
        }
        const { params: _, ...overrides } = spec as Record<string, unknown>;
        groups.push(makeGroup(tensors, overrides, `${name}.`));
      });
    } else {
      groups.push(makeGroup(checkParams(where, params), {}, `${where}: options.`));
    }
    this.paramGroups = groups;
    this.params = groups.flatMap((g) => [...g.params]);
    for (const g of groups) for (const p of g.params) this.groupOfParam.set(p, g);
  }

  /** The first group's learning rate; setting it sets every group's (as linearDecay does). */
  get lr(): number {
    return this.paramGroups[0]!.lr;
  }

  set lr(value: number) {
    checkNumber(`optim.${this.constructor.name}.lr`, value, 0);
    for (const g of this.paramGroups) g.lr = value;
  }

  /** The group that holds p. */
  protected groupOf(p: Tensor): Group {
    return this.groupOfParam.get(p)!;
  }

  /** Clears every parameter's gradient (frees it; the next backward() creates a new one). */
  zeroGrad(): void {
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /**
   * One update of every parameter that has a gradient; a parameter without one is skipped and its state and step
   * count stay as they are (as in PyTorch). All-or-nothing: every parameter, gradient and state tensor is checked
   * (and missing state allocated) before the first parameter changes, so a bad one throws with nothing updated.
   */
  step(): void {
    const where = `optim.${this.constructor.name}.step`;
    const planned = this.params.flatMap((p, i) => this.checkForStep(where, p, i));
    const newState: Tensor[] = [];
    const newNorms: Tensor[] = [];
    let plans: { p: Tensor; grad: Tensor; norm: Tensor | null }[];
    try {
      plans = planned.map(({ p, grad }) => ({ p, grad, norm: this.allocateForStep(p, newState, newNorms) }));
    } catch (error) {
      for (const p of newState) {
        for (const t of this.state.get(p) ?? []) t.dispose();
        this.state.delete(p);
      }
      for (const norm of newNorms) norm.dispose();
      throw error;
    }
    this.stepCount += 1;
    // One native call per group (the multi-tensor step): a call per parameter cost more than the update itself
    // for the small ones (biases, weight-norm g).
    const byGroup = new Map<Group, { updates: ParamUpdate[]; norms: (Tensor | null)[] }>();
    for (const { p, grad, norm } of plans) {
      const wn = WeightNormState.of(p);
      const normOutput: OptimizerNormOutput | null = wn && norm ? wn.normOutputFor(norm, where) : null;
      const group = this.groupOf(p);
      let entry = byGroup.get(group);
      if (!entry) byGroup.set(group, (entry = { updates: [], norms: [] }));
      entry.updates.push({ p, grad, normOutput, step: (this.paramSteps.get(p) ?? 0) + 1 });
      entry.norms.push(norm);
    }
    for (const [group, { updates, norms }] of byGroup) {
      this.updateGroup(group, updates);
      updates.forEach(({ p, step }, i) => {
        this.paramSteps.set(p, step);
        p.version += 1;
        const norm = norms[i];
        if (norm) {
          norm.version += 1;
          WeightNormState.of(p)!.normUpdated(norm);
        }
      });
    }
  }

  /** The steps that updated `p` so far (0 before its first gradient). */
  stepsOf(p: Tensor): number {
    return this.paramSteps.get(p) ?? 0;
  }

  /**
   * Checks parameter i and its gradient for step(): [] when it has no gradient. Changes nothing. The error texts
   * are built only for an error: this runs for every parameter of every step.
   */
  private checkForStep(where: string, p: Tensor, i: number): { p: Tensor; grad: Tensor }[] {
    const name = `${where}: params[${i}]`;
    handleOf(p, name);
    const device = p.device;
    const grad: unknown = p.grad;
    if (grad === null || grad === undefined) return [];
    if (!(grad instanceof Tensor)) throw typeError(`${name}.grad`, 'a Tensor or null', grad);
    handleOf(grad, `${name}.grad`);
    const shape = p.shape, gradShape = grad.shape;
    let sameShape = gradShape.length === shape.length;
    for (let k = 0; sameShape && k < shape.length; k++) sameShape = gradShape[k] === shape[k];
    if (!sameShape) throw rangeError(`${name}.grad`, `the parameter's shape ${shapeText(shape)}`, shapeText(gradShape));
    const gradDevice = grad.device;
    if (gradDevice !== device) throw rangeError(`${name}.grad`, `a tensor on '${device}' like the parameter`, `one on '${gradDevice}'`);
    const state = this.state.get(p);
    if (state) {
      for (let j = 0; j < state.length; j++) {
        const t = state[j]!;
        if (t.disposed || t.dtype !== 'float32' || t.device !== device) this.throwBadState(name, p, j, t, device);
      }
    }
    return [{ p, grad }];
  }

  /** The error for state tensor j of p (disposed, not float32, or on another device than the parameter). */
  private throwBadState(name: string, p: Tensor, j: number, t: Tensor, device: string): never {
    const slot = `${name}: state '${this.stateSlots(p)[j] ?? j}'`;
    handleOf(t, slot);
    throw rangeError(slot, `a tensor on '${device}' like the parameter (create the optimizer after moving the model)`, `one on '${t.device}'`);
  }

  /**
   * Creates p's missing state tensors (zero) and, for a weight-norm v, the tensor its step writes ‖v‖ into; records
   * what it created in `newState` (parameters) and `newNorms`, so that a failed step() can free it.
   */
  private allocateForStep(p: Tensor, newState: Tensor[], newNorms: Tensor[]): Tensor | null {
    const slots = this.stateSlots(p).length;
    if (slots > 0 && !this.state.has(p)) {
      newState.push(p);
      this.stateOf(p, slots);
    }
    const wn = WeightNormState.of(p);
    if (!wn) return null;
    if (wn.norm && !wn.norm.disposed && wn.norm.device === p.device) return wn.norm;
    const norm = keep(new Tensor(native.full([wn.layout()[1]], 0, p.device)));
    newNorms.push(norm);
    return norm;
  }

  /** State tensors of a parameter, created (zero) on first use and kept out of tidy(). */
  protected stateOf(p: Tensor, count: number): Tensor[] {
    let tensors = this.state.get(p);
    if (!tensors) {
      tensors = [];
      try {
        for (let j = 0; j < count; j++) tensors.push(keep(new Tensor(native.full([...p.shape], 0, p.device))));
      } catch (error) {
        for (const t of tensors) t.dispose();
        throw error;
      }
      this.state.set(p, tensors);
    }
    return tensors;
  }

  /** Updates the parameters of one group in place from their gradients, in one native call. */
  protected abstract updateGroup(group: Group, updates: readonly ParamUpdate[]): void;

  /** Frees the optimizer's state tensors. */
  dispose(): void {
    for (const tensors of this.state.values()) for (const t of tensors) t.dispose();
    this.state.clear();
    this.paramSteps.clear();
  }

  /** Names of p's state tensors, in the order stateOf() holds them (they may depend on p's group). */
  protected stateSlots(p: Tensor): readonly string[] {
    void p;
    return [];
  }

  /** A group's options besides params and lr, as a state dict records them. */
  protected groupOptions(group: Group): Record<string, number | boolean | number[]> {
    return { weightDecay: group.weightDecay };
  }

  /** The constructor's options. */
  protected hyperparameters(): Record<string, number | boolean> {
    return {};
  }

  /**
   * Everything needed to resume: step count, lr and the state tensors (the live tensors, not copies). Parameters
   * are keyed by `paramKeys[i]` (e.g. their names in the model), by default their index in params.
   */
  stateDict(paramKeys?: readonly string[]): OptimizerStateDict {
    const keys = checkParamKeys(`optim.${this.constructor.name}.stateDict`, paramKeys, this.params.length);
    const state: Record<string, Record<string, Tensor>> = {};
    const steps: Record<string, number> = {};
    this.params.forEach((p, i) => {
      const step = this.paramSteps.get(p);
      if (step !== undefined) steps[keys[i]!] = step;
      const entry: [string, Tensor][] = [];
      const tensors = this.state.get(p);
      if (tensors) this.stateSlots(p).forEach((slot, j) => entry.push([slot, tensors[j]!]));
      const wn = WeightNormState.of(p);
      if (wn?.norm && !wn.norm.disposed && wn.normVersion === p.version) entry.push(['norm', wn.norm]);
      if (entry.length > 0) state[keys[i]!] = Object.fromEntries(entry);
    });
    const paramGroups = this.paramGroups.map((g) => ({
      params: g.params.map((p) => keys[this.params.indexOf(p)]!),
      lr: g.lr,
      options: this.groupOptions(g),
    }));
    const dict: OptimizerStateDict = {
      type: this.constructor.name,
      stepCount: this.stepCount,
      steps,
      lr: this.lr,
      hyperparameters: this.hyperparameters(),
      state,
      paramGroups,
    };
    if (this.schedule) dict.schedule = this.schedule.stateDict();
    return dict;
  }

  /**
   * Restores a stateDict(): step count, lr and state tensors (copied to each parameter's device). Load the model
   * first: a saved 'norm' is adopted only when it matches the current v. All-or-nothing: on any error the optimizer
   * is left as it was.
   */
  loadStateDict(stateDict: OptimizerStateDict, paramKeys?: readonly string[]): void {
    this.prepareLoadStateDict(stateDict, paramKeys, `optim.${this.constructor.name}.loadStateDict`).commit();
  }

  /** @internal Validates and stages a load: commit() swaps the new state in and cannot fail; discard() frees it. */
  prepareLoadStateDict(stateDict: OptimizerStateDict, paramKeys: readonly string[] | undefined, where: string): StagedLoad {
    const keys = checkParamKeys(where, paramKeys, this.params.length);
    if (typeof stateDict !== 'object' || stateDict === null) throw typeError(`${where}: stateDict`, 'an optimizer state dict', stateDict);
    const { type, stepCount, lr, state } = stateDict;
    if (type !== this.constructor.name) {
      throw new TypeError(`${where}: expected the state of a ${this.constructor.name}, found the state of ${String(type)}`);
    }
    if (typeof stepCount !== 'number' || !Number.isSafeInteger(stepCount) || stepCount < 0) {
      throw typeError(`${where}: stepCount`, 'a non-negative integer', stepCount);
    }
    checkNumber(`${where}: lr`, lr, 0);
    if (typeof state !== 'object' || state === null) throw typeError(`${where}: state`, 'a record by parameter', state);
    const groupLrs = this.checkSavedGroups(where, stateDict.paramGroups, lr, keys);
    const applySchedule = this.checkSavedSchedule(where, stateDict.schedule);
    const staged: { p: Tensor; slots: NativeTensor[]; norm: NativeTensor | null }[] = [];
    const plans: { p: Tensor; slots: (Tensor | HostTensor)[]; norm: Tensor | HostTensor | null }[] = [];
    for (const [key, entry] of Object.entries(state)) {
      const index = keys.indexOf(key);
      if (index < 0) throw new RangeError(`${where}: state for '${key}', which is none of the optimizer's parameters`);
      const p = this.params[index]!;
      const slots = this.stateSlots(p);
      if (typeof entry !== 'object' || entry === null) throw typeError(`${where}: state '${key}'`, 'a record by slot', entry);
      for (const slot of Object.keys(entry)) {
        if (slot !== 'norm' && !slots.includes(slot)) {
          const expected = slots.length > 0 ? `slots ${slots.map((s) => `'${s}'`).join(', ')}` : 'no slots';
          throw new RangeError(`${where}: state '${key}' has slot '${slot}'; a ${this.constructor.name} like this one has ${expected}`);
        }
      }
      const present = slots.filter((slot) => slot in entry);
      if (present.length !== 0 && present.length !== slots.length) {
        const absent = slots.filter((slot) => !(slot in entry));
        throw new RangeError(`${where}: state '${key}' lacks slot(s) ${absent.map((s) => `'${s}'`).join(', ')}`);
      }
      for (const slot of present) {
        const shape = loadSourceShape(where, `state '${key}' slot '${slot}'`, entry[slot]);
        if (shape.length !== p.shape.length || shape.some((d, i) => d !== p.shape[i])) {
          throw rangeError(`${where}: state '${key}' slot '${slot}'`, `shape ${shapeText(p.shape)}`, shapeText(shape));
        }
      }
      let norm: Tensor | HostTensor | null = null;
      if ('norm' in entry) {
        const wn = WeightNormState.of(p);
        if (!wn) throw new RangeError(`${where}: state '${key}' has slot 'norm', but that parameter is no weight-norm direction v`);
        const shape = loadSourceShape(where, `state '${key}' slot 'norm'`, entry.norm);
        const channels = wn.layout()[1];
        if (shape.length !== 1 || shape[0] !== channels) {
          throw rangeError(`${where}: state '${key}' slot 'norm'`, `shape [${channels}]`, shapeText(shape));
        }
        norm = entry.norm!;
      }
      plans.push({ p, slots: present.map((slot) => entry[slot]!), norm });
    }
    const withState = plans.filter((plan) => plan.slots.length > 0).map((plan) => plan.p);
    const paramSteps = this.checkParamSteps(where, stateDict.steps, stepCount, keys, withState);
    try {
      for (const plan of plans) {
        const device = handleOf(plan.p, where).device!;
        staged.push({ p: plan.p, slots: [], norm: null });
        const target = staged[staged.length - 1]!;
        for (const source of plan.slots) target.slots.push(stageCopy(source, device));
        if (plan.norm) target.norm = stageCopy(plan.norm, device);
      }
    } catch (error) {
      for (const s of staged) for (const handle of [...s.slots, s.norm]) handle?.dispose();
      throw error;
    }
    return {
      commit: () => {
        for (const tensors of this.state.values()) for (const t of tensors) t.dispose();
        this.state.clear();
        for (const { p, slots: handles, norm } of staged) {
          if (handles.length > 0) this.state.set(p, handles.map((h) => keep(new Tensor(h))));
          if (norm) this.adoptSavedNorm(p, keep(new Tensor(norm)));
        }
        this.paramSteps.clear();
        for (const [p, step] of paramSteps) this.paramSteps.set(p, step);
        this.stepCount = stepCount;
        this.paramGroups.forEach((g, i) => (g.lr = groupLrs[i]!));
        applySchedule?.();
      },
      discard: () => {
        for (const s of staged) for (const handle of [...s.slots, s.norm]) handle?.dispose();
      },
    };
  }

  /**
   * The per-parameter step counts of a state dict. Without them (checkpoints written before they existed) each
   * parameter with state tensors counts `stepCount`, as every parameter did then. With them, a parameter has a
   * count exactly when it has state tensors (for an optimizer that keeps any).
   */
  private checkParamSteps(
    where: string,
    steps: unknown,
    stepCount: number,
    keys: readonly string[],
    withState: readonly Tensor[],
  ): Map<Tensor, number> {
    const counts = new Map<Tensor, number>();
    if (steps === undefined) {
      for (const p of withState) counts.set(p, stepCount);
      return counts;
    }
    if (typeof steps !== 'object' || steps === null || Array.isArray(steps)) {
      throw typeError(`${where}: steps`, 'a record of step counts by parameter', steps);
    }
    for (const [key, value] of Object.entries(steps)) {
      const index = keys.indexOf(key);
      if (index < 0) throw new RangeError(`${where}: steps for '${key}', which is none of the optimizer's parameters`);
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > stepCount) {
        throw typeError(`${where}: steps '${key}'`, `an integer in [1, ${stepCount}] (at most stepCount)`, value);
      }
      counts.set(this.params[index]!, value);
    }
    if (this.params.some((p) => this.stateSlots(p).length > 0)) {
      for (const p of withState) {
        if (!counts.has(p)) throw new RangeError(`${where}: state '${keys[this.params.indexOf(p)]}' has state tensors but no entry in steps`);
      }
      for (const p of counts.keys()) {
        if (!withState.includes(p)) throw new RangeError(`${where}: steps has '${keys[this.params.indexOf(p)]}', which has no state tensors`);
      }
    }
    return counts;
  }

  /**
   * The lr of each group from a state dict: its paramGroups must name the same parameters, group by group, as this
   * optimizer's (a group's options come from the optimizer constructed, like the hyperparameters). Without
   * paramGroups (older files) every group takes the saved lr.
   */
  private checkSavedGroups(where: string, saved: unknown, lr: number, keys: readonly string[]): number[] {
    if (saved === undefined) return this.paramGroups.map(() => lr);
    if (!Array.isArray(saved) || saved.length !== this.paramGroups.length) {
      const count = Array.isArray(saved) ? `${saved.length} groups` : typeof saved;
      throw rangeError(`${where}: paramGroups`, `${this.paramGroups.length} parameter group(s) like this optimizer's`, count);
    }
    return this.paramGroups.map((group, i) => {
      const entry = saved[i] as Partial<SavedParamGroup> | null;
      const expected = group.params.map((p) => keys[this.params.indexOf(p)]!);
      if (typeof entry !== 'object' || entry === null || !Array.isArray(entry.params)) {
        throw typeError(`${where}: paramGroups[${i}]`, '{ params, lr, options }', entry);
      }
      if (entry.params.length !== expected.length || entry.params.some((k, j) => k !== expected[j])) {
        throw new RangeError(
          `${where}: paramGroups[${i}]: the saved group holds ${listOf(entry.params)}, this optimizer's holds ${listOf(expected)}`,
        );
      }
      return checkNumber(`${where}: paramGroups[${i}].lr`, entry.lr, 0);
    });
  }

  /** How to restore a saved schedule into this optimizer's (which must be of the same type). */
  private checkSavedSchedule(where: string, saved: ScheduleState | undefined): (() => void) | null {
    if (saved === undefined) return null;
    if (!this.schedule) {
      throw new RangeError(`${where}: schedule: the state holds a ${String(saved?.type)} schedule, but this optimizer has none: create the same schedule before loading`);
    }
    return this.schedule.prepareLoad(saved, `${where}: schedule`);
  }

  /** Uses a saved ‖v‖ as v's cached norm if it matches v as loaded (else the forward recomputes it). */
  private adoptSavedNorm(v: Tensor, saved: Tensor): void {
    const wn = WeightNormState.of(v)!;
    const fresh = noGrad(() => tidy(() => F.weightNorm(wn.v, wn.g, { dim: wn.dim, eps: wn.eps }).norm.toArray()));
    const values = saved.toArray();
    const matches = values.every((x, k) => Math.abs(x - fresh[k]!) <= SAVED_NORM_TOLERANCE * Math.max(Math.abs(fresh[k]!), wn.eps));
    if (matches) wn.normUpdated(saved);
    else saved.dispose();
  }
}

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/** One parameter group of an SGD optimizer (every option set: the constructor's where the group did not say). */
export interface SGDParamGroup extends ParamGroupBase {
  momentum: number;
  dampening: number;
  nesterov: boolean;
}

/** The options of a constructor or group, checked; `defaults` fills what `options` leaves out. */
function sgdOptions(where: string, options: Partial<SGDOptions>, defaults: SGDOptions | null): Required<SGDOptions> {
  const lr = checkNumber(`${where}lr`, options.lr ?? defaults?.lr, 0);
  const momentum = checkNumber(`${where}momentum`, options.momentum ?? defaults?.momentum ?? 0, 0);
  const dampening = checkNumber(`${where}dampening`, options.dampening ?? defaults?.dampening ?? 0, 0, 1);
  const weightDecay = checkNumber(`${where}weightDecay`, options.weightDecay ?? defaults?.weightDecay ?? 0, 0);
  const nesterov = options.nesterov ?? defaults?.nesterov ?? false;
  if (typeof nesterov !== 'boolean') throw typeError(`${where}nesterov`, 'a boolean', nesterov);
  if (nesterov && (momentum === 0 || dampening !== 0)) throw new RangeError(`${where}nesterov needs momentum > 0 and dampening 0`);
  return { lr, momentum, dampening, weightDecay, nesterov };
}

/**
 * Stochastic gradient descent with optional momentum (and Nesterov) and L2 weight decay, as PyTorch defines them.
 * `params` is an array of tensors, or of groups `{ params, lr?, momentum?, ... }` with their own options.
 */
export class SGD extends Optimizer<SGDParamGroup> {
  /** The constructor's options (each group's own are in paramGroups). */
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;

  constructor(params: Tensor[] | ParamGroupSpec<SGDOptions>[], options: SGDOptions) {
    const where = 'optim.SGD';
    if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object like { lr }', options);
    const defaults = sgdOptions(`${where}: options.`, options, null);
    super(where, params, ['lr', 'momentum', 'dampening', 'weightDecay', 'nesterov'], (tensors, overrides, at) => ({
      params: tensors,
      ...sgdOptions(at, overrides as Partial<SGDOptions>, defaults),
    }));
    ({ momentum: this.momentum, dampening: this.dampening, weightDecay: this.weightDecay, nesterov: this.nesterov } = defaults);
  }

  protected override stateSlots(p: Tensor): readonly string[] {
    return this.groupOf(p).momentum !== 0 ? ['momentumBuffer'] : [];
  }

  protected override hyperparameters(): Record<string, number | boolean> {
    return { momentum: this.momentum, dampening: this.dampening, weightDecay: this.weightDecay, nesterov: this.nesterov };
  }

  protected override groupOptions(g: SGDParamGroup): Record<string, number | boolean | number[]> {
    return { momentum: g.momentum, dampening: g.dampening, weightDecay: g.weightDecay, nesterov: g.nesterov };
  }

  protected updateGroup(group: SGDParamGroup, updates: readonly ParamUpdate[]): void {
    const where = 'optim.SGD.step';
    native.optimizerSteps('sgd', {
      params: updates.map((u) => handleOf(u.p, where)),
      grads: updates.map((u) => handleOf(u.grad, where)),
      steps: updates.map((u) => u.step),
      normOutputs: updates.map((u) => u.normOutput),
      momentumBuffers: updates.map((u) => (group.momentum !== 0 ? handleOf(this.stateOf(u.p, 1)[0]!, where) : null)),
      lr: group.lr,
      weightDecay: group.weightDecay,
      momentum: group.momentum,
      dampening: group.dampening,
      nesterov: group.nesterov,
    });
  }
}

export interface AdamOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** One parameter group of Adam or Adamax. */
export interface AdamParamGroup extends ParamGroupBase {
  betas: [number, number];
  eps: number;
}

function adamOptions(where: string, options: AdamOptions, defaults: Required<AdamOptions>): Required<AdamOptions> {
  const betas = options.betas ?? defaults.betas;
  if (!Array.isArray(betas) || betas.length !== 2) throw typeError(`${where}betas`, 'a pair [beta1, beta2]', betas);
  return {
    lr: checkNumber(`${where}lr`, options.lr ?? defaults.lr, 0),
    betas: [checkNumber(`${where}betas[0]`, betas[0], 0, 1, true), checkNumber(`${where}betas[1]`, betas[1], 0, 1, true)],
    eps: checkNumber(`${where}eps`, options.eps ?? defaults.eps, 0),
    weightDecay: checkNumber(`${where}weightDecay`, options.weightDecay ?? defaults.weightDecay, 0),
  };
}

abstract class AdamFamily extends Optimizer<AdamParamGroup> {
  /** The constructor's options (each group's own are in paramGroups). */
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;

  protected constructor(
    private readonly kind: 'adam' | 'adamax',
    where: string,
    params: Tensor[] | ParamGroupSpec<AdamOptions>[],
    options: AdamOptions,
    defaultLr: number,
  ) {
    if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object', options);
    const defaults = adamOptions(`${where}: options.`, options, { lr: defaultLr, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 });
    super(where, params, ['lr', 'betas', 'eps', 'weightDecay'], (tensors, overrides, at) => ({
      params: tensors,
      ...adamOptions(at, overrides as AdamOptions, defaults),
    }));
    [this.beta1, this.beta2] = defaults.betas;
    this.eps = defaults.eps;
    this.weightDecay = defaults.weightDecay;
  }

  protected override stateSlots(): readonly string[] {
    return this.kind === 'adam' ? ['expAvg', 'expAvgSq'] : ['expAvg', 'expInf'];
  }

  protected override hyperparameters(): Record<string, number | boolean> {
    return { beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay };
  }

  protected override groupOptions(g: AdamParamGroup): Record<string, number | boolean | number[]> {
    return { betas: [...g.betas], eps: g.eps, weightDecay: g.weightDecay };
  }

  protected updateGroup(group: AdamParamGroup, updates: readonly ParamUpdate[]): void {
    const where = `optim.${this.constructor.name}.step`;
    const states = updates.map((u) => this.stateOf(u.p, 2) as [Tensor, Tensor]);
    const common = {
      params: updates.map((u) => handleOf(u.p, where)),
      grads: updates.map((u) => handleOf(u.grad, where)),
      steps: updates.map((u) => u.step),
      normOutputs: updates.map((u) => u.normOutput),
      expAvgs: states.map(([m]) => handleOf(m, where)),
      lr: group.lr,
      weightDecay: group.weightDecay,
      beta1: group.betas[0],
      beta2: group.betas[1],
      eps: group.eps,
    };
    const second = states.map(([, t]) => handleOf(t, where));
    if (this.kind === 'adam') native.optimizerSteps('adam', { ...common, expAvgSqs: second });
    else native.optimizerSteps('adamax', { ...common, expInfs: second });
  }
}

/** Adam (Kingma & Ba, 2015) with bias correction. Default lr 1e-3. `params`: tensors, or groups with their own options. */
export class Adam extends AdamFamily {
  constructor(params: Tensor[] | ParamGroupSpec<AdamOptions>[], options: AdamOptions = {}) {
    super('adam', 'optim.Adam', params, options, 1e-3);
  }
}

/** Adamax, the infinity-norm variant of Adam that the paper uses for its VAE and DQN experiments. Default lr 2e-3. */
export class Adamax extends AdamFamily {
  constructor(params: Tensor[] | ParamGroupSpec<AdamOptions>[], options: AdamOptions = {}) {
    super('adamax', 'optim.Adamax', params, options, 2e-3);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Gradient clipping (torch.nn.utils.clip_grad_norm_ / clip_grad_value_): between backward() and step().

function gradientsOf(where: string, params: unknown): Tensor[] {
  const list = params instanceof Tensor ? [params] : params;
  if (!Array.isArray(list)) throw typeError(`${where}: params`, 'a Tensor or an array of Tensors (e.g. model.parameters())', params);
  const grads: Tensor[] = [];
  list.forEach((p, i) => {
    if (!(p instanceof Tensor)) throw typeError(`${where}: params[${i}]`, 'a Tensor', p);
    if (p.grad) {
      handleOf(p.grad, `${where}: params[${i}].grad`);
      grads.push(p.grad);
    }
  });
  return grads;
}

export interface ClipGradNormOptions {
  /** 2 (default): the Euclidean norm of all gradients together; Infinity: their largest absolute value. */
  normType?: 2 | typeof Infinity;
}

/**
 * Scales every gradient of `params` in place so that their total norm is at most maxNorm, as
 * torch.nn.utils.clip_grad_norm_ does: coefficient maxNorm / (total + 1e-6), applied only when below 1. Returns
 * the total norm before clipping (NaN or Infinity if a gradient is not finite; the gradients are then scaled by
 * that coefficient too, as in PyTorch). Parameters without a gradient are skipped. The norm is summed on the host
 * in float64 (one read of each gradient).
 */
export function clipGradNorm(params: Tensor | readonly Tensor[], maxNorm: number, options: ClipGradNormOptions = {}): number {
  const where = 'optim.clipGradNorm';
  const grads = gradientsOf(where, params);
  if (typeof maxNorm !== 'number' || !(maxNorm >= 0)) throw typeError(`${where}: maxNorm`, 'a number >= 0', maxNorm);
  if (typeof options !== 'object' || options === null) throw typeError(`${where}: options`, 'an object like { normType: 2 }', options);
  const normType = options.normType ?? 2;
  if (normType !== 2 && normType !== Infinity) throw typeError(`${where}: options.normType`, '2 or Infinity', normType);
  let total = 0;
  for (const g of grads) {
    const values = g.toArray();
    if (normType === Infinity) for (const v of values) total = Math.max(total, Number.isNaN(v) ? NaN : Math.abs(v));
    else for (const v of values) total += v * v;
  }
  if (normType === 2) total = Math.sqrt(total);
  const coefficient = maxNorm / (total + 1e-6);
  if (!(coefficient >= 1)) {
    for (const g of grads) {
      native.axpby(handleOf(g, where), coefficient, handleOf(g, where), 0);
      g.version += 1;
    }
  }
  return total;
}

/** Clamps every gradient of `params` to [−clipValue, clipValue] in place (torch.nn.utils.clip_grad_value_). */
export function clipGradValue(params: Tensor | readonly Tensor[], clipValue: number): void {
  const where = 'optim.clipGradValue';
  const grads = gradientsOf(where, params);
  if (typeof clipValue !== 'number' || !(clipValue >= 0)) throw typeError(`${where}: clipValue`, 'a number >= 0', clipValue);
  for (const g of grads) {
    const values = g.toArray();
    let changed = false;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      const clamped = Math.min(clipValue, Math.max(-clipValue, v));
      if (clamped !== v) {
        values[i] = clamped;
        changed = true;
      }
    }
    if (!changed) continue;
    const clipped = native.fromArray(values, [...g.shape], g.device);
    g.replaceHandle(clipped);
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

// The learning-rate schedules (StepLR, CosineAnnealingLR, LinearLR, SequentialLR, warmupCosine) are optim.* too.
export * from './schedule.js';
