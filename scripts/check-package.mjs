#!/usr/bin/env node
// Checks the core package's file list (`npm pack --dry-run --json`) against what its users need:
//   - everything a source build compiles or includes: CMakeLists.txt, and every file under cpu/, cuda/, binding/,
//     distributed/ and include/ that git tracks (a missing header broke every source build once), with each local #include
//     of those sources resolving to a packed file;
//   - the compiled library, its loader and the install script;
//   - none of the development-only files (tests, TypeScript sources, the tools package, benchmarks, build output);
//   - with --prebuilt, the prebuilt linux-x64 addon and the libgomp beside it.
// Usage: node scripts/check-package.mjs [--prebuilt] PACK.json   (also imported by test/package.test.ts)
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const REQUIRED = [
  'package.json',
  'README.md',
  'LICENSE',
  'CMakeLists.txt',
  'scripts/build-addon.mjs',
  'dist/index.js',
  'dist/index.d.ts',
  'dist/native.js',
  'dist/require.cjs',
];
const PREBUILT = ['prebuilds/linux-x64/weightnorm.napi.glibc.node', 'prebuilds/linux-x64/libgomp.so.1'];
const FORBIDDEN = [/^test\//, /^ts\//, /^weightnorm-cli\//, /^build\//, /^bench\//, /^examples\//, /^\.ci\//, /^node_modules\//, /\.map$/, /\.tsbuildinfo$/];

/** Problems with a packed file list, as sentences; empty when the package is complete. */
export function packageProblems(files, { prebuilt = false } = {}) {
  const packed = new Set(files);
  const problems = [];
  const tracked = execFileSync('git', ['ls-files', 'cpu', 'cuda', 'binding', 'distributed', 'include'], { cwd: root, encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
  for (const file of [...REQUIRED, ...tracked, ...(prebuilt ? PREBUILT : [])]) {
    if (!packed.has(file)) problems.push(`${file} is not in the package`);
  }
  for (const file of tracked.filter((f) => packed.has(f))) {
    const text = readFileSync(join(root, file), 'utf8');
    for (const [, included] of text.matchAll(/^\s*#\s*include\s+"([^"]+)"/gm)) {
      const candidates = [normalize(join(dirname(file), included)), normalize(join('include', included))];
      if (!candidates.some((c) => packed.has(c))) problems.push(`${file} includes "${included}", which is not in the package`);
    }
  }
  // Sources CMakeLists.txt names outside the development-only section must be packed too.
  const cmake = readFileSync(join(root, 'CMakeLists.txt'), 'utf8');
  for (const [path] of cmake.matchAll(/\b(?:cpu|cuda|binding|distributed|include)\/[\w./-]+\.(?:cc|cu|h|cuh)\b/g)) {
    if (!packed.has(path)) problems.push(`CMakeLists.txt names ${path}, which is not in the package`);
  }
  for (const file of files) {
    if (FORBIDDEN.some((pattern) => pattern.test(file))) problems.push(`${file} is development-only and should not be in the package`);
  }
  return problems;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const listing = args.find((a) => !a.startsWith('--'));
  if (!listing) {
    console.error('usage: node scripts/check-package.mjs [--prebuilt] PACK.json (from npm pack --dry-run --json)');
    process.exit(2);
  }
  const [pack] = JSON.parse(readFileSync(listing, 'utf8'));
  const problems = packageProblems(pack.files.map((f) => f.path), { prebuilt: args.includes('--prebuilt') });
  console.log(`package ${pack.filename}: ${pack.files.length} files, ${(pack.size / 1e6).toFixed(1)} MB packed, ${(pack.unpackedSize / 1e6).toFixed(1)} MB unpacked`);
  for (const problem of problems) console.error(`  ${problem}`);
  if (problems.length) process.exit(1);
}
