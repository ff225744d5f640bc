// The raw binding's contract (ts/native.ts): enum-like arguments are checked natively (an unknown kind is a TypeError
// naming the function, the parameter, the accepted values and what came, never a silent default), option objects
// are read field by field with errors naming the field, and valid calls compute what the float64 references say.
// The public API validates first, so these calls go to the binding directly, as a caller skipping ts/ would.
import { describe, expect, it } from 'vitest';
import { native, type NativeTensor } from '../ts/native.js';

// Deliberately ill-typed calls go through this view: the point is what the native side does with them.
const raw = native as unknown as Record<string, (...args: unknown[]) => unknown>;

function randn(shape: number[], seed: number, mean = 0, std = 1): NativeTensor {
  return native.randn(shape, seed, 'cpu', mean, std);
}

function values(t: NativeTensor): number[] {
  return Array.from(t.toArray());
}

/** A TypeError (or RangeError) whose message contains every fragment. */
function expectError(call: () => unknown, type: typeof TypeError | typeof RangeError, fragments: string[]): void {
  let caught: unknown;
  try {
    call();
  } catch (error) {
    caught = error;
  }
  expect(caught, 'the call should have thrown').toBeInstanceOf(type);
  const message = (caught as Error).message;
  for (const fragment of fragments) expect(message).toContain(fragment);
}

// float32 results against float64 references of a few float32 operations each: 1e-5 relative plus 1e-6 absolute
// covers their rounding (a handful of ulps) and nothing like a wrong formula.
function expectClose(actual: number[], expected: number[]): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    expect(Math.abs(actual[i]! - expected[i]!), `element ${i}: ${actual[i]} vs ${expected[i]}`).toBeLessThanOrEqual(
      1e-6 + 1e-5 * Math.abs(expected[i]!),
    );
  }
}

describe('enum-like arguments: an unknown kind is a TypeError, not a default', () => {
  const x = randn([2, 3], 11);
  const y = randn([2, 3], 12);

  it('activation and activationBackward accept relu and tanh only (gelu used to run as ReLU)', () => {
    expectError(() => raw.activation!('gelu', x, 0), TypeError, ['activation', 'kind', "'relu'", "'tanh'", "got 'gelu'"]);
    expectError(() => raw.activationBackward!('sigmoid', x, y, 0), TypeError, [
      'activationBackward',
      'kind',
      "'relu' or 'tanh'",
      "got 'sigmoid'",
    ]);
    expectError(() => raw.activation!(undefined, x, 0), TypeError, ['activation: kind', 'got undefined']);
  });

  it('binary, channelOp, channelReduce and optimizerStep name their accepted values', () => {
    expectError(() => raw.binary!('subtract', x, y), TypeError, ['binary: op', "'add' or 'multiply'", "got 'subtract'"]);
    const bias = randn([3], 13);
    expectError(() => raw.channelOp!('shift', x, bias, 2, 3, 1), TypeError, ['channelOp: op', "'biasAdd' or 'scale'", "got 'shift'"]);
    expectError(() => raw.channelReduce!('max', x, null, 2, 3, 1), TypeError, ['channelReduce: op', "'sum' or 'dot'", "got 'max'"]);
    expectError(() => raw.optimizerStep!('rmsprop', {}), TypeError, [
      'optimizerStep: kind',
      "'sgd', 'adam' or 'adamax'",
      "got 'rmsprop'",
    ]);
    expectError(() => raw.optimizerStep!(3, {}), TypeError, ['optimizerStep: kind', 'got 3']);
  });

  it('setMatmulPrecision and the benchmark entry points check their enums', () => {
    expectError(() => raw.zeros!([2], 'gpu'), TypeError, ["device: expected 'cpu' or 'cuda'", "got 'gpu'"]);
    expectError(() => raw.cast!(x, 'float16'), TypeError, ["dtype: expected 'float32', 'bfloat16', 'int32' or 'bool'", "got 'float16'"]);
    expectError(() => raw.setMatmulPrecision!('medium'), TypeError, ['setMatmulPrecision: precision', "'highest' or 'high'", "got 'medium'"]);
    expect(native.matmulPrecision()).toBe('highest');
    expectError(() => raw.benchmarkTimes!({ op: 'conv', sets: [[x]] }, 0, 1), TypeError, [
      'benchmarkTimes: request.op',
      "'copy'",
      "'gemm'",
      "got 'conv'",
    ]);
    const a = randn([2, 3], 14);
    const b = randn([3, 2], 15);
    const spec = { m: 2, n: 2, k: 3, transposeA: false, transposeB: false, precision: 'fp16' };
    expectError(() => raw.benchmarkOutputs!({ op: 'gemm', gemm: spec, sets: [[a, b]] }), TypeError, [
      'benchmarkOutputs: request.gemm.precision',
      "'fp32', 'tf32' or 'bf16'",
      "got 'fp16'",
    ]);
  });
});

describe('optimizerStep takes one named options object', () => {
  const sgdOptions = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
    param: randn([4], 21),
    grad: randn([4], 22),
    step: 1,
    lr: 0.1,
    weightDecay: 0,
    momentum: 0,
    dampening: 0,
    nesterov: false,
    momentumBuffer: null,
    ...overrides,
  });

  it('rejects a missing or ill-typed field, naming it and what came', () => {
    expectError(() => raw.optimizerStep!('sgd', null), TypeError, ['optimizerStep: options', 'expected an options object', 'got null']);
    expectError(() => raw.optimizerStep!('sgd', [1, 2]), TypeError, ['optimizerStep: options', 'got an array']);
    const { lr: _lr, ...withoutLr } = sgdOptions();
    expectError(() => raw.optimizerStep!('sgd', withoutLr), TypeError, ['optimizerStep: options.lr', 'expected a number', 'got undefined']);
    expectError(() => raw.optimizerStep!('sgd', sgdOptions({ lr: '0.1' })), TypeError, ['options.lr', "got '0.1'"]);
    expectError(() => raw.optimizerStep!('sgd', sgdOptions({ nesterov: 1 })), TypeError, ['options.nesterov', 'expected a boolean', 'got 1']);
    expectError(() => raw.optimizerStep!('sgd', sgdOptions({ param: [1, 2, 3] })), TypeError, [
      'optimizerStep: options.param',
      'expected a native tensor',
      'got an array',
    ]);
    expectError(() => raw.optimizerStep!('sgd', sgdOptions({ step: 0 })), RangeError, ['options.step', 'an integer >= 1', 'got 0']);
    expectError(() => raw.optimizerStep!('sgd', sgdOptions({ step: 1.5 })), RangeError, ['options.step', 'got 1.5']);
    expectError(() => raw.optimizerStep!('sgd', sgdOptions({ momentum: 0.9 })), TypeError, [
      'optimizerStep: options.momentumBuffer',
      'momentum != 0',
      'got null',
    ]);
    expectError(() => raw.optimizerStep!('sgd', sgdOptions({ normOutput: { norm: randn([1], 23), outer: 1, inner: 4, eps: 0 } })), TypeError, [
      'optimizerStep: options.normOutput.channels',
      'got undefined',
    ]);
    const adam = { ...sgdOptions(), beta1: 0.9, beta2: 0.999, eps: 1e-8, expAvg: randn([4], 24) };
    expectError(() => raw.optimizerStep!('adam', adam), TypeError, ['optimizerStep: options.expAvgSq', 'expected a native tensor', 'got undefined']);
    expectError(() => raw.optimizerStep!('adamax', { ...adam, expAvgSq: randn([4], 25) }), TypeError, ['options.expInf', 'got undefined']);
  });

  it('runs SGD with momentum, Nesterov and weight decay as PyTorch defines it, writing the per-channel norm', () => {
    const count = 6;
    const param = randn([2, 3], 31);
    const buffer = native.zeros([2, 3], 'cpu');
    const norm = native.zeros([2], 'cpu');
    const lr = 0.05, momentum = 0.9, weightDecay = 0.01;
    let p = values(param);
    let buf = new Array<number>(count).fill(0);
    for (let step = 1; step <= 3; step++) {
      const grad = randn([2, 3], 40 + step);
      const g = values(grad);
      native.optimizerStep('sgd', {
        param,
        grad,
        step,
        lr,
        weightDecay,
        momentum,
        dampening: 0,
        nesterov: true,
        momentumBuffer: buffer,
        normOutput: { norm, outer: 1, channels: 2, inner: 3, eps: 1e-12 },
      });
      const decayed = g.map((gi, i) => gi + weightDecay * p[i]!);
      buf = step === 1 ? decayed : buf.map((b, i) => momentum * b + decayed[i]!);
      p = p.map((pi, i) => pi - lr * (decayed[i]! + momentum * buf[i]!));
      expectClose(values(param), p);
      expectClose(values(buffer), buf);
      const rowNorms = [0, 1].map((row) => Math.hypot(...p.slice(3 * row, 3 * row + 3)));
      expectClose(values(norm), rowNorms);
    }
  });

  it('runs Adam and Adamax with bias correction', () => {
    const lr = 0.01, beta1 = 0.9, beta2 = 0.99, eps = 1e-8;
    for (const kind of ['adam', 'adamax'] as const) {
      const param = randn([5], 51);
      const expAvg = native.zeros([5], 'cpu');
      const second = native.zeros([5], 'cpu');
      let p = values(param);
      let m = new Array<number>(5).fill(0);
      let s = new Array<number>(5).fill(0);
      for (let step = 1; step <= 3; step++) {
        const grad = randn([5], 60 + step);
        const g = values(grad);
        const common = { param, grad, step, lr, weightDecay: 0, beta1, beta2, eps, expAvg };
        if (kind === 'adam') native.optimizerStep('adam', { ...common, expAvgSq: second });
        else native.optimizerStep('adamax', { ...common, expInf: second });
        m = m.map((mi, i) => beta1 * mi + (1 - beta1) * g[i]!);
        const correction1 = 1 - beta1 ** step;
        if (kind === 'adam') {
          s = s.map((si, i) => beta2 * si + (1 - beta2) * g[i]! ** 2);
          const correction2 = 1 - beta2 ** step;
          p = p.map((pi, i) => pi - (lr / correction1) * (m[i]! / (Math.sqrt(s[i]! / correction2) + eps)));
        } else {
          s = s.map((si, i) => Math.max(beta2 * si, Math.abs(g[i]!) + eps));
          p = p.map((pi, i) => pi - (lr / correction1) * (m[i]! / s[i]!));
        }
        expectClose(values(param), p);
        expectClose(values(expAvg), m);
        expectClose(values(second), s);
      }
    }
  });
});

describe('tensor arguments: only the handles the addon made', () => {
  // Each op recognizes a handle by its prototype and then needs its native side: an object that only looks like one
  // (NativeTensor's prototype without a native side, a copy of its fields) is refused by name, through the plain path
  // and through the multi-tensor optimizer's, and a disposed handle says so.
  it('refuses look-alikes and disposed handles with the parameter named', () => {
    const lookAlike = Object.create(native.NativeTensor.prototype) as unknown;
    const real = randn([3], 31);
    const copy = { shape: real.shape, dtype: real.dtype, device: real.device, disposed: false };
    for (const fake of [lookAlike, copy, {}, 1, 'x']) {
      expectError(() => raw.scale!(fake, 2), TypeError, ['x: expected a native tensor']);
    }
    const adam = (param: unknown) => ({
      params: [param], grads: [randn([3], 32)], steps: [1], normOutputs: [null], expAvgs: [randn([3], 33)], expAvgSqs: [randn([3], 34)],
      lr: 0.1, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8,
    });
    expectError(() => raw.optimizerSteps!('adam', adam(lookAlike)), TypeError, ['optimizerSteps: options.params[0]', 'expected a native tensor']);
    const gone = randn([3], 35);
    gone.dispose();
    expect(() => raw.scale!(gone, 2)).toThrow(/x: the tensor has been disposed/);
    expect(() => raw.optimizerSteps!('adam', adam(gone))).toThrow(/options\.params\[0\]: the tensor has been disposed/);
    // A real handle still goes through both paths.
    expectClose(values(native.scale(real, 2)), values(real).map((x) => 2 * x));
  });
});

describe('a handle after dispose()', () => {
  // dispose() frees the memory and the handle's native side at once (its wrap removed, so the garbage collector has
  // no finalizer left to run for it); what a caller can still ask of the handle answers as before.
  it('says it is disposed, refuses the rest by name, and a second dispose() is harmless', () => {
    const shape = [2, 1 + Math.floor(Math.random() * 5)];
    const t = randn(shape, 41);
    expect([t.disposed, t.device, t.dtype, t.shape]).toEqual([false, 'cpu', 'float32', shape]);
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(t.device).toBeNull();
    expect(() => t.dispose()).not.toThrow();
    expect(() => t.shape).toThrow(/^NativeTensor\.shape: the tensor has been disposed$/);
    expect(() => t.dtype).toThrow(/^NativeTensor\.dtype: the tensor has been disposed$/);
    expect(() => t.toArray()).toThrow(/^tensor: the tensor has been disposed$/);
    expect(() => t.to('cpu')).toThrow(/^tensor: the tensor has been disposed$/);
    expect(() => native.scale(t, 2)).toThrow(/x: the tensor has been disposed/);
    // The prototype's members called on something else are a TypeError (V8's own check of the receiver).
    const proto = native.NativeTensor.prototype as unknown as Record<string, () => unknown>;
    expect(() => proto.dispose!.call({})).toThrow(TypeError);
    const shapeGetter = Object.getOwnPropertyDescriptor(native.NativeTensor.prototype, 'shape')!.get!;
    expect(() => shapeGetter.call(Object.create(native.NativeTensor.prototype))).toThrow(TypeError);
  });

  it('frees every tensor exactly once, disposed or collected', async () => {
    const { setFlagsFromString } = await import('node:v8');
    const { runInNewContext } = await import('node:vm');
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const settle = async () => {
      for (let i = 0; i < 4; i++) {
        gc();
        await new Promise((resolve) => setImmediate(resolve)); // finalizers may run after the collection
      }
    };
    await settle();
    const before = native.memory().cpu;
    const count = 2000 + Math.floor(Math.random() * 1000);
    const bytesEach = 4 * 17;
    let handles: NativeTensor[] | null = Array.from({ length: count }, (_, i) => native.full([17], i, 'cpu'));
    let disposed = 0;
    handles.forEach((h, i) => {
      if (i % 3 !== 0) return;
      h.dispose();
      disposed += 1;
    });
    const during = native.memory().cpu;
    expect(during.tensors - before.tensors).toBe(count - disposed);
    expect(during.bytes - before.bytes).toBe((count - disposed) * bytesEach);
    // The live ones are intact: their values are still theirs.
    expect(Array.from(handles[1]!.toArray())).toEqual(Array(17).fill(1));
    handles = null;
    await settle();
    const after = native.memory().cpu;
    expect([after.tensors, after.bytes]).toEqual([before.tensors, before.bytes]);
  });
});

describe('other option objects and valid calls', () => {
  it('activation computes relu (with its negative slope) and tanh', () => {
    const x = randn([7], 71);
    const xs = values(x);
    expectClose(values(native.activation('relu', x, 0.1)), xs.map((v) => (v > 0 ? v : 0.1 * v)));
    expectClose(values(native.activation('tanh', x, 0)), xs.map(Math.tanh));
  });

  it('batchNormInferenceBackward reads its sizes and wanted gradients from an options object', () => {
    const [outer, channels, inner, eps] = [2, 3, 2, 1e-5];
    const dy = randn([2, 3, 2], 81);
    const x = randn([2, 3, 2], 82);
    const mean = randn([3], 83);
    const variance = randn([3], 84, 1, 0.1);
    const gamma = randn([3], 85);
    const options = { outer, channels, inner, eps, wantDx: true, wantDgamma: false, wantDbeta: true };
    const result = native.batchNormInferenceBackward(dy, x, mean, variance, gamma, options);
    expect(result.dgamma).toBeUndefined();
    const [dys, vars, gammas] = [dy, variance, gamma].map(values) as [number[], number[], number[]];
    const dx = dys.map((d, i) => {
      const k = Math.floor(i / inner) % channels;
      return (d * gammas[k]!) / Math.sqrt(vars[k]! + eps);
    });
    const dbeta = [0, 1, 2].map((k) => dys.reduce((sum, d, i) => (Math.floor(i / inner) % channels === k ? sum + d : sum), 0));
    expectClose(values(result.dx!), dx);
    expectClose(values(result.dbeta!), dbeta);
    expectError(() => raw.batchNormInferenceBackward!(dy, x, mean, variance, gamma, { ...options, wantDx: undefined }), TypeError, [
      'batchNormInferenceBackward: options.wantDx',
      'expected a boolean',
      'got undefined',
    ]);
    expectError(() => raw.batchNormInferenceBackward!(dy, x, mean, variance, gamma, 2, 3, 2, eps, true, true, true), TypeError, [
      'batchNormInferenceBackward: options',
      'got 2',
    ]);
  });

  it('conv2dBackward reads stride, padding and the wanted gradients from an options object', () => {
    const x = randn([2, 3, 5, 5], 101);
    const w = randn([4, 3, 3, 3], 102);
    const dy = randn([2, 4, 3, 3], 103); // stride 1, no padding: 5 - 3 + 1 = 3
    const grads = native.conv2dBackward(dy, x, w, { stride: 1, padding: 0, wantDx: false, wantDw: false, wantDbias: true });
    expect(grads.dx).toBeUndefined();
    expect(grads.dw).toBeUndefined();
    const dys = values(dy);
    const dbias = [0, 1, 2, 3].map((c) => dys.reduce((sum, d, i) => (Math.floor(i / 9) % 4 === c ? sum + d : sum), 0));
    expectClose(values(grads.dbias!), dbias);
    expectError(() => raw.conv2dBackward!(dy, x, w, { stride: 1, padding: 0, wantDx: 1, wantDw: false, wantDbias: true }), TypeError, [
      'conv2dBackward: options.wantDx',
      'expected a boolean',
      'got 1',
    ]);
    expectError(() => raw.conv2dBackward!(dy, x, w, 1, 0, true, true, true), TypeError, ['conv2dBackward: options', 'got 1']);
  });

  it('benchmarkOutputs returns the outputs and benchmarkTimes the times, one shape each', () => {
    const v = randn([4, 5], 91);
    const g = randn([4], 92, 1, 0.1);
    const request = { op: 'forward', fused: true, sets: [[v, g]], dim: 0, eps: 1e-12 } as const;
    const outputs = native.benchmarkOutputs!(request);
    const reference = native.weightNorm(v, g, 0, 1e-12, true);
    expectClose(values(outputs.out), values(reference.w));
    expectClose(values(outputs.perChannel!), values(reference.norm));
    expect(outputs.backend).toBe('');
    const times = native.benchmarkTimes!(request, 1, 3);
    expect(times).toBeInstanceOf(Float64Array);
    expect(times.length).toBe(3);
    for (const t of times) expect(t).toBeGreaterThanOrEqual(0);
    expect(native.benchmarkTimes!({ op: 'copy', sets: [[v]] }, 0, 2).length).toBe(2);
    expectError(() => raw.benchmarkOutputs!({ op: 'copy', sets: [[v]] }), TypeError, ['benchmarkOutputs: request.op', "got 'copy'"]);
    expectError(() => raw.benchmarkTimes!(request, 0, 0), RangeError, ['benchmarkTimes: repeats', 'an integer >= 1', 'got 0']);
    expectError(() => raw.benchmarkTimes!({ ...request, fused: undefined }, 0, 1), TypeError, ['benchmarkTimes: request.fused', 'got undefined']);

    const a = randn([2, 3], 93);
    const b = randn([3, 2], 94);
    const gemm = native.benchmarkOutputs!({
      op: 'gemm',
      gemm: { m: 2, n: 2, k: 3, transposeA: false, transposeB: false, precision: 'fp32' },
      sets: [[a, b]],
    });
    expectClose(values(gemm.out), values(native.gemm(a, b, { m: 2, n: 2, k: 3 })));
    expect(gemm.perChannel).toBeNull();
    // The short name of the CPU GEMM that ran ('openblas' | 'blocked'), which backend() describes at length.
    expect(gemm.backend).toMatch(/^(openblas|blocked)$/);
    expect(native.backend().cpu.gemm.toLowerCase()).toContain(gemm.backend);
  });
});

describe('gemm takes named options; unknown fields are errors', () => {
  // float64 reference of out = op(a)·op(b) with the epilogue fields used below.
  function gemmReference(
    a: number[],
    b: number[],
    { m, n, k, transposeA = false, transposeB = false }: { m: number; n: number; k: number; transposeA?: boolean; transposeB?: boolean },
    rowScale: number[] | null = null,
    columnBias: number[] | null = null,
  ): number[] {
    const out: number[] = [];
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let p = 0; p < k; p++) sum += a[transposeA ? p * m + i : i * k + p]! * b[transposeB ? j * k + p : p * n + j]!;
        out.push(sum * (rowScale ? rowScale[i]! : 1) + (columnBias ? columnBias[j]! : 0));
      }
    return out;
  }

  it('every transpose combination computes op(a)·op(b) for m, n, k all different', () => {
    const [m, n, k] = [3, 4, 5];
    for (const transposeA of [false, true])
      for (const transposeB of [false, true]) {
        const a = randn(transposeA ? [k, m] : [m, k], 101);
        const b = randn(transposeB ? [n, k] : [k, n], 102);
        const options = { m, n, k, transposeA, transposeB };
        const out = native.gemm(a, b, options);
        expect(out.shape).toEqual([m, n]);
        expectClose(values(out), gemmReference(values(a), values(b), options));
      }
  });

  it('the epilogue is a nested object: rowScale and columnBias are applied', () => {
    const a = randn([2, 3], 103);
    const b = randn([3, 4], 104);
    const rowScale = randn([2], 105);
    const columnBias = randn([4], 106);
    const out = native.gemm(a, b, { m: 2, n: 4, k: 3, epilogue: { rowScale, columnBias } });
    expectClose(values(out), gemmReference(values(a), values(b), { m: 2, n: 4, k: 3 }, values(rowScale), values(columnBias)));
  });

  it('a misspelled or unknown field is a TypeError naming it, not silently dropped', () => {
    const a = randn([2, 3], 107);
    const b = randn([3, 2], 108);
    expectError(() => raw.gemm!(a, b, { m: 2, n: 2, k: 3, transposeb: true }), TypeError, [
      'gemm: options',
      "unknown field 'transposeb'",
      'transposeB',
    ]);
    expectError(() => raw.gemm!(a, b, { m: 2, n: 2, k: 3, epilogue: { colBias: b } }), TypeError, [
      'gemm: options.epilogue',
      "unknown field 'colBias'",
      'columnBias',
    ]);
  });

  it('the old positional form, a missing size and wrong kinds are clear errors', () => {
    const a = randn([2, 3], 109);
    const b = randn([3, 2], 110);
    expectError(() => raw.gemm!(a, b, 2, 2, 3, false, false, {}), TypeError, ['gemm: options', 'expected an options object', 'got 2']);
    expectError(() => raw.gemm!(a, b, { n: 2, k: 3 }), TypeError, ['gemm: options.m', 'expected a number', 'got undefined']);
    expectError(() => raw.gemm!(a, b, { m: 2.5, n: 2, k: 3 }), RangeError, ['gemm: options.m', 'an integer >= 0', 'got 2.5']);
    expectError(() => raw.gemm!(a, b, { m: 2, n: 2, k: 3, transposeA: 1 }), TypeError, ['gemm: options.transposeA', 'a boolean', 'got 1']);
    expectError(() => raw.gemm!(a, b, { m: 2, n: 2, k: 3, epilogue: [] }), TypeError, ['gemm: options.epilogue', 'an options object']);
    expectError(() => raw.gemm!(a, b, { m: 2, n: 2, k: 3, epilogue: { beta: '1' } }), TypeError, ['gemm: options.epilogue.beta', 'a number', "got '1'"]);
    expectError(() => raw.gemm!(a, b, { m: 2, n: 2, k: 3, epilogue: { beta: 1 } }), TypeError, ['gemm: options.epilogue.out', 'beta != 0']);
    expectError(() => raw.gemm!(a, b, { m: 3, n: 2, k: 3 }), RangeError, ['gemm: a', 'expected 9 elements', 'got [2, 3]']);
  });
});

describe('axisArgReduce takes named options', () => {
  it('computes the max and its index per row, and rejects unknown fields and a non-boolean largest', () => {
    const x = randn([3, 4], 111);
    const { values: maxima, indices } = native.axisArgReduce(x, { largest: true, outer: 3, reduce: 4, inner: 1, shape: [3] });
    const data = values(x);
    for (let row = 0; row < 3; row++) {
      const slice = data.slice(row * 4, row * 4 + 4);
      const best = Math.max(...slice);
      expect(values(maxima)[row]).toBe(best);
      expect(Array.from(indices.toArray())[row]).toBe(slice.indexOf(best));
    }
    expectError(() => raw.axisArgReduce!(x, { largest: true, outer: 3, reduce: 4, inner: 1, shape: [3], keepdim: true }), TypeError, [
      'axisArgReduce: options',
      "unknown field 'keepdim'",
    ]);
    expectError(() => raw.axisArgReduce!(x, { largest: 1, outer: 3, reduce: 4, inner: 1, shape: [3] }), TypeError, [
      'axisArgReduce: options.largest',
      'a boolean',
      'got 1',
    ]);
    expectError(() => raw.axisArgReduce!(true, x, 3, 4, 1, [3]), TypeError, ['axisArgReduce: x']);
    expectError(() => raw.axisArgReduce!(x, { largest: false, outer: 3, reduce: 4, inner: 1, shape: [4] }), RangeError, [
      'axisArgReduce: options.shape',
      'expected 3 elements',
    ]);
  });
});
