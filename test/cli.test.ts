// The `weightnorm` command line as a user runs it: the tools package's bin (weightnorm-cli) in a child process. train learns,
// diverges with exit code 1, writes its log and checkpoint; compare and lr-sweep write reports and plots that parse;
// bad options exit 2 with a message naming the option, what was expected and what was received.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { choiceList, integer, NORMS, positiveList } from '../weightnorm-cli/src/commands/options.js';
import { backend, data, io } from '../ts/index.js';
import { reproduce, runSeed, uniformGenerator, writeFashionMnistFolder } from './helpers.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'weightnorm-cli', 'bin', 'weightnorm.js');
const cliDist = join(root, 'weightnorm-cli', 'dist');
const work = mkdtempSync(join(tmpdir(), 'weightnorm-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the compiled CLI in `work` (with `env` added to the environment); the training cases pass --threads 1 so their
 * time does not depend on the machine.
 */
function weightnorm(args: string[], timeout = 60_000, env: Record<string, string> = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(process.execPath, [cli, ...args], { cwd: work, timeout, env: { ...process.env, WEIGHTNORM_DEBUG: '1', ...env } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      done({ code, stdout, stderr });
    });
  });
}

function newestMtime(dir: string, ext: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(path, ext));
    else if (entry.name.endsWith(ext)) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

// weightnorm-cli/dist (and the library's dist/ it imports) is what `weightnorm` runs; rebuild both when a source is
// newer (tsc emits even if another file has a type error).
beforeAll(() => {
  const compiled = join(cliDist, 'commands', 'compare.js');
  const built = existsSync(compiled) ? Math.min(newestMtime(cliDist, '.js'), newestMtime(join(root, 'dist'), '.js')) : 0;
  if (!existsSync(compiled) || Math.max(newestMtime(join(root, 'ts'), '.ts'), newestMtime(join(root, 'weightnorm-cli', 'src'), '.ts')) > built) {
    const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-b', join(root, 'weightnorm-cli')], {
      encoding: 'utf8',
    });
    if (!existsSync(compiled)) throw new Error(`tsc did not build weightnorm-cli/dist/: ${tsc.stdout}${tsc.stderr}`);
  }
}, 120_000);

/** Well-formed enough to be XML: one root element, every tag closed in order, nothing after the root. */
function expectWellFormedSvg(text: string, what: string): void {
  expect(text.startsWith('<svg'), `${what} starts with <svg`).toBe(true);
  const body = text.replace(/<!--[\s\S]*?-->/g, '').replace(/<!\[CDATA\[[\s\S]*?\]\]>/g, '');
  const stack: string[] = [];
  let closedRoot = false;
  for (const match of body.matchAll(/<(\/?)([A-Za-z][\w:.-]*)((?:[^>"']|"[^"]*"|'[^']*')*?)(\/?)>/g)) {
    const [, closing, name, , selfClosing] = match;
    expect(closedRoot, `${what}: content after the root element`).toBe(false);
    if (closing) {
      expect(stack.pop(), `${what}: </${name}> closes the open element`).toBe(name);
      if (stack.length === 0) closedRoot = true;
    } else if (!selfClosing) {
      stack.push(name!);
    }
  }
  expect(stack, `${what}: unclosed elements`).toEqual([]);
  expect(closedRoot, `${what}: has a root element`).toBe(true);
  // Stray '<' outside tags would make it invalid XML.
  expect(body.replace(/<(\/?)([A-Za-z][\w:.-]*)((?:[^>"']|"[^"]*"|'[^']*')*?)(\/?)>/g, '')).not.toContain('<');
}

function expectPng(path: string): void {
  const bytes = readFileSync(path);
  expect([...bytes.subarray(0, 8)], `${path}: PNG signature`).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  expect(bytes.subarray(12, 16).toString('latin1'), `${path}: IHDR chunk first`).toBe('IHDR');
  expect(bytes.readUInt32BE(16), `${path}: width`).toBeGreaterThan(100);
  expect(bytes.readUInt32BE(20), `${path}: height`).toBeGreaterThan(100);
}

describe('option parsers', () => {
  it('parse lists and integers, and reject bad values with what was expected', () => {
    expect(positiveList('1e-3, 3e-4,1e-3')).toEqual([3e-4, 1e-3]);
    expect(choiceList(NORMS)('wn+mobn,none')).toEqual(['none', 'wn+mobn']);
    expect(integer(1)('12')).toBe(12);
    expect(() => positiveList('0.1,-1')).toThrow(InvalidArgumentError);
    expect(() => positiveList('0.1,-1')).toThrow("'-1'");
    expect(() => choiceList(NORMS)('wn,ln')).toThrow("'ln'");
    expect(() => integer(1)('1.5')).toThrow('Expected an integer ≥ 1');
    expect(() => integer(1, 8000)('9000')).toThrow('in [1, 8000]');
  });
});

describe('weightnorm CLI', () => {
  it('rejects bad usage with exit code 2 and a message naming the option, the expectation and the value', async () => {
    const cases: [string[], string[]][] = [
      [['train', '--lr', 'abc'], ["option '--lr <x>' argument 'abc' is invalid", 'positive']],
      [['train', '--lr', '0'], ["argument '0' is invalid", 'positive']],
      [['train', '--model', 'rnn'], ["argument 'rnn' is invalid", 'mlp, cnn']],
      [['train', '--norm', 'layer'], ["argument 'layer' is invalid", 'wn+mobn']],
      [['train', '--epochs', '0'], ["option '--epochs <n>' argument '0' is invalid", 'integer ≥ 1']],
      [['train', '--batch', '2.5'], ["argument '2.5' is invalid", 'integer']],
      [['train', '--momentum', '1'], ["option '--momentum <m>' argument '1' is invalid", '[0, 1)']],
      [['train', '--train-size', '0'], ["argument '0' is invalid", 'integer ≥ 1']],
      [['train', '--dataset', 'cifar'], ["argument 'cifar' is invalid", 'mnist, fashion-mnist']],
      [['train', '--device', 'tpu'], ["argument 'tpu' is invalid", 'auto, cpu, cuda']],
      [['train', '--bogus'], ["unknown option '--bogus'"]],
      [['compare', '--variants', 'wn,foo'], ["option '--variants <list>' argument 'wn,foo' is invalid", "'foo'"]],
      [['compare', '--lrs', '1e-3,x'], ["argument '1e-3,x' is invalid", "'x'"]],
      [['lr-sweep', '--lrs', '0.1,-1'], ["argument '0.1,-1' is invalid", "'-1'"]],
      [['frobnicate'], ["unknown command 'frobnicate'"]],
    ];
    const runs = await Promise.all(cases.map(([args]) => weightnorm(args)));
    runs.forEach((run, i) => {
      const [args, messages] = cases[i]!;
      expect(run.code, `weightnorm ${args.join(' ')}: ${run.stderr}`).toBe(2);
      for (const message of messages) expect(run.stderr, `weightnorm ${args.join(' ')}`).toContain(message);
      expect(run.stderr, 'no stack trace for a usage error').not.toMatch(/\n\s+at /);
    });
  });

  it('exits 2 for a valid command line this machine cannot run, before training', async () => {
    const batch = await weightnorm(['train', '--train-size', '50', '--batch', '100', '--out', 'never']);
    expect(batch.code, batch.stderr).toBe(2);
    expect(batch.stderr).toContain('--batch 100 is larger than the 50 training digits');
    const size = await weightnorm(['train', '--train-size', '9000', '--out', 'never']);
    expect(size.code, size.stderr).toBe(2);
    expect(size.stderr).toContain('--train-size 9000 is more than the 8000 training examples of this dataset');
    if (!backend().cuda.usable) {
      const cuda = await weightnorm(['train', '--device', 'cuda', '--out', 'never']);
      expect(cuda.code, cuda.stderr).toBe(2);
      expect(cuda.stderr).toContain('--device cuda: CUDA is not usable here');
    }
  });

  it('exits 2 naming the path when --out is a file or cannot be created, before any training or benchmark', async () => {
    const file = join(work, 'not-a-folder');
    writeFileSync(file, 'x');
    const under = join(file, 'sub'); // a folder cannot be created inside a file
    const proc = '/proc/weightnorm-out'; // cannot be created even by root
    const cases: string[][] = [
      ['train', '--out', file],
      ['train', '--out', under],
      ['compare', '--out', file],
      ['lr-sweep', '--out', proc],
      ['bench', '--quick', '--out', file],
    ];
    const runs = await Promise.all(cases.map((args) => weightnorm(args)));
    runs.forEach((run, i) => {
      const args = cases[i]!;
      const path = args.at(-1)!;
      expect(run.code, `weightnorm ${args.join(' ')}: ${run.stderr}`).toBe(2);
      expect(run.stderr).toContain(`--out ${path}: `);
      expect(run.stderr).toMatch(path === file ? /is a file, not a folder/ : /cannot create the folder/);
      expect(run.stdout, 'nothing ran').not.toMatch(/epoch|step|GB\/s/i);
    });
    expect(readFileSync(file, 'utf8')).toBe('x');
    const fresh = join(work, 'made', 'by', 'probe');
    const ok = await weightnorm(['train', '--train-size', '50', '--batch', '100', '--out', fresh]);
    expect(ok.code).toBe(2); // the batch check comes later, after the folder was made and probed
    expect(existsSync(fresh) && readdirSync(fresh)).toEqual([]);
  }, 120_000);

  it('prints --help for every command with exit code 0', async () => {
    const commands = ['train', 'compare', 'lr-sweep', 'sequence'];
    const runs = await Promise.all([weightnorm(['--help']), ...commands.map((c) => weightnorm([c, '--help']))]);
    expect(runs.map((r) => r.code)).toEqual([0, 0, 0, 0, 0]);
    for (const command of commands) expect(runs[0]!.stdout).toContain(command);
    expect(runs[1]!.stdout).toContain('--norm <norm>');
    expect(runs[2]!.stdout).toContain('--target-loss <x>');
    expect(runs[3]!.stdout).toContain('--lrs <list>');
    expect(runs[4]!.stdout).toContain('--online-steps <n>');
  });

  it('train learns real digits in one short epoch, logs every step and writes a loadable checkpoint', async () => {
    // 40 Adam steps (batch 50, lr 3e-3) on 2000 digits reached 0.884–0.895 held-out accuracy for seeds 0–2 (chance is
    // 0.1). 0.8 leaves room for other seeds, thread counts and kernel rounding; a broken gradient or init falls below it.
    const run = await weightnorm(['train', '--model', 'mlp', '--norm', 'wn', '--epochs', '1', '--train-size', '2000', '--batch', '50', '--threads', '1', '--out', 'train-wn']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/epoch 1\/1: train loss [\d.]+, held-out loss [\d.]+, accuracy [\d.]+%/);
    const log = JSON.parse(readFileSync(join(work, 'train-wn', 'log.json'), 'utf8'));
    expect(log.steps).toHaveLength(40);
    log.steps.forEach((s: { step: number; loss: number; time: number }, i: number) => {
      expect(s.step).toBe(i + 1);
      expect(Number.isFinite(s.loss) && s.loss > 0).toBe(true);
      expect(s.time).toBeGreaterThan(0);
    });
    expect(log.diverged).toBeNull();
    expect(log.epochs[0].heldOut.accuracy, `held-out accuracy after 40 steps (chance 0.1)`).toBeGreaterThanOrEqual(0.8);
    const checkpoint = io.inspect(join(work, 'train-wn', 'checkpoint.safetensors'));
    expect(checkpoint.metadata.norm).toBe('wn');
    expect(Object.keys(checkpoint.tensors)).toEqual(expect.arrayContaining(['0.v', '0.g', '0.bias', '4.v']));
  });

  it('train exits 1 when the loss diverges, with the step in the message and the log', async () => {
    // Weight norm with plain SGD at lr 10 overflows within a few steps (see examples/results/lr-sweep-mlp.md).
    const run = await weightnorm(['train', '--optimizer', 'sgd', '--lr', '10', '--steps', '30', '--train-size', '1000', '--threads', '1', '--out', 'diverge']);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stderr).toMatch(/training diverged: the loss is (NaN|-?Infinity) at step \d+/);
    const log = JSON.parse(readFileSync(join(work, 'diverge', 'log.json'), 'utf8'));
    expect(log.diverged.step).toBeGreaterThan(0);
    expect(log.checkpoint).toBeNull();
    expect(existsSync(join(work, 'diverge', 'checkpoint.safetensors'))).toBe(false);
  });

  it('compare writes a Markdown report, JSON, and the loss plot as SVG and PNG', async () => {
    const run = await weightnorm([
      'compare', '--variants', 'none,wn,wn+mobn', '--lrs', '1e-3,3e-3', '--pilot-steps', '5', '--steps', '20', '--train-size', '1000',
      '--timing-rounds', '1', '--timing-steps', '3', '--threads', '1', '--out', 'compare',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const dir = join(work, 'compare');
    expect(run.stdout).toContain(`Report: ${relative(work, join(dir, 'compare-mlp.md'))}`);
    const report = readFileSync(join(dir, 'compare-mlp.md'), 'utf8');
    expect(report).toContain('| variant | lr | held-out accuracy |');
    for (const row of ['| plain |', '| weight norm |', '| WN + mean-only BN |']) expect(report).toContain(row);
    expect(report).toMatch(/Weight norm overhead per iteration:\*\* [+-][\d.]+% vs plain/);
    expect(report).toContain('![training loss vs iteration](compare-mlp.png)');
    const json = JSON.parse(readFileSync(join(dir, 'compare-mlp.json'), 'utf8'));
    expect(json.variants.map((v: { loss: number[] }) => v.loss.length)).toEqual([20, 20, 20]);
    expect(json.variants[0].pilot.map((p: { lr: number }) => p.lr)).toEqual([1e-3, 3e-3]);
    expectWellFormedSvg(readFileSync(join(dir, 'compare-mlp.svg'), 'utf8'), 'compare-mlp.svg');
    expectPng(join(dir, 'compare-mlp.png'));
  });

  it('lr-sweep reports diverged runs as such and writes its plot as SVG and PNG', async () => {
    const run = await weightnorm(['lr-sweep', '--lrs', '0.1,10', '--steps', '15', '--train-size', '1000', '--threads', '1', '--out', 'sweep']);
    expect(run.code, run.stderr).toBe(0);
    const dir = join(work, 'sweep');
    const report = readFileSync(join(dir, 'lr-sweep-mlp.md'), 'utf8');
    expect(report).toMatch(/\| 0\.1 \| [\d.]+ \/ [\d.]+% \| [\d.]+ \/ [\d.]+% \|/);
    expect(report).toMatch(/\| 10 \| .* \| diverged \(step \d+\) \|/);
    const json = JSON.parse(readFileSync(join(dir, 'lr-sweep-mlp.json'), 'utf8'));
    expect(json.runs).toHaveLength(4);
    const svg = readFileSync(join(dir, 'lr-sweep-mlp.svg'), 'utf8');
    expectWellFormedSvg(svg, 'lr-sweep-mlp.svg');
    expect(svg).toContain('diverged');
    expectPng(join(dir, 'lr-sweep-mlp.png'));
  });

  it('every command that trains reads --dataset fashion-mnist, names its reports after it, and names missing files', async () => {
    // A tiny Fashion-MNIST of random images through WEIGHTNORM_FASHION_MNIST: the counts the commands report (300
    // training, 100 held out; MNIST has 8000 / 2000) show they read it. The real files are read in
    // fashion-mnist.test.ts where Debian's package is installed.
    const seed = runSeed();
    const fashion = join(work, 'fashion');
    writeFashionMnistFolder(fashion, { train: 300, test: 100 }, uniformGenerator(seed));
    const env = { [data.FASHION_MNIST_ENV]: fashion };
    const fast = ['--dataset', 'fashion-mnist', '--threads', '1', '--batch', '50'];
    const commands: { args: string[]; report: string; says: string }[] = [
      { args: ['train', '--steps', '3', '--hidden', '8', '--out', 'f-train'], report: 'f-train/log.json', says: '"dataset":"fashion-mnist"' },
      {
        args: ['compare', '--variants', 'none,wn', '--lr', '1e-3', '--steps', '3', '--hidden', '8', '--timing-rounds', '0', '--out', 'f-compare'],
        report: 'f-compare/compare-mlp-fashion-mnist.md',
        says: 'Fashion-MNIST, 300 training images, 100 held out',
      },
      {
        args: ['lr-sweep', '--lrs', '0.1', '--steps', '3', '--hidden', '8', '--out', 'f-sweep'],
        report: 'f-sweep/lr-sweep-mlp-fashion-mnist.md',
        says: 'Fashion-MNIST, 300 training images, 100 held out',
      },
      {
        args: ['sequence', '--experiments', 'rows', '--hidden', '4', '--epochs', '1', '--train-size', '100', '--out', 'f-sequence'],
        report: 'f-sequence/sequence-rows-fashion-mnist.md',
        says: 'Fashion-MNIST, 100 training images, 100 held out',
      },
      {
        args: ['vae', '--steps', '2', '--latent', '2', '--channels', '2,4', '--block', '1', '--out', 'f-vae'],
        report: 'f-vae/vae-fashion-mnist.md',
        says: 'Fashion-MNIST, 300 training images, 100 held out',
      },
    ];
    const runs = await Promise.all(commands.map(({ args }) => weightnorm([...args, ...fast], 120_000, env)));
    runs.forEach((run, i) => {
      const { args, report, says } = commands[i]!;
      expect(run.code, `weightnorm ${args.join(' ')}: ${run.stderr} (${reproduce(seed)})`).toBe(0);
      expect(readFileSync(join(work, report), 'utf8'), report).toContain(says);
    });
    expect(runs[0]!.stdout).toContain('Fashion-MNIST: 300 training / 100 held-out images');
    expect(runs[1]!.stdout).toMatch(/epochs of 300 Fashion-MNIST images\)/);
    expect(runs[4]!.stdout).toMatch(/epochs of 300 binarized Fashion-MNIST images\), 100 held out/);
    const vae = JSON.parse(readFileSync(join(work, 'f-vae', 'vae-fashion-mnist.json'), 'utf8'));
    expect([vae.config.dataset, vae.config.trainSize, vae.config.heldOut]).toEqual(['fashion-mnist', 300, 100]);
    for (const file of ['vae-fashion-mnist-bound.svg', 'vae-fashion-mnist-wn-samples.png', 'vae-fashion-mnist-plain-reconstructions.png']) {
      expect(existsSync(join(work, 'f-vae', file)), file).toBe(true);
    }
    expect(existsSync(join(work, 'f-vae', 'vae.md')), 'the MNIST name is not used').toBe(false);

    // A folder without the files: every command stops before training (exit 2), naming the file it looked for.
    const empty = join(work, 'no-fashion');
    mkdirSync(empty, { recursive: true });
    const missing = await Promise.all(commands.map(({ args }) => weightnorm([...args.slice(0, 1), '--dataset', 'fashion-mnist', '--out', 'never'], 60_000, { [data.FASHION_MNIST_ENV]: empty })));
    missing.forEach((run, i) => {
      expect(run.code, `${commands[i]!.args[0]}: ${run.stderr}`).toBe(2);
      expect(run.stderr).toContain(`--dataset fashion-mnist: data.fashionMnist: neither ${join(empty, 'train-images-idx3-ubyte')}.gz nor`);
      expect(run.stdout).not.toMatch(/epoch|step \d/i);
    });
  }, 240_000);
});
