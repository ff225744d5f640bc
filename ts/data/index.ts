// Labeled datasets as flat float32 arrays, seeded deterministic shuffles, and minibatches as tensors. Nothing here
// is specific to one dataset: loadMnist (./mnist.ts) returns a Dataset (./dataset.ts), fromArrays builds one from
// plain arrays, and batches()/evaluate() take any LabeledData.
export {
  batches,
  Dataset,
  fromArrays,
  epochSeed,
  permutation,
  shuffler,
  type Batch,
  type BatchIterator,
  type BatchOptions,
  type Example,
  type LabeledData,
} from './dataset.js';
export { CLASSES, IMAGE_SIZE, loadMnist, PIXELS, MnistSplit, type MnistOptions } from './mnist.js';
export { IdxFormatError, loadIdx, readIdx, type IdxArray } from './idx.js';
export {
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DEBIAN_ROOT,
  FASHION_MNIST_ENV,
  fashionMnist,
  FashionMnistSplit,
  type FashionMnistOptions,
} from './fashion-mnist.js';
