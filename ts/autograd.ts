// Reverse-mode automatic differentiation. Each differentiable op records a GradNode on its output: its inputs and a
// backward function that maps the output's gradient to the inputs' gradients. backward() walks the graph once in
// reverse topological order; gradients arriving at a tensor from several consumers are added; leaves that require
// a gradient accumulate into .grad (+=, as PyTorch does), so zeroGrad() is needed between steps. As in PyTorch, a
// backward() frees the graph it ran through (unless retainGraph), and refuses to run if a tensor an op saved for it
// was changed in place after the forward: each node keeps the versions of its saved tensors (plain JS numbers).
import { native } from './native.js';
import { shapeText, typeError } from './errors.js';
import { keep } from './scope.js';
import { handleOf, setBackwardHook, Tensor } from './tensor.js';

export type BackwardFunction = (dy: Tensor, needs: readonly boolean[]) => (Tensor | null)[];

export interface GradNode {
  readonly name: string;
  /** Empty once the graph is freed. */
  inputs: readonly (Tensor | null)[];
  /**
   * Gradients for the inputs (null where not needed: needs[i] false or the input is not differentiable). Each
   * returned gradient must be a tensor of its own (a new result or a view from alias()), never dy itself: dy is
   * disposed as soon as its node has run, to keep the backward's peak memory low. null once the graph is freed
   * (a backward() without retainGraph ran through this node), which drops the tensors its closure saved.
   */
  backward: BackwardFunction | null;
  /** The tensors the backward function reads, and their versions when the op ran: an in-place change is an error. */
  saved: readonly Tensor[];
  savedVersions: readonly number[];
}

export interface BackwardOptions {
  /**
   * Keep the graph after this backward() so that another backward() can run through it again (default false:
   * the graph is freed, and a second backward() through it throws).
   */
  retainGraph?: boolean;
}

/** @internal A new handle on the same storage (a free view), for a gradient that passes through unchanged. */
export function alias(t: Tensor, shape: readonly number[] = t.shape): Tensor {
  return new Tensor(native.reshape(handleOf(t, 'alias'), [...shape]));
}

let gradEnabled = true;

/** Whether ops currently record the graph (false inside noGrad()). */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn without recording the graph (evaluation, initialization, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError(`noGrad: fn: expected a function, received ${fn === null ? 'null' : typeof fn}`);
  const previous = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/**
 * @internal Attaches a node to `output` when grad mode is on and some input requires a gradient. `saved` lists the
 * tensors the backward function reads besides dy (default: all the inputs, which is stricter than needed for an op
 * like add that reads none: it may pass []); their versions are recorded now, and backward() refuses to run if one
 * of them was changed in place since (an optimizer step between forward and backward). Tensors the op creates
 * itself need not be listed: nothing updates them in place.
 */
export function record(
  output: Tensor,
  name: string,
  inputs: readonly (Tensor | null)[],
  backward: BackwardFunction,
  saved: readonly (Tensor | null)[] = inputs,
): Tensor {
  if (gradEnabled && inputs.some((t) => t?.requiresGrad)) {
    const savedTensors = saved.filter((t): t is Tensor => t !== null);
    output.requiresGrad = true;
    output.gradNode = { name, inputs, backward, saved: savedTensors, savedVersions: savedTensors.map((t) => t.version) };
  }
  return output;
}

function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  // Iterative DFS (deep graphs would overflow the call stack).
  const stack: [Tensor, boolean][] = [[root, false]];
  while (stack.length > 0) {
    const [tensor, expanded] = stack.pop()!;
    if (expanded) {
      order.push(tensor);
      continue;
    }
    if (visited.has(tensor)) continue;
    visited.add(tensor);
    stack.push([tensor, true]);
    for (const input of tensor.gradNode?.inputs ?? []) {
      if (input?.requiresGrad && !visited.has(input)) stack.push([input, false]);
    }
  }
  return order.reverse();
}

function accumulate(into: Map<Tensor, Tensor>, tensor: Tensor, gradient: Tensor): void {
  const existing = into.get(tensor);
  if (!existing) {
    into.set(tensor, gradient);
    return;
  }
  const sum = new Tensor(native.binary('add', handleOf(existing, 'gradient'), handleOf(gradient, 'gradient')));
  existing.dispose();
  gradient.dispose();
  into.set(tensor, sum);
}

/**
 * Checks every node before any gradient is computed, so that a refused backward() leaves every .grad as it was:
 * a node whose graph was freed by an earlier backward(), or whose saved tensors changed in place since its forward
 * (their gradients would be computed from the new values: silently wrong).
 */
function checkGraph(where: string, order: readonly Tensor[]): void {
  for (const tensor of order) {
    const node = tensor.gradNode;
    if (!node) continue;
    if (!node.backward) {
      throw new Error(
        `${where}: trying to backward through the graph a second time: the graph of '${node.name}' (output ` +
          `${shapeText(tensor.shape)}) was freed by an earlier backward(); call backward({ retainGraph: true }) the ` +
          'first time to backward through it again',
      );
    }
    node.saved.forEach((saved, i) => {
      if (saved.version === node.savedVersions[i]) return;
      throw new Error(
        `${where}: one of the variables needed for gradient computation has been modified by an inplace ` +
          `operation: the ${shapeText(saved.shape)} tensor saved by '${node.name}' is at version ${saved.version}; ` +
          `expected version ${node.savedVersions[i]} (an optimizer step or a load between the forward and ` +
          'backward()? call backward() before optimizer.step())',
      );
    });
  }
}

function checkBackwardOptions(where: string, options: unknown): boolean {
  if (options === undefined) return false;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(`${where}: options`, 'an object like { retainGraph: true }', options);
  }
  for (const key of Object.keys(options)) if (key !== 'retainGraph') throw typeError(`${where}: options`, 'only the key retainGraph', key);
  const retainGraph = (options as BackwardOptions).retainGraph ?? false;
  if (typeof retainGraph !== 'boolean') throw typeError(`${where}: options.retainGraph`, 'a boolean', retainGraph);
  return retainGraph;
}

function backward(root: Tensor, options?: BackwardOptions): void {
  const where = 'tensor.backward';
  handleOf(root, where);
  const retainGraph = checkBackwardOptions(where, options);
  if (root.size !== 1) {
    throw new RangeError(`${where}: expected a one-element tensor (a loss), received [${root.shape.join(', ')}]`);
  }
  if (!root.requiresGrad) {
    throw new TypeError(`${where}: the tensor does not require a gradient (no parameter contributed to it, or it was computed inside noGrad())`);
  }
  const order = topologicalOrder(root);
  checkGraph(where, order);
  const gradients = new Map<Tensor, Tensor>();
  gradients.set(root, new Tensor(native.full([...root.shape], 1, root.device)));
  try {
    noGrad(() => {
      for (const tensor of order) {
        const dy = gradients.get(tensor);
        if (!dy) continue;
        const node = tensor.gradNode;
        if (!node) {
          // A leaf: accumulate into .grad, which outlives any tidy() around the training step.
          if (tensor.grad) {
            native.axpby(handleOf(tensor.grad, 'grad'), 1, handleOf(dy, 'gradient'), 1);
          } else {
            tensor.grad = keep(new Tensor(native.scale(handleOf(dy, 'gradient'), 1)));
          }
          dy.dispose();
          continue;
        }
        const needs = node.inputs.map((input) => input !== null && input.requiresGrad);
        const inputGradients = node.backward!(dy, needs);
        dy.dispose();
        node.inputs.forEach((input, i) => {
          const gradient = inputGradients[i];
          if (input && needs[i] && gradient) accumulate(gradients, input, gradient);
          else gradient?.dispose();
        });
      }
    });
  } finally {
    for (const gradient of gradients.values()) gradient.dispose();
    // Without retainGraph the graph is consumed, as in PyTorch: dropping the closures lets the tensors they saved
    // go, and a second backward() through these nodes throws instead of silently accumulating again.
    if (!retainGraph) {
      for (const tensor of order) {
        const node = tensor.gradNode;
        if (!node) continue;
        node.backward = null;
        node.inputs = [];
        node.saved = [];
        node.savedVersions = [];
      }
    }
  }
}

setBackwardHook(backward);
