// The PyTorch expectations of the gradient-check harness: test/fixtures/gradcheck_torch.json, written by
// scripts/make_gradcheck_fixtures.py, and one test/fixtures/gradcheck_<family>_torch.json per further op family,
// each written by its own scripts/make_gradcheck_<family>_fixtures.py (torch is not needed to read them). The
// harness runs the cases of all of them as one list.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface StoredTensor {
  shape: number[];
  data: number[];
}

/** A layer as the fixture describes it: the nn class, its constructor arguments, and children for Sequential. */
export interface LayerSpec {
  type: string;
  in?: number;
  out?: number;
  kernel?: number;
  stride?: number;
  padding?: number;
  bias?: boolean;
  weightNorm?: { dim: number | null };
  /** Load (v, g), then fold them into a plain weight with nn.removeWeightNorm before the forward. */
  removeWeightNorm?: boolean;
  negativeSlope?: number;
  p?: number;
  std?: number;
  features?: number;
  layers?: LayerSpec[];
}

export interface OpConfig {
  op: string;
  [option: string]: unknown;
}

export interface LayerConfig {
  spec: LayerSpec;
  mode: 'train' | 'eval';
}

interface CaseBase {
  name: string;
  /** Inputs as float32 values; for a layer, 'x' and its state dict (our names, '0.v' inside Sequential). */
  inputs: Record<string, StoredTensor>;
  /** The inputs and parameters torch differentiated; every one must get a gradient from us. */
  differentiable: string[];
  cotangent: StoredTensor;
  /** A random op in training mode: no torch expectation; checked against the mask or noise it drew. */
  random: boolean;
  /** torch float64 results (absent for random cases). */
  output?: StoredTensor;
  extras?: Record<string, StoredTensor>;
  grads?: Record<string, number[]>;
  /**
   * Per gradient, max_j Σ_i |c_i · ∂y_i/∂x_j|: the sum of magnitudes behind its largest element. Gradient errors are
   * measured against it: where the terms of J^T c cancel, float32 error is relative to them, not to the small sum.
   */
  gradScales?: Record<string, number>;
}

export interface OpCase extends CaseBase {
  kind: 'op';
  config: OpConfig;
}

export interface LayerCase extends CaseBase {
  kind: 'layer';
  config: LayerConfig;
}

export type FixtureCase = OpCase | LayerCase;

export interface Fixture {
  generator: string;
  torch: string;
  seed: number;
  cases: FixtureCase[];
}

const fixturesDir = fileURLToPath(new URL('../fixtures/', import.meta.url));

/** Every gradient-check fixture file: the core one first, then the op families' in name order. */
export const fixturePaths: string[] = [
  'gradcheck_torch.json',
  ...readdirSync(fixturesDir).filter((name) => /^gradcheck_[a-z0-9_]+_torch\.json$/.test(name)).sort(),
].map((name) => fixturesDir + name);

/** One fixture file as stored: each float32 input written as its shortest decimal. */
export function loadRawFixtureFile(path: string): Fixture {
  return JSON.parse(readFileSync(path, 'utf8')) as Fixture;
}

/** All fixture files as stored, their cases in one list (generator, torch and seed are the core file's). */
export function loadRawFixture(): Fixture {
  const [core, ...families] = fixturePaths.map(loadRawFixtureFile);
  return { ...core!, cases: [core!, ...families].flatMap((f) => f.cases) };
}

/**
 * The fixture with every input and cotangent value read back as the exact float32 it stands for (Math.fround), the
 * values torch computed with and that our tensors hold.
 */
export function loadFixture(): Fixture {
  const fixture = loadRawFixture();
  for (const c of fixture.cases) {
    for (const stored of [...Object.values(c.inputs), c.cotangent]) stored.data = stored.data.map(Math.fround);
  }
  return fixture;
}

/** The size in bytes of each fixture file, by path. */
export function fixtureBytes(): Record<string, number> {
  return Object.fromEntries(fixturePaths.map((path) => [path, statSync(path).size]));
}
