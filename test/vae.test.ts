// The convolutional VAE of `weightnorm vae`: its forward (μ, log σ², logits), both terms of the bound and the
// gradient of every parameter against PyTorch float64 (scripts/make_vae_fixtures.py), plain and weight-normalized;
// shapes and seeded noise; gaussianKl's argument errors; the PNG writer; and the command itself on a tiny
// configuration (finite bounds, every file written).
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { nn, randn, tensor, tidy, type Tensor } from '../ts/index.js';
import { ConvVae, grayscalePng, negativeElbo, tileImages } from '../weightnorm-cli/src/commands/vae-model.js';

const F = nn.functional;
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

interface HostValues {
  shape: number[];
  data: number[];
}

interface VaeCase {
  name: string;
  weightNorm: boolean;
  channels: [number, number];
  latent: number;
  params: Record<string, HostValues>;
  x: HostValues;
  eps: HostValues;
  mu: number[];
  logVar: number[];
  logits: number[];
  reconstruction: number;
  kl: number;
  loss: number;
  grads: Record<string, number[]>;
}

const fixture = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'vae_torch.json'), 'utf8')) as { generator: string; cases: VaeCase[] };

/** max|ours − torch| / max|torch|: the error relative to the tensor's scale. */
function relativeError(ours: ArrayLike<number>, expected: readonly number[]): number {
  expect(ours.length).toBe(expected.length);
  let error = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    error = Math.max(error, Math.abs(ours[i]! - expected[i]!));
    scale = Math.max(scale, Math.abs(expected[i]!));
  }
  return error / scale;
}

const toTensor = (v: HostValues): Tensor => tensor(Float32Array.from(v.data), v.shape);

describe('ConvVae against PyTorch float64', () => {
  it('the fixture comes from its generator', () => {
    expect(fixture.generator).toBe('scripts/make_vae_fixtures.py');
    expect(fixture.cases.map((c) => c.name)).toEqual(['plain', 'weight norm']);
  });

  // Float32 against float64: the logits sum 2·16 products per pixel after three layers; the reconstruction term sums
  // 3·784 per-pixel losses (≈ 2352·u relative at worst, u = 2^-24, ~1.4e-4; in practice far less); the weight
  // gradients sum up to 3·196 products per element, through five layers and the weight-norm projection. 2e-4 (loss)
  // and 1e-3 (gradients, relative to each parameter's largest) leave room for that and still catch a wrong term:
  // dropping the KL, its ½, or σ = exp(logVar) instead of exp(½·logVar) moves them by 1e-2 or more.
  for (const c of fixture.cases) {
    it(`${c.name}: μ, log σ², logits, both bound terms and every parameter's gradient`, () => {
      tidy(() => {
        const model = new ConvVae({ latent: c.latent, channels: c.channels }, c.weightNorm);
        model.loadStateDict(Object.fromEntries(Object.entries(c.params).map(([name, v]) => [name, { shape: v.shape, data: Float32Array.from(v.data) }])));
        const x = toTensor(c.x);
        const output = model.runWithNoise(x, toTensor(c.eps));
        const terms = negativeElbo(output, x);
        const loss = terms.reconstruction.add(terms.kl).mul(1 / c.x.shape[0]!);
        expect(relativeError(output.mu.toArray(), c.mu)).toBeLessThan(1e-5);
        expect(relativeError(output.logVar.toArray(), c.logVar)).toBeLessThan(1e-5);
        expect(relativeError(output.logits.toArray(), c.logits)).toBeLessThan(1e-5);
        expect(Math.abs(terms.reconstruction.item() - c.reconstruction) / c.reconstruction).toBeLessThan(2e-4);
        expect(Math.abs(terms.kl.item() - c.kl) / c.kl).toBeLessThan(2e-4);
        expect(Math.abs(loss.item() - c.loss) / c.loss).toBeLessThan(2e-4);
        loss.backward();
        const named = new Map(model.namedParameters());
        expect([...named.keys()].sort()).toEqual(Object.keys(c.grads).sort());
        for (const [name, expected] of Object.entries(c.grads)) {
          const grad = named.get(name)!.grad;
          expect(grad, name).not.toBeNull();
          expect(relativeError(grad!.toArray(), expected), name).toBeLessThan(1e-3);
        }
        model.dispose();
      });
    });
  }
});

describe('ConvVae shapes and noise', () => {
  it('forward and backward shapes; the same seed gives the same sample, another seed another', () => {
    tidy(() => {
      for (const weightNorm of [false, true]) {
        const model = new ConvVae({ latent: 3, channels: [4, 8] }, weightNorm);
        const x = randn([5, 1, 28, 28], { seed: 11 }).gt(0.5).cast('float32');
        const output = model.run(x, 7);
        expect(output.logits.shape).toEqual([5, 1, 28, 28]);
        expect(output.mu.shape).toEqual([5, 3]);
        expect(output.logVar.shape).toEqual([5, 3]);
        expect(model.run(x, 7).logits.toArray()).toEqual(output.logits.toArray());
        expect(model.run(x, 8).logits.toArray()).not.toEqual(output.logits.toArray());
        const { reconstruction, kl } = negativeElbo(output, x);
        expect(reconstruction.shape).toEqual([1]);
        expect(kl.item()).toBeGreaterThanOrEqual(0);
        reconstruction.add(kl).backward();
        for (const [name, p] of model.namedParameters()) {
          expect(p.grad?.shape, name).toEqual(p.shape);
          expect(p.grad!.toArray().every(Number.isFinite), name).toBe(true);
        }
        expect(model.decode(randn([2, 3], { seed: 1 })).shape).toEqual([2, 1, 28, 28]);
        model.dispose();
      }
    });
  });
});

describe('gaussianKl arguments', () => {
  it('a clear error for a wrong type, shape, device or reduction', () => {
    tidy(() => {
      const mu = randn([2, 3], { seed: 1 });
      const logVar = randn([2, 3], { seed: 2 });
      expect(() => F.gaussianKl(mu, randn([3, 2], { seed: 3 }))).toThrow(RangeError);
      expect(() => F.gaussianKl(mu, randn([3, 2], { seed: 3 }))).toThrow(/gaussianKl: logVar: expected mu's shape \[2, 3\], received \[3, 2\]/);
      expect(() => F.gaussianKl(mu, [1, 2] as unknown as Tensor)).toThrow(TypeError);
      expect(() => F.gaussianKl(mu, logVar, { reduction: 'batchmean' as 'sum' })).toThrow(/gaussianKl: options.reduction: expected 'mean', 'sum' or 'none'/);
      expect(() => F.gaussianKl(mu, logVar, { dim: 1 } as never)).toThrow(TypeError);
      expect(() => F.gaussianKl(mu, logVar.cast('bfloat16'))).toThrow(/float32/);
      // The default is the mean over elements, as every loss; the KL of N(0, 1) from itself is 0.
      const zeros = tensor(new Float32Array(6), [2, 3]);
      expect(F.gaussianKl(zeros, zeros).item()).toBe(0);
      expect(F.gaussianKl(mu, logVar).item()).toBeCloseTo(F.gaussianKl(mu, logVar, { reduction: 'sum' }).item() / 6, 5);
    });
  });
});

describe('PNG grids', () => {
  it('writes a valid grayscale PNG whose pixels read back', () => {
    const images = Float32Array.from({ length: 3 * 784 }, (_, i) => (i % 784) / 783);
    const grid = tileImages(images, 3, 2, { gap: 1, zoom: 1, background: 0 });
    expect([grid.width, grid.height]).toEqual([2 * 28 + 3, 2 * 28 + 3]);
    const png = grayscalePng(grid.values, grid.width, grid.height);
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(png.readUInt32BE(16)).toBe(grid.width);
    const idatLength = png.readUInt32BE(33);
    expect(png.subarray(37, 41).toString('ascii')).toBe('IDAT');
    const rows = inflateSync(png.subarray(41, 41 + idatLength));
    expect(rows.length).toBe((grid.width + 1) * grid.height);
    // Pixel (row 1 + 27, column 1 + 27) is the last pixel of the first image: value 1 → 255.
    expect(rows[28 * (grid.width + 1) + 1 + 28]).toBe(255);
    expect(rows[1 * (grid.width + 1) + 1 + 1]).toBe(0);
  });
});

// The command as a user runs it: the compiled CLI in a child process (rebuilt when a source is newer).
const cli = join(root, 'weightnorm-cli', 'bin', 'weightnorm.js');
const work = mkdtempSync(join(tmpdir(), 'weightnorm-vae-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function newestMtime(dir: string, ext: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(path, ext));
    else if (entry.name.endsWith(ext)) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

beforeAll(() => {
  const compiled = join(root, 'weightnorm-cli', 'dist', 'commands', 'vae.js');
  const built = existsSync(compiled) ? Math.min(newestMtime(join(root, 'weightnorm-cli', 'dist'), '.js'), newestMtime(join(root, 'dist'), '.js')) : 0;
  if (!existsSync(compiled) || Math.max(newestMtime(join(root, 'ts'), '.ts'), newestMtime(join(root, 'weightnorm-cli', 'src'), '.ts')) > built) {
    spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-b', join(root, 'weightnorm-cli')], { encoding: 'utf8' });
    if (!existsSync(compiled)) throw new Error('tsc did not build weightnorm-cli/dist/commands/vae.js');
  }
}, 120_000);

describe('weightnorm vae', () => {
  it('a tiny plain-vs-WN run: finite bounds that improve, the report, plot and image grids', async () => {
    const out = join(work, 'tiny');
    const args = ['vae', '--steps', '4', '--train-size', '300', '--batch', '50', '--latent', '2', '--channels', '2,4', '--block', '2', '--threads', '1', '--out', out];
    const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((done) => {
      execFile(process.execPath, [cli, ...args], { cwd: work, timeout: 120_000 }, (error, stdout, stderr) => {
        done({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
      });
    });
    expect(run.code, run.stderr).toBe(0);
    for (const file of ['vae.md', 'vae.json', 'vae-bound.svg', 'vae-bound.png', 'vae-plain-samples.png', 'vae-plain-reconstructions.png', 'vae-wn-samples.png', 'vae-wn-reconstructions.png']) {
      expect(existsSync(join(out, file)), file).toBe(true);
    }
    const report = JSON.parse(readFileSync(join(out, 'vae.json'), 'utf8')) as {
      config: { steps: number; binarization: string };
      variants: { norm: string; init: string; heldOut: { step: number; elbo: number; reconstruction: number; kl: number }[]; blocks: { step: number; elbo: number }[]; loss: number[] }[];
    };
    expect(report.config.steps).toBe(4);
    expect(report.variants.map((v) => [v.norm, v.init])).toEqual([['none', 'default'], ['wn', 'data-dependent']]);
    for (const v of report.variants) {
      expect(v.loss).toHaveLength(4);
      expect(v.blocks.map((b) => b.step)).toEqual([2, 4]);
      expect(v.heldOut.map((e) => e.step)).toEqual([0, 4]);
      for (const e of v.heldOut) {
        expect(Number.isFinite(e.elbo)).toBe(true);
        // ELBO = −(reconstruction + KL) per digit, and a bound on log p(x) ≤ 0 for binary pixels.
        expect(e.elbo).toBeCloseTo(-(e.reconstruction + e.kl), 6);
        expect(e.elbo).toBeLessThan(0);
        expect(e.kl).toBeGreaterThanOrEqual(0);
      }
      expect(v.heldOut[1]!.elbo).toBeGreaterThan(v.heldOut[0]!.elbo);
    }
    const markdown = readFileSync(join(out, 'vae.md'), 'utf8');
    expect(markdown).toContain('![ELBO vs epoch](vae-bound.png)');
    expect(markdown).toContain('threshold 0.5');
    expect(readFileSync(join(out, 'vae-wn-samples.png')).subarray(1, 4).toString('ascii')).toBe('PNG');
  }, 180_000);

  it('a bad option exits 2 naming it', async () => {
    const run = await new Promise<{ code: number | null; stderr: string }>((done) => {
      execFile(process.execPath, [cli, 'vae', '--channels', '3', '--out', join(work, 'bad')], { cwd: work, timeout: 60_000 }, (error, _stdout, stderr) => {
        done({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stderr });
      });
    });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--channels.*Expected two integers/);
  });
});
