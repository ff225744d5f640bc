#!/usr/bin/env node
// Writes test/fixtures/native_reference/weightnorm.bin: the native kernel tests' weight-norm cases with their float64
// expected values, computed by the TypeScript reference (test/reference/weightnorm.ts, through
// test/reference/native-fixtures.ts, which documents the format), and one file per other op family
// (test/reference/native-op-fixtures.ts: conv2d.bin from test/reference/conv.ts, max_pool2d.bin and
// global_avg_pool.bin from test/reference/nn.ts; test/reference/native-kernel-fixtures.ts: the optimizers, batch norm,
// the losses, the reductions, the rounding elementwise ops and the GEMM epilogue from optim.ts, nn.ts, reduce.ts, elementwise.ts
// and gemm.ts; test/reference/native-bfloat16-fixture.ts: bfloat16.bin, the float32 -> bfloat16 conversion's bits from
// bfloat16.ts).
// The native test (test/native/weightnorm_cases.cc)
// reads it; test/native-reference.test.ts fails when the committed file differs from what this writes today.
//
//   npm run build:ts && node scripts/make_native_reference.mjs
//
// The inputs come from the library's seeded randn (the native test draws the same numbers from cpu::fill_normal), so
// the addon must be built (node scripts/build-addon.mjs dev --cpu-only) and dist/ current.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { default: ts } = await import('typescript');

// The reference modules, transpiled one file at a time (they import each other only, by relative path).
const scratch = mkdtempSync(join(tmpdir(), 'weightnorm-native-reference-'));
try {
  for (const name of ['weightnorm', 'native-fixtures', 'conv', 'nn', 'native-op-fixtures', 'optim', 'reduce', 'elementwise', 'gemm', 'native-kernel-fixtures', 'bfloat16', 'native-bfloat16-fixture']) {
    const source = join(root, 'test', 'reference', `${name}.ts`);
    const { outputText } = ts.transpileModule(readFileSync(source, 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
      fileName: source,
    });
    writeFileSync(join(scratch, `${name}.js`), outputText);
  }
  const { libraryInputSource, nativeWeightNormFixture } = await import(pathToFileURL(join(scratch, 'native-fixtures.js')).href);
  const { randn, tensor } = await import(pathToFileURL(join(root, 'dist', 'index.js')).href);
  const bytes = nativeWeightNormFixture(libraryInputSource({ randn, tensor }));
  const out = join(root, 'test', 'fixtures', 'native_reference', 'weightnorm.bin');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, bytes);
  console.log(`wrote ${out} (${bytes.length} bytes)`);
  // The other op families (test/reference/native-op-fixtures.ts).
  const { nativeOpFixtures } = await import(pathToFileURL(join(scratch, 'native-op-fixtures.js')).href);
  const { nativeKernelFixtures } = await import(pathToFileURL(join(scratch, 'native-kernel-fixtures.js')).href);
  for (const { file, write } of [...nativeOpFixtures, ...nativeKernelFixtures]) {
    const opBytes = write(libraryInputSource({ randn, tensor }));
    const opOut = join(dirname(out), file);
    writeFileSync(opOut, opBytes);
    console.log(`wrote ${opOut} (${opBytes.length} bytes)`);
  }
  // The conversion's stored inputs (bit patterns; the random ones from the library's uniformStream) and expected bits.
  const { nativeBfloat16Fixture } = await import(pathToFileURL(join(scratch, 'native-bfloat16-fixture.js')).href);
  const { uniformStream } = await import(pathToFileURL(join(root, 'dist', 'rl', 'random.js')).href);
  const convertBytes = nativeBfloat16Fixture(uniformStream);
  const convertOut = join(dirname(out), 'bfloat16.bin');
  writeFileSync(convertOut, convertBytes);
  console.log(`wrote ${convertOut} (${convertBytes.length} bytes)`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
