// Tensors a suite shares between its tests (vitest only: it registers an afterAll hook).
import { afterAll } from 'vitest';

import type { Tensor } from '../ts/index.js';

/**
 * A `keep` for a suite's shared tensors: each tensor it is given is disposed after the suite's last test, so the
 * suite's own leak checks see only what the tests themselves made.
 */
export function disposedAfterAll(): <T extends Tensor>(t: T) => T {
  const made: Tensor[] = [];
  afterAll(() => {
    for (const t of made) t.dispose();
  });
  return (t) => {
    made.push(t);
    return t;
  };
}
