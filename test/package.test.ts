// The published package's contents (`npm pack --dry-run`): everything a source build needs is packed and nothing
// that only developers need. An install compiles from these files when no prebuilt addon matches the machine; a
// missing header or a native test named unconditionally by CMakeLists.txt once broke every such install.
// The prebuilt addon itself, and installing the tarball on a machine without a compiler, are checked by .ci/run.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

// @ts-expect-error: a plain JavaScript module without type declarations (it also runs in CI without a build).
import { packageProblems } from '../scripts/check-package.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function packedFiles(): string[] {
  const npm = process.env.npm_execpath;
  const [command, args] = npm && npm.endsWith('.js') ? [process.execPath, [npm]] : ['npm', []];
  const output = execFileSync(command, [...args, 'pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
  return (JSON.parse(output) as [{ files: { path: string }[] }])[0].files.map((f) => f.path);
}

describe('the weightnorm package', () => {
  const files = packedFiles();

  it('holds every file a source build compiles or includes, the library and its loader, and no development files', () => {
    expect((packageProblems as (files: string[]) => string[])(files)).toEqual([]);
  });

  it('builds the native tests and the benchmark harness only in the development build', () => {
    const cmake = readFileSync(join(root, 'CMakeLists.txt'), 'utf8');
    const developerSection = /if\(WEIGHTNORM_DEVELOPER_TOOLS\)[\s\S]*?\nendif\(\)/g;
    // Comments may name the test sources (the runner's description sits above its block); only commands count.
    const outside = cmake.replace(/#.*$/gm, '').replace(developerSection, '');
    expect(outside).not.toMatch(/test\/native\//);
    expect(outside).not.toMatch(/binding\/bench\.cc/);
  });

  it('depends at run time only on what loading or building the addon needs', () => {
    const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(Object.keys(manifest.dependencies).sort()).toEqual(['cmake-js', 'node-addon-api', 'node-gyp-build']);
  });
});
