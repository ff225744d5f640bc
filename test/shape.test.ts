// Shape ops (ts/shape.ts) on every available backend: views (no new memory, the version counter shared with the
// base), copies against the float64 references of test/reference/shape.ts on fresh seeded inputs (forward, and the
// backward through L = Σ y ⊙ c), zero-size dims, negative dims, rank 0 and 1, every dtype through the copies, the
// CPU sums' determinism, and the errors. Copies move values without arithmetic, so values must match exactly;
// the index ops' backwards add float32 terms, checked to 1e-6 of the gradient's scale (a handful of terms).
import { describe, expect, it } from 'vitest';

import {
  backend,
  cat,
  chunk,
  concat,
  DisposedTensorError,
  expand,
  flatten,
  flip,
  gather,
  indexSelect,
  memory,
  narrow,
  nn,
  optim,
  permute,
  randn,
  scatterAdd,
  setNumThreads,
  slice,
  split,
  squeeze,
  stack,
  type Tensor,
  tensor,
  tidy,
  transpose,
  unsqueeze,
  view,
  zeros,
} from '../ts/index.js';
import { maxAbs, relativeError, reproduce, runSeed, uniformGenerator } from './helpers.js';
import { native } from '../ts/native.js';
import * as ref from './reference/shape.js';

const F = nn.functional;
const cudaUsable = backend().cuda.usable;
const cudaSkipped = cudaUsable ? '' : ` — skipped: ${backend().cuda.reason ?? 'CUDA not compiled in'}`;
const devices = ['cpu', 'cuda'] as const;
type Device = (typeof devices)[number];

/** Index sums (a few float32 terms per element) against the float64 reference, relative to the largest value. */
const SUM_TOLERANCE = 1e-6;

const live = () => memory().cpu.tensors + memory().cuda.tensors;

/** A random integer in [lo, hi] from `uniform`. */
const between = (uniform: () => number, lo: number, hi: number) => lo + Math.floor(uniform() * (hi - lo + 1));

function randomShape(uniform: () => number, rank: number, maxDim = 4, zeroChance = 0): number[] {
  return Array.from({ length: rank }, () => (uniform() < zeroChance ? 0 : between(uniform, 1, maxDim)));
}

function shuffled(n: number, uniform: () => number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = between(uniform, 0, i);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** A float32 tensor requiring a gradient, and its values. */
function leaf(shape: number[], seed: number, device: Device): { x: Tensor; values: number[] } {
  const x = randn(shape, { seed, device });
  x.requiresGrad = true;
  return { x, values: Array.from(x.toArray()) };
}

/** Runs L = Σ y ⊙ c for a random c and returns c's values (the gradient each input should see, routed back). */
function backwardWithCotangent(y: Tensor, seed: number): number[] {
  const c = randn([...y.shape], { seed, device: y.device });
  F.sum(F.mul(y, c)).backward();
  return Array.from(c.toArray());
}

function int32(values: number[], shape: number[], device: Device): Tensor {
  return tensor(Int32Array.from(values), shape, { device, dtype: 'int32' });
}

for (const device of devices) {
  const skipped = device === 'cuda' ? cudaSkipped : '';

  describe.skipIf(skipped !== '')(`views on ${device}${skipped}`, () => {
    it('reshape, view, flatten, squeeze, unsqueeze and contiguous keep the values and allocate nothing', () => {
      const seed = runSeed();
      tidy(() => {
        const x = randn([2, 1, 3, 4], { seed, device });
        const values = Array.from(x.toArray());
        const bytes = memory()[device].bytes;
        const cases: [Tensor, number[]][] = [
          [x.reshape(6, -1), [6, 4]],
          [x.reshape([0 + 4, 6]), [4, 6]],
          [view(x, [24]), [24]],
          [x.view(-1, 2, 2), [6, 2, 2]],
          [flatten(x), [24]],
          [x.flatten(1), [2, 12]],
          [x.flatten(-3, -2), [2, 3, 4]],
          [x.flatten(0, 1), [2, 3, 4]],
          [F.flatten(x), [2, 12]],
          [squeeze(x), [2, 3, 4]],
          [x.squeeze(1), [2, 3, 4]],
          [x.squeeze(0), [2, 1, 3, 4]],
          [x.squeeze([1, -1]), [2, 3, 4]],
          [unsqueeze(x, 0), [1, 2, 1, 3, 4]],
          [x.unsqueeze(-1), [2, 1, 3, 4, 1]],
          [x.unsqueeze(-5), [1, 2, 1, 3, 4]],
          [x.contiguous(), [2, 1, 3, 4]],
        ];
        expect(memory()[device].bytes, 'views allocate no memory').toBe(bytes);
        cases.forEach(([y, shape], i) => {
          expect(y.shape, `case ${i}`).toEqual(shape);
          expect(Array.from(y.toArray()), `case ${i} (${reproduce(seed)})`).toEqual(values);
        });
      });
    });

    it('a view outlives its disposed base, and the base its disposed view', () => {
      const base = tensor([1, 2, 3, 4, 5, 6], [2, 3], { device });
      const v = base.reshape(3, 2);
      const w = base.flatten();
      base.dispose();
      expect(Array.from(v.toArray())).toEqual([1, 2, 3, 4, 5, 6]);
      v.dispose();
      expect(Array.from(w.toArray())).toEqual([1, 2, 3, 4, 5, 6]);
      expect(() => v.toArray()).toThrow(DisposedTensorError);
      w.dispose();
    });

    it('rank 0, rank 1 and zero-size dims', () => {
      tidy(() => {
        const scalar = tensor([3], [], { device });
        expect(flatten(scalar).shape).toEqual([1]);
        expect(scalar.unsqueeze(0).shape).toEqual([1]);
        expect(scalar.unsqueeze(-1).shape).toEqual([1]);
        expect(scalar.squeeze().shape).toEqual([]);
        expect(scalar.squeeze(0).shape).toEqual([]);
        expect(scalar.reshape([1, 1]).shape).toEqual([1, 1]);
        const vector = tensor([1, 2, 3], [3], { device });
        expect(F.flatten(vector).shape, 'nn.functional.flatten keeps a batch dim').toEqual([3, 1]);
        expect(vector.flatten().shape).toEqual([3]);
        expect(vector.unsqueeze(1).shape).toEqual([3, 1]);
        const empty = zeros([0, 1, 3], { device });
        expect(empty.squeeze().shape).toEqual([0, 3]);
        expect(empty.reshape(3, 0, -1).shape).toEqual([3, 0, 0]);
        expect(empty.flatten(1).shape).toEqual([0, 3]);
        expect(F.flatten(empty).shape).toEqual([0, 0]);
      });
    });

    it('gradients pass through views back to the base shape', () => {
      const seed = runSeed();
      tidy(() => {
        const { x } = leaf([2, 3, 1], seed, device);
        const y = x.squeeze(-1).unsqueeze(0).reshape(3, 2).flatten();
        const c = backwardWithCotangent(y, seed + 1);
        expect(x.grad!.shape).toEqual([2, 3, 1]);
        expect(Array.from(x.grad!.toArray()), reproduce(seed)).toEqual(c.map(Math.fround));
        x.grad!.dispose();
      });
    });
  });

  describe.skipIf(skipped !== '')(`the version counter of views on ${device}${skipped}`, () => {
    it('is shared: an update of the base is seen through the view and back', () => {
      tidy(() => {
        const base = randn([2, 3], { device });
        const v = base.reshape(6);
        const w = v.unsqueeze(0);
        base.version += 1;
        expect([v.version, w.version]).toEqual([1, 1]);
        w.version += 1;
        expect(base.version).toBe(2);
        // A copy has its own.
        const t = base.transpose(0, 1);
        base.version += 1;
        expect(t.version).toBe(0);
      });
    });

    it('backward() refuses a graph that saved a view of a tensor updated in place since (an optimizer step)', () => {
      const seed = runSeed();
      tidy(() => {
        const p = randn([2, 3], { seed, device });
        p.requiresGrad = true;
        const opt = new optim.SGD([p], { lr: 0.1 });
        F.sum(F.mul(p, p)).backward(); // a gradient for the step
        const v = p.reshape(6);
        const loss = F.sum(F.mul(v, v)); // mul saves the view v, not p
        opt.step();
        expect(() => loss.backward()).toThrow(/modified by an inplace operation: the \[6\] tensor saved by 'mul'/);
        p.grad!.dispose();
        p.dispose();
      });
    });

    it('and runs when nothing changed in between', () => {
      const seed = runSeed();
      tidy(() => {
        const p = randn([2, 3], { seed, device });
        p.requiresGrad = true;
        const v = p.reshape(6);
        F.sum(F.mul(v, v)).backward();
        const want = Array.from(p.toArray(), (x) => 2 * x);
        expect(relativeError(p.grad!.toArray(), want), reproduce(seed)).toBe(0);
        p.grad!.dispose();
      });
    });
  });

  describe.skipIf(skipped !== '')(`copies against the float64 reference on ${device}${skipped}`, () => {
    it('permute and transpose of random ranks and shapes (zero-size dims included), forward and backward', () => {
      const seed = runSeed();
      const uniform = uniformGenerator(seed);
      for (let trial = 0; trial < 12; trial++) {
        tidy(() => {
          const rank = between(uniform, 1, 6);
          const shape = randomShape(uniform, rank, 4, 0.1);
          const dims = shuffled(rank, uniform);
          const { x, values } = leaf(shape, seed + trial, device);
          const y = trial % 2 === 0 ? permute(x, dims) : x.permute(...dims);
          const want = ref.permute(values, shape, dims);
          const what = `permute ${JSON.stringify(shape)} by ${JSON.stringify(dims)} (${reproduce(seed)})`;
          expect(y.shape, what).toEqual(want.shape);
          expect(Array.from(y.toArray()), what).toEqual(want.y);
          const c = backwardWithCotangent(y, seed + 100 + trial);
          const inverse = dims.map((_, k) => dims.indexOf(k));
          expect(Array.from(x.grad!.toArray()), `${what}: gradient`).toEqual(ref.permute(c, want.shape, inverse).y);
          x.grad!.dispose();
          const d0 = between(uniform, -rank, rank - 1);
          const d1 = between(uniform, -rank, rank - 1);
          const swapped = shape.map((_, k) => k).map((k) => (k === (d0 + rank) % rank ? (d1 + rank) % rank : k === (d1 + rank) % rank ? (d0 + rank) % rank : k));
          expect(Array.from(transpose(x, d0, d1).toArray()), `transpose ${d0}, ${d1} of ${JSON.stringify(shape)}`).toEqual(ref.permute(values, shape, swapped).y);
        });
      }
    });

    it('a transpose large enough to run on several threads', () => {
      const seed = runSeed();
      tidy(() => {
        const shape = [64, 33, 20];
        const x = randn(shape, { seed, device });
        const y = x.permute(2, 0, 1);
        expect(Array.from(y.toArray()), reproduce(seed)).toEqual(ref.permute(Array.from(x.toArray()), shape, [2, 0, 1]).y);
      });
    });

    // [size, start, end, step, the indices Python's list(range(size))[start:end:step] gives]
    const pythonSlices: [number, number | null, number | null, number, number[]][] = [
      [5, null, null, 1, [0, 1, 2, 3, 4]],
      [5, 1, null, 2, [1, 3]],
      [5, -2, null, 1, [3, 4]],
      [5, null, -1, 1, [0, 1, 2, 3]],
      [5, -7, 3, 1, [0, 1, 2]],
      [5, 2, 100, 2, [2, 4]],
      [5, 3, 1, 1, []],
      [5, -1, -3, 1, []],
      [5, 0, 5, 3, [0, 3]],
      [0, null, null, 1, []],
      [0, -1, 2, 2, []],
      [1, -1, null, 1, [0]],
      [7, 1, 6, 2, [1, 3, 5]],
      [7, -6, -1, 4, [1, 5]],
    ];
    it('slice follows Python slicing (negative and clamped bounds, steps), forward and backward', () => {
      const seed = runSeed();
      pythonSlices.forEach(([size, start, end, step, indices], k) => {
        tidy(() => {
          const shape = [2, size, 3];
          const { x, values } = leaf(shape, seed + k, device);
          const y = x.slice(1, start, end, step);
          const want = ref.along(values, shape, 1, indices);
          const what = `[:, ${start}:${end}:${step}] of ${JSON.stringify(shape)} (${reproduce(seed)})`;
          expect(y.shape, what).toEqual(want.shape);
          expect(Array.from(y.toArray()), what).toEqual(want.y);
          if (y.size === 0) return;
          const c = backwardWithCotangent(y, seed + 50 + k);
          const dx = new Array<number>(values.length).fill(0);
          want.y.forEach((_, flat) => {
            const i = ref.unravel(flat, want.shape);
            dx[ref.ravel([i[0]!, indices[i[1]!]!, i[2]!], shape)] = c[flat]!;
          });
          expect(Array.from(x.grad!.toArray()), `${what}: gradient`).toEqual(dx);
          x.grad!.dispose();
        });
      });
      tidy(() => {
        const x = tensor([1, 2, 3, 4, 5, 6], [2, 3], { device });
        expect(Array.from(slice(x, -1, -2).toArray())).toEqual([2, 3, 5, 6]);
        expect(Array.from(slice(x, 0, 1, 2).toArray())).toEqual([4, 5, 6]);
        expect(Array.from(narrow(x, 1, -2, 2).toArray())).toEqual([2, 3, 5, 6]);
        expect(narrow(x, 1, 3, 0).shape).toEqual([2, 0]);
      });
    });

    it('split and chunk give the pieces PyTorch gives', () => {
      tidy(() => {
        const sizes = (pieces: Tensor[]) => pieces.map((p) => p.shape[0]);
        const x5 = tensor([0, 1, 2, 3, 4], [5], { device });
        expect(sizes(split(x5, 2))).toEqual([2, 2, 1]);
        expect(sizes(x5.split([1, 0, 4]))).toEqual([1, 0, 4]);
        expect(split(x5, [1, 0, 4])[2]!.toArray()).toEqual(Float32Array.from([1, 2, 3, 4]));
        expect(sizes(chunk(x5, 3))).toEqual([2, 2, 1]);
        expect(sizes(x5.chunk(5))).toEqual([1, 1, 1, 1, 1]);
        expect(sizes(chunk(tensor([0, 1, 2, 3, 4, 5], [6], { device }), 4))).toEqual([2, 2, 2]);
        expect(sizes(chunk(zeros([0], { device }), 3))).toEqual([0, 0, 0]);
        expect(sizes(split(zeros([0], { device }), 2))).toEqual([0]);
        const m = tensor([1, 2, 3, 4, 5, 6], [2, 3], { device });
        const [left, right] = m.split(2, -1);
        expect([Array.from(left!.toArray()), Array.from(right!.toArray())]).toEqual([[1, 2, 4, 5], [3, 6]]);
      });
    });

    it('flip, forward and backward', () => {
      const seed = runSeed();
      const uniform = uniformGenerator(seed);
      for (let trial = 0; trial < 6; trial++) {
        tidy(() => {
          const rank = between(uniform, 1, 4);
          const shape = randomShape(uniform, rank, 4, 0.1);
          const dims = shuffled(rank, uniform).slice(0, between(uniform, 1, rank));
          const { x, values } = leaf(shape, seed + trial, device);
          const y = flip(x, dims.map((d) => (uniform() < 0.5 ? d - rank : d)));
          const what = `flip ${JSON.stringify(shape)} along ${JSON.stringify(dims)} (${reproduce(seed)})`;
          expect(Array.from(y.toArray()), what).toEqual(ref.flip(values, shape, dims));
          if (y.size === 0) return;
          const c = backwardWithCotangent(y, seed + 10 + trial);
          expect(Array.from(x.grad!.toArray()), `${what}: gradient`).toEqual(ref.flip(c, shape, dims));
          x.grad!.dispose();
        });
      }
    });

    it('concat and stack of random parts (zero-size ones included), forward and backward', () => {
      const seed = runSeed();
      const uniform = uniformGenerator(seed);
      for (let trial = 0; trial < 8; trial++) {
        tidy(() => {
          const rank = between(uniform, 1, 4);
          const shape = randomShape(uniform, rank, 3);
          const dim = between(uniform, 0, rank - 1);
          const count = between(uniform, 1, 4);
          const parts = Array.from({ length: count }, (_, k) => {
            const partShape = shape.map((s, d) => (d === dim ? between(uniform, 0, 3) : s));
            return { ...leaf(partShape, seed + 10 * trial + k, device), shape: partShape };
          });
          const y = trial % 2 === 0 ? concat(parts.map((p) => p.x), dim - (trial % 4 === 0 ? rank : 0)) : cat(parts.map((p) => p.x), dim);
          const want = ref.concat(parts.map((p) => ({ x: p.values, shape: p.shape })), dim);
          const what = `concat of ${JSON.stringify(parts.map((p) => p.shape))} along ${dim} (${reproduce(seed)})`;
          expect(y.shape, what).toEqual(want.shape);
          expect(Array.from(y.toArray()), what).toEqual(want.y);
          if (y.size > 0) {
            const c = backwardWithCotangent(y, seed + 1000 + trial);
            let start = 0;
            for (const [k, part] of parts.entries()) {
              const indices = Array.from({ length: part.shape[dim]! }, (_, i) => start + i);
              start += part.shape[dim]!;
              const gradient = part.x.grad ? Array.from(part.x.grad.toArray()) : [];
              expect(gradient, `${what}: gradient of part ${k}`).toEqual(ref.along(c, want.shape, dim, indices).y);
              part.x.grad?.dispose();
            }
          }
          const same = parts.map((p, k) => ({ ...leaf(shape, seed + 500 + k, device), shape }));
          const at = between(uniform, -rank - 1, rank);
          const stacked = stack(same.map((p) => p.x), at);
          const axis = at < 0 ? at + rank + 1 : at;
          const wantStack = ref.concat(same.map((p) => ({ x: p.values, shape: [...shape.slice(0, axis), 1, ...shape.slice(axis)] })), axis);
          expect(stacked.shape).toEqual(wantStack.shape);
          expect(Array.from(stacked.toArray()), `stack along ${at} (${reproduce(seed)})`).toEqual(wantStack.y);
          const c = backwardWithCotangent(stacked, seed + 2000 + trial);
          same.forEach((p, k) => {
            expect(Array.from(p.x.grad!.toArray()), `stack: gradient of part ${k}`).toEqual(ref.along(c, wantStack.shape, axis, [k]).y);
            p.x.grad!.dispose();
          });
        });
      }
    });

    it('expand repeats size-1 dims and adds leading ones; its backward sums the copies', () => {
      const seed = runSeed();
      tidy(() => {
        const { x, values } = leaf([3, 1, 2], seed, device);
        const y = x.expand(2, -1, 4, 2);
        expect(y.shape).toEqual([2, 3, 4, 2]);
        const want = Array.from({ length: 48 }, (_, flat) => {
          const [, i, , k] = ref.unravel(flat, [2, 3, 4, 2]);
          return values[ref.ravel([i!, 0, k!], [3, 1, 2])]!;
        });
        expect(Array.from(y.toArray()), reproduce(seed)).toEqual(want);
        const c = backwardWithCotangent(y, seed + 1);
        const dx = new Array<number>(6).fill(0);
        c.forEach((value, flat) => {
          const [, i, , k] = ref.unravel(flat, [2, 3, 4, 2]);
          dx[ref.ravel([i!, 0, k!], [3, 1, 2])] += value;
        });
        expect(relativeError(x.grad!.toArray(), dx), reproduce(seed)).toBeLessThanOrEqual(SUM_TOLERANCE);
        x.grad!.dispose();
        expect(expand(tensor([5], [], { device }), [3]).toArray()).toEqual(Float32Array.from([5, 5, 5]));
        expect(expand(zeros([0, 1], { device }), [0, 3]).shape).toEqual([0, 3]);
        expect(expand(zeros([2, 1], { device }), [0, 2, 0]).shape).toEqual([0, 2, 0]);
        expect(() => x.expand(3, 1, 4)).toThrow(new RangeError("expand: sizes[2]: expected 2 (the size of x's dim 2, which is not 1) or -1, received 4"));
        expect(() => x.expand(3, 2)).toThrow(/^expand: sizes: expected at least 3 sizes/);
        expect(() => x.expand(-1, 3, 1, 2)).toThrow(/^expand: sizes\[0\]: expected a size >= 0 for a new leading dim, received -1$/);
      });
    });

    it('bfloat16, int32 and bool tensors go through the copies and views unchanged', () => {
      tidy(() => {
        const values = [1.5, -2, 3.25, 0, 7, -0.5];
        const halves = tensor(values, [2, 3], { device, dtype: 'bfloat16' });
        const t = halves.transpose(0, 1);
        expect(t.dtype).toBe('bfloat16');
        expect(Array.from(t.toArray())).toEqual(ref.permute(values, [2, 3], [1, 0]).y);
        expect(Array.from(concat([halves, halves.flip(0)], 0).toArray())).toEqual([...values, 0, 7, -0.5, 1.5, -2, 3.25]);
        expect(halves.reshape(6).dtype).toBe('bfloat16');
        const ints = int32([1, -2, 2147483647, -2147483648, 5, 6], [3, 2], device);
        expect(Array.from(ints.transpose(0, 1).toArray())).toEqual([1, 2147483647, 5, -2, -2147483648, 6]);
        expect(Array.from(stack([ints, ints], 1).slice(0, 1, 2).toArray())).toEqual([2147483647, -2147483648, 2147483647, -2147483648]);
        const picked = gather(ints, 0, int32([2, 0], [1, 2], device));
        expect([picked.dtype, Array.from(picked.toArray())]).toEqual(['int32', [5, -2]]);
        const flags = tensor([1, 0, 0, 1, 1, 0], [2, 3], { device, dtype: 'bool' });
        const flipped = flags.flip(1).permute(1, 0);
        expect(flipped.dtype).toBe('bool');
        expect(Array.from(flipped.toArray())).toEqual([0, 0, 0, 1, 1, 1]);
        expect(Array.from(indexSelect(flags, 1, int32([2, 2, 0], [3], device)).toArray())).toEqual([0, 0, 1, 0, 0, 1]);
      });
    });
  });

  describe.skipIf(skipped !== '')(`index ops against the float64 reference on ${device}${skipped}`, () => {
    it('indexSelect with repeated indices, forward and backward (the repeats add up)', () => {
      const seed = runSeed();
      const uniform = uniformGenerator(seed);
      for (let trial = 0; trial < 6; trial++) {
        tidy(() => {
          const rank = between(uniform, 1, 4);
          const shape = randomShape(uniform, rank, 4);
          const dim = between(uniform, 0, rank - 1);
          const indices = Array.from({ length: between(uniform, 0, 6) }, () => between(uniform, 0, shape[dim]! - 1));
          const { x, values } = leaf(shape, seed + trial, device);
          const y = x.indexSelect(dim - (trial % 2) * rank, int32(indices, [indices.length], device));
          const want = ref.along(values, shape, dim, indices);
          const what = `indexSelect ${JSON.stringify(indices)} along ${dim} of ${JSON.stringify(shape)} (${reproduce(seed)})`;
          expect(y.shape, what).toEqual(want.shape);
          expect(Array.from(y.toArray()), what).toEqual(want.y);
          if (y.size === 0) return;
          const c = backwardWithCotangent(y, seed + 10 + trial);
          const dx = new Array<number>(values.length).fill(0);
          c.forEach((value, flat) => {
            const i = ref.unravel(flat, want.shape);
            i[dim] = indices[i[dim]!]!;
            dx[ref.ravel(i, shape)] += value;
          });
          expect(relativeError(x.grad!.toArray(), dx), `${what}: gradient`).toBeLessThanOrEqual(SUM_TOLERANCE);
          x.grad!.dispose();
        });
      }
    });

    it('gather and scatterAdd of random shapes, forward and backward', () => {
      const seed = runSeed();
      const uniform = uniformGenerator(seed);
      for (let trial = 0; trial < 8; trial++) {
        tidy(() => {
          const rank = between(uniform, 1, 4);
          const shape = randomShape(uniform, rank, 4);
          const dim = between(uniform, 0, rank - 1);
          const indexShape = shape.map((s, d) => (d === dim ? between(uniform, 1, 5) : between(uniform, 1, s)));
          const srcShape = indexShape.map((s) => s + between(uniform, 0, 1));
          const indices = Array.from({ length: ref.sizeOf(indexShape) }, () => between(uniform, 0, shape[dim]! - 1));
          const index = int32(indices, indexShape, device);
          const what = `x ${JSON.stringify(shape)}, dim ${dim}, index ${JSON.stringify(indexShape)}, src ${JSON.stringify(srcShape)} (${reproduce(seed)})`;

          const { x, values } = leaf(shape, seed + trial, device);
          const y = gather(x, dim, index);
          expect(y.shape, `gather: ${what}`).toEqual(indexShape);
          expect(Array.from(y.toArray()), `gather: ${what}`).toEqual(ref.gather(values, shape, dim, indices, indexShape));
          const c = backwardWithCotangent(y, seed + 10 + trial);
          const zero = new Array<number>(values.length).fill(0);
          // Errors relative to the largest sum of the terms' magnitudes: a float sum of a few terms is within a few
          // ulps of that, while terms that cancel can leave a result far smaller (a seed once summed three src
          // values and x to 2e-6 relative to the result itself, exact to 2 ulps of the terms).
          const magnitude = (v: ArrayLike<number>) => Array.from(v, Math.abs);
          expect(relativeError(x.grad!.toArray(), ref.scatterAdd(zero, shape, dim, indices, indexShape, c, indexShape),
            maxAbs(ref.scatterAdd(zero, shape, dim, indices, indexShape, magnitude(c), indexShape))), `gather gradient: ${what}`)
            .toBeLessThanOrEqual(SUM_TOLERANCE);
          x.grad!.dispose();

          const { x: base, values: baseValues } = leaf(shape, seed + 20 + trial, device);
          const { x: src, values: srcValues } = leaf(srcShape, seed + 30 + trial, device);
          const z = base.scatterAdd(dim, index, src);
          expect(relativeError(z.toArray(), ref.scatterAdd(baseValues, shape, dim, indices, indexShape, srcValues, srcShape),
            maxAbs(ref.scatterAdd(magnitude(baseValues), shape, dim, indices, indexShape, magnitude(srcValues), srcShape))), `scatterAdd: ${what}`)
            .toBeLessThanOrEqual(SUM_TOLERANCE);
          const cz = backwardWithCotangent(z, seed + 40 + trial);
          expect(Array.from(base.grad!.toArray()), `scatterAdd gradient of x: ${what}`).toEqual(cz.map(Math.fround));
          // src's gradient: c gathered where index reaches, 0 in the part of src no index covers.
          const picked = ref.gather(cz, shape, dim, indices, indexShape);
          const dsrc = new Array<number>(ref.sizeOf(srcShape)).fill(0);
          picked.forEach((value, flat) => (dsrc[ref.ravel(ref.unravel(flat, indexShape), srcShape)] = value));
          expect(Array.from(src.grad!.toArray()), `scatterAdd gradient of src: ${what}`).toEqual(dsrc.map(Math.fround));
          base.grad!.dispose();
          src.grad!.dispose();
        });
      }
    });

    it('empty indices give empty results and zero gradients', () => {
      tidy(() => {
        const { x } = leaf([3, 4], 1, device);
        const y = indexSelect(x, 1, int32([], [0], device));
        expect(y.shape).toEqual([3, 0]);
        const g = gather(x, 0, int32([], [0, 4], device));
        expect(g.shape).toEqual([0, 4]);
        const s = scatterAdd(x, 0, int32([], [0, 4], device), zeros([0, 4], { device }));
        expect(Array.from(s.toArray())).toEqual(Array.from(x.toArray()));
      });
    });
  });

  describe.skipIf(skipped !== '')(`errors on ${device}${skipped}`, () => {
    it('dims out of range are RangeErrors naming the parameter and the range; non-integers TypeErrors', () => {
      tidy(() => {
        const x = zeros([2, 3], { device });
        expect(() => transpose(x, 5, 0)).toThrow(new RangeError('transpose: dim0: expected an integer in [-2, 2), received 5'));
        expect(() => x.transpose(0, -3)).toThrow(new RangeError('transpose: dim1: expected an integer in [-2, 2), received -3'));
        expect(() => x.transpose(0.5, 1)).toThrow(TypeError);
        expect(() => unsqueeze(x, 3)).toThrow(new RangeError('unsqueeze: dim: expected an integer in [-3, 3), received 3'));
        expect(() => x.squeeze(2)).toThrow(/^squeeze: dim: expected an integer in \[-2, 2\), received 2$/);
        expect(() => x.permute(0)).toThrow(/^permute: dims: expected 2 dims/);
        expect(() => x.permute(1, -1)).toThrow(/^permute: dims\[1\]: expected each dim once, received dim 1 a second time$/);
        expect(() => x.flatten(1, 0)).toThrow(/^flatten: endDim: /);
        expect(() => x.slice(2, 0, 1)).toThrow(/^slice: dim: expected an integer in \[-2, 2\), received 2$/);
        expect(() => x.slice(1, 0, 1, 0)).toThrow(new RangeError('slice: step: expected an integer >= 1, received 0'));
        expect(() => x.slice(1, 0.5)).toThrow(TypeError);
        expect(() => x.narrow(1, 2, 2)).toThrow(/^narrow: length: expected at most 1 /);
        expect(() => x.narrow(1, -4, 1)).toThrow(/^narrow: start: expected an integer in \[-3, 3\], received -4$/);
        expect(() => x.split([1, 1], 1)).toThrow(/^split: sizeOrSections: expected sizes adding up to 3 .*received \[1, 1\] \(sum 2\)$/);
        expect(() => x.chunk(0)).toThrow(/^chunk: chunks: expected an integer >= 1, received 0$/);
        expect(() => flip(x, [0, -2])).toThrow(/^flip: dims: expected each dim once/);
        expect(() => x.reshape(4, -1)).toThrow(/^reshape: shape: expected a shape with 6 elements/);
      });
    });

    it('concat and stack name the mismatched tensor and dim', () => {
      tidy(() => {
        const a = zeros([2, 3], { device });
        expect(() => concat([a, a, zeros([3, 3], { device }), a], 1)).toThrow(
          new RangeError('concat: tensors[2]: expected size 2 in dim 0 like tensors[0] [2, 3] (all dims but 1 must match), received [3, 3]'),
        );
        expect(() => concat([a, zeros([2, 3, 1], { device })])).toThrow(/^concat: tensors\[1\]: expected 2 dims like tensors\[0\] \[2, 3\], received \[2, 3, 1\]$/);
        expect(() => concat([a, tensor([1], [1, 1], { device, dtype: 'bfloat16' })], 0)).toThrow(TypeError);
        expect(() => concat([])).toThrow(/^concat: tensors: expected a non-empty array of tensors/);
        expect(() => concat([a, 3 as unknown as Tensor])).toThrow(/^concat: tensors\[1\]: expected a Tensor/);
        expect(() => stack([a, zeros([3, 2], { device })])).toThrow(/^stack: tensors\[1\]: expected shape \[2, 3\] like tensors\[0\], received \[3, 2\]$/);
        expect(() => stack([a], 3)).toThrow(new RangeError('stack: dim: expected an integer in [-3, 3), received 3'));
      });
    });

    it('an index out of range is a RangeError naming the value and its position, raised before anything is written', () => {
      tidy(() => {
        const x = randn([2, 3], { device });
        const before = Array.from(x.toArray());
        const index = int32([0, 1, 2, 1, 2, 7], [2, 3], device);
        const src = randn([2, 3], { device });
        const rows = int32([1, -1], [2], device);
        const tensors = live();
        expect(() => gather(x, 1, index)).toThrow(new RangeError("gather: index: expected values in [0, 3) (x's size along dim 1), received 7 at index[1, 2]"));
        expect(() => x.scatterAdd(1, index, src)).toThrow(/^scatterAdd: index: expected values in \[0, 3\) .*received 7 at index\[1, 2\]$/);
        expect(() => indexSelect(x, 0, rows)).toThrow(/^indexSelect: index: expected values in \[0, 2\) .*received -1 at index\[1\]$/);
        expect(live() - tensors, 'no result survives a refused call').toBe(0);
        expect(Array.from(x.toArray()), 'x is untouched').toEqual(before);
        expect(() => gather(x, 1, randn([2, 3], { device }))).toThrow(/^gather: index: expected an 'int32' tensor/);
        expect(() => gather(x, 1, int32([0, 0], [2], device))).toThrow(/^gather: index: expected 2 dims like x \[2, 3\], received \[2\]$/);
        expect(() => gather(x, 0, int32([0, 0, 0, 0], [1, 4], device))).toThrow(/^gather: index: expected at most 3 in dim 1/);
        expect(() => indexSelect(x, 0, int32([0, 0], [1, 2], device))).toThrow(/^indexSelect: index: expected a 1-D tensor/);
        expect(() => scatterAdd(x, 0, int32([0, 0], [1, 2], device), randn([1, 1], { device }))).toThrow(/^scatterAdd: src: expected at least index's 2 in dim 1/);
      });
    });

    it('a disposed tensor is a DisposedTensorError', () => {
      const x = zeros([2, 2], { device });
      x.dispose();
      expect(() => x.transpose(0, 1)).toThrow(DisposedTensorError);
      expect(() => x.reshape(4)).toThrow(DisposedTensorError);
      expect(() => concat([x])).toThrow(DisposedTensorError);
    });
  });
}

describe('CPU determinism of the index sums', () => {
  it('scatterAdd and the indexSelect backward give the same bits for 1, 2 and 3 threads', () => {
    const seed = runSeed();
    const run = () =>
      tidy(() => {
        const pick = uniformGenerator(seed); // the same indices every run
        const shape = [40, 300];
        const indexShape = [2000, 300];
        const index = int32(Array.from({ length: 2000 * 300 }, () => between(pick, 0, 39)), indexShape, 'cpu');
        const z = scatterAdd(zeros(shape), 0, index, randn(indexShape, { seed }));
        const { x } = leaf([40, 300], seed + 1, 'cpu');
        const rows = int32(Array.from({ length: 5000 }, () => between(pick, 0, 39)), [5000], 'cpu');
        backwardWithCotangent(indexSelect(x, 0, rows), seed + 2);
        const out = [Array.from(z.toArray()), Array.from(x.grad!.toArray())];
        x.grad!.dispose();
        return out;
      });
    try {
      setNumThreads(1);
      const one = run();
      setNumThreads(2);
      const two = run();
      setNumThreads(3);
      const three = run();
      expect(two, reproduce(seed)).toEqual(one);
      expect(three, reproduce(seed)).toEqual(one);
    } finally {
      setNumThreads(0);
    }
  });
});

describe('the raw binding re-checks what ts/shape.ts validated', () => {
  // Deliberately out-of-contract calls, as a caller skipping ts/ would make them.
  it('refuses walks outside the tensor, overlapping in-place copies, and mismatched concat parts', () => {
    const x = native.randn([2, 3], 1, 'cpu', 0, 1);
    const other = native.zeros([3, 3], 'cpu');
    try {
      expect(() => native.stridedCopy(x, { shape: [2, 3], strides: [3, 1], offset: 1 })).toThrow(/^stridedCopy: walk: the walk reaches elements \[1, 6\] of a tensor of 6$/);
      expect(() => native.stridedCopy(x, { shape: [3], strides: [-1], offset: 1 })).toThrow(/reaches elements \[-1, 1\]/);
      expect(() => native.stridedCopy(x, { shape: [2], strides: [1, 1], offset: 0 })).toThrow(TypeError);
      expect(() => native.stridedCopyInto(x, { shape: [2, 3], strides: [3, 1], offset: 0 }, x)).toThrow(/must not share storage/);
      expect(() => native.stridedCopyInto(other, { shape: [2, 3], strides: [3, 1], offset: 4 }, x)).toThrow(/reaches elements \[4, 9\] of a tensor of 9/);
      expect(() => native.concat([x, other], 1)).toThrow(/^concat: tensors\[1\]: \[3, 3\] float32 does not match tensors\[0\] \[2, 3\] outside dim 1$/);
      expect(() => native.concat([x], 2)).toThrow(/^concat: dim: expected a dim in \[0, 2\), got 2$/);
      expect(() => native.gather(x, 0, x)).toThrow(/^gather: index: expected an int32 tensor, got a float32 one$/);
      // A 9-dim permutation in which every dim moves cannot be merged below the kernels' 8.
      const big = native.zeros([2, 2, 2, 2, 2, 2, 2, 2, 2], 'cpu');
      const strides = [1, 2, 4, 8, 16, 32, 64, 128, 256];
      expect(() => native.stridedCopy(big, { shape: [2, 2, 2, 2, 2, 2, 2, 2, 2], strides, offset: 0 })).toThrow(/leaves 9 dims after merging, more than the 8/);
      big.dispose();
    } finally {
      x.dispose();
      other.dispose();
    }
  });

  it('merges dims that stay contiguous, so a high-rank permutation that moves few dims runs', () => {
    tidy(() => {
      const shape = [2, 1, 3, 1, 2, 1, 2, 1, 1, 2, 1];
      const x = randn(shape, { seed: 3 });
      const dims = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 9];
      expect(Array.from(x.permute(dims).toArray())).toEqual(ref.permute(Array.from(x.toArray()), shape, dims).y);
      const swapOuter = [2, 1, 0, 3, 4, 5, 6, 7, 8, 9, 10];
      expect(Array.from(x.permute(swapOuter).toArray())).toEqual(ref.permute(Array.from(x.toArray()), shape, swapOuter).y);
    });
  });
});
