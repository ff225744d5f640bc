#!/usr/bin/env node
// Makes prebuilds/linux-x64/ for the package (npm run package:prebuilt, after the install build): the addon as
// weightnorm.napi.glibc.node (node-gyp-build's tags: any Node with N-API 8, glibc), and the libgomp it needs.
// The addon must load on a machine with no compiler, no CUDA toolkit, no driver and no OpenBLAS, so its NEEDED
// libraries are checked against an allowlist: the C library's parts (present wherever Node runs) and libgomp,
// which cannot be linked statically into a shared object (see CMakeLists.txt) and travels beside the addon
// instead (RUNPATH $ORIGIN; GCC's runtime library exception allows it). Prints the glibc the files require.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const addon = join(root, 'build', 'Release', 'weightnorm.node');
const target = join(root, 'prebuilds', `${process.platform}-${process.arch}`);

// glibc's parts, and libgcc_s (GCC's unwinder, in the base system of every glibc distribution: glibc itself loads it).
const SYSTEM_LIBRARIES = ['libc.so.6', 'libm.so.6', 'libdl.so.2', 'libpthread.so.0', 'librt.so.1', 'ld-linux-x86-64.so.2', 'libgcc_s.so.1'];
const BUNDLED_LIBRARIES = ['libgomp.so.1'];

// The oldest glibc the prebuilt files may require (README.md states it: RHEL 9 has 2.34, Ubuntu 22.04 2.35).
const MAX_GLIBC = [2, 34];

function fail(message) {
  console.error(`prebuild: ${message}`);
  process.exit(1);
}

function run(command, args) {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.status !== 0) fail(`${command} ${args.join(' ')} failed: ${result.stderr || result.error}`);
  return result.stdout;
}

function needed(file) {
  return [...run('readelf', ['-d', file]).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
}

/** The newest GLIBC_x.y symbol version a file requires; fails above MAX_GLIBC. */
function glibcRequired(file) {
  const versions = [...run('readelf', ['-V', '-W', file]).matchAll(/Name: GLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
  versions.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const newest = versions.at(-1);
  if (!newest) return 'none';
  if (newest[0] > MAX_GLIBC[0] || (newest[0] === MAX_GLIBC[0] && newest[1] > MAX_GLIBC[1])) {
    const symbols = run('objdump', ['-T', file]).split('\n').filter((line) => line.includes(`GLIBC_${newest[0]}.${newest[1]})`));
    fail(`${file} requires glibc ${newest.join('.')} (at most ${MAX_GLIBC.join('.')} allowed): ${symbols.map((l) => l.trim().split(/\s+/).at(-1)).join(', ')}`);
  }
  return newest.join('.');
}

if (process.platform !== 'linux') fail(`prebuilt addons are made on Linux only, not ${process.platform}`);
if (!existsSync(addon)) fail(`${addon} is missing: run the install build first (npm ci, or node scripts/build-addon.mjs install)`);
const cache = readFileSync(join(root, 'build', 'CMakeCache.txt'), 'utf8');
if (/^WEIGHTNORM_DEVELOPER_TOOLS:BOOL=ON$/m.test(cache)) {
  fail('build/ is the development build (benchmark harness and native tests): a package carries the install build');
}
// Loading it here also proves it loads (this machine has no GPU or driver in CI).
const withCuda = createRequire(import.meta.url)(addon).backend().cuda.compiled;

const libraries = needed(addon);
const unexpected = libraries.filter((lib) => ![...SYSTEM_LIBRARIES, ...BUNDLED_LIBRARIES].includes(lib));
if (unexpected.length) {
  fail(`the addon needs ${unexpected.join(', ')}, which a user's machine may lack (allowed: ${[...SYSTEM_LIBRARIES, ...BUNDLED_LIBRARIES].join(', ')})`);
}

rmSync(join(root, 'prebuilds'), { recursive: true, force: true });
mkdirSync(target, { recursive: true });
copyFileSync(addon, join(target, 'weightnorm.napi.glibc.node'));
const report = [[addon, statSync(addon).size, glibcRequired(addon)]];
for (const lib of BUNDLED_LIBRARIES.filter((name) => libraries.includes(name))) {
  const source = run(process.env.CC || 'gcc', [`-print-file-name=${lib}`]).trim();
  if (!source.startsWith('/') || !existsSync(source)) fail(`${lib} not found (gcc -print-file-name=${lib} gave '${source}')`);
  const bundled = join(target, lib);
  copyFileSync(source, bundled);
  const extra = needed(bundled).filter((dep) => !SYSTEM_LIBRARIES.includes(dep));
  if (extra.length) fail(`${source} needs ${extra.join(', ')}`);
  report.push([source, statSync(bundled).size, glibcRequired(bundled)]);
}
const runpath = /\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[([^\]]*)\]/.exec(run('readelf', ['-d', addon]))?.[1] ?? '';
if (!runpath.split(':').includes('$ORIGIN')) fail(`the addon's RUNPATH is '${runpath}', without $ORIGIN: the bundled libraries would not be found`);

console.log(`prebuild: ${target} (${withCuda ? 'CPU and CUDA kernels' : 'CPU kernels only'})`);
console.log(`  NEEDED: ${libraries.join(', ')}; RUNPATH: ${runpath}`);
for (const [file, size, glibc] of report) console.log(`  ${file}: ${(size / 1048576).toFixed(1)} MiB, requires glibc >= ${glibc}`);
