// The dqn command's pieces: the TD target and the taken-action Huber loss against a float64 example worked by hand,
// the solved criterion, and a short run of the whole command (files written, numbers finite).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

import { nn, rl, tensor } from '../ts/index.js';
import { DQN_DEFAULTS, type DqnRun, qLearningLoss, runDqn, solvedEpisode } from '../weightnorm-cli/src/commands/dqn.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = mkdtempSync(join(tmpdir(), 'weightnorm-dqn-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A module whose forward returns fixed Q-values (rows per state, looked up by the state's first number). */
class FixedQ extends nn.Module {
  constructor(private readonly table: number[][]) {
    super();
  }
  forward(x: import('../ts/index.js').Tensor) {
    const rows = x.toArray();
    const n = x.shape[1]!;
    const q = Array.from({ length: x.shape[0]! }, (_, i) => this.table[rows[i * n]!]!);
    return tensor(q.flat(), [q.length, 2]);
  }
}

describe('DQN targets and loss', () => {
  it('y = r + γ·(1 − terminated)·max_a′ Q(s′, a′), by hand in float64', () => {
    const nextQ = [[1.5, -2], [0.25, 3], [4, 4.5]];
    const rewards = [1, 0.5, -1];
    const terminated = [0, 0, 1];
    const gamma = 0.9;
    const y = rl.tdTargets({ rewards: tensor(rewards), nextQ: tensor(nextQ), terminated: tensor(terminated), gamma }).toArray();
    // 1 + 0.9·1.5 = 2.35; 0.5 + 0.9·3 = 3.2; terminal: −1.
    const hand = [2.35, 3.2, -1];
    // float32 storage: 2.35 and 3.2 are not exact in binary32, relative error ≤ 2^-24 per rounding.
    hand.forEach((v, i) => expect(Math.abs(y[i]! - v)).toBeLessThan(1e-6));
    expect(() => rl.tdTargets({ rewards: tensor(rewards), nextQ: tensor([1, 2, 3]), terminated: tensor(terminated), gamma })).toThrow(/rl\.tdTargets: options\.nextQ: expected \[batch, actions\]/);
    expect(() => rl.tdTargets({ rewards: tensor(rewards), nextQ: tensor(nextQ), terminated: tensor(terminated), gamma: 1.5 })).toThrow(RangeError);
  });

  it('the update loss is the mean Huber loss of the taken action’s TD error, by hand', () => {
    // States are looked up by their first number: s0 → row 0, ... Online Q(s, ·), target Q(s′, ·).
    const online = new FixedQ([[0.5, 2], [1, -1], [3, 0]]);
    const target = new FixedQ([[0, 0], [0, 0], [0, 0], [1.5, -2], [0.25, 3], [4, 4.5]]);
    const batch: rl.ReplayBatch = {
      states: Float32Array.from([0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]),
      actions: Int32Array.from([1, 0, 0]),
      rewards: Float32Array.from([1, 0.5, -1]),
      nextStates: Float32Array.from([3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0]),
      terminated: Float32Array.from([0, 0, 1]),
      slots: Int32Array.from([0, 1, 2]),
    };
    const loss = qLearningLoss(online, target, batch, 0.9, 'cpu').item();
    // Taken Q: 2, 1, 3; targets 2.35, 3.2, −1; errors −0.35, −2.2, 4.
    // Huber (δ = 1): ½·0.35² = 0.06125; 2.2 − 0.5 = 1.7; 4 − 0.5 = 3.5; mean = 5.26125 / 3.
    expect(Math.abs(loss - 5.26125 / 3)).toBeLessThan(1e-6);
  });

  it('solved = the first episode where the trailing 100-episode mean reaches 195', () => {
    const returns = [...new Array<number>(99).fill(10), ...new Array<number>(200).fill(200)];
    // Window ending at episode e (1-based) holds (e − 99) returns of 200 for e ≥ 100: mean ≥ 195 ⇔ 190·k ≥ 18500 ⇔ k ≥ 98 (k = e − 99).
    expect(solvedEpisode(returns).solvedAt).toBe(197);
    expect(solvedEpisode(returns.slice(0, 196)).solvedAt).toBeNull();
    expect(solvedEpisode(returns.slice(0, 99)).best).toBeNull();
  });
});

describe('weightnorm dqn (short run)', () => {
  it('trains both variants for a few episodes and writes the report, the JSON and the plot', async () => {
    const out = join(work, 'dqn');
    const code = await runDqn({ ...DQN_DEFAULTS, norm: ['none', 'wn'], episodes: 6, seeds: 2, learnStart: 40, buffer: 500, targetEvery: 50, epsilonSteps: 100, batch: 16, device: 'cpu', out, quiet: true });
    expect(code).toBe(0);
    for (const file of ['dqn.md', 'dqn.json', 'dqn.svg', 'dqn.png']) expect(existsSync(join(out, file))).toBe(true);
    const { runs } = JSON.parse(readFileSync(join(out, 'dqn.json'), 'utf8')) as { runs: DqnRun[] };
    expect(runs.map((r) => `${r.norm}/${r.seed}`)).toEqual(['none/0', 'wn/0', 'none/1', 'wn/1']);
    for (const run of runs) {
      expect(run.returns).toHaveLength(6);
      // A CartPole return counts steps: an integer in [1, 200].
      for (const r of run.returns) expect(Number.isInteger(r) && r >= 1 && r <= 200).toBe(true);
      expect(run.steps).toBe(run.returns.reduce((a, b) => a + b, 0));
      expect(run.updates).toBe(run.steps - 40 + 1);
      const losses = run.losses.filter((l): l is number => l !== null);
      expect(losses.length).toBeGreaterThan(0);
      for (const l of losses) expect(Number.isFinite(l) && l >= 0).toBe(true);
    }
    const report = readFileSync(join(out, 'dqn.md'), 'utf8');
    expect(report).toMatch(/\| plain +\| 0 \/ 2/);
    expect(report).toMatch(/\| weight norm +\| 0 \/ 2/);

    // --merge reports the runs of several dqn.json files together, without training.
    const merged = join(work, 'merged');
    await runDqn({ ...DQN_DEFAULTS, episodes: 6, seeds: 1, device: 'cpu', out: merged, quiet: true, merge: [join(out, 'dqn.json'), join(out, 'dqn.json')] });
    const both = JSON.parse(readFileSync(join(merged, 'dqn.json'), 'utf8')) as { runs: DqnRun[] };
    expect(both.runs.map((r) => `${r.norm}/${r.seed}`)).toEqual(['none/0', 'none/0', 'wn/0', 'wn/0', 'none/1', 'none/1', 'wn/1', 'wn/1']);
    expect(existsSync(join(merged, 'dqn.png'))).toBe(true);
  });

  it('is a command of the weightnorm CLI: runs from the bin and refuses a bad option with exit code 2', () => {
    // The bin runs weightnorm-cli/dist: rebuild it (and the library's dist/) when a source is newer.
    const newest = (dir: string, ext: string): number =>
      readdirSync(dir, { withFileTypes: true }).reduce((m, e) => Math.max(m, e.isDirectory() ? newest(join(dir, e.name), ext) : e.name.endsWith(ext) ? statSync(join(dir, e.name)).mtimeMs : 0), 0);
    const compiled = join(root, 'weightnorm-cli', 'dist', 'commands', 'dqn.js');
    const built = existsSync(compiled) ? Math.min(newest(join(root, 'weightnorm-cli', 'dist'), '.js'), newest(join(root, 'dist'), '.js')) : 0;
    if (Math.max(newest(join(root, 'ts'), '.ts'), newest(join(root, 'weightnorm-cli', 'src'), '.ts')) > built) {
      spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-b', join(root, 'weightnorm-cli')], { encoding: 'utf8' });
    }
    const bin = join(root, 'weightnorm-cli', 'bin', 'weightnorm.js');
    const out = join(work, 'bin');
    const ok = spawnSync(process.execPath, [bin, 'dqn', '--episodes', '3', '--seeds', '1', '--norm', 'wn', '--learn-start', '20', '--device', 'cpu', '--out', out], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/dqn weight norm seed 0: 3 episodes/);
    expect(existsSync(join(out, 'dqn.md'))).toBe(true);
    const bad = spawnSync(process.execPath, [bin, 'dqn', '--epsilon-end', '1.5'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--epsilon-end.*Expected a number in \[0, 1\]/);
  }, 120_000);
});
