// A small seeded source of uniform numbers (mulberry32) for environments and replay sampling: deterministic,
// independent of Math.random and of the tensor generator's seed sequence.

/** Returns a function giving the next uniform number in [0, 1) of the stream started at `seed` (any integer). */
export function uniformStream(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
