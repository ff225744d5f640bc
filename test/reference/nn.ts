// Float64 references for the training-stack ops: plain loops, written for obviousness, not speed. The TypeScript
// tests take gradients of these references by central finite differences (test/nn-ops.test.ts); the backwards here
// are the native kernel tests' (through test/reference/native-op-fixtures.ts), where a routing rule (which element
// of a pooling window receives dy) must be exact.

export type Shape = readonly number[];

export function linear(x: Float64Array, w: Float64Array, b: Float64Array | null, batch: number, out: number, inp: number): Float64Array {
  const y = new Float64Array(batch * out);
  for (let i = 0; i < batch; i++) {
    for (let j = 0; j < out; j++) {
      let s = b ? b[j]! : 0;
      for (let k = 0; k < inp; k++) s += x[i * inp + k]! * w[j * inp + k]!;
      y[i * out + j] = s;
    }
  }
  return y;
}

/** w = g · v / ‖v_row‖ for a [rows, rest] matrix (dim 0). */
export function weightNormRows(v: Float64Array, g: Float64Array, rows: number): Float64Array {
  const rest = v.length / rows;
  const w = new Float64Array(v.length);
  for (let r = 0; r < rows; r++) {
    let sq = 0;
    for (let i = 0; i < rest; i++) sq += v[r * rest + i]! ** 2;
    const s = g[r]! / Math.max(Math.sqrt(sq), 1e-12);
    for (let i = 0; i < rest; i++) w[r * rest + i] = v[r * rest + i]! * s;
  }
  return w;
}

export interface ConvGeometry {
  batch: number;
  channels: number;
  height: number;
  width: number;
  outChannels: number;
  kernel: number;
  stride: number;
  padding: number;
}

export function conv2d(x: Float64Array, w: Float64Array, b: Float64Array | null, g: ConvGeometry): Float64Array {
  const oh = Math.floor((g.height + 2 * g.padding - g.kernel) / g.stride) + 1;
  const ow = Math.floor((g.width + 2 * g.padding - g.kernel) / g.stride) + 1;
  const y = new Float64Array(g.batch * g.outChannels * oh * ow);
  for (let n = 0; n < g.batch; n++) {
    for (let o = 0; o < g.outChannels; o++) {
      for (let p = 0; p < oh; p++) {
        for (let q = 0; q < ow; q++) {
          let s = b ? b[o]! : 0;
          for (let c = 0; c < g.channels; c++) {
            for (let i = 0; i < g.kernel; i++) {
              for (let j = 0; j < g.kernel; j++) {
                const r = p * g.stride - g.padding + i;
                const t = q * g.stride - g.padding + j;
                if (r < 0 || r >= g.height || t < 0 || t >= g.width) continue;
                s += x[((n * g.channels + c) * g.height + r) * g.width + t]! * w[((o * g.channels + c) * g.kernel + i) * g.kernel + j]!;
              }
            }
          }
          y[((n * g.outChannels + o) * oh + p) * ow + q] = s;
        }
      }
    }
  }
  return y;
}

export function maxPool2d(x: Float64Array, planes: number, height: number, width: number, kernel: number, stride: number): Float64Array {
  const oh = Math.floor((height - kernel) / stride) + 1;
  const ow = Math.floor((width - kernel) / stride) + 1;
  const y = new Float64Array(planes * oh * ow);
  for (let p = 0; p < planes; p++) {
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        let m = -Infinity;
        for (let a = 0; a < kernel; a++) {
          for (let b = 0; b < kernel; b++) m = Math.max(m, x[(p * height + i * stride + a) * width + j * stride + b]!);
        }
        y[(p * oh + i) * ow + j] = m;
      }
    }
  }
  return y;
}

/**
 * The gradient of maxPool2d: each window's dy goes to the element that holds its maximum, the first one in row-major
 * window order when several do (a NaN counts as the maximum; the first NaN wins). `magnitude` is Σ|dy| per element
 * (the scale of its float32 sum, up to ceil(kernel/stride)² windows overlapping).
 */
export function maxPool2dBackward(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  planes: number,
  height: number,
  width: number,
  kernel: number,
  stride: number,
): { dx: Float64Array; magnitude: Float64Array } {
  const oh = Math.floor((height - kernel) / stride) + 1;
  const ow = Math.floor((width - kernel) / stride) + 1;
  const dx = new Float64Array(planes * height * width);
  const magnitude = new Float64Array(dx.length);
  for (let p = 0; p < planes; p++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++) {
        let best = -1;
        for (let a = 0; a < kernel; a++)
          for (let b = 0; b < kernel; b++) {
            const at = (p * height + i * stride + a) * width + j * stride + b;
            if (best < 0 || x[at]! > x[best]! || (Number.isNaN(x[at]!) && !Number.isNaN(x[best]!))) best = at;
          }
        const g = dy[(p * oh + i) * ow + j]!;
        dx[best]! += g;
        magnitude[best]! += Math.abs(g);
      }
  return { dx, magnitude };
}

export function globalAvgPool(x: Float64Array, planes: number, planeSize: number): Float64Array {
  const y = new Float64Array(planes);
  for (let p = 0; p < planes; p++) {
    let s = 0;
    for (let i = 0; i < planeSize; i++) s += x[p * planeSize + i]!;
    y[p] = s / planeSize;
  }
  return y;
}

/** The gradient of globalAvgPool: dy[p] / planeSize at every element of plane p. */
export function globalAvgPoolBackward(dy: ArrayLike<number>, planes: number, planeSize: number): Float64Array {
  const dx = new Float64Array(planes * planeSize);
  for (let p = 0; p < planes; p++) dx.fill(dy[p]! / planeSize, p * planeSize, (p + 1) * planeSize);
  return dx;
}

export function map(x: Float64Array, f: (v: number) => number): Float64Array {
  return x.map(f);
}

/** Mean softmax cross-entropy; labels are class indices. */
export function crossEntropy(logits: Float64Array, labels: readonly number[], classes: number): Float64Array {
  return Float64Array.of(softmaxCrossEntropy(logits, labels, classes).loss);
}

/** Softmax cross-entropy over [batch, classes] with its saved softmax, and the backward: dlogits = (probs -
 *  onehot) * dloss / batch. Stable: each row's maximum is subtracted before exp. An empty batch has loss 0. */
export function softmaxCrossEntropy(
  logits: ArrayLike<number>, labels: ArrayLike<number>, classes: number, dloss = 1,
): { loss: number; probs: Float64Array; dlogits: Float64Array } {
  const batch = labels.length;
  const probs = new Float64Array(batch * classes);
  const dlogits = new Float64Array(batch * classes);
  let total = 0;
  for (let i = 0; i < batch; i++) {
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[i * classes + c]!);
    let z = 0;
    for (let c = 0; c < classes; c++) z += Math.exp(logits[i * classes + c]! - max);
    for (let c = 0; c < classes; c++) {
      probs[i * classes + c] = Math.exp(logits[i * classes + c]! - max) / z;
      dlogits[i * classes + c] = ((probs[i * classes + c]! - (c === labels[i] ? 1 : 0)) * dloss) / batch;
    }
    total += Math.log(z) + max - logits[i * classes + labels[i]!]!;
  }
  return { loss: batch > 0 ? total / batch : 0, probs, dlogits };
}

/** Cross-entropy from logits over [outer, classes, inner] as torch.nn.functional.cross_entropy with class weights,
 *  ignore_index and label smoothing ε: per position (1 − ε)·(−w_y·logp_y) + (ε/C)·(−Σ_c w_c·logp_c), weight w_y
 *  (ignored positions: 0 and 0); the mean divides by Σ w_y. dinput is the mean's gradient times dloss. */
export function classCrossEntropy(
  logits: ArrayLike<number>, labels: ArrayLike<number>, weight: ArrayLike<number>,
  o: { outer: number; classes: number; inner: number; ignoreIndex: number; labelSmoothing: number }, dloss = 1,
): { positionLoss: Float64Array; mean: number; dinput: Float64Array } {
  const { outer, classes, inner, ignoreIndex, labelSmoothing: eps } = o;
  const positions = outer * inner;
  const positionLoss = new Float64Array(positions);
  const dinput = new Float64Array(positions * classes);
  const at = (p: number, c: number) => (Math.floor(p / inner) * classes + c) * inner + (p % inner);
  let weightAll = 0;
  for (let c = 0; c < classes; c++) weightAll += weight[c]!;
  let lossSum = 0;
  let weightSum = 0;
  const logProbs: Float64Array[] = [];
  for (let p = 0; p < positions; p++) {
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[at(p, c)]!);
    let z = 0;
    for (let c = 0; c < classes; c++) z += Math.exp(logits[at(p, c)]! - max);
    const logp = Float64Array.from({ length: classes }, (_, c) => logits[at(p, c)]! - max - Math.log(z));
    logProbs.push(logp);
    if (labels[p] === ignoreIndex) continue;
    const y = labels[p]!;
    let smooth = 0;
    for (let c = 0; c < classes; c++) smooth -= weight[c]! * logp[c]!;
    positionLoss[p] = -(1 - eps) * weight[y]! * logp[y]! + (eps / classes) * smooth;
    lossSum += positionLoss[p]!;
    weightSum += weight[y]!;
  }
  for (let p = 0; p < positions; p++) {
    if (labels[p] === ignoreIndex) continue;
    const y = labels[p]!;
    for (let c = 0; c < classes; c++) {
      const prob = Math.exp(logProbs[p]![c]!);
      const g = (1 - eps) * weight[y]! * (prob - (c === y ? 1 : 0)) + (eps / classes) * (prob * weightAll - weight[c]!);
      dinput[at(p, c)] = (dloss * g) / weightSum;
    }
  }
  return { positionLoss, mean: lossSum / weightSum, dinput };
}

/** binary_cross_entropy_with_logits with pos_weight (broadcast over the last dim of length posWeight.length), the
 *  elements' losses, their sum, and the sum's gradient times dloss. Stable: softplus(−x) = max(−x, 0) +
 *  log1p(exp(−|x|)). */
export function bceWithLogits(
  x: ArrayLike<number>, y: ArrayLike<number>, posWeight: ArrayLike<number>, dloss = 1,
): { loss: Float64Array; sum: number; dinput: Float64Array } {
  const loss = new Float64Array(x.length);
  const dinput = new Float64Array(x.length);
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    const lw = 1 + (posWeight[i % posWeight.length]! - 1) * y[i]!;
    const xi = x[i]!;
    const softplusNeg = Math.max(-xi, 0) + Math.log1p(Math.exp(-Math.abs(xi)));
    loss[i] = (1 - y[i]!) * xi + lw * softplusNeg;
    sum += loss[i]!;
    dinput[i] = dloss * (1 - y[i]! + lw * (1 / (1 + Math.exp(-xi)) - 1));
  }
  return { loss, sum, dinput };
}

/** Per-channel statistics layout of [batch, channels, ...spatial]. */
function layout(shape: Shape): [number, number, number] {
  const [batch = 1, channels = 1, ...rest] = shape;
  return [batch, channels, rest.reduce((a, b) => a * b, 1)];
}

/** Training-mode batch norm with its statistics (biased variance; a channel with no elements gets mean and
 *  variance 0, as the kernels write). */
export function batchNormForward(
  x: ArrayLike<number>, gamma: ArrayLike<number> | null, beta: ArrayLike<number> | null, shape: Shape, eps: number,
): { y: Float64Array; mean: Float64Array; variance: Float64Array; invstd: Float64Array } {
  const [outer, channels, inner] = layout(shape);
  const y = new Float64Array(x.length);
  const mean = new Float64Array(channels);
  const variance = new Float64Array(channels);
  const invstd = new Float64Array(channels);
  const count = outer * inner;
  for (let c = 0; c < channels; c++) {
    let m = 0;
    for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) m += x[(o * channels + c) * inner + i]!;
    m = count ? m / count : 0;
    let v = 0;
    for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) v += (x[(o * channels + c) * inner + i]! - m) ** 2;
    v = count ? v / count : 0;
    mean[c] = m;
    variance[c] = v;
    invstd[c] = 1 / Math.sqrt(v + eps);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const e = (o * channels + c) * inner + i;
        y[e] = (x[e]! - m) * invstd[c]! * (gamma ? gamma[c]! : 1) + (beta ? beta[c]! : 0);
      }
    }
  }
  return { y, mean, variance, invstd };
}

export function batchNorm(x: Float64Array, gamma: Float64Array, beta: Float64Array, shape: Shape, eps: number): Float64Array {
  return batchNormForward(x, gamma, beta, shape, eps).y;
}

/** The training-mode backward: with xhat = (x - mean) * invstd, dbeta = Σ dy, dgamma = Σ dy·xhat,
 *  dx = gamma·invstd·(dy - dbeta/n - xhat·dgamma/n). */
export function batchNormBackward(
  dy: ArrayLike<number>, x: ArrayLike<number>, gamma: ArrayLike<number> | null, shape: Shape, eps: number,
): { dx: Float64Array; dgamma: Float64Array; dbeta: Float64Array } {
  const [outer, channels, inner] = layout(shape);
  const { y: xhat, invstd } = batchNormForward(x, null, null, shape, eps);
  const count = outer * inner;
  const dx = new Float64Array(x.length);
  const dgamma = new Float64Array(channels);
  const dbeta = new Float64Array(channels);
  const channelOf = (e: number) => Math.floor(e / inner) % channels;
  for (let e = 0; e < x.length; e++) {
    const c = channelOf(e);
    dbeta[c] = dbeta[c]! + dy[e]!;
    dgamma[c] = dgamma[c]! + dy[e]! * xhat[e]!;
  }
  for (let e = 0; e < x.length; e++) {
    const c = channelOf(e);
    dx[e] = (gamma ? gamma[c]! : 1) * invstd[c]! * (dy[e]! - dbeta[c]! / count - (xhat[e]! * dgamma[c]!) / count);
  }
  return { dx, dgamma, dbeta };
}

/** Evaluation-mode batch norm: the running statistics in place of the batch's. */
export function batchNormInference(
  x: ArrayLike<number>, runningMean: ArrayLike<number>, runningVar: ArrayLike<number>,
  gamma: ArrayLike<number> | null, beta: ArrayLike<number> | null, shape: Shape, eps: number,
): Float64Array {
  const [, channels, inner] = layout(shape);
  return Float64Array.from(x, (v, e) => {
    const c = Math.floor(e / inner) % channels;
    return ((v - runningMean[c]!) / Math.sqrt(runningVar[c]! + eps)) * (gamma ? gamma[c]! : 1) + (beta ? beta[c]! : 0);
  });
}

export function meanOnlyBatchNorm(x: ArrayLike<number>, bias: ArrayLike<number>, shape: Shape): Float64Array {
  return meanOnlyBatchNormForward(x, bias, shape).y;
}

/** Mean-only batch norm (Salimans & Kingma 2016, §4): y = x - mean + bias, with the channel means (0 for an empty
 *  channel). */
export function meanOnlyBatchNormForward(x: ArrayLike<number>, bias: ArrayLike<number>, shape: Shape): { y: Float64Array; mean: Float64Array } {
  const [outer, channels, inner] = layout(shape);
  const y = new Float64Array(x.length);
  const mean = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    let m = 0;
    for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) m += x[(o * channels + c) * inner + i]!;
    m = outer * inner ? m / (outer * inner) : 0;
    mean[c] = m;
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const e = (o * channels + c) * inner + i;
        y[e] = x[e]! - m + bias[c]!;
      }
    }
  }
  return { y, mean };
}

/** Its backward: dbias = Σ dy over the channel, dx = dy - dbias / n (the centred gradient). */
export function meanOnlyBatchNormBackward(dy: ArrayLike<number>, shape: Shape): { dx: Float64Array; dbias: Float64Array } {
  const [outer, channels, inner] = layout(shape);
  const dbias = new Float64Array(channels);
  const channelOf = (e: number) => Math.floor(e / inner) % channels;
  for (let e = 0; e < dy.length; e++) {
    const c = channelOf(e);
    dbias[c] = dbias[c]! + dy[e]!;
  }
  const dx = Float64Array.from(dy, (v, e) => v - dbias[channelOf(e)]! / (outer * inner));
  return { dx, dbias };
}
