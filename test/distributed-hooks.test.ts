// Tensor.registerPostAccumulateGradHook, which data-parallel training uses to start averaging gradients during
// backward(): a hook fires once per backward() per leaf, after the leaf's last contribution, with .grad final then
// (compared with .grad after backward() has returned, bit for bit); the last layer's parameters are finished before
// the first layer's; retainGraph, a leaf reached through several paths, removal and the argument checks.
import { describe, expect, it } from 'vitest';

import { manualSeed, nn, tensor, type Tensor } from '../ts/index.js';
import { normals, runSeed } from './helpers.js';

const F = nn.functional;

function parameter(values: ArrayLike<number>, shape: readonly number[]): Tensor {
  const p = tensor(Float32Array.from(values), shape);
  p.requiresGrad = true;
  return p;
}

describe('post-accumulate gradient hooks', () => {
  it('fire once per leaf with the final .grad, the last layer first, while the backward is still running', () => {
    const seed = runSeed();
    manualSeed(seed);
    const model = new nn.Sequential(
      new nn.Linear(6, 8, { weightNorm: true }), new nn.Tanh(),
      new nn.Linear(8, 8, { weightNorm: true }), new nn.Tanh(),
      new nn.Linear(8, 3, { weightNorm: true }),
    );
    const params = model.parameters();
    const fired: { index: number; values: Float32Array; othersFinished: number }[] = [];
    params.forEach((p, index) =>
      p.registerPostAccumulateGradHook((t) => {
        expect(t).toBe(p);
        // How many parameters already had their gradient at this moment.
        fired.push({ index, values: p.grad!.toArray() as Float32Array, othersFinished: params.filter((q) => q.grad).length });
      }),
    );
    const x = tensor(Float32Array.from(normals(5 * 6, seed + 1)), [5, 6]);
    const y = model.forward(x);
    F.sum(F.mul(y, y)).backward();
    expect(fired.map((f) => f.index).sort((a, b) => a - b)).toEqual(params.map((_, i) => i)); // each exactly once
    for (const f of fired) expect(Array.from(f.values)).toEqual(Array.from(params[f.index]!.grad!.toArray()));
    // Every parameter of the last layer is finished before any of the first layer's (module order: layer 1 first).
    const layerOf = (index: number) => Math.floor(index / 3);
    const position = (layer: number, pick: 'first' | 'last') => {
      const positions = fired.flatMap((f, k) => (layerOf(f.index) === layer ? [k] : []));
      return pick === 'first' ? Math.min(...positions) : Math.max(...positions);
    };
    expect(params).toHaveLength(9);
    expect(position(2, 'last')).toBeLessThan(position(1, 'first'));
    expect(position(1, 'last')).toBeLessThan(position(0, 'first'));
    // The first hook ran while other parameters still had no gradient: during backward(), not after it.
    expect(fired[0]!.othersFinished).toBe(1);
  });

  it('a leaf reached through several paths fires once, after the last contribution', () => {
    const seed = runSeed();
    const w = parameter(normals(4, seed), [4]);
    const x = tensor(Float32Array.from(normals(4, seed + 1)), [4]);
    const seen: number[][] = [];
    w.registerPostAccumulateGradHook(() => seen.push(Array.from(w.grad!.toArray())));
    // Three uses: w·x, w·w (the same input twice in one op), and tanh(w) through a longer path.
    const loss = F.add(F.add(F.sum(F.mul(w, x)), F.sum(F.mul(w, w))), F.sum(F.tanh(w)));
    loss.backward();
    expect(seen).toHaveLength(1);
    const wv = w.toArray();
    const xv = x.toArray();
    // d/dw = x + 2w + (1 - tanh²w), in float64; float32 rounding of a few operations: 1e-5 relative.
    const expected = Array.from(wv, (v, i) => xv[i]! + 2 * v + (1 - Math.tanh(v) ** 2));
    seen[0]!.forEach((g, i) => expect(Math.abs(g - expected[i]!)).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(expected[i]!))));
  });

  it('retainGraph: each backward() fires again, after accumulating into .grad', () => {
    const seed = runSeed();
    const w = parameter(normals(3, seed), [3]);
    const seen: number[][] = [];
    w.registerPostAccumulateGradHook(() => seen.push(Array.from(w.grad!.toArray())));
    const loss = F.sum(F.mul(w, w));
    loss.backward({ retainGraph: true });
    loss.backward();
    expect(seen).toHaveLength(2);
    const once = Array.from(w.toArray(), (v) => 2 * v);
    seen[0]!.forEach((g, i) => expect(Math.abs(g - once[i]!)).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(once[i]!))));
    seen[1]!.forEach((g, i) => expect(Math.abs(g - 2 * once[i]!)).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(once[i]!))));
  });

  it('runs hooks in registration order; remove() stops one (twice is harmless), also from inside a hook', () => {
    const w = parameter(normals(2, runSeed()), [2]);
    const calls: string[] = [];
    const a = w.registerPostAccumulateGradHook(() => calls.push('a'));
    const b = w.registerPostAccumulateGradHook(() => {
      calls.push('b');
      b.remove(); // removing itself must not skip the next hook of this round
    });
    w.registerPostAccumulateGradHook(() => calls.push('c'));
    F.sum(w).backward();
    expect(calls).toEqual(['a', 'b', 'c']);
    a.remove();
    a.remove();
    F.sum(w).backward();
    expect(calls).toEqual(['a', 'b', 'c', 'c']);
  });

  it('a leaf the loss does not depend on does not fire and gets no .grad', () => {
    const w = parameter([1, 2], [2]);
    const unused = parameter([3], [1]);
    let fired = 0;
    unused.registerPostAccumulateGradHook(() => fired++);
    w.registerPostAccumulateGradHook(() => fired++);
    F.sum(F.mul(w, w)).backward();
    expect(fired).toBe(1);
    expect(unused.grad).toBeNull();
  });

  it('rejects a non-function, a tensor without requiresGrad, and a non-leaf, with clear errors', () => {
    const w = parameter([1, 2], [2]);
    // @ts-expect-error a wrong type on purpose
    expect(() => w.registerPostAccumulateGradHook(42)).toThrow(/registerPostAccumulateGradHook: hook: expected a function/);
    expect(() => tensor([1]).registerPostAccumulateGradHook(() => undefined)).toThrow(/does not require a gradient/);
    expect(() => F.mul(w, w).registerPostAccumulateGradHook(() => undefined)).toThrow(/only a leaf tensor.*output of 'mul'/);
  });

  it('an exception in a hook ends that backward() and reaches the caller', () => {
    const w = parameter([1, 2], [2]);
    w.registerPostAccumulateGradHook(() => {
      throw new Error('hook failed');
    });
    expect(() => F.sum(F.mul(w, w)).backward()).toThrow('hook failed');
  });
});
