// Reverse-mode automatic differentiation. Each differentiable op records a GradNode on its output: its inputs and a
// backward function that maps the output's gradient to the inputs' gradients. backward() walks the graph once in
// reverse topological order; gradients arriving at a tensor from several consumers are added; leaves that require
// a gradient accumulate into .grad (+=, as PyTorch does), so zeroGrad() is needed between steps.
import { native } from './native.js';
import { keep } from './scope.js';
import { handleOf, setBackwardHook, Tensor } from './tensor.js';

export interface GradNode {
  readonly name: string;
  readonly inputs: readonly (Tensor | null)[];
  /**
   * Gradients for the inputs (null where not needed: needs[i] false or the input is not differentiable). Each
   * returned gradient must be a tensor of its own (a new result or a view from alias()), never dy itself: dy is
   * disposed as soon as its node has run, to keep the backward's peak memory low.
   */
  backward(dy: Tensor, needs: readonly boolean[]): (Tensor | null)[];
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

/** @internal Attaches a node to `output` when grad mode is on and some input requires a gradient. */
export function record(
  output: Tensor,
  name: string,
  inputs: readonly (Tensor | null)[],
  backward: GradNode['backward'],
): Tensor {
  if (gradEnabled && inputs.some((t) => t?.requiresGrad)) {
    output.requiresGrad = true;
    output.gradNode = { name, inputs, backward };
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

function backward(root: Tensor): void {
  const where = 'tensor.backward';
  handleOf(root, where);
  if (root.size !== 1) {
    throw new RangeError(`${where}: expected a one-element tensor (a loss), received [${root.shape.join(', ')}]`);
  }
  if (!root.requiresGrad) {
    throw new TypeError(`${where}: the tensor does not require a gradient (no parameter contributed to it, or it was computed inside noGrad())`);
  }
  const gradients = new Map<Tensor, Tensor>();
  gradients.set(root, new Tensor(native.full([...root.shape], 1, root.device)));
  noGrad(() => {
    for (const tensor of topologicalOrder(root)) {
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
      const inputGradients = node.backward(dy, needs);
      dy.dispose();
      node.inputs.forEach((input, i) => {
        const gradient = inputGradients[i];
        if (input && needs[i] && gradient) accumulate(gradients, input, gradient);
        else gradient?.dispose();
      });
    }
  });
}

setBackwardHook(backward);
