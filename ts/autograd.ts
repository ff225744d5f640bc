// Reverse-mode automatic differentiation. Each differentiable op records a GradNode on its output: its inputs and a
// backward function that maps the output's gradient to the inputs' gradients. backward() walks the graph once in
// reverse topological order; gradients arriving at a tensor from several consumers are added; leaves that require
// a gradient accumulate into .grad (+=, as PyTorch does), so zeroGrad() is needed between steps. A leaf is finished
// as soon as its last contribution has arrived: its .grad is final then, and its post-accumulate hooks
// (Tensor.registerPostAccumulateGradHook) fire while the rest of the graph is still running. As in PyTorch, a
// backward() frees the graph it ran through (unless retainGraph), and refuses to run if a tensor an op saved for it
// was changed in place after the forward: each node keeps the versions of its saved tensors (plain JS numbers).
import { native } from './native.js';
import { DisposedTensorError, shapeText, typeError } from './errors.js';
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
  /** When the op ran (a counter): backward() runs the nodes latest first, as PyTorch's engine does. */
  readonly sequence: number;
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
let nextSequence = 0;

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

/** @internal Whether record() attaches a node for these inputs: an op may skip work only its backward needs. */
export function willRecord(inputs: readonly (Tensor | null)[]): boolean {
  return gradEnabled && inputs.some((t) => t?.requiresGrad);
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
  if (willRecord(inputs)) {
    const savedTensors = saved.filter((t): t is Tensor => t !== null);
    output.requiresGrad = true;
    output.gradNode = {
      name,
      inputs,
      backward,
      saved: savedTensors,
      savedVersions: savedTensors.map((t) => t.version),
      sequence: nextSequence++,
    };
  }
  return output;
}

/**
 * The tensors reachable from root that need a gradient, in the order backward() visits them: the ones made by an op
 * from the latest op to the earliest (a topological order: an op runs after the ops that made its inputs), then the
 * leaves. A depth-first order would also be topological, but it can put a layer's weight-norm node after every
 * layer below it (they hang off its activation input), which would hold that layer's parameters back to the end of
 * the backward.
 */
function topologicalOrder(root: Tensor): Tensor[] {
  const reached = new Set<Tensor>([root]);
  const stack = [root]; // iterative: deep graphs would overflow the call stack
  while (stack.length > 0) {
    for (const input of stack.pop()!.gradNode?.inputs ?? []) {
      if (input?.requiresGrad && !reached.has(input)) {
        reached.add(input);
        stack.push(input);
      }
    }
  }
  const latest = (t: Tensor) => t.gradNode?.sequence ?? -1;
  return [...reached].sort((a, b) => latest(b) - latest(a));
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

/**
 * A node's backward, with a disposed saved tensor explained: the usual cause is a tidy() that returned the loss and
 * disposed the intermediates its graph reads, and the op's own message ("used after dispose()") does not say so.
 */
function runNodeBackward(where: string, node: GradNode, dy: Tensor, needs: boolean[]): (Tensor | null)[] {
  try {
    return node.backward!(dy, needs);
  } catch (error) {
    if (!(error instanceof DisposedTensorError)) throw error;
    throw new DisposedTensorError(
      `${where}: the backward of '${node.name}' reads a tensor that was disposed after the forward (${error.message}). ` +
        'tidy() disposes every tensor made inside it when it returns, the intermediates the graph saved included: ' +
        'call backward() inside the tidy() that ran the forward, or keep() what the graph needs',
    );
  }
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
  // How many gradient contributions each leaf still awaits (one per edge from a node of this graph). A leaf is
  // finished the moment its count reaches zero, not at its place in `order` (where the depth-first order puts every
  // leaf near the end): its .grad is final then, and its post-accumulate hooks fire while the rest of the backward
  // runs, which is what lets data-parallel training start averaging the last layers' gradients early.
  const pendingContributions = new Map<Tensor, number>();
  for (const tensor of order) {
    for (const input of tensor.gradNode?.inputs ?? []) {
      if (input?.requiresGrad && !input.gradNode) pendingContributions.set(input, (pendingContributions.get(input) ?? 0) + 1);
    }
  }
  // Gradients made some leaf's .grad without a copy (the same tensor object reaching two leaves is copied the
  // second time).
  const adopted = new Set<Tensor>();
  const finishLeaf = (leaf: Tensor) => {
    const dy = gradients.get(leaf);
    // Every contribution was null (not differentiable along these paths): nothing accumulated, no hook, as PyTorch.
    if (!dy) return;
    gradients.delete(leaf);
    // Accumulate into .grad, which outlives any tidy() around the training step. A first gradient becomes .grad
    // as it is when nothing else shares its storage (a copy per parameter per step was a pass over every
    // parameter's size); one that shares it (an alias another input or tensor also holds) is copied, since .grad
    // is changed in place later (accumulation, clipping).
    if (leaf.grad) {
      native.axpby(handleOf(leaf.grad, 'grad'), 1, handleOf(dy, 'gradient'), 1);
      dy.dispose();
    } else if (!adopted.has(dy) && native.ownsStorageAlone(handleOf(dy, 'gradient'))) {
      adopted.add(dy);
      leaf.grad = keep(dy);
    } else {
      leaf.grad = keep(new Tensor(native.scale(handleOf(dy, 'gradient'), 1)));
      dy.dispose();
    }
    leaf.runPostAccumulateGradHooks();
  };
  try {
    noGrad(() => {
      if (!root.gradNode) finishLeaf(root); // backward() on a one-element parameter itself
      for (const tensor of order) {
        const node = tensor.gradNode;
        if (!node) continue; // leaves are finished by their last consumer, below
        const dy = gradients.get(tensor);
        // No dy: every consumer returned null for this tensor. It then sends nothing on, but its leaves still count
        // it as having run.
        if (dy) {
          gradients.delete(tensor);
          const needs = node.inputs.map((input) => input !== null && input.requiresGrad);
          const inputGradients = runNodeBackward(where, node, dy, needs);
          dy.dispose();
          node.inputs.forEach((input, i) => {
            const gradient = inputGradients[i];
            if (input && needs[i] && gradient) accumulate(gradients, input, gradient);
            else gradient?.dispose();
          });
        }
        // After all of this node's gradients are in: an input used twice here (x * x) is finished once, after both.
        for (const input of node.inputs) {
          if (!input?.requiresGrad || input.gradNode) continue;
          const left = pendingContributions.get(input)! - 1;
          pendingContributions.set(input, left);
          if (left === 0) finishLeaf(input);
        }
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
