// weightnorm: weight normalization (Salimans & Kingma, 2016) for TypeScript, on CUDA and CPU.
export { Tensor, tensor, zeros, randn, type Device, type DType, type CreateOptions, type RandnOptions, type RemovableHandle } from './tensor.js';
export { empty, full, ones, type NestedArray, type TensorArray, type TensorData } from './tensor.js';
export * as ops from './ops.js';
export {
  reshape,
  view,
  flatten,
  squeeze,
  unsqueeze,
  contiguous,
  clone,
  expand,
  transpose,
  permute,
  slice,
  narrow,
  split,
  chunk,
  flip,
  concat,
  cat,
  stack,
  indexSelect,
  gather,
  scatterAdd,
} from './shape.js';
export { DEFAULT_EPS, type WeightNormOptions, type WeightNormResult, type WeightNormGradients } from './ops.js';
export {
  backend,
  memory,
  setNumThreads,
  synchronize,
  releaseCachedMemory,
  setCpuCacheLimit,
  setMatmulPrecision,
  matmulPrecision,
  tensorCoreStatus,
  type BackendInfo,
  type MatmulPrecision,
} from './backend.js';
export { DisposedTensorError } from './errors.js';
export { tidy, keep } from './scope.js';
export { noGrad, isGradEnabled, type BackwardOptions } from './autograd.js';
export { manualSeed } from './random.js';
export * as nn from './layers.js';
export * as optim from './optim.js';
export * as init from './init.js';
export * as io from './io.js';
export * as data from './data/index.js';
export * as metrics from './metrics.js';
// Data-parallel training over Gloo (loads its own native module on first use).
export * as distributed from './distributed.js';
export { trainStep, evaluate, NonFiniteLossError, type Evaluation } from './train.js';
// Tensor math (broadcasting elementwise ops; importing the module also installs the Tensor methods x.add(y), ...).
export {
  abs, add, clamp, div, elu, eq, exp, ge, gelu, gt, le, leakyRelu, log, logicalAnd, logicalNot, logicalOr, lt,
  maximum, minimum, mul, ne, neg, pow, relu, rsqrt, sigmoid, sign, silu, softplus, sqrt, sub, tanh, where,
  broadcastShapes, type AlphaOptions, type GeluOptions, type Operand,
} from './pointwise.js';
// Reductions over chosen axes and softmax (also as Tensor methods: importing the module installs them).
export {
  sum,
  mean,
  amax,
  amin,
  max,
  min,
  argmax,
  argmin,
  var,
  std,
  logsumexp,
  softmax,
  logSoftmax,
  type Dim,
  type ReduceOptions,
  type VarianceOptions,
  type ValuesAndIndices,
} from './reduce.js';
// Reinforcement learning: CartPole, experience replay, ε schedule, TD targets.
export * as rl from './rl/index.js';
