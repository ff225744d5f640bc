// The assertion the checkpoint suites share (vitest only).
import { expect } from 'vitest';

import { io } from '../ts/index.js';

/** Runs fn, expects an io.CheckpointError whose message matches every fragment, and returns it. */
export function expectCheckpointError(fn: () => unknown, ...fragments: (string | RegExp)[]): io.CheckpointError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught, 'expected a CheckpointError').toBeInstanceOf(io.CheckpointError);
  for (const fragment of fragments) expect((caught as Error).message).toMatch(fragment);
  return caught as io.CheckpointError;
}
