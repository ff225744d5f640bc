// `weightnorm launch`: starts --nproc copies of a Node script on this node, one per rank, as torchrun does: each gets
// RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT (distributed.init() reads them), its
// output is forwarded line by line with a "[rank R]" prefix, and when one rank fails the others are stopped and the
// launcher exits with that rank's code. Several nodes: run it once per node with the same --nnodes, --master-addr
// and --master-port and each node's --node-rank.
import { type ChildProcess, spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { createInterface } from 'node:readline';

import { CommandError } from './errors.js';

export interface LaunchOptions {
  nproc: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
  /** Seconds a rank gets to exit after SIGTERM before SIGKILL. */
  killGrace?: number;
}

function forward(stream: NodeJS.ReadableStream, prefix: string, out: NodeJS.WritableStream): Promise<void> {
  return new Promise((done) => {
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    lines.on('line', (line) => out.write(`${prefix}${line}\n`));
    lines.on('close', done);
  });
}

/** Runs the ranks; resolves with the exit code: 0 when all succeeded, else the first failing rank's code (or 1). */
export async function runLaunch(script: string, args: string[], options: LaunchOptions): Promise<number> {
  const { nproc, nnodes, nodeRank, masterAddr, masterPort } = options;
  if (nodeRank >= nnodes) throw new CommandError(`--node-rank must be below --nnodes (${nnodes}), got ${nodeRank}.`);
  const worldSize = nproc * nnodes;
  // As torchrun: several ranks on one node share its cores, so each gets its share of OpenMP threads unless told.
  const threads = String(Math.max(1, Math.floor(availableParallelism() / nproc)));
  const children: ChildProcess[] = [];
  let failure: { rank: number; code: number } | null = null;
  let killTimer: NodeJS.Timeout | undefined;

  const stopOthers = () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    killTimer ??= setTimeout(() => {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, (options.killGrace ?? 5) * 1000);
    killTimer.unref();
  };
  const onSignal = (signal: NodeJS.Signals) => {
    failure ??= { rank: -1, code: 130 };
    for (const child of children) child.kill(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const exits = Array.from({ length: nproc }, (_, localRank) => {
    const rank = nodeRank * nproc + localRank;
    const child = spawn(process.execPath, [script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        RANK: String(rank),
        WORLD_SIZE: String(worldSize),
        LOCAL_RANK: String(localRank),
        LOCAL_WORLD_SIZE: String(nproc),
        GROUP_RANK: String(nodeRank),
        MASTER_ADDR: masterAddr,
        MASTER_PORT: String(masterPort),
        OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? threads,
      },
    });
    children.push(child);
    const prefix = `[rank ${rank}] `;
    const output = Promise.all([forward(child.stdout!, prefix, process.stdout), forward(child.stderr!, prefix, process.stderr)]);
    return new Promise<void>((done) => {
      child.on('error', (error) => {
        process.stderr.write(`weightnorm launch: rank ${rank} could not start: ${error.message}\n`);
        failure ??= { rank, code: 1 };
        stopOthers();
      });
      child.on('exit', (code, signal) => {
        if ((code !== 0 || signal) && failure === null) {
          failure = { rank, code: code && code > 0 ? code : 1 };
          process.stderr.write(
            `weightnorm launch: rank ${rank} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}; stopping the other ranks\n`,
          );
          stopOthers();
        }
      });
      child.on('close', () => void output.then(() => done()));
    });
  });
  await Promise.all(exits);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  if (killTimer) clearTimeout(killTimer);
  return failure === null ? 0 : (failure as { code: number }).code;
}
