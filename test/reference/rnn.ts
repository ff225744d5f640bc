// float64 reference of one recurrent layer (the oracle for test/rnn.test.ts's fresh random cases), written from
// the equations alone, PyTorch's gate order:
//   LSTM: i, f, g, o = σ, σ, tanh, σ of (W_ih x + b_ih + W_hh h + b_hh); c' = f·c + i·g; h' = o·tanh(c')
//   GRU:  r, z = σ(W_ir x + b_ir + W_hr h + b_hr), σ(...); n = tanh(W_in x + b_in + r·(W_hn h + b_hn));
//         h' = (1 − z)·n + z·h
// Arrays are row-major: x [T, N, I], h0/c0 [N, H], wIh [G·H, I], wHh [G·H, H], biases [G·H] (or null).

export interface ReferenceLayer {
  cell: 'lstm' | 'gru';
  steps: number;
  batch: number;
  inputSize: number;
  hiddenSize: number;
  x: ArrayLike<number>;
  h0: ArrayLike<number>;
  c0: ArrayLike<number> | null;
  wIh: ArrayLike<number>;
  wHh: ArrayLike<number>;
  bIh: ArrayLike<number> | null;
  bHh: ArrayLike<number> | null;
}

const sigmoid = (a: number): number => 1 / (1 + Math.exp(-a));

/** output [T, N, H], h [N, H] and (LSTM) c [N, H] after the last step. */
export function referenceRecurrentLayer(p: ReferenceLayer): { output: Float64Array; h: Float64Array; c: Float64Array | null } {
  const { steps: T, batch: N, inputSize: I, hiddenSize: H } = p;
  const G = p.cell === 'lstm' ? 4 : 3;
  let h = Float64Array.from(p.h0);
  let c = p.c0 ? Float64Array.from(p.c0) : new Float64Array(N * H);
  const output = new Float64Array(T * N * H);
  for (let t = 0; t < T; t++) {
    const nextH = new Float64Array(N * H);
    const nextC = new Float64Array(N * H);
    for (let n = 0; n < N; n++) {
      const gx = new Float64Array(G * H);
      const gh = new Float64Array(G * H);
      for (let r = 0; r < G * H; r++) {
        let sx = p.bIh ? p.bIh[r]! : 0;
        for (let k = 0; k < I; k++) sx += p.wIh[r * I + k]! * p.x[(t * N + n) * I + k]!;
        let sh = p.bHh ? p.bHh[r]! : 0;
        for (let k = 0; k < H; k++) sh += p.wHh[r * H + k]! * h[n * H + k]!;
        gx[r] = sx;
        gh[r] = sh;
      }
      for (let j = 0; j < H; j++) {
        const e = n * H + j;
        if (p.cell === 'lstm') {
          const i = sigmoid(gx[j]! + gh[j]!);
          const f = sigmoid(gx[H + j]! + gh[H + j]!);
          const g = Math.tanh(gx[2 * H + j]! + gh[2 * H + j]!);
          const o = sigmoid(gx[3 * H + j]! + gh[3 * H + j]!);
          nextC[e] = f * c[e]! + i * g;
          nextH[e] = o * Math.tanh(nextC[e]!);
        } else {
          const r = sigmoid(gx[j]! + gh[j]!);
          const z = sigmoid(gx[H + j]! + gh[H + j]!);
          const candidate = Math.tanh(gx[2 * H + j]! + r * gh[2 * H + j]!);
          nextH[e] = (1 - z) * candidate + z * h[e]!;
        }
      }
    }
    h = nextH;
    c = nextC;
    output.set(h, t * N * H);
  }
  return { output, h, c: p.cell === 'lstm' ? c : null };
}
