// Alternating rounds for the side-by-side suites (GEMM, weight-normalized Linear, MNIST step): in each round every one
// of our variants runs, then torch's round of the same task, so background load spoils a round of each side
// rather than one side's whole measurement (as in the weight-norm suite). Our variants run in reverse order every
// other round: the variant that runs second finds the caches filled by the first and collects the first's garbage,
// which on a 1 ms step moved a ratio between them by several percent depending on which went first. A variant
// that throws (a kernel not implemented yet on this backend) is dropped with its message and the others go on.
import { summarizeRounds, type Timing } from './measure.js';
import type { PeerTask, TorchPeer } from './peer.js';

export interface Unavailable {
  unavailable: string;
}
export type Measured = Timing | Unavailable;

export function isUnavailable(m: Measured | null | undefined): m is Unavailable {
  return !m || 'unavailable' in m;
}

export interface RoundPlan {
  rounds: number;
  warmup: number;
  /** Timed runs per round per variant. */
  repeats: number;
}

/** Our variant: per-run milliseconds of `repeats` runs after `warmup` untimed ones. */
export type OurVariant = (warmup: number, repeats: number) => number[];

export interface AlternateResult {
  ours: Record<string, Measured>;
  /** null: no peer (or it failed before timing: see peerError). */
  theirs: Record<string, Measured> | null;
  calls: Record<string, string>;
  peerError: string | null;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Times `ours` and the peer's task (already described by `prepare`, which is called here) in alternating rounds;
 * `unavailableOurs` lists our variants known not to run (failed their check), reported as they are.
 */
export async function alternate(
  ours: Record<string, OurVariant>,
  unavailableOurs: Record<string, string>,
  peer: TorchPeer | null,
  prepare: ((peer: TorchPeer) => Promise<PeerTask>) | null,
  plan: RoundPlan,
  onRound?: (round: number) => void,
): Promise<AlternateResult> {
  const oursRuns = new Map<string, number[][]>(Object.keys(ours).map((name) => [name, []]));
  const oursErrors: Record<string, string> = { ...unavailableOurs };
  const theirsRuns = new Map<string, number[][]>();
  const theirsErrors: Record<string, string> = {};
  let calls: Record<string, string> = {};
  let peerError: string | null = null;
  let task: PeerTask | null = null;
  if (peer && prepare) {
    try {
      task = await prepare(peer);
      calls = task.calls;
      Object.assign(theirsErrors, task.unavailable);
      for (const name of task.variants) theirsRuns.set(name, []);
    } catch (error) {
      peerError = errorText(error);
    }
  }
  const variants = Object.entries(ours);
  for (let round = 0; round < plan.rounds; round++) {
    onRound?.(round);
    for (const [name, run] of round % 2 === 0 ? variants : [...variants].reverse()) {
      if (name in oursErrors) continue;
      try {
        oursRuns.get(name)!.push(run(plan.warmup, plan.repeats));
      } catch (error) {
        oursErrors[name] = errorText(error);
      }
    }
    if (task && peer && peerError === null) {
      try {
        const { times, errors } = await peer.taskRound(plan.warmup, plan.repeats);
        for (const [name, runs] of Object.entries(times)) theirsRuns.get(name)?.push(runs);
        Object.assign(theirsErrors, errors);
      } catch (error) {
        peerError = errorText(error);
      }
    }
  }
  if (peer && task) await peer.release().catch(() => undefined);
  const summarize = (runs: Map<string, number[][]>, errors: Record<string, string>, names: string[]) =>
    Object.fromEntries(
      names.map((name): [string, Measured] => {
        const rounds = runs.get(name) ?? [];
        if (name in errors) return [name, { unavailable: errors[name]! }];
        if (rounds.length === 0) return [name, { unavailable: 'not measured' }];
        return [name, summarizeRounds(rounds)];
      }),
    );
  const oursNames = [...new Set([...Object.keys(ours), ...Object.keys(unavailableOurs)])];
  const theirsNames = [...new Set([...theirsRuns.keys(), ...Object.keys(theirsErrors)])];
  return {
    ours: summarize(oursRuns, oursErrors, oursNames),
    theirs: task && peerError === null ? summarize(theirsRuns, theirsErrors, theirsNames) : null,
    calls,
    peerError,
  };
}

/** Wall-clock milliseconds of step() + synchronize, per run, after `warmup` untimed runs (the JS-driven suites). */
export function wallTimes(step: () => void, synchronize: () => void, warmup: number, repeats: number): number[] {
  for (let i = 0; i < warmup; i++) step();
  synchronize();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    step();
    synchronize();
    times.push(performance.now() - start);
  }
  return times;
}

/** Rounds a float32 array to bfloat16 (nearest, ties to even) and back: what a bfloat16 kernel reads. */
export function roundToBfloat16(data: Float32Array): Float32Array {
  const out = new Float32Array(data);
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < bits.length; i++) {
    const word = bits[i]!;
    if ((word & 0x7fffffff) > 0x7f800000) continue; // NaN stays
    bits[i] = ((word + 0x7fff + ((word >>> 16) & 1)) >>> 16) << 16;
  }
  return out;
}
