// The autograd engine's guards, as PyTorch has them: a tensor saved for the backward and changed in place after the
// forward (an optimizer step in between) makes backward() throw instead of computing wrong gradients, and a second
// backward() through a graph throws unless the first one retained it.
import { describe, expect, it } from 'vitest';

import { backend, DisposedTensorError, nn, optim, tensor, tidy, type Tensor } from '../ts/index.js';
import { bitwiseEqual, normals, reproduce, runSeed } from './helpers.js';

const F = nn.functional;
const devices: readonly ('cpu' | 'cuda')[] = ['cpu', ...(backend().cuda.usable ? (['cuda'] as const) : [])];

function parameter(values: ArrayLike<number>, shape: readonly number[], device: 'cpu' | 'cuda'): Tensor {
  const p = tensor(Float32Array.from(values), shape, { device });
  p.requiresGrad = true;
  return p;
}

describe.each(devices)('autograd on %s', (device) => {
  const input = (seed: number) => tensor(Float32Array.from(normals(8, seed)), [4, 2], { device });

  it('an optimizer step between forward and backward makes backward() throw, naming the op and the shape', () => {
    const seed = runSeed();
    const weight = parameter(normals(6, seed + 1), [3, 2], device);
    const bias = parameter(normals(3, seed + 2), [3], device);
    const optimizer = new optim.SGD([weight, bias], { lr: 0.1 });
    const loss = F.sum(F.relu(F.linear(input(seed), weight, bias)));
    weight.grad = tensor(new Float32Array(6).fill(1), [3, 2], { device });
    optimizer.step();
    optimizer.zeroGrad();
    expect(() => loss.backward()).toThrow(
      /tensor\.backward: one of the variables needed for gradient computation has been modified by an inplace operation: the \[3, 2\] tensor saved by 'linear' is at version 1; expected version 0/,
    );
    // Refused before anything ran: no gradient was accumulated.
    expect(weight.grad).toBeNull();
    expect(bias.grad).toBeNull();
  });

  it('the same through a weight-norm Linear (v changed by the step, the cached norm with it)', () => {
    const layer = new nn.Linear(2, 3, { weightNorm: true }).to(device);
    const optimizer = new optim.Adam(layer.parameters(), { lr: 0.01 });
    const x = input(runSeed());
    F.sum(layer.forward(x)).backward();
    const loss = F.sum(layer.forward(x));
    optimizer.step();
    expect(() => loss.backward()).toThrow(/modified by an inplace operation: the \[3, 2\] tensor saved by 'weightNormLinear' is at version 1; expected version 0/);
  });

  it('a step after backward() (the usual order) is fine: the next forward and backward run', () => {
    const seed = runSeed();
    const weight = parameter(normals(6, seed + 1), [3, 2], device);
    const optimizer = new optim.SGD([weight], { lr: 0.1 });
    F.sum(F.tanh(F.linear(input(seed), weight, null))).backward();
    optimizer.step();
    optimizer.zeroGrad();
    F.sum(F.tanh(F.linear(input(seed), weight, null))).backward();
    expect(weight.grad).not.toBeNull();
  });

  it('a second backward() through the same graph throws unless the first retained it', () => {
    const seed = runSeed();
    const weight = parameter(normals(6, seed + 1), [3, 2], device);
    const loss = F.sum(F.mul(F.linear(input(seed), weight, null), F.linear(input(seed + 5), weight, null)));
    loss.backward();
    const once = weight.grad!.toArray();
    expect(() => loss.backward()).toThrow(
      /tensor\.backward: trying to backward through the graph a second time: the graph of 'sum' \(output \[1\]\) was freed by an earlier backward\(\); call backward\(\{ retainGraph: true \}\)/,
    );
    expect(bitwiseEqual(weight.grad!.toArray(), once), reproduce(seed)).toBe(true);

    // Retained: the second backward accumulates again (+=, as PyTorch), then the graph is freed.
    weight.grad = null;
    const retained = F.sum(F.mul(F.linear(input(seed), weight, null), F.linear(input(seed + 5), weight, null)));
    retained.backward({ retainGraph: true });
    expect(bitwiseEqual(weight.grad!.toArray(), once), reproduce(seed)).toBe(true);
    retained.backward();
    const twice = weight.grad!.toArray();
    once.forEach((g, i) => expect(twice[i]).toBeCloseTo(2 * g, 5));
    expect(() => retained.backward()).toThrow(/a second time/);
  });

  it('a loss sharing part of a freed graph throws too; retaining the first keeps the shared part', () => {
    const seed = runSeed();
    const weight = parameter(normals(6, seed + 1), [3, 2], device);
    const hidden = F.relu(F.linear(input(seed), weight, null));
    F.sum(hidden).backward();
    expect(() => F.sum(F.mul(hidden, hidden)).backward()).toThrow(/the graph of 'relu' \(output \[4, 3\]\) was freed/);

    const shared = F.relu(F.linear(input(seed), weight, null));
    F.sum(shared).backward({ retainGraph: true });
    F.sum(F.mul(shared, shared)).backward();
  });

  it('leaves whose gradients share storage (add passes dy to both inputs) get .grads of their own', () => {
    const seed = runSeed();
    const a = parameter(normals(3, seed), [3], device);
    const b = parameter(normals(3, seed + 1), [3], device);
    const w = tensor(Float32Array.from(normals(3, seed + 2)), [3], { device });
    F.sum(F.mul(F.add(a, b), w)).backward();
    const expected = Float32Array.from(w.toArray());
    expect(bitwiseEqual(new Float32Array(a.grad!.toArray()), expected), reproduce(seed)).toBe(true);
    // Changing one .grad in place (clipping, or the next backward accumulating) must not change the other.
    optim.clipGradNorm([a], 1e-3);
    F.sum(F.mul(a, w)).backward();
    expect(bitwiseEqual(new Float32Array(b.grad!.toArray()), expected), reproduce(seed)).toBe(true);
    expect(bitwiseEqual(new Float32Array(a.grad!.toArray()), expected)).toBe(false);
  });

  it('rejects bad backward options, naming them', () => {
    const weight = parameter([1, 2], [2], device);
    const loss = F.sum(F.mul(weight, weight));
    expect(() => loss.backward({ retainGraph: 1 as unknown as boolean })).toThrow(/tensor\.backward: options\.retainGraph: expected a boolean, received the number 1/);
    expect(() => loss.backward({ retain: true } as never)).toThrow(/tensor\.backward: options: expected only the key retainGraph, received the string "retain"/);
    expect(() => loss.backward(true as never)).toThrow(/tensor\.backward: options: expected an object like \{ retainGraph: true \}, received the boolean true/);
    loss.backward();
    expect(Array.from(weight.grad!.toArray())).toEqual([2, 4]);
  });

  it('a backward() after the tidy() that ran its forward says why its saved tensors are gone', () => {
    const seed = runSeed();
    const layer = new nn.Linear(2, 3, { weightNorm: true }).to(device);
    const x = input(seed);
    // The loss is returned (kept), the logits it was computed from are not: tidy() disposes them.
    const loss = tidy(() => F.crossEntropy(layer.forward(x), [0, 1, 2, 0]));
    let caught: unknown;
    try {
      loss.backward();
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(DisposedTensorError);
    expect((caught as Error).message).toMatch(
      /^tensor\.backward: the backward of 'crossEntropy' reads a tensor that was disposed after the forward \(crossEntropy: .*used after dispose\(\)\)\. tidy\(\) disposes every tensor made inside it/,
    );
    expect(layer.parameters().map((p) => p.grad)).toEqual([null, null, null]);
    // The same step with backward() inside the tidy() runs, and every parameter gets its gradient.
    tidy(() => F.crossEntropy(layer.forward(x), [0, 1, 2, 0]).backward());
    for (const p of layer.parameters()) expect(p.grad!.shape).toEqual(p.shape);
  });
});
