// How the CPU kernels' threads wait between parallel regions, decided before the addon loads. The kernels run on
// the library's own thread pool (cpu/threads.h), which reads WEIGHTNORM_OMP_WAIT_POLICY once, when it starts:
//   adaptive (the default)  a thread spins for up to 200 µs after a region, waiting for the next one, while the
//                           contention sampler sees no other process on the cores (and the team fits on them);
//                           otherwise it sleeps at once. A training step's regions follow one another within tens of
//                           microseconds, and waking a sleeping thread costs about as much on a VM; but on cores
//                           that other work shares, a spinning thread takes a core from the thread it waits for.
//   passive                 sleeps at once (what OMP_WAIT_POLICY=passive did when the kernels ran on OpenMP).
//   active                  always spins first, even beside other processes.
// A user's WEIGHTNORM_OMP_WAIT_POLICY wins; without it, a user's OMP_WAIT_POLICY (passive or active) is followed, as
// when the kernels ran on OpenMP threads. Only the waiting changes: the work each thread does, and so every result,
// stays the same.

/** The environment variable that chooses the wait policy: 'adaptive' (the default, also 'default'), 'passive' or 'active'. */
export const WAIT_POLICY_ENV = 'WEIGHTNORM_OMP_WAIT_POLICY';

export type ThreadWaitPolicy = 'adaptive' | 'passive' | 'active';

/** What was decided: the policy in force and who chose it. */
export interface OpenMpWaitPolicy {
  policy: ThreadWaitPolicy;
  source: 'user' | 'weightnorm';
}

/** Decides the wait policy and writes it to `env` (where the native pool reads it); exported for tests. */
export function decideWaitPolicy(env: NodeJS.ProcessEnv): OpenMpWaitPolicy {
  const own = env[WAIT_POLICY_ENV];
  let decided: OpenMpWaitPolicy;
  if (own !== undefined) {
    const choice = own.toLowerCase();
    if (choice !== 'adaptive' && choice !== 'default' && choice !== 'passive' && choice !== 'active') {
      throw new RangeError(`${WAIT_POLICY_ENV}: expected 'adaptive', 'passive', 'active' or 'default', received ${JSON.stringify(own)}`);
    }
    decided = { policy: choice === 'default' ? 'adaptive' : choice, source: 'user' };
  } else {
    const openMp = env.OMP_WAIT_POLICY?.toLowerCase();
    decided = openMp === 'passive' || openMp === 'active' ? { policy: openMp, source: 'user' } : { policy: 'adaptive', source: 'weightnorm' };
  }
  env[WAIT_POLICY_ENV] = decided.policy;
  return decided;
}

export const openMpWaitPolicy: OpenMpWaitPolicy = decideWaitPolicy(process.env);
