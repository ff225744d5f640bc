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
  const batch = labels.length;
  let total = 0;
  for (let i = 0; i < batch; i++) {
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[i * classes + c]!);
    let z = 0;
    for (let c = 0; c < classes; c++) z += Math.exp(logits[i * classes + c]! - max);
    total += Math.log(z) + max - logits[i * classes + labels[i]!]!;
  }
  return Float64Array.of(total / batch);
}

/** Per-channel statistics layout of [batch, channels, ...spatial]. */
function layout(shape: Shape): [number, number, number] {
  const [batch = 1, channels = 1, ...rest] = shape;
  return [batch, channels, rest.reduce((a, b) => a * b, 1)];
}

export function batchNorm(x: Float64Array, gamma: Float64Array, beta: Float64Array, shape: Shape, eps: number): Float64Array {
  const [outer, channels, inner] = layout(shape);
  const y = new Float64Array(x.length);
  const count = outer * inner;
  for (let c = 0; c < channels; c++) {
    let mean = 0;
    for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) mean += x[(o * channels + c) * inner + i]!;
    mean /= count;
    let variance = 0;
    for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) variance += (x[(o * channels + c) * inner + i]! - mean) ** 2;
    variance /= count;
    const invstd = 1 / Math.sqrt(variance + eps);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const e = (o * channels + c) * inner + i;
        y[e] = (x[e]! - mean) * invstd * gamma[c]! + beta[c]!;
      }
    }
  }
  return y;
}

export function meanOnlyBatchNorm(x: Float64Array, bias: Float64Array, shape: Shape): Float64Array {
  const [outer, channels, inner] = layout(shape);
  const y = new Float64Array(x.length);
  for (let c = 0; c < channels; c++) {
    let mean = 0;
    for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) mean += x[(o * channels + c) * inner + i]!;
    mean /= outer * inner;
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const e = (o * channels + c) * inner + i;
        y[e] = x[e]! - mean + bias[c]!;
      }
    }
  }
  return y;
}
