#!/usr/bin/env node
// The `weightnorm` command. Each subcommand loads its module only when it runs, so adding one (train, compare,
// lr-sweep, ...) costs the others nothing: register it below with its options and a lazy import.
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

function positiveInt(name: string, min = 1) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got '${value}'.`);
    return n;
  };
}

const program = new Command()
  .name('weightnorm')
  .description('Weight normalization (Salimans & Kingma, 2016): fused CUDA and CPU kernels, tools and benchmarks.')
  .version(pkg.version);

program
  .command('bench')
  .description(
    'Microbenchmark fused vs unfused weight norm against the measured copy roofline and PyTorch, on every backend; ' +
      'writes <out>/<machine>.json, .md and .svg.',
  )
  .addOption(new Option('--device <device>', 'backend(s) to run').choices(['cpu', 'cuda', 'all']).default('all'))
  .option('--quick', 'a subset of shapes with fewer repeats (under a minute on 2 CPU cores)', false)
  .option('--threads <n>', 'CPU threads for our kernels and PyTorch (default: every core)', positiveInt('--threads'))
  .option('--repeats <n>', 'timed runs per measurement (default: CPU 100, CUDA 300; --quick: 20 / 100)', positiveInt('--repeats'))
  .option('--rounds <n>', 'rounds the repeats are split into, alternating ours and PyTorch (default 5; --quick 2)', positiveInt('--rounds'))
  .option('--retries <n>', 'times a case whose rounds disagree (background load) is measured again (default 1; --quick 0)', positiveInt('--retries', 0))
  .option('--warmup <n>', 'warm-up runs before timing (one full input rotation is always added)', positiveInt('--warmup', 0), 5)
  .option('--out <dir>', 'results folder (default: bench/results)')
  .option('--no-peer', 'skip the PyTorch peer')
  .option('--peer-default-malloc', "time torch with glibc's default malloc (every output ≥ 32 MB faulted in anew)", false)
  .option('--python <path>', 'Python with torch for the peer (default: $WEIGHTNORM_PYTHON, python3, /usr/bin/python3)')
  .option('--cases <names>', 'comma-separated case names (substrings) to run', (v: string) => v.split(',').filter(Boolean))
  .option('--cache-mb <n>', 'last-level cache to defeat by rotating inputs (default: CPU from sysfs, CUDA 128)', positiveInt('--cache-mb'))
  .option('--memory-mb <n>', 'memory the rotated input sets may use', positiveInt('--memory-mb'))
  .action(async (opts: {
    device: 'cpu' | 'cuda' | 'all';
    quick: boolean;
    threads?: number;
    repeats?: number;
    rounds?: number;
    retries?: number;
    warmup: number;
    out?: string;
    peer: boolean;
    python?: string;
    peerDefaultMalloc: boolean;
    cases?: string[];
    cacheMb?: number;
    memoryMb?: number;
  }) => {
    const { runBench } = await import('./bench/run.js');
    process.exitCode = await runBench(opts);
  });

await program.parseAsync(process.argv);
