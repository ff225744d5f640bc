// How the CPU kernels' OpenMP threads wait between parallel regions, set before the addon (and with it GCC's OpenMP
// runtime, libgomp, which reads its environment once when it loads) is loaded. libgomp's default lets an idle
// thread spin for up to 300,000 iterations before it sleeps: on a machine whose cores are busy with other work, a
// spinning thread takes a core from whoever would run there (other processes, or the thread that must finish the
// region), and a training step full of short parallel regions slows down. OMP_WAIT_POLICY=passive makes idle
// threads sleep at once. Only the waiting changes: the work each thread does, and so every result, stays the same.
// A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone, as is WEIGHTNORM_OMP_WAIT_POLICY=default (which
// keeps libgomp's own default).

/** The environment variable that chooses the wait policy set here: 'passive' (the default), 'active' or 'default'. */
export const WAIT_POLICY_ENV = 'WEIGHTNORM_OMP_WAIT_POLICY';

/** What was decided, for backend().cpu and the docs: the policy in force and who chose it. */
export interface OpenMpWaitPolicy {
  policy: string;
  source: 'user' | 'weightnorm' | 'libgomp default';
}

/** Decides (and for weightnorm's own choice, sets in `env`) the wait policy; exported for tests. */
export function decideWaitPolicy(env: NodeJS.ProcessEnv): OpenMpWaitPolicy {
  if (env.OMP_WAIT_POLICY !== undefined || env.GOMP_SPINCOUNT !== undefined) {
    return { policy: env.OMP_WAIT_POLICY ?? `GOMP_SPINCOUNT=${env.GOMP_SPINCOUNT}`, source: 'user' };
  }
  const choice = (env[WAIT_POLICY_ENV] ?? 'passive').toLowerCase();
  if (choice === 'default') return { policy: 'libgomp default (spin, then sleep)', source: 'libgomp default' };
  if (choice !== 'passive' && choice !== 'active') {
    throw new RangeError(`${WAIT_POLICY_ENV}: expected 'passive', 'active' or 'default', received ${JSON.stringify(env[WAIT_POLICY_ENV])}`);
  }
  env.OMP_WAIT_POLICY = choice.toUpperCase();
  return { policy: choice.toUpperCase(), source: 'weightnorm' };
}

export const openMpWaitPolicy: OpenMpWaitPolicy = decideWaitPolicy(process.env);
