// The nn namespace: the core layers (nn.ts) and the layer families kept in their own files. The families extend
// nn.Module, so nn.ts cannot re-export them itself: that import cycle would evaluate a family's classes before
// Module exists. Here nn.ts is evaluated first.
export * from './nn.js';
export { LSTM, GRU, LSTMCell, GRUCell, Embedding } from './rnn.js';
export type { LSTMOutput, GRUOutput, LSTMState, GRUState, RecurrentOptions, CellOptions, RecurrentWeightNorm, MatrixWeightNorm, EmbeddingOptions } from './rnn.js';
