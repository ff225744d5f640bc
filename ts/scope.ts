// tidy(): every tensor created inside the callback is disposed when it returns, except the ones it returns and the
// ones marked with keep() (parameters, optimizer state, gradients of parameters). Memory then stays flat over
// thousands of training steps without a dispose() per intermediate.

interface Disposable {
  dispose(): void;
  readonly disposed: boolean;
}

const scopes: Set<Disposable>[] = [];
const kept = new WeakSet<Disposable>();

/** @internal Called by every new Tensor. */
export function track(tensor: Disposable): void {
  scopes[scopes.length - 1]?.add(tensor);
}

/** Exempts a tensor from every enclosing tidy() (it lives until disposed explicitly). Returns it. */
export function keep<T extends Disposable>(tensor: T): T {
  if (typeof tensor !== 'object' || tensor === null || typeof (tensor as Disposable).dispose !== 'function') {
    throw new TypeError(`keep: tensor: expected a Tensor, received ${tensor === null ? 'null' : typeof tensor}`);
  }
  kept.add(tensor);
  for (const scope of scopes) scope.delete(tensor);
  return tensor;
}

/** @internal Whether keep() was called on the tensor. */
export function isKept(tensor: Disposable): boolean {
  return kept.has(tensor);
}

function collect(value: unknown, into: Set<Disposable>, seen: Set<unknown>): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if (typeof (value as Disposable).dispose === 'function' && 'disposed' in (value as object)) {
    into.add(value as Disposable);
    return;
  }
  if (Array.isArray(value)) {
    for (const item of value) collect(item, into, seen);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const item of Object.values(value)) collect(item, into, seen);
  }
}

/**
 * Runs fn and disposes every tensor it created, except those in its result (a tensor, or arrays/plain objects of
 * tensors) and those passed to keep(). Nested tidy() calls hand their results to the enclosing scope.
 */
export function tidy<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError(`tidy: expected a function, received ${typeof fn}`);
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    scopes.pop();
    for (const tensor of scope) tensor.dispose();
    throw error;
  }
  scopes.pop();
  if (result instanceof Promise) {
    for (const tensor of scope) tensor.dispose();
    throw new TypeError('tidy: the callback returned a Promise; tidy() only tracks synchronous work');
  }
  const survivors = new Set<Disposable>();
  collect(result, survivors, new Set());
  for (const tensor of scope) {
    if (survivors.has(tensor)) scopes[scopes.length - 1]?.add(tensor);
    else tensor.dispose();
  }
  return result;
}
