// The seed sequence for parameter initialization, dropout and noise layers: manualSeed(s) makes a whole run
// reproducible (each draw takes the next seed of the sequence; the generator itself is counter-based).
let nextValue = 0x5eed;

/** Restarts the seed sequence at `seed` (a non-negative safe integer). */
export function manualSeed(seed: number): void {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw new TypeError(`manualSeed: seed: expected a non-negative safe integer, received ${String(seed)}`);
  }
  nextValue = seed;
}

/** @internal The next seed of the sequence. */
export function nextSeed(): number {
  const seed = nextValue;
  nextValue = (nextValue + 0x9e3779b1) % Number.MAX_SAFE_INTEGER;
  return seed;
}
