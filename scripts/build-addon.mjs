#!/usr/bin/env node
// Finds or builds the native addon (build/Release/weightnorm.node, or prebuilds/<platform>-<arch>/ in a package).
//
//   node scripts/build-addon.mjs install        npm's install hook. Uses the prebuilt addon when one matches this
//                                               machine and loads; otherwise builds from source, saying why.
//                                               WEIGHTNORM_BUILD_FROM_SOURCE=1 (or `npm install --build-from-source`)
//                                               always builds; WEIGHTNORM_CPU_ONLY=1 builds without the CUDA kernels.
//   node scripts/build-addon.mjs dev [--cpu-only]
//                                               the development build in a checkout (npm run build, npm test,
//                                               npm run bench): the addon with its benchmark harness, and the
//                                               native kernel tests. Incremental: CUDA code compiled by the install
//                                               is reused.
//
// npm hides an install script's output unless it fails, and a CUDA build takes minutes: the progress lines go to
// the terminal (/dev/tty) as well, so a source build is never silent. The full log is in npm's output on failure,
// or always with `npm install --foreground-scripts`.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const buildDir = join(root, 'build');
const truthy = (value) => value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';

// Status lines: to the terminal when there is one (npm keeps the script's own stdout until it exits), else stderr.
let tty = -1;
if (!process.stdout.isTTY) {
  try {
    tty = openSync('/dev/tty', 'w');
  } catch {
    tty = -1;
  }
}
function say(line) {
  const text = `weightnorm: ${line}\n`;
  if (tty >= 0) {
    try {
      writeSync(tty, text);
    } catch {
      tty = -1;
    }
  }
  process.stderr.write(text);
}

function fail(message) {
  say(message);
  if (tty >= 0) closeSync(tty);
  process.exit(1);
}

function onPath(command) {
  return (spawnSync('/bin/sh', ['-c', `command -v "${command}"`], { encoding: 'utf8' }).stdout ?? '').trim();
}

function cudaCompiler() {
  if (process.env.CUDACXX && existsSync(process.env.CUDACXX)) return process.env.CUDACXX;
  return onPath('nvcc') || (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : '');
}

/** What a source build needs and does not find, as sentences; empty when it can start. */
function missingTools() {
  const missing = [];
  const cmake = onPath('cmake');
  if (!cmake) {
    missing.push('cmake (>= 3.18) is not on PATH');
  } else {
    const version = /cmake version (\d+)\.(\d+)/.exec(spawnSync(cmake, ['--version'], { encoding: 'utf8' }).stdout ?? '');
    if (version && (Number(version[1]) < 3 || (Number(version[1]) === 3 && Number(version[2]) < 18))) {
      missing.push(`cmake ${version[1]}.${version[2]} is too old (3.18 or newer is needed)`);
    }
  }
  const cxx = process.env.CXX || onPath('c++') || onPath('g++') || onPath('clang++');
  if (!cxx) missing.push('no C++17 compiler (c++, g++ or $CXX) is on PATH');
  if (!onPath('make') && !onPath('ninja')) missing.push('neither make nor ninja is on PATH');
  return missing;
}

function cmakeJs(args, env = process.env) {
  const result = spawnSync(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), ...args, '--log-level', 'warn'], {
    cwd: root,
    stdio: ['ignore', 'inherit', 'inherit'],
    env,
  });
  return result.status === 0;
}

function cachedOption(name) {
  const cache = join(buildDir, 'CMakeCache.txt');
  if (!existsSync(cache)) return undefined;
  return new RegExp(`^${name}:BOOL=(\\S+)$`, 'm').exec(readFileSync(cache, 'utf8'))?.[1];
}

/** cmake --build with a progress line on the terminal every 20 s (make's [ nn%] or ninja's [i/n]). */
function buildWithProgress(expectation) {
  return new Promise((resolvePromise) => {
    const started = Date.now();
    let progress = '';
    const child = spawn('cmake', ['--build', buildDir, '--parallel', String(availableParallelism())], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const track = (chunk) => {
      process.stdout.write(chunk);
      for (const line of chunk.toString().split('\n')) {
        const percent = /^\[\s*(\d+)%\]/.exec(line);
        const steps = /^\[(\d+)\/(\d+)\]/.exec(line);
        if (percent) progress = `${percent[1]}%`;
        else if (steps) progress = `${Math.round((100 * Number(steps[1])) / Number(steps[2]))}%`;
      }
    };
    child.stdout.on('data', track);
    child.stderr.on('data', (chunk) => process.stderr.write(chunk));
    const timer = setInterval(() => {
      const seconds = Math.round((Date.now() - started) / 1000);
      say(`still compiling: ${progress || 'starting'} after ${seconds} s (${expectation})`);
    }, 20_000);
    child.on('close', (code) => {
      clearInterval(timer);
      resolvePromise({ ok: code === 0, seconds: Math.round((Date.now() - started) / 1000) });
    });
  });
}

async function buildFromSource({ reason, developer, cpuOnly }) {
  const missing = missingTools();
  if (missing.length) {
    fail(
      `${reason}, so the addon must be built from source, and ${missing.join('; ')}.\n` +
        '  A source build needs CMake >= 3.18, make or ninja, and a C++17 compiler with OpenMP (g++ 9 or newer);\n' +
        '  the CUDA toolkit (12.x or 13.x) is optional. Debian/Ubuntu: apt-get install cmake g++ make,\n' +
        '  then run `npm rebuild weightnorm`. The prebuilt addon covers Linux x64 with glibc 2.34 or newer.',
    );
  }
  const nvcc = cpuOnly ? '' : cudaCompiler();
  const what = nvcc
    ? `with the CUDA kernels (${nvcc}; four GPU architectures: 4 to 12 minutes on 2 cores, WEIGHTNORM_CPU_ONLY=1 skips them)`
    : `CPU-only (${cpuOnly ? 'asked for' : 'no CUDA toolkit found'}; 1 to 2 minutes on 2 cores)`;
  say(`${reason}: building the native addon from source ${what}${developer ? ', with the native tests and the benchmark harness' : ''}`);
  const defines = [];
  // Both ways explicitly: a cached CPU-only choice would otherwise outlive a request for the CUDA build.
  const cpuOnlyValue = cpuOnly ? 'ON' : 'OFF';
  defines.push(`--CDWEIGHTNORM_CPU_ONLY=${cpuOnlyValue}`);
  if (developer) defines.push('--CDWEIGHTNORM_DEVELOPER_TOOLS=ON');
  const upToDate = developer && cachedOption('WEIGHTNORM_DEVELOPER_TOOLS') === 'ON' && cachedOption('WEIGHTNORM_CPU_ONLY') === cpuOnlyValue;
  // cmake --build reconfigures by itself when CMakeLists.txt changes; an explicit configure applies new options.
  if (!upToDate && !cmakeJs(['configure', ...defines])) fail('CMake could not configure the build (its messages are above)');
  const { ok, seconds } = await buildWithProgress(nvcc ? 'the CUDA kernels take 4 to 12 minutes on 2 cores' : '1 to 2 minutes on 2 cores');
  if (!ok) fail(`the build failed after ${seconds} s (the compiler's messages are above)`);
  say(`built build/Release/weightnorm.node in ${seconds} s`);
}

/** The prebuilt addon for this machine, if the package carries one and it loads here; else why not. */
function prebuilt() {
  process.env.PREBUILDS_ONLY = '1'; // node-gyp-build reads it once, when it is first required
  const nodeGypBuild = require('node-gyp-build');
  let path;
  try {
    path = nodeGypBuild.resolve(root);
  } catch {
    if (!existsSync(join(root, 'prebuilds'))) return { reason: 'no prebuilds/ here (a checkout: `npm run package:prebuilt` makes them for a package)' };
    return { reason: `no prebuilt addon for ${process.platform}-${process.arch} in this package (it carries linux-x64 with glibc)` };
  }
  try {
    require(path);
    return { path };
  } catch (error) {
    return { reason: `the prebuilt addon ${path} does not load here (${String(error.message).split('\n')[0]})` };
  }
}

const [mode = 'install', ...flags] = process.argv.slice(2);
if (mode === 'install') {
  const fromSource = truthy(process.env.WEIGHTNORM_BUILD_FROM_SOURCE) || truthy(process.env.npm_config_build_from_source);
  const cpuOnly = truthy(process.env.WEIGHTNORM_CPU_ONLY);
  if (fromSource) {
    await buildFromSource({ reason: 'WEIGHTNORM_BUILD_FROM_SOURCE is set', developer: false, cpuOnly });
  } else {
    const found = prebuilt();
    if (found.path) {
      process.stdout.write(`weightnorm: using the prebuilt addon ${found.path}\n`);
    } else {
      await buildFromSource({ reason: found.reason, developer: false, cpuOnly });
    }
  }
} else if (mode === 'dev') {
  await buildFromSource({ reason: 'development build', developer: true, cpuOnly: flags.includes('--cpu-only') || truthy(process.env.WEIGHTNORM_CPU_ONLY) });
} else {
  fail(`unknown mode '${mode}': expected 'install' or 'dev'`);
}
if (tty >= 0) closeSync(tty);
