// The convolutional variational autoencoder of `weightnorm vae` (after Salimans & Kingma, 2016, §5.3, at MNIST
// scale): an encoder of strided convolutions to the mean and log-variance of a diagonal Gaussian q(z|x), a latent
// sample by the reparameterization trick with seeded noise, a decoder of transposed convolutions to Bernoulli
// logits, and the evidence lower bound (ELBO) log p(x) ≥ E_q[log p(x|z)] − KL(q(z|x) ‖ N(0, I)), in nats.
// Also a minimal grayscale PNG writer for the sample and reconstruction grids (node:zlib, no image library).
import { deflateSync } from 'node:zlib';

import { add, chunk, type Device, elu, exp, mul, nn, randn, reshape, type Tensor } from 'weightnorm';

const F = nn.functional;

/** Input side of the 28×28 digits; two stride-2 convolutions take it to 7×7 and the decoder back. */
export const IMAGE = 28;
const CODE = IMAGE / 4;

export interface VaeShape {
  /** Latent dimensions K (the encoder's last Linear gives 2K: μ and log σ²). */
  latent: number;
  /** Channels of the two convolutions (the decoder mirrors them). */
  channels: readonly [number, number];
}

export interface VaeOutput {
  /** Bernoulli logits of every pixel, [batch, 1, 28, 28]. */
  logits: Tensor;
  mu: Tensor;
  logVar: Tensor;
}

/**
 * Encoder: conv 1→c1 4×4 s2 p1 (28→14), ELU, conv c1→c2 4×4 s2 p1 (14→7), ELU, Linear c2·49 → 2K.
 * Decoder: Linear K → c2·49, ELU, transposed conv c2→c1 4×4 s2 p1 (7→14), ELU, transposed conv c1→1 (14→28).
 * With weightNorm every Linear and convolution holds (v, g) (the transposed convolutions over their dim 0, as
 * PyTorch's weight_norm does). forward(x) returns the logits with the latent noise of `noiseSeed`: that is the pass
 * init.dataDependent runs, and the one a training step runs with the step's seed.
 */
export class ConvVae extends nn.Module {
  readonly conv1: nn.Conv2d;
  readonly conv2: nn.Conv2d;
  readonly toLatent: nn.Linear;
  readonly fromLatent: nn.Linear;
  readonly deconv1: nn.ConvTranspose2d;
  readonly deconv2: nn.ConvTranspose2d;
  /** Seed of the standard normal noise of the next forward(). */
  noiseSeed = 0;

  constructor(
    readonly shape: VaeShape,
    weightNorm: boolean,
  ) {
    super();
    const [c1, c2] = shape.channels;
    const conv = { stride: 2, padding: 1, weightNorm };
    this.conv1 = this.registerModule('conv1', new nn.Conv2d(1, c1, 4, conv));
    this.conv2 = this.registerModule('conv2', new nn.Conv2d(c1, c2, 4, conv));
    this.toLatent = this.registerModule('toLatent', new nn.Linear(c2 * CODE * CODE, 2 * shape.latent, { weightNorm }));
    this.fromLatent = this.registerModule('fromLatent', new nn.Linear(shape.latent, c2 * CODE * CODE, { weightNorm }));
    this.deconv1 = this.registerModule('deconv1', new nn.ConvTranspose2d(c2, c1, 4, conv));
    this.deconv2 = this.registerModule('deconv2', new nn.ConvTranspose2d(c1, 1, 4, conv));
  }

  /** q(z|x): μ and log σ², each [batch, K]. */
  encode(x: Tensor): { mu: Tensor; logVar: Tensor } {
    const h = elu(this.conv2.forward(elu(this.conv1.forward(x))));
    const [mu, logVar] = chunk(this.toLatent.forward(F.flatten(h)), 2, 1) as [Tensor, Tensor];
    return { mu, logVar };
  }

  /** p(x|z): the logits of every pixel, [batch, 1, 28, 28]. */
  decode(z: Tensor): Tensor {
    const h = elu(this.fromLatent.forward(z));
    const planes = reshape(h, [z.shape[0]!, this.shape.channels[1], CODE, CODE]);
    return this.deconv2.forward(elu(this.deconv1.forward(planes)));
  }

  /** z = μ + σ·ε with ε ~ N(0, I) from `seed` (the same seed, the same ε on every device), decoded. */
  run(x: Tensor, seed: number): VaeOutput {
    return this.runWithNoise(x, (shape) => randn(shape, { seed, device: x.device as Device }));
  }

  /** The same with ε given ([batch, K], or made by `noise` from that shape): the tests feed PyTorch's ε. */
  runWithNoise(x: Tensor, noise: Tensor | ((shape: number[]) => Tensor)): VaeOutput {
    const { mu, logVar } = this.encode(x);
    const epsilon = typeof noise === 'function' ? noise([...mu.shape]) : noise;
    const z = add(mu, mul(exp(mul(logVar, 0.5)), epsilon));
    return { logits: this.decode(z), mu, logVar };
  }

  forward(x: Tensor): Tensor {
    return this.run(x, this.noiseSeed).logits;
  }
}

/**
 * The two terms of −ELBO summed over the batch, in nats: the Bernoulli negative log-likelihood
 * Σ BCE(logits, x) (binaryCrossEntropyWithLogits, stable for any logit) and Σ KL(q(z|x) ‖ N(0, I)) (gaussianKl).
 * Their sum divided by the batch size is the loss a step minimizes; −(sum)/count is the bound per digit.
 */
export function negativeElbo(output: VaeOutput, x: Tensor): { reconstruction: Tensor; kl: Tensor } {
  return {
    reconstruction: F.binaryCrossEntropyWithLogits(output.logits, x, { reduction: 'sum' }),
    kl: F.gaussianKl(output.mu, output.logVar, { reduction: 'sum' }),
  };
}

/** Pixels > 0.5 become 1, the others 0: the fixed-threshold binarization of the digits (deterministic). */
export function binarize(pixels: Float32Array): Float32Array {
  return pixels.map((p) => (p > 0.5 ? 1 : 0));
}

// ---------------------------------------------------------------------------------------------------------------
// Image grids as 8-bit grayscale PNG.

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, body: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(type, 4, 'ascii');
  out.set(body, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}

/** A grayscale PNG of `width` × `height` values in [0, 1] (row-major; 0 black, 1 white). */
export function grayscalePng(values: ArrayLike<number>, width: number, height: number): Buffer {
  const rows = Buffer.alloc((width + 1) * height); // each row: filter byte 0 (none), then its pixels
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v = values[y * width + x]!;
      rows[y * (width + 1) + 1 + x] = Math.round(Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0)) * 255);
    }
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 0, 0, 0, 0], 8); // 8 bits, grayscale, deflate, adaptive filtering, no interlace
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, pngChunk('IHDR', header), pngChunk('IDAT', deflateSync(rows)), pngChunk('IEND', new Uint8Array())]);
}

/**
 * Tiles 28×28 images (count × 784 values) into `columns` columns with a `gap`-pixel border of `background`, each
 * pixel drawn `zoom` × `zoom`. Returns the canvas values and its size.
 */
export function tileImages(images: ArrayLike<number>, count: number, columns: number, options: { gap?: number; zoom?: number; background?: number } = {}) {
  const { gap = 2, zoom = 2, background = 0.5 } = options;
  const rows = Math.ceil(count / columns);
  const cell = IMAGE * zoom;
  const width = columns * cell + (columns + 1) * gap;
  const height = rows * cell + (rows + 1) * gap;
  const canvas = new Float32Array(width * height).fill(background);
  for (let i = 0; i < count; i++) {
    const left = gap + (i % columns) * (cell + gap);
    const top = gap + Math.floor(i / columns) * (cell + gap);
    for (let y = 0; y < cell; y++) {
      for (let x = 0; x < cell; x++) {
        canvas[(top + y) * width + left + x] = images[i * IMAGE * IMAGE + Math.floor(y / zoom) * IMAGE + Math.floor(x / zoom)]!;
      }
    }
  }
  return { values: canvas, width, height };
}
