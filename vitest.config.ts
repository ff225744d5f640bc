import { defineConfig } from 'vitest/config';

export default defineConfig({
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
