// weightnorm: weight normalization (Salimans & Kingma, 2016) for TypeScript, on CUDA and CPU.
export { Tensor, tensor, zeros, randn, type Device, type DType, type CreateOptions, type RandnOptions } from './tensor.js';
export { empty, full, ones, type NestedArray, type TensorArray, type TensorData } from './tensor.js';
export * as ops from './ops.js';
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
export * as nn from './nn.js';
export * as optim from './optim.js';
export * as init from './init.js';
export * as io from './io.js';
export * as data from './data/index.js';
export * as metrics from './metrics.js';
export { trainStep, evaluate, NonFiniteLossError, type Evaluation } from './train.js';
