// Bad input: a TypeError or RangeError (never a crash, never a silent result) whose message names the function and
// parameter, what was expected and what was received. Each row: the call, the error class, and the message parts.
import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import {
  backend,
  DisposedTensorError,
  memory,
  ops,
  randn,
  setNumThreads,
  type Tensor,
  tensor,
  zeros,
} from '../ts/index.js';
import { disposedAfterAll } from './suite-tensors.js';

const info = backend();
const overcommitAlways = (() => {
  try {
    return readFileSync('/proc/sys/vm/overcommit_memory', 'utf8').trim() === '1';
  } catch {
    return false;
  }
})();

const keep = disposedAfterAll();

const v = keep(randn([4, 5], { seed: 1 }));
const g = keep(randn([4], { seed: 2 }));
const dw = keep(randn([4, 5], { seed: 3 }));
const forward = ops.weightNorm(v, g);
const norm = keep(forward.norm);
keep(forward.w);

type ErrorClass = typeof TypeError | typeof RangeError | typeof DisposedTensorError;
interface Row {
  name: string;
  call: () => unknown;
  error: ErrorClass;
  /** Parts the message must contain, in order: where, what was expected, what was received. */
  message: RegExp[];
}

function check(rows: Row[]) {
  for (const row of rows) {
    it(row.name, () => {
      let thrown: unknown;
      try {
        row.call();
      } catch (error) {
        thrown = error;
      }
      expect(thrown, 'expected a throw').toBeInstanceOf(row.error);
      const message = (thrown as Error).message;
      for (const part of row.message) expect(message).toMatch(part);
      // where: expected ..., received ...
      if (row.error !== DisposedTensorError) expect(message).toMatch(/: expected .+, received .+/);
    });
  }
}

describe('weightNorm', () => {
  check([
    {
      name: 'g one short',
      call: () => ops.weightNorm(v, keep(randn([3]))),
      error: RangeError,
      message: [/^weightNorm: g:/, /expected shape \[4\] \(one per index of v's dim 0\)/, /received \[3\]/],
    },
    {
      name: 'g of rank 2 ([4, 1], as torch shapes it)',
      call: () => ops.weightNorm(v, keep(randn([4, 1]))),
      error: RangeError,
      message: [/^weightNorm: g:/, /expected shape \[4\]/, /received \[4, 1\]/],
    },
    {
      name: 'g for dim 1 with the length of dim 0',
      call: () => ops.weightNorm(v, g, { dim: 1 }),
      error: RangeError,
      message: [/^weightNorm: g:/, /expected shape \[5\] \(one per index of v's dim 1\)/, /received \[4\]/],
    },
    {
      name: 'g for dim null must have one value',
      call: () => ops.weightNorm(v, g, { dim: null }),
      error: RangeError,
      message: [/^weightNorm: g:/, /expected shape \[1\]/, /received \[4\]/],
    },
    {
      name: 'dim out of range (2 for rank 2)',
      call: () => ops.weightNorm(v, g, { dim: 2 }),
      error: RangeError,
      message: [/^weightNorm: options\.dim:/, /expected an axis in \[-2, 1\] for a tensor of rank 2/, /received 2/],
    },
    {
      name: 'dim out of range (-3 for rank 2)',
      call: () => ops.weightNorm(v, g, { dim: -3 }),
      error: RangeError,
      message: [/^weightNorm: options\.dim:/, /\[-2, 1\]/, /received -3/],
    },
    {
      name: 'dim on a rank-0 tensor',
      call: () => ops.weightNorm(keep(tensor([2], [])), keep(tensor([1])), { dim: 0 }),
      error: RangeError,
      message: [/^weightNorm: options\.dim:/, /rank 0/, /received 0/],
    },
    {
      name: 'dim not an integer (0.5)',
      call: () => ops.weightNorm(v, g, { dim: 0.5 }),
      error: TypeError,
      message: [/^weightNorm: options\.dim:/, /expected an integer or null/, /received the number 0\.5/],
    },
    {
      name: 'dim NaN',
      call: () => ops.weightNorm(v, g, { dim: NaN }),
      error: TypeError,
      message: [/options\.dim/, /integer or null/, /received NaN/],
    },
    {
      name: 'dim a string',
      call: () => ops.weightNorm(v, g, { dim: '0' as unknown as number }),
      error: TypeError,
      message: [/options\.dim/, /integer or null/, /received the string "0"/],
    },
    {
      name: 'v a number[]',
      call: () => ops.weightNorm([1, 2, 3] as unknown as Tensor, g),
      error: TypeError,
      message: [/^weightNorm: v:/, /expected a Tensor/, /received an array of length 3/],
    },
    {
      name: 'v a Float32Array',
      call: () => ops.weightNorm(new Float32Array(4) as unknown as Tensor, g),
      error: TypeError,
      message: [/^weightNorm: v:/, /expected a Tensor/, /received a Float32Array of length 4/],
    },
    {
      name: 'g a string',
      call: () => ops.weightNorm(v, 'g' as unknown as Tensor),
      error: TypeError,
      message: [/^weightNorm: g:/, /expected a Tensor/, /received the string "g"/],
    },
    {
      name: 'g null',
      call: () => ops.weightNorm(v, null as unknown as Tensor),
      error: TypeError,
      message: [/^weightNorm: g:/, /expected a Tensor/, /received null/],
    },
    {
      name: 'g undefined (missing)',
      call: () => (ops.weightNorm as (v: Tensor) => unknown)(v),
      error: TypeError,
      message: [/^weightNorm: g:/, /expected a Tensor/, /received undefined/],
    },
    {
      name: 'a tensor look-alike object',
      call: () => ops.weightNorm({ shape: [4, 5], toArray: () => new Float32Array(20) } as unknown as Tensor, g),
      error: TypeError,
      message: [/^weightNorm: v:/, /expected a Tensor/, /received an object/],
    },
    {
      name: 'options not an object (a number)',
      call: () => ops.weightNorm(v, g, 0 as unknown as object),
      error: TypeError,
      message: [/^weightNorm: options:/, /expected an object/, /received the number 0/],
    },
    {
      name: 'options null',
      call: () => ops.weightNorm(v, g, null as unknown as object),
      error: TypeError,
      message: [/^weightNorm: options:/, /expected an object/, /received null/],
    },
    {
      name: 'options an array',
      call: () => ops.weightNorm(v, g, [0] as unknown as object),
      error: TypeError,
      message: [/^weightNorm: options:/, /expected an object/, /received an array of length 1/],
    },
    {
      name: 'options with an unknown key (axis)',
      call: () => ops.weightNorm(v, g, { axis: 0 } as unknown as object),
      error: TypeError,
      message: [/^weightNorm: options:/, /dim, eps, fused/, /received the string "axis"/],
    },
    {
      name: 'eps 0',
      call: () => ops.weightNorm(v, g, { eps: 0 }),
      error: TypeError,
      message: [/^weightNorm: options\.eps:/, /expected a positive finite number/, /received the number 0/],
    },
    {
      name: 'eps negative',
      call: () => ops.weightNorm(v, g, { eps: -1e-12 }),
      error: TypeError,
      message: [/options\.eps/, /positive finite/, /received the number -1e-12/],
    },
    {
      name: 'eps NaN',
      call: () => ops.weightNorm(v, g, { eps: NaN }),
      error: TypeError,
      message: [/options\.eps/, /positive finite/, /received NaN/],
    },
    {
      name: 'eps Infinity',
      call: () => ops.weightNorm(v, g, { eps: Infinity }),
      error: TypeError,
      message: [/options\.eps/, /positive finite/, /received the number Infinity/],
    },
    {
      name: 'eps a string',
      call: () => ops.weightNorm(v, g, { eps: '1e-12' as unknown as number }),
      error: TypeError,
      message: [/options\.eps/, /positive finite/, /received the string "1e-12"/],
    },
    {
      name: 'fused a number',
      call: () => ops.weightNorm(v, g, { fused: 1 as unknown as boolean }),
      error: TypeError,
      message: [/^weightNorm: options\.fused:/, /expected a boolean/, /received the number 1/],
    },
    {
      name: 'fused a string',
      call: () => ops.weightNorm(v, g, { fused: 'false' as unknown as boolean }),
      error: TypeError,
      message: [/options\.fused/, /boolean/, /received the string "false"/],
    },
    {
      name: 'fused null',
      call: () => ops.weightNorm(v, g, { fused: null as unknown as boolean }),
      error: TypeError,
      message: [/options\.fused/, /boolean/, /received null/],
    },
  ]);
});

describe('weightNormBackward', () => {
  check([
    {
      name: 'dw of the wrong shape',
      call: () => ops.weightNormBackward(keep(randn([5, 4])), v, g, norm),
      error: RangeError,
      message: [/^weightNormBackward: dw:/, /expected v's shape \[4, 5\]/, /received \[5, 4\]/],
    },
    {
      name: 'dw of another rank',
      call: () => ops.weightNormBackward(keep(randn([20])), v, g, norm),
      error: RangeError,
      message: [/^weightNormBackward: dw:/, /\[4, 5\]/, /received \[20\]/],
    },
    {
      name: 'norm of the wrong length',
      call: () => ops.weightNormBackward(dw, v, g, keep(randn([5]))),
      error: RangeError,
      message: [/^weightNormBackward: norm:/, /expected shape \[4\]/, /received \[5\]/],
    },
    {
      name: 'g of the wrong length',
      call: () => ops.weightNormBackward(dw, v, keep(randn([5])), norm),
      error: RangeError,
      message: [/^weightNormBackward: g:/, /expected shape \[4\]/, /received \[5\]/],
    },
    {
      name: 'norm from dim 0 used with dim 1',
      call: () => ops.weightNormBackward(dw, v, keep(randn([5])), norm, { dim: 1 }),
      error: RangeError,
      message: [/^weightNormBackward: norm:/, /expected shape \[5\]/, /received \[4\]/],
    },
    {
      name: 'dim out of range',
      call: () => ops.weightNormBackward(dw, v, g, norm, { dim: 5 }),
      error: RangeError,
      message: [/^weightNormBackward: options\.dim:/, /\[-2, 1\]/, /received 5/],
    },
    {
      name: 'dim not an integer',
      call: () => ops.weightNormBackward(dw, v, g, norm, { dim: 1.5 }),
      error: TypeError,
      message: [/^weightNormBackward: options\.dim:/, /integer or null/, /received the number 1\.5/],
    },
    {
      name: 'dw a number[]',
      call: () => ops.weightNormBackward([1, 2] as unknown as Tensor, v, g, norm),
      error: TypeError,
      message: [/^weightNormBackward: dw:/, /expected a Tensor/, /received an array of length 2/],
    },
    {
      name: 'norm undefined (missing)',
      call: () => (ops.weightNormBackward as (dw: Tensor, v: Tensor, g: Tensor) => unknown)(dw, v, g),
      error: TypeError,
      message: [/^weightNormBackward: norm:/, /expected a Tensor/, /received undefined/],
    },
    {
      name: 'v a string',
      call: () => ops.weightNormBackward(dw, 'v' as unknown as Tensor, g, norm),
      error: TypeError,
      message: [/^weightNormBackward: v:/, /expected a Tensor/, /received the string "v"/],
    },
    {
      name: 'options with an unknown key',
      call: () => ops.weightNormBackward(dw, v, g, norm, { eps: 1e-12, saved: true } as unknown as object),
      error: TypeError,
      message: [/^weightNormBackward: options:/, /dim, eps, fused/, /received the string "saved"/],
    },
    {
      name: 'eps 0',
      call: () => ops.weightNormBackward(dw, v, g, norm, { eps: 0 }),
      error: TypeError,
      message: [/^weightNormBackward: options\.eps:/, /positive finite/, /received the number 0/],
    },
    {
      name: 'fused a string',
      call: () => ops.weightNormBackward(dw, v, g, norm, { fused: 'yes' as unknown as boolean }),
      error: TypeError,
      message: [/^weightNormBackward: options\.fused:/, /boolean/, /received the string "yes"/],
    },
  ]);
});

describe('disposed arguments', () => {
  const disposed = (shape: number[]) => {
    const t = zeros(shape);
    t.dispose();
    return t;
  };
  check([
    {
      name: 'weightNorm v',
      call: () => ops.weightNorm(disposed([4, 5]), g),
      error: DisposedTensorError,
      message: [/^weightNorm: v:/, /after dispose/],
    },
    {
      name: 'weightNorm g',
      call: () => ops.weightNorm(v, disposed([4])),
      error: DisposedTensorError,
      message: [/^weightNorm: g:/, /after dispose/],
    },
    {
      name: 'weightNormBackward norm',
      call: () => ops.weightNormBackward(dw, v, g, disposed([4])),
      error: DisposedTensorError,
      message: [/^weightNormBackward: norm:/, /Tensor\(shape=\[4\], dtype=float32, disposed\)/],
    },
    {
      name: 'toArray',
      call: () => disposed([2]).toArray(),
      error: DisposedTensorError,
      message: [/^tensor\.toArray:/, /after dispose/],
    },
    {
      name: "to('cpu')",
      call: () => disposed([2]).to('cpu'),
      error: DisposedTensorError,
      message: [/^tensor\.to:/, /after dispose/],
    },
  ]);
});

describe('tensor()', () => {
  check([
    {
      name: 'data shorter than the shape',
      call: () => tensor([1, 2, 3], [2, 2]),
      error: RangeError,
      message: [/^tensor: data:/, /expected 4 values for shape \[2, 2\]/, /received 3 values/],
    },
    {
      name: 'data longer than the shape',
      call: () => tensor(new Float32Array(5), [2, 2]),
      error: RangeError,
      message: [/^tensor: data:/, /expected 4 values/, /received 5 values/],
    },
    {
      name: 'a negative dimension',
      call: () => tensor([1, 2], [-2]),
      error: TypeError,
      message: [/^tensor: shape\[0\]:/, /expected a non-negative integer/, /received the number -2/],
    },
    {
      name: 'a non-integer dimension',
      call: () => tensor([1, 2], [1, 1.5]),
      error: TypeError,
      message: [/^tensor: shape\[1\]:/, /non-negative integer/, /received the number 1\.5/],
    },
    {
      name: 'a NaN dimension',
      call: () => tensor([1, 2], [NaN]),
      error: TypeError,
      message: [/^tensor: shape\[0\]:/, /non-negative integer/, /received NaN/],
    },
    {
      name: 'shape not an array',
      call: () => tensor([1, 2], 2 as unknown as number[]),
      error: TypeError,
      message: [/^tensor: shape:/, /expected an array of non-negative integers/, /received the number 2/],
    },
    {
      name: 'data a string',
      call: () => tensor('1,2' as unknown as number[]),
      error: TypeError,
      message: [/^tensor: data:/, /expected a number, boolean, nested array, Float32Array, Float64Array, Int32Array or Uint8Array/, /received the string "1,2"/],
    },
    {
      name: 'data null',
      call: () => tensor(null as unknown as number[]),
      error: TypeError,
      message: [/^tensor: data:/, /nested array, Float32Array/, /received null/],
    },
    {
      name: 'data undefined',
      call: () => (tensor as () => unknown)(),
      error: TypeError,
      message: [/^tensor: data:/, /nested array, Float32Array/, /received undefined/],
    },
    {
      name: 'data a Uint16Array',
      call: () => tensor(new Uint16Array(3) as unknown as Float32Array),
      error: TypeError,
      message: [/^tensor: data:/, /nested array, Float32Array/, /received a Uint16Array of length 3/],
    },
    {
      name: 'data with a string element',
      call: () => tensor([1, '2', 3] as unknown as number[]),
      error: TypeError,
      message: [/^tensor: data\[1\]:/, /expected a number/, /received the string "2"/],
    },
    {
      name: 'an unknown device',
      call: () => tensor([1], undefined, { device: 'gpu' as 'cpu' }),
      error: TypeError,
      message: [/^tensor: options\.device:/, /expected 'cpu' or 'cuda'/, /received the string "gpu"/],
    },
    {
      name: 'an unknown option',
      call: () => tensor([1], undefined, { dtyp: 'float32' } as unknown as object),
      error: TypeError,
      message: [/^tensor: options:/, /only the keys device, dtype/, /received the string "dtyp"/],
    },
  ]);
});

describe('zeros() and randn()', () => {
  check([
    {
      name: 'zeros: a negative dimension',
      call: () => zeros([3, -1]),
      error: TypeError,
      message: [/^zeros: shape\[1\]:/, /non-negative integer/, /received the number -1/],
    },
    {
      name: 'zeros: a non-integer dimension',
      call: () => zeros([2.5]),
      error: TypeError,
      message: [/^zeros: shape\[0\]:/, /non-negative integer/, /received the number 2\.5/],
    },
    {
      name: 'zeros: shape a number',
      call: () => zeros(3 as unknown as number[]),
      error: TypeError,
      message: [/^zeros: shape:/, /array of non-negative integers/, /received the number 3/],
    },
    {
      name: 'zeros: more than 2^40 elements',
      call: () => zeros([2 ** 21, 2 ** 21]),
      error: RangeError,
      message: [/^zeros: shape:/, /at most 2\^40 elements/, /received \[2097152, 2097152\]/],
    },
    {
      name: 'randn: a negative dimension',
      call: () => randn([-4]),
      error: TypeError,
      message: [/^randn: shape\[0\]:/, /non-negative integer/, /received the number -4/],
    },
    {
      name: 'randn: seed negative',
      call: () => randn([2], { seed: -1 }),
      error: TypeError,
      message: [/^randn: options\.seed:/, /expected a non-negative safe integer/, /received the number -1/],
    },
    {
      name: 'randn: seed not an integer',
      call: () => randn([2], { seed: 0.5 }),
      error: TypeError,
      message: [/^randn: options\.seed:/, /non-negative safe integer/, /received the number 0\.5/],
    },
    {
      name: 'randn: seed beyond 2^53',
      call: () => randn([2], { seed: 2 ** 53 }),
      error: TypeError,
      message: [/^randn: options\.seed:/, /non-negative safe integer/, /received the number 9007199254740992/],
    },
    {
      name: 'randn: seed a string',
      call: () => randn([2], { seed: '7' as unknown as number }),
      error: TypeError,
      message: [/^randn: options\.seed:/, /non-negative safe integer/, /received the string "7"/],
    },
    {
      name: 'randn: seed NaN',
      call: () => randn([2], { seed: NaN }),
      error: TypeError,
      message: [/^randn: options\.seed:/, /non-negative safe integer/, /received NaN/],
    },
    {
      name: 'randn: std Infinity',
      call: () => randn([2], { std: Infinity }),
      error: TypeError,
      message: [/^randn: options\.std:/, /expected a finite number/, /received the number Infinity/],
    },
    {
      name: 'randn: mean a string',
      call: () => randn([2], { mean: '0' as unknown as number }),
      error: TypeError,
      message: [/^randn: options\.mean:/, /finite number/, /received the string "0"/],
    },
    {
      name: 'randn: an unknown option',
      call: () => randn([2], { sigma: 1 } as unknown as object),
      error: TypeError,
      message: [/^randn: options:/, /device, dtype, seed, mean, std/, /received the string "sigma"/],
    },
    {
      name: "to('gpu')",
      call: () => keep(zeros([1])).to('gpu' as 'cpu'),
      error: TypeError,
      message: [/^tensor\.to: device:/, /'cpu' or 'cuda'/, /received the string "gpu"/],
    },
    {
      name: 'setNumThreads(-1)',
      call: () => setNumThreads(-1),
      error: TypeError,
      message: [/^setNumThreads: threads:/, /an integer in \[0, 1024\]/, /received the number -1/],
    },
    {
      name: 'setNumThreads(1.5)',
      call: () => setNumThreads(1.5),
      error: TypeError,
      message: [/^setNumThreads: threads:/, /integer/, /received the number 1\.5/],
    },
  ]);

  // Only where the kernel refuses what it cannot back: with vm.overcommit_memory = 1 (always overcommit, as on the
  // GPU machines here) the 4 TiB allocation succeeds and filling it gets the process OOM-killed instead.
  const skipNote = overcommitAlways ? ' — skipped: vm.overcommit_memory is 1' : '';
  it.skipIf(overcommitAlways)(`a 2^40-float (4 TiB) allocation throws, and nothing is left counted${skipNote}`, () => {
    const before = memory();
    expect(() => zeros([2 ** 20, 2 ** 20])).toThrow(/out of memory/);
    expect(() => randn([2 ** 20, 2 ** 20])).toThrow(/out of memory/);
    expect(memory()).toEqual(before);
  });
});

describe.skipIf(!info.cuda.usable)(`tensors on different devices${info.cuda.usable ? '' : ` — skipped: ${info.cuda.reason}`}`, () => {
  const onGpu = () => keep(v.to('cuda'));
  check([
    {
      name: 'weightNorm: v on cuda, g on cpu',
      call: () => ops.weightNorm(onGpu(), g),
      error: TypeError,
      message: [/^weightNorm: g:/, /expected a tensor on v's device 'cuda'/, /received Tensor\(shape=\[4\], dtype=float32, device=cpu\)/],
    },
    {
      name: 'weightNormBackward: dw on cuda, the rest on cpu',
      call: () => ops.weightNormBackward(onGpu(), v, g, norm),
      error: TypeError,
      message: [/^weightNormBackward: dw:/, /v's device 'cpu'/, /received Tensor\(shape=\[4, 5\], dtype=float32, device=cuda\)/],
    },
    {
      name: 'weightNormBackward: norm on cuda, the rest on cpu',
      call: () => ops.weightNormBackward(dw, v, g, keep(norm.to('cuda'))),
      error: TypeError,
      message: [/^weightNormBackward: norm:/, /v's device 'cpu'/, /received Tensor\(shape=\[4\], dtype=float32, device=cuda\)/],
    },
  ]);
});

describe('after all of the above', () => {
  it('the library still works (no bad call left state behind)', () => {
    const { w, norm: n } = ops.weightNorm(v, g);
    expect(w.toArray().every(Number.isFinite)).toBe(true);
    expect(n.toArray().every((x) => x > 0)).toBe(true);
    w.dispose();
    n.dispose();
  });
});
