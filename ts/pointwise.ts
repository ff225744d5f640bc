// Tensor math: elementwise ops with NumPy/PyTorch broadcasting and JS-number scalars, their gradients, and the
// Tensor methods (x.add(y), x.gt(0), ...). Each op validates, promotes its operands to one element type, runs one
// native kernel (binding/pointwise.cc) and records its backward right next to its forward. A broadcast operand's
// gradient is the output gradient summed back to the operand's shape (sumTo).
//
// Element types: float32, int32 and bool (bfloat16 is refused: cast it to float32). Promotion, as in PyTorch with
// int32 in place of int64: bool < int32 < float32, the operands' highest category wins; a JS number counts as int32
// when it is an integer in int32's range and as float32 otherwise (NaN, infinities and fractions included), but
// never raises a tensor of a higher category; a JS boolean counts as bool. Then:
//   add, sub, mul, minimum, maximum: computed in that type (bool operands alone compute in int32);
//   div, pow: always float32 (true division);
//   eq, ne, lt, le, gt, ge: compared in that type, bool result; logicalAnd/Or/Not: operands as x != 0, bool result;
//   the unary float maths (exp, log, ..., gelu): int32 and bool inputs become float32; neg, abs, sign, relu and
//   clamp keep int32 (bool becomes int32; neg refuses bool, as PyTorch does).
// Gradients flow to float32 tensors only; comparisons and logical ops have none.
import { alias, record } from './autograd.js';
import { rangeError, shapeText, typeError } from './errors.js';
import { native, type NativeTensor, type PointwiseBinaryOp, type PointwiseUnaryOp } from './native.js';
import { type DType, handleOf, Tensor } from './tensor.js';

/** An operand of a tensor math op: a tensor, or a JS number or boolean taken as a 0-d tensor. */
export type Operand = Tensor | number | boolean;

const wrap = (handle: NativeTensor): Tensor => new Tensor(handle);
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

type Category = 'bool' | 'int32' | 'float32';
const RANK: Record<Category, number> = { bool: 0, int32: 1, float32: 2 };

function checkOperand(value: unknown, where: string): Operand {
  if (typeof value === 'number' || typeof value === 'boolean') return value;
  if (!(value instanceof Tensor)) throw typeError(where, 'a Tensor, a number or a boolean', value);
  handleOf(value, where, 'any');
  if (value.dtype === 'bfloat16') throw typeError(where, "a float32, int32 or bool tensor, not bfloat16 (use .cast('float32'))", value);
  return value;
}

function categoryOf(value: Operand): Category {
  if (value instanceof Tensor) return value.dtype as Category;
  if (typeof value === 'boolean') return 'bool';
  return Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX ? 'int32' : 'float32';
}

/** The common category: tensors decide, a scalar raises it only above the tensors' own when none is float. */
function promote(operands: readonly Operand[]): Category {
  let tensors: Category | null = null;
  let scalars: Category = 'bool';
  for (const value of operands) {
    const category = categoryOf(value);
    if (value instanceof Tensor) tensors = tensors === null || RANK[category] > RANK[tensors] ? category : tensors;
    else if (RANK[category] > RANK[scalars]) scalars = category;
  }
  if (tensors === null) return scalars;
  return RANK[scalars] > RANK[tensors] ? scalars : tensors;
}

/** NumPy broadcasting of shapes (aligned at the last dimension; sizes equal or 1), a RangeError naming them all. */
export function broadcastShapes(where: string, ...shapes: (readonly number[])[]): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = new Array<number>(rank).fill(1);
  for (const shape of shapes) {
    const pad = rank - shape.length;
    shape.forEach((size, d) => {
      const current = out[pad + d]!;
      if (size === current || size === 1) return;
      if (current !== 1) {
        throw rangeError(where, 'shapes that broadcast (each dimension equal or 1, aligned at the last)', shapes.map(shapeText).join(' and '));
      }
      out[pad + d] = size;
    });
  }
  return out;
}

function deviceOf(where: string, operands: readonly [string, Operand][]): 'cpu' | 'cuda' {
  let device: 'cpu' | 'cuda' | null = null;
  let first = '';
  for (const [name, value] of operands) {
    if (!(value instanceof Tensor)) continue;
    if (device === null) {
      device = value.device;
      first = name;
    } else if (value.device !== device) {
      throw typeError(`${where}: ${name}`, `a tensor on '${device}' like ${first}`, value);
    }
  }
  if (device === null) throw new TypeError(`${where}: expected at least one Tensor operand, received only numbers`);
  return device;
}

/**
 * The operands as native handles of one dtype: tensors of another dtype are cast (temporaries), scalars become 0-d
 * tensors. `release()` frees the temporaries once the kernel has run (a backward makes its own).
 */
class Operands {
  readonly handles: NativeTensor[] = [];
  readonly temporaries: Tensor[] = [];

  constructor(values: readonly Operand[], dtype: DType, device: 'cpu' | 'cuda') {
    try {
      this.convert(values, dtype, device);
    } catch (error) {
      this.release();
      throw error;
    }
  }

  private convert(values: readonly Operand[], dtype: DType, device: 'cpu' | 'cuda'): void {
    for (const value of values) {
      if (value instanceof Tensor) {
        if (value.dtype === dtype) {
          this.handles.push(handleOf(value, 'operand', 'any'));
          continue;
        }
        const converted = wrap(native.cast(handleOf(value, 'operand', 'any'), dtype));
        this.temporaries.push(converted);
        this.handles.push(handleOf(converted, 'operand', 'any'));
        continue;
      }
      const scalar = scalarTensor(value, dtype, device);
      this.temporaries.push(scalar);
      this.handles.push(handleOf(scalar, 'operand', 'any'));
    }
  }

  release(): void {
    for (const t of this.temporaries) t.dispose();
  }
}

function scalarTensor(value: number | boolean, dtype: DType, device: 'cpu' | 'cuda'): Tensor {
  const number = Number(value);
  const data =
    dtype === 'bool' ? Uint8Array.of(number !== 0 ? 1 : 0) : dtype === 'int32' ? Int32Array.of(number) : Float32Array.of(number);
  return wrap(native.fromArray(data, [], device, dtype));
}

function differentiable(value: Operand): Tensor | null {
  return value instanceof Tensor && value.dtype === 'float32' ? value : null;
}

/** The gradient of an operand of `shape` from one at the output's shape: summed over the broadcast dimensions. */
function reduceTo(gradient: Tensor, shape: readonly number[]): Tensor {
  if (gradient.shape.length === shape.length && gradient.shape.every((d, i) => d === shape[i])) return gradient;
  const reduced = wrap(native.sumTo(handleOf(gradient, 'gradient'), [...shape]));
  gradient.dispose();
  return reduced;
}

const ARITHMETIC_INT32 = new Set<PointwiseBinaryOp>(['add', 'sub', 'mul', 'minimum', 'maximum']);

function binary(op: PointwiseBinaryOp, where: string, a: unknown, b: unknown, alpha = 1): Tensor {
  const [nameA, nameB] = op === 'pow' ? ['input', 'exponent'] : ['a', 'b'];
  const x = checkOperand(a, `${where}: ${nameA}`);
  const y = checkOperand(b, `${where}: ${nameB}`);
  const device = deviceOf(where, [[nameA, x], [nameB, y]]);
  broadcastShapes(where, x instanceof Tensor ? x.shape : [], y instanceof Tensor ? y.shape : []);
  let category = promote([x, y]);
  const comparison = !ARITHMETIC_INT32.has(op) && op !== 'div' && op !== 'pow';
  if (op === 'logicalAnd' || op === 'logicalOr') category = 'bool';
  else if (op === 'div' || op === 'pow') category = 'float32';
  else if (!comparison && category === 'bool') category = 'int32';
  if (category === 'int32' && !Number.isInteger(alpha)) category = 'float32';
  const operands = new Operands([x, y], category, device);
  let out: Tensor;
  try {
    out = wrap(native.pointwiseBinary(op, operands.handles[0]!, operands.handles[1]!, alpha));
  } finally {
    // The backward makes its own float32 operands again: nothing it reads can be disposed by a tidy() in between.
    operands.release();
  }
  if (comparison || category !== 'float32') return out;
  // Only float32 tensors take gradients (an int32 or bool operand promoted to float32 is a constant).
  const tensors = [differentiable(x), differentiable(y)] as const;
  // add and sub read nothing but dy; the others read both operands (the user's tensors: their versions are checked).
  const linear = op === 'add' || op === 'sub';
  const saved = linear ? [] : [x, y].filter((v): v is Tensor => v instanceof Tensor);
  return record(
    out,
    op,
    [tensors[0], tensors[1]],
    (dy, needs) => {
      const inputs = linear ? null : new Operands([x, y], 'float32', device);
      try {
        return [0, 1].map((k) => {
          if (!needs[k]) return null;
          let gradient: Tensor;
          if (linear) {
            const factor = k === 0 ? 1 : op === 'sub' ? -alpha : alpha;
            gradient = factor === 1 ? alias(dy) : wrap(native.scale(handleOf(dy, where), factor));
          } else {
            gradient = wrap(native.pointwiseBinaryBackward(op, k as 0 | 1, handleOf(dy, where), inputs!.handles[0]!, inputs!.handles[1]!, alpha));
          }
          return reduceTo(gradient, tensors[k]!.shape);
        });
      } finally {
        inputs?.release();
      }
    },
    saved,
  );
}

export interface AlphaOptions {
  /** The multiplier of b, as in torch.add(a, b, alpha=...). Default 1. */
  alpha?: number;
}

function alphaOf(where: string, options: unknown): number {
  if (options === undefined) return 1;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw typeError(`${where}: options`, 'an object like { alpha }', options);
  for (const key of Object.keys(options)) if (key !== 'alpha') throw typeError(`${where}: options`, 'only the key alpha', key);
  const { alpha = 1 } = options as AlphaOptions;
  if (typeof alpha !== 'number') throw typeError(`${where}: options.alpha`, 'a number', alpha);
  return alpha;
}

/** a + alpha·b, broadcasting. */
export function add(a: Operand, b: Operand, options?: AlphaOptions): Tensor {
  return binary('add', 'add', a, b, alphaOf('add', options));
}
/** a − alpha·b, broadcasting. */
export function sub(a: Operand, b: Operand, options?: AlphaOptions): Tensor {
  return binary('sub', 'sub', a, b, alphaOf('sub', options));
}
/** a · b, broadcasting. */
export function mul(a: Operand, b: Operand): Tensor {
  return binary('mul', 'mul', a, b);
}
/** a / b (true division: float32 even for int32 operands), broadcasting. */
export function div(a: Operand, b: Operand): Tensor {
  return binary('div', 'div', a, b);
}
/** input ^ exponent (float32), broadcasting. */
export function pow(input: Operand, exponent: Operand): Tensor {
  return binary('pow', 'pow', input, exponent);
}
/** The elementwise minimum (NaN propagates; equal operands share the gradient), broadcasting. */
export function minimum(a: Operand, b: Operand): Tensor {
  return binary('minimum', 'minimum', a, b);
}
/** The elementwise maximum (NaN propagates; equal operands share the gradient), broadcasting. */
export function maximum(a: Operand, b: Operand): Tensor {
  return binary('maximum', 'maximum', a, b);
}
/** a == b as a bool tensor, broadcasting. */
export function eq(a: Operand, b: Operand): Tensor {
  return binary('eq', 'eq', a, b);
}
/** a != b as a bool tensor, broadcasting. */
export function ne(a: Operand, b: Operand): Tensor {
  return binary('ne', 'ne', a, b);
}
/** a < b as a bool tensor, broadcasting. */
export function lt(a: Operand, b: Operand): Tensor {
  return binary('lt', 'lt', a, b);
}
/** a <= b as a bool tensor, broadcasting. */
export function le(a: Operand, b: Operand): Tensor {
  return binary('le', 'le', a, b);
}
/** a > b as a bool tensor, broadcasting. */
export function gt(a: Operand, b: Operand): Tensor {
  return binary('gt', 'gt', a, b);
}
/** a >= b as a bool tensor, broadcasting. */
export function ge(a: Operand, b: Operand): Tensor {
  return binary('ge', 'ge', a, b);
}
/** (a != 0) and (b != 0), a bool tensor, broadcasting. */
export function logicalAnd(a: Operand, b: Operand): Tensor {
  return binary('logicalAnd', 'logicalAnd', a, b);
}
/** (a != 0) or (b != 0), a bool tensor, broadcasting. */
export function logicalOr(a: Operand, b: Operand): Tensor {
  return binary('logicalOr', 'logicalOr', a, b);
}

/** x == 0 as a bool tensor. */
export function logicalNot(x: Tensor): Tensor {
  const where = 'logicalNot';
  const value = checkOperand(x, `${where}: x`);
  if (!(value instanceof Tensor)) throw typeError(`${where}: x`, 'a Tensor', x);
  const operands = new Operands([value], 'bool', value.device);
  try {
    return wrap(native.pointwiseUnary('logicalNot', operands.handles[0]!, 0, 0));
  } finally {
    operands.release();
  }
}

/** condition ? a : b elementwise, broadcasting all three; condition must be a bool tensor. */
export function where(condition: Tensor, a: Operand, b: Operand): Tensor {
  const name = 'where';
  if (!(condition instanceof Tensor)) throw typeError(`${name}: condition`, 'a bool Tensor', condition);
  handleOf(condition, `${name}: condition`, 'any');
  if (condition.dtype !== 'bool') throw typeError(`${name}: condition`, `a bool tensor, not ${condition.dtype} (compare first, e.g. x.gt(0))`, condition);
  const x = checkOperand(a, `${name}: a`);
  const y = checkOperand(b, `${name}: b`);
  const device = deviceOf(name, [['condition', condition], ['a', x], ['b', y]]);
  broadcastShapes(name, condition.shape, x instanceof Tensor ? x.shape : [], y instanceof Tensor ? y.shape : []);
  const category = promote([x, y]);
  const operands = new Operands([x, y], category, device);
  let out: Tensor;
  try {
    out = wrap(native.where(handleOf(condition, name, 'any'), operands.handles[0]!, operands.handles[1]!));
  } finally {
    operands.release();
  }
  if (category !== 'float32') return out;
  const tensors = [differentiable(x), differentiable(y)] as const;
  return record(
    out,
    'where',
    [tensors[0], tensors[1]],
    (dy, needs) =>
      [0, 1].map((k) => {
        if (!needs[k]) return null;
        const zero = scalarTensor(0, 'float32', device);
        const dyHandle = handleOf(dy, name);
        const zeroHandle = handleOf(zero, name);
        const gradient = wrap(native.where(handleOf(condition, name, 'any'), k === 0 ? dyHandle : zeroHandle, k === 0 ? zeroHandle : dyHandle));
        zero.dispose();
        return reduceTo(gradient, tensors[k]!.shape);
      }),
    [condition],
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Unary ops.

const INT32_UNARY = new Set<PointwiseUnaryOp>(['neg', 'abs', 'sign', 'relu', 'clamp']);

function unary(op: PointwiseUnaryOp, where: string, x: unknown, first = 0, second = 0, forceFloat = false): Tensor {
  const value = checkOperand(x, `${where}: x`);
  if (!(value instanceof Tensor)) throw typeError(`${where}: x`, 'a Tensor', x);
  if (op === 'neg' && value.dtype === 'bool') {
    throw typeError(`${where}: x`, "a float32 or int32 tensor (negating a bool tensor is not supported; use logicalNot)", value);
  }
  const dtype: DType = INT32_UNARY.has(op) && value.dtype !== 'float32' && !forceFloat ? 'int32' : 'float32';
  const operands = new Operands([value], dtype, value.device);
  const input = operands.handles[0]!;
  let out: Tensor;
  try {
    out = wrap(native.pointwiseUnary(op, input, first, second));
  } catch (error) {
    operands.release();
    throw error;
  }
  operands.release();
  if (dtype !== 'float32' || value.dtype !== 'float32') return out;
  return record(out, where, [value], (dy) => [
    wrap(native.pointwiseUnaryBackward(op, handleOf(dy, where), handleOf(value, where), handleOf(out, where), first, second)),
  ]);
}

function finiteParameter(where: string, name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw typeError(`${where}: ${name}`, 'a finite number', value);
  return value;
}

/** −x. */
export function neg(x: Tensor): Tensor {
  return unary('neg', 'neg', x);
}
/** e^x. */
export function exp(x: Tensor): Tensor {
  return unary('exp', 'exp', x);
}
/** The natural logarithm (NaN below 0, −Infinity at 0). */
export function log(x: Tensor): Tensor {
  return unary('log', 'log', x);
}
export function sqrt(x: Tensor): Tensor {
  return unary('sqrt', 'sqrt', x);
}
/** 1/√x. */
export function rsqrt(x: Tensor): Tensor {
  return unary('rsqrt', 'rsqrt', x);
}
/** |x| (gradient sign(x), 0 at 0). */
export function abs(x: Tensor): Tensor {
  return unary('abs', 'abs', x);
}
/** −1, 0 or 1 (NaN stays NaN); gradient 0. */
export function sign(x: Tensor): Tensor {
  return unary('sign', 'sign', x);
}

/**
 * min(max(x, min), max); either bound may be null/undefined (not both). A NaN bound gives NaN, as in PyTorch; the
 * gradient passes where min <= x <= max. An int32 tensor stays int32 when the bounds are integers.
 */
export function clamp(x: Tensor, min?: number | null, max?: number | null): Tensor {
  const where = 'clamp';
  for (const [name, bound] of [['min', min], ['max', max]] as const) {
    if (bound !== undefined && bound !== null && typeof bound !== 'number') throw typeError(`${where}: ${name}`, 'a number, null or undefined', bound);
  }
  const low = min ?? null;
  const high = max ?? null;
  if (low === null && high === null) throw new TypeError(`${where}: expected at least one of min and max, received neither`);
  const integral = (bound: number | null): boolean => bound === null || (Number.isInteger(bound) && bound >= INT32_MIN && bound <= INT32_MAX);
  return unary('clamp', where, x, low ?? -Infinity, high ?? Infinity, !(integral(low) && integral(high)));
}

/** 1 / (1 + e^−x). */
export function sigmoid(x: Tensor): Tensor {
  return unary('sigmoid', 'sigmoid', x);
}
export function tanh(x: Tensor): Tensor {
  return unary('tanh', 'tanh', x);
}
/** max(x, 0) (gradient 0 at 0). */
export function relu(x: Tensor): Tensor {
  return unary('relu', 'relu', x);
}
/** x > 0 ? x : negativeSlope·x. */
export function leakyRelu(x: Tensor, negativeSlope = 0.01): Tensor {
  return unary('leakyRelu', 'leakyRelu', x, finiteParameter('leakyRelu', 'negativeSlope', negativeSlope));
}
/** x > 0 ? x : alpha·(e^x − 1). */
export function elu(x: Tensor, alpha = 1): Tensor {
  return unary('elu', 'elu', x, finiteParameter('elu', 'alpha', alpha));
}
/** log(1 + e^(beta·x)) / beta, and x itself where beta·x > threshold (for stability), as torch's softplus. */
export function softplus(x: Tensor, beta = 1, threshold = 20): Tensor {
  const b = finiteParameter('softplus', 'beta', beta);
  if (b === 0) throw rangeError('softplus: beta', 'a non-zero number', '0');
  return unary('softplus', 'softplus', x, b, finiteParameter('softplus', 'threshold', threshold));
}

export interface GeluOptions {
  /** 'none' (default): x·Φ(x) with the exact erf; 'tanh': the tanh approximation. */
  approximate?: 'none' | 'tanh';
}

/** x·Φ(x) (Φ the standard normal CDF), or its tanh approximation with { approximate: 'tanh' }. */
export function gelu(x: Tensor, options?: GeluOptions): Tensor {
  const where = 'gelu';
  if (options !== undefined && (typeof options !== 'object' || options === null || Array.isArray(options))) {
    throw typeError(`${where}: options`, "an object like { approximate: 'tanh' }", options);
  }
  for (const key of Object.keys(options ?? {})) if (key !== 'approximate') throw typeError(`${where}: options`, 'only the key approximate', key);
  const approximate = options?.approximate ?? 'none';
  if (approximate !== 'none' && approximate !== 'tanh') throw typeError(`${where}: options.approximate`, "'none' or 'tanh'", approximate);
  return unary(approximate === 'tanh' ? 'geluTanh' : 'gelu', where, x);
}

/** x·sigmoid(x) (swish). */
export function silu(x: Tensor): Tensor {
  return unary('silu', 'silu', x);
}

// ---------------------------------------------------------------------------------------------------------------
// Tensor methods (PyTorch's names): x.add(y), x.mul(2), x.gt(0), x.clamp(0, 1), ...

declare module './tensor.js' {
  interface Tensor {
    add(other: Operand, options?: AlphaOptions): Tensor;
    sub(other: Operand, options?: AlphaOptions): Tensor;
    mul(other: Operand): Tensor;
    div(other: Operand): Tensor;
    pow(exponent: Operand): Tensor;
    minimum(other: Operand): Tensor;
    maximum(other: Operand): Tensor;
    eq(other: Operand): Tensor;
    ne(other: Operand): Tensor;
    lt(other: Operand): Tensor;
    le(other: Operand): Tensor;
    gt(other: Operand): Tensor;
    ge(other: Operand): Tensor;
    logicalAnd(other: Operand): Tensor;
    logicalOr(other: Operand): Tensor;
    logicalNot(): Tensor;
    neg(): Tensor;
    exp(): Tensor;
    log(): Tensor;
    sqrt(): Tensor;
    rsqrt(): Tensor;
    abs(): Tensor;
    sign(): Tensor;
    clamp(min?: number | null, max?: number | null): Tensor;
    sigmoid(): Tensor;
    tanh(): Tensor;
    relu(): Tensor;
  }
}

// Each method is the function of its name with the tensor as the first argument: x.clamp(0, 1) is clamp(x, 0, 1).
// It passes on exactly the arguments the function takes after the tensor (so its length is the function's less
// one), and is named after the function.
const methodFunctions = {
  add, sub, mul, div, pow, minimum, maximum, eq, ne, lt, le, gt, ge, logicalAnd, logicalOr,
  logicalNot, neg, exp, log, sqrt, rsqrt, abs, sign, clamp, sigmoid, tanh, relu,
};
type TensorFunction = (x: Tensor, a?: unknown, b?: unknown) => Tensor;
function methodOf(fn: TensorFunction): (this: Tensor, ...args: unknown[]) => Tensor {
  switch (fn.length) {
    case 1:
      return function (this: Tensor) {
        return fn(this);
      };
    case 2:
      return function (this: Tensor, a: unknown) {
        return fn(this, a);
      };
    default:
      return function (this: Tensor, a: unknown, b: unknown) {
        return fn(this, a, b);
      };
  }
}
for (const [name, fn] of Object.entries(methodFunctions)) {
  const method = methodOf(fn as TensorFunction);
  Object.defineProperty(method, 'name', { value: name });
  // Non-enumerable, like methods declared in the class body.
  Object.defineProperty(Tensor.prototype, name, { value: method, writable: true, configurable: true, enumerable: false });
}
