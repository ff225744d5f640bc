import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vitest/config';

const source = (path: string) => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  // The tools package (weightnorm-cli) imports the library by name: tests resolve it to the sources, as the
  // library's own tests use them, so both share one module graph and no build of dist/ is needed.
  resolve: {
    alias: [
      { find: /^weightnorm$/, replacement: source('./ts/index.ts') },
      { find: /^weightnorm\/native$/, replacement: source('./ts/native.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // One process per file: a native crash then fails one file instead of the runner, and memory() counts start
    // from a clean process.
    pool: 'forks',
    reporters: ['default', './test/summary-reporter.ts'],
    maxWorkers: 2,
    // The largest cases compare ~200k-element tensors against the float64 reference; a few seconds each on 2 cores.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
