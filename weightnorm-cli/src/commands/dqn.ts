// `weightnorm dqn`: deep Q-learning (Mnih et al., 2015) on CartPole-v0, plain vs weight-normalized Q-network, over
// several seeds. The paper (Salimans & Kingma, 2016, §5.4) reports that weight norm improves DQN on Atari and
// argues batch norm is a poor fit there because the data distribution moves as the policy changes; this runs that
// comparison at a size a small CPU finishes in minutes.
//
// Per run: an MLP 4 → H → H → 2 (ReLU) maps a state to the Q-value of each action; ε-greedy acting with ε decaying
// linearly; every transition goes into a seeded replay buffer; every `trainEvery` steps one minibatch update on the
// Huber loss of Q(s, a) (the taken action, by gather) against y = r + γ·(1 − terminated)·max_a' Q_target(s', a'),
// with Adamax (the paper's optimizer for its DQN runs); the target network is a copy of the online one, refreshed
// every `targetEvery` steps. The weight-norm variant gets data-dependent initialization on states visited by a
// uniformly random policy (there is no fixed dataset); the plain one keeps the default initialization.
// Writes <out>/dqn.json (every return of every run), <out>/dqn.md and the plot <out>/dqn.svg / dqn.png.
import { readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';

import { type Device, gather, init, manualSeed, nn, noGrad, optim, reshape, rl, type Tensor, tensor, tidy } from 'weightnorm';
import { applyThreads, CommandError, deviceName, environment, markdownTable, resolveDevice } from './common.js';
import type { DeviceChoice } from './options.js';
import { prepareOutDir } from './out-dir.js';
import { CHART_FONT, writeChart } from './plot.js';

import { DQN_NORMS, type DqnNorm } from './dqn-options.js';

export { DQN_DEFAULTS, DQN_NORMS, type DqnNorm } from './dqn-options.js';
const LABELS: Record<DqnNorm, string> = { none: 'plain', wn: 'weight norm' };

/** CartPole-v0's definition of solved: the mean return of 100 consecutive episodes reaches 195. */
export const SOLVED_RETURN = 195;
export const SOLVED_WINDOW = 100;

export interface DqnOptions {
  norm: DqnNorm[];
  episodes: number;
  seeds: number;
  /** First seed; runs use firstSeed … firstSeed + seeds − 1. */
  firstSeed: number;
  hidden: number;
  lr: number;
  batch: number;
  gamma: number;
  buffer: number;
  learnStart: number;
  /** Gradient clipping: the largest total gradient norm of an update (0: none). */
  clip: number;
  trainEvery: number;
  targetEvery: number;
  epsilonStart: number;
  epsilonEnd: number;
  epsilonSteps: number;
  /** States from a random policy for the weight-norm variant's data-dependent init. */
  initStates: number;
  maxEpisodeSteps: number;
  device: DeviceChoice;
  threads?: number;
  out: string;
  /** Instead of training: the dqn.json files of earlier runs (e.g. the variants run in parallel), reported together. */
  merge?: string[];
  /** No console lines per run (tests). */
  quiet?: boolean;
}

export interface DqnRun {
  norm: DqnNorm;
  seed: number;
  /** Return of each episode. */
  returns: number[];
  /** Mean Huber loss of the updates in each episode (null before learning starts). */
  losses: (number | null)[];
  /** 1-based episode at whose end the mean of the last 100 returns first reached 195, or null. */
  solvedAt: number | null;
  /** Highest mean of 100 consecutive returns, or null with fewer than 100 episodes. */
  bestWindowMean: number | null;
  steps: number;
  updates: number;
  seconds: number;
}

/** An MLP stateSize → hidden → hidden → actions, ReLU. */
export function qNetwork(hidden: number, weightNorm: boolean): nn.Sequential {
  const { observationSize, actionCount } = rl.CartPole;
  return new nn.Sequential(
    new nn.Linear(observationSize, hidden, { weightNorm }), new nn.ReLU(),
    new nn.Linear(hidden, hidden, { weightNorm }), new nn.ReLU(),
    new nn.Linear(hidden, actionCount, { weightNorm }),
  );
}

/**
 * The loss of one DQN update: Huber(Q(s, a), r + γ·(1 − terminated)·max_a' Q_target(s', a')), mean over the batch.
 * The target side is computed without gradient.
 */
export function qLearningLoss(online: nn.Module, target: nn.Module, batch: rl.ReplayBatch, gamma: number, device: Device): Tensor {
  const size = batch.actions.length;
  const n = batch.states.length / size;
  const states = tensor(batch.states, [size, n], { device });
  const nextStates = tensor(batch.nextStates, [size, n], { device });
  const targets = noGrad(() =>
    rl.tdTargets({
      rewards: tensor(batch.rewards, [size], { device }),
      nextQ: target.forward(nextStates),
      terminated: tensor(batch.terminated, [size], { device }),
      gamma,
    }),
  );
  const actions = tensor(batch.actions, [size, 1], { device, dtype: 'int32' });
  const taken = reshape(gather(online.forward(states), 1, actions), [size]);
  return nn.functional.huberLoss(taken, targets);
}

/** Index of the largest Q-value of one state (the first on ties). */
function greedyAction(online: nn.Module, state: Float64Array, device: Device): number {
  return noGrad(() =>
    tidy(() => {
      const q = online.forward(tensor(Float32Array.from(state), [1, state.length], { device })).toArray();
      let best = 0;
      for (let a = 1; a < q.length; a++) if (q[a]! > q[best]!) best = a;
      return best;
    }),
  );
}

/** States visited by a uniformly random policy from `seed` (episodes restarted as they end), [count, 4]. */
function randomPolicyStates(count: number, seed: number, maxEpisodeSteps: number): Float32Array {
  const env = new rl.CartPole({ seed, maxEpisodeSteps });
  const coin = rl.uniformStream(seed + 1);
  const states = new Float32Array(count * rl.CartPole.observationSize);
  let state = env.reset();
  for (let i = 0; i < count; i++) {
    states.set(state, i * state.length);
    const step = env.step(coin() < 0.5 ? 0 : 1);
    state = step.terminated || step.truncated ? env.reset() : step.observation;
  }
  return states;
}

/** First episode (1-based) where the trailing window mean reaches `threshold`, and the best window mean. */
export function solvedEpisode(returns: readonly number[], window = SOLVED_WINDOW, threshold = SOLVED_RETURN): { solvedAt: number | null; best: number | null } {
  let sum = 0;
  let solvedAt: number | null = null;
  let best: number | null = null;
  for (let i = 0; i < returns.length; i++) {
    sum += returns[i]!;
    if (i >= window) sum -= returns[i - window]!;
    if (i >= window - 1) {
      const mean = sum / window;
      best = best === null ? mean : Math.max(best, mean);
      if (solvedAt === null && mean >= threshold) solvedAt = i + 1;
    }
  }
  return { solvedAt, best };
}

/** One DQN training run: `episodes` episodes of CartPole from `seed`. */
export function trainDqn(options: DqnOptions, norm: DqnNorm, seed: number, device: Device): DqnRun {
  const start = performance.now();
  const stateSize = rl.CartPole.observationSize;
  manualSeed(seed);
  const online = qNetwork(options.hidden, norm === 'wn').to(device);
  const target = qNetwork(options.hidden, norm === 'wn').to(device);
  if (norm === 'wn') {
    // Initialized on what the untrained agent will see first: states of a random policy.
    const count = options.initStates;
    noGrad(() => tidy(() => init.dataDependent(online, tensor(randomPolicyStates(count, seed + 3000, options.maxEpisodeSteps), [count, stateSize], { device }), { seed })));
  }
  target.loadStateDict(online.stateDict());
  const optimizer = new optim.Adamax(online.parameters(), { lr: options.lr });
  const env = new rl.CartPole({ seed, maxEpisodeSteps: options.maxEpisodeSteps });
  const buffer = new rl.ReplayBuffer({ capacity: options.buffer, stateSize, seed: seed + 1000 });
  const explore = rl.uniformStream(seed + 2000);
  const epsilon = rl.linearDecay({ start: options.epsilonStart, end: options.epsilonEnd, steps: options.epsilonSteps });
  const run: DqnRun = { norm, seed, returns: [], losses: [], solvedAt: null, bestWindowMean: null, steps: 0, updates: 0, seconds: 0 };
  try {
    for (let episode = 0; episode < options.episodes; episode++) {
      let state = env.reset();
      let episodeReturn = 0;
      let lossSum = 0;
      let lossCount = 0;
      for (;;) {
        const action = explore() < epsilon(run.steps) ? Math.floor(explore() * rl.CartPole.actionCount) : greedyAction(online, state, device);
        const { observation, reward, terminated, truncated } = env.step(action);
        // A truncated episode's last state is an ordinary state: only termination stops the bootstrap.
        buffer.push(state, action, reward, observation, terminated);
        state = observation;
        episodeReturn += reward;
        run.steps++;
        if (run.steps >= options.learnStart && run.steps % options.trainEvery === 0) {
          const batch = buffer.sample(options.batch);
          lossSum += tidy(() => {
            const loss = qLearningLoss(online, target, batch, options.gamma, device);
            optimizer.zeroGrad();
            loss.backward();
            if (options.clip > 0) optim.clipGradNorm(online.parameters(), options.clip);
            optimizer.step();
            return loss.item();
          });
          lossCount++;
          run.updates++;
        }
        if (run.steps % options.targetEvery === 0) target.loadStateDict(online.stateDict());
        if (terminated || truncated) break;
      }
      if (lossCount > 0 && !Number.isFinite(lossSum)) throw new Error(`dqn ${LABELS[norm]} seed ${seed}: the loss became ${lossSum} in episode ${episode + 1}`);
      run.returns.push(episodeReturn);
      run.losses.push(lossCount > 0 ? lossSum / lossCount : null);
    }
  } finally {
    online.dispose();
    target.dispose();
  }
  const { solvedAt, best } = solvedEpisode(run.returns);
  run.solvedAt = solvedAt;
  run.bestWindowMean = best;
  run.seconds = (performance.now() - start) / 1000;
  return run;
}

function movingMean(values: readonly number[], window: number): number[] {
  let sum = 0;
  return values.map((v, i) => {
    sum += v;
    if (i >= window) sum -= values[i - window]!;
    return sum / Math.min(i + 1, window);
  });
}

/** Per episode over the seeds of one variant: mean and standard deviation of the (smoothed) returns. */
export function acrossSeeds(runs: readonly DqnRun[], smooth: number): { episode: number; mean: number; std: number; low: number; high: number }[] {
  const curves = runs.map((r) => movingMean(r.returns, smooth));
  const length = Math.min(...curves.map((c) => c.length));
  return Array.from({ length }, (_, i) => {
    const values = curves.map((c) => c[i]!);
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    const std = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, values.length - 1));
    return { episode: i + 1, mean, std, low: mean - std, high: mean + std };
  });
}

const SMOOTH = 10;

function chart(runs: DqnRun[], norms: DqnNorm[], subtitle: string): TopLevelSpec {
  const values = norms.flatMap((norm) => acrossSeeds(runs.filter((r) => r.norm === norm), SMOOTH).map((p) => ({ variant: LABELS[norm], ...p })));
  const x = { field: 'episode', type: 'quantitative', title: 'episode' } as const;
  const color = { field: 'variant', type: 'nominal', title: null } as const;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: 'DQN on CartPole-v0: return per episode, plain vs weight norm', subtitle },
    width: 560,
    height: 300,
    data: { values },
    layer: [
      { mark: { type: 'area', opacity: 0.2 }, encoding: { x, y: { field: 'low', type: 'quantitative', title: `return (moving mean of ${SMOOTH} episodes)`, scale: { domain: [0, 210] } }, y2: { field: 'high' }, color } },
      { mark: { type: 'line', strokeWidth: 1.8 }, encoding: { x, y: { field: 'mean', type: 'quantitative' }, color } },
      { data: { values: [{ solved: SOLVED_RETURN }] }, mark: { type: 'rule', strokeDash: [4, 4], color: '#888' }, encoding: { y: { field: 'solved', type: 'quantitative' } } },
    ],
    config: { font: CHART_FONT, legend: { orient: 'bottom-right', labelLimit: 320 } },
  };
}

function fmt(x: number | null, digits = 1): string {
  return x === null ? '–' : x.toFixed(digits);
}

async function writeReport(out: string, options: DqnOptions, runs: DqnRun[], device: Device, seconds: number, commands = [`weightnorm ${process.argv.slice(2).join(' ')}`], recordedEnvironment?: ReturnType<typeof environment>): Promise<string> {
  const base = join(out, 'dqn');
  const seedList = runs.length ? [...new Set(runs.map((r) => r.seed))] : [];
  const files = await writeChart(chart(runs, options.norm, `mean ± std over seeds ${seedList.join(', ')}; dashed: the solved threshold ${SOLVED_RETURN}`), base);
  const env = recordedEnvironment ?? environment(device);
  const summary = options.norm.map((norm) => {
    const mine = runs.filter((r) => r.norm === norm);
    const solved = mine.filter((r) => r.solvedAt !== null);
    const finals = mine.map((r) => r.returns.slice(-SOLVED_WINDOW)).map((last) => last.reduce((a, b) => a + b, 0) / last.length);
    const finalMean = finals.reduce((a, b) => a + b, 0) / Math.max(1, finals.length);
    const allReturns = mine.map((r) => r.returns.reduce((a, b) => a + b, 0) / r.returns.length);
    return [
      LABELS[norm],
      `${solved.length} / ${mine.length}`,
      solved.length ? solved.map((r) => r.solvedAt).sort((a, b) => a! - b!).join(', ') : '–',
      mine.map((r) => fmt(r.bestWindowMean)).join(', '),
      fmt(finalMean),
      fmt(allReturns.reduce((a, b) => a + b, 0) / Math.max(1, allReturns.length)),
      fmt(mine.reduce((a, r) => a + r.seconds, 0) / Math.max(1, mine.length), 0),
    ];
  });
  const perRun = runs.map((r) => [LABELS[r.norm], String(r.seed), fmt(r.solvedAt, 0), fmt(r.bestWindowMean), fmt(r.returns.slice(-SOLVED_WINDOW).reduce((a, b) => a + b, 0) / Math.min(SOLVED_WINDOW, r.returns.length)), String(r.steps), String(r.updates), r.seconds.toFixed(0)]);
  const lines = [
    '# DQN on CartPole-v0: plain vs weight-normalized Q-network',
    '',
    `- environment: rl.CartPole (Barto, Sutton & Anderson 1983 dynamics as in Gym's CartPole-v0), episodes truncated at ${options.maxEpisodeSteps} steps; solved = mean return ≥ ${SOLVED_RETURN} over ${SOLVED_WINDOW} consecutive training episodes (ε-greedy actions included)`,
    `- Q-network: MLP 4 → ${options.hidden} → ${options.hidden} → 2 (ReLU); weight norm: every Linear, data-dependent init on ${options.initStates} states of a random policy; plain: default init`,
    `- DQN: replay buffer ${options.buffer} (uniform, seeded), learning from step ${options.learnStart}, one update of batch ${options.batch} every ${options.trainEvery} step(s), Huber loss on the taken action's TD error, gradient norm clipped at ${options.clip || '∞'}, γ ${options.gamma}, target network copied every ${options.targetEvery} steps, ε ${options.epsilonStart} → ${options.epsilonEnd} linearly over ${options.epsilonSteps} steps; Adamax lr ${options.lr}`,
    `- ${options.episodes} episodes per run; seeds ${seedList.join(', ')} (a seed fixes the initial directions, the environment's initial states, the replay sampling and the exploration coin: both variants see the same streams)`,
    `- machine: ${env.device}; ${env.node}; load average at the end ${env.loadAverage} (a shared host: times are indicative); ${env.date.slice(0, 10)}; ${seconds.toFixed(0)} s of training${commands.length > 1 ? ' (summed over the runs merged, which may have run in parallel)' : ''}`,
    ...commands.map((c) => `- command: \`${c}\``),
    '',
    markdownTable(['variant', 'seeds solved', 'solved at episode', `best mean of ${SOLVED_WINDOW} (per seed)`, `mean of the last ${SOLVED_WINDOW}`, 'mean return, all episodes', 's / run'], summary),
    '',
    `![return per episode](${relative(out, files.png ?? files.svg)})`,
    '',
    'Per run:',
    '',
    markdownTable(['variant', 'seed', 'solved at', `best mean of ${SOLVED_WINDOW}`, `mean of the last ${SOLVED_WINDOW}`, 'env steps', 'updates', 's'], perRun),
    '',
  ];
  writeFileSync(`${base}.md`, lines.join('\n'));
  const { quiet: _quiet, ...recorded } = options;
  writeFileSync(`${base}.json`, JSON.stringify({ options: recorded, commands, environment: env, seconds, runs }, null, 1));
  return `${base}.md`;
}

/** The runs saved in earlier dqn.json files, ordered by seed then variant; the options and seconds of the first. */
function mergedRuns(files: string[]): { options: Partial<DqnOptions>; runs: DqnRun[]; seconds: number; commands: string[]; environment?: ReturnType<typeof environment> } {
  const saved = files.map((file) => {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as { options: Partial<DqnOptions>; runs: DqnRun[]; seconds: number; commands?: string[]; environment?: ReturnType<typeof environment> };
    } catch (error) {
      throw new CommandError(`--merge ${file}: not a readable dqn.json (${(error as Error).message.split('\n')[0]})`);
    }
  });
  const runs = saved.flatMap((s) => s.runs).sort((a, b) => a.seed - b.seed || DQN_NORMS.indexOf(a.norm) - DQN_NORMS.indexOf(b.norm));
  const commands = [...saved.flatMap((s) => s.commands ?? []), `weightnorm ${process.argv.slice(2).join(' ')}`];
  // The machine and load of the first file: where the training ran, not where the merge did.
  return { options: saved[0]!.options, runs, seconds: saved.reduce((sum, s) => sum + s.seconds, 0), commands, environment: saved[0]!.environment };
}

export async function runDqn(options: DqnOptions): Promise<number> {
  const device = resolveDevice(options.device);
  applyThreads(options.threads);
  const out = prepareOutDir(options.out);
  if (options.merge) {
    const merged = mergedRuns(options.merge);
    const norms = DQN_NORMS.filter((n) => merged.runs.some((r) => r.norm === n));
    const report = await writeReport(out, { ...options, ...merged.options, norm: norms, seeds: new Set(merged.runs.map((r) => r.seed)).size, out: options.out, merge: options.merge }, merged.runs, device, merged.seconds, merged.commands, merged.environment);
    if (!options.quiet) console.log(`dqn: ${merged.runs.length} runs from ${options.merge.length} file(s). Report: ${relative(process.cwd(), report)}`);
    return 0;
  }
  const start = performance.now();
  const runs: DqnRun[] = [];
  for (let s = 0; s < options.seeds; s++) {
    for (const norm of options.norm) {
      const run = trainDqn(options, norm, options.firstSeed + s, device);
      runs.push(run);
      if (!options.quiet) {
        console.log(
          `dqn ${LABELS[norm]} seed ${run.seed}: ${run.returns.length} episodes, ${run.steps} steps, ` +
            `${run.solvedAt === null ? `not solved (best mean of ${SOLVED_WINDOW}: ${fmt(run.bestWindowMean)})` : `solved at episode ${run.solvedAt}`}, ${run.seconds.toFixed(0)} s`,
        );
      }
    }
  }
  const report = await writeReport(out, options, runs, device, (performance.now() - start) / 1000);
  if (!options.quiet) console.log(`dqn took ${((performance.now() - start) / 1000).toFixed(0)} s on ${deviceName(device)}. Report: ${relative(process.cwd(), report)}`);
  return 0;
}
