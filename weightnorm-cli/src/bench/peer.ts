// The PyTorch peer: peer_torch.py (this package's folder) in a child process, one JSON request per line on its stdin and one JSON
// answer per line on its stdout. A missing python or torch is a normal outcome ("peer not installed"), never a
// benchmark failure.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline';
import type { Device } from 'weightnorm/native';

export interface PeerInfo {
  torch: string;
  /** How torch's outputs get their memory (see TorchPeer.start). */
  malloc: string;
  /** OMP_WAIT_POLICY of the peer's OpenMP threads: the user's, else PASSIVE. */
  ompWaitPolicy: string;
  /** The OpenBLAS kernels torch's process loaded (its matrix products), as the peer reads them; absent in old results. */
  blas?: string;
  python: string;
  executable: string;
  deviceName: string;
  threads: number;
}

/** Names of the variants the peer times; the fused ones are absent where torch has no fused kernel. */
export type PeerVariant =
  | 'copy'
  | 'fused_forward'
  | 'fused_backward'
  | 'composite_forward'
  | 'composite_backward'
  | 'bf16_forward'
  | 'bf16_backward';

export interface PeerPrepared {
  /** Why torch has no fused kernel for this case (then no fused_* variants). */
  fused_na: string | null;
  /** Why torch's bfloat16 weight norm is not timed for this case (then no bf16_* variants). */
  bf16_na?: string | null;
  /** The torch call behind each variant. */
  calls: Partial<Record<PeerVariant, string>>;
}

export interface PeerCheckResult {
  variants: string[];
  calls: Record<string, string>;
}

export interface PeerTask {
  variants: string[];
  /** Variants torch cannot run here, with the error (e.g. bf16 matmul on an old CPU build). */
  unavailable: Record<string, string>;
  /** The torch call behind each variant. */
  calls: Record<string, string>;
}

type Answer = { ok: true } & Record<string, unknown>;

/** Python interpreters tried in order: an explicit choice, then PATH's python3, then Debian's (python3-torch). */
export function pythonCandidates(explicit?: string): string[] {
  if (explicit) return [explicit];
  const list = [process.env.WEIGHTNORM_PYTHON, 'python3', '/usr/bin/python3'].filter((p): p is string => !!p);
  return [...new Set(list)].filter((p) => !p.startsWith('/') || existsSync(p));
}

export class TorchPeer {
  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly reader: Interface,
    private readonly lines: AsyncIterableIterator<string>,
    readonly info: PeerInfo,
  ) {}

  /**
   * Starts the first interpreter whose torch can run on `device`. Returns the reasons instead when none can
   * (python missing, torch missing, torch without CUDA).
   */
  static async start(
    script: string,
    device: Device,
    threads: number,
    pythons: string[],
    defaultMalloc = false,
  ): Promise<{ peer: TorchPeer } | { reasons: string[] }> {
    const reasons: string[] = [];
    // torch allocates each output anew; glibc serves blocks ≥ 32 MB with fresh mmap pages and unmaps them on free, so
    // every call would pay page faults (~2/3 of torch's time at 16M elements here) that our preallocated outputs do
    // not. Keeping freed memory in the heap makes it kernel against kernel; --peer-default-malloc measures torch as
    // shipped instead. (GPU: torch's caching allocator already reuses memory.)
    const malloc = defaultMalloc
      ? {}
      : { MALLOC_MMAP_MAX_: '0', MALLOC_TRIM_THRESHOLD_: String(2 ** 40) };
    const mallocNote = defaultMalloc
      ? 'glibc default (outputs ≥ 32 MB are fresh mmap pages each call)'
      : 'glibc with MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=2^40 (outputs reuse freed memory, like our preallocated ones)';
    // torch's OpenMP threads (libgomp) wait passively unless the user chose: their default spin keeps a core busy
    // for a while after each op, which took cores from our side of the alternating rounds and made torch's own LSTM
    // step 3× slower on the 2-core VM. (The library used to set OMP_WAIT_POLICY=PASSIVE for its own OpenMP threads,
    // and the peer inherited it; our kernels now run on the library's own pool.)
    const ompWaitPolicy = process.env.OMP_WAIT_POLICY ?? 'PASSIVE';
    for (const python of pythons) {
      const child = spawn(python, [script], {
        stdio: ['pipe', 'pipe', 'pipe'],
        // Same thread count as ours from the first import on (torch.set_num_threads is also called in hello).
        env: { ...process.env, ...malloc, OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads), OMP_WAIT_POLICY: ompWaitPolicy },
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => {
        stderr = (stderr + chunk.toString()).slice(-4000);
      });
      const spawnError = new Promise<string>((resolve) => child.once('error', (e) => resolve(e.message)));
      const reader = createInterface({ input: child.stdout });
      const lines = reader[Symbol.asyncIterator]();
      child.stdin.on('error', () => undefined); // a dead child is reported through its missing answer
      child.stdin.write(JSON.stringify({ cmd: 'hello', device, threads }) + '\n');
      const first = await Promise.race([lines.next(), spawnError]);
      if (typeof first === 'string') {
        reasons.push(`${python}: ${first}`);
        continue;
      }
      const answer = first.done ? null : (JSON.parse(first.value) as Record<string, unknown>);
      if (!answer || answer.ok !== true) {
        const why = answer ? String(answer.error) : `exited without answering (${stderr.trim().split('\n').pop() ?? ''})`;
        reasons.push(`${python}: ${why}`);
        child.kill();
        continue;
      }
      const info: PeerInfo = {
        torch: String(answer.torch),
        malloc: device === 'cpu' ? mallocNote : 'torch CUDA caching allocator',
        blas: String(answer.blas ?? 'unknown'),
        python: String(answer.python),
        executable: String(answer.executable),
        deviceName: String(answer.device_name),
        threads: Number(answer.threads),
        ompWaitPolicy,
      };
      return { peer: new TorchPeer(child, reader, lines, info) };
    }
    return { reasons };
  }

  private async request(message: Record<string, unknown>): Promise<Answer> {
    this.child.stdin.write(JSON.stringify(message) + '\n');
    const next = await this.lines.next();
    if (next.done) throw new Error('torch peer exited');
    const answer = JSON.parse(next.value) as Record<string, unknown>;
    if (answer.ok !== true) throw new Error(`torch peer: ${String(answer.error)}`);
    return answer as Answer;
  }

  /**
   * Allocates `sets` rotated input sets for one case on the peer's side (kept until release()); with bf16, also
   * bfloat16 copies for torch's bfloat16 weight norm.
   */
  async prepare(shape: number[], dim: number | null, sets: number, seed: number, bf16 = false): Promise<PeerPrepared> {
    return (await this.request({ cmd: 'prepare', shape, dim, sets, seed, bf16 })) as unknown as PeerPrepared;
  }

  /** Prepares one task of the side-by-side suites (gemm, linear, mnist, training, lstm, vocoder; see peer_torch.py Task). */
  async task(kind: 'gemm' | 'linear' | 'mnist' | 'training' | 'lstm' | 'vocoder', spec: Record<string, unknown>): Promise<PeerTask> {
    return (await this.request({ cmd: 'task', kind, ...spec })) as unknown as PeerTask;
  }

  /** One timing round of every variant of the prepared task. */
  async taskRound(warmup: number, repeats: number): Promise<{ times: Record<string, number[]>; errors: Record<string, string> }> {
    const answer = await this.request({ cmd: 'task_round', warmup, repeats });
    return { times: answer.times as Record<string, number[]>, errors: answer.errors as Record<string, string> };
  }

  /**
   * The MNIST CNN's loss and gradients in torch for our parameters and batch (files <name>.bin, x.bin,
   * labels.bin in `dir`); torch writes loss.bin and grad_<name>.bin there.
   */
  async mnistCheck(dir: string, batch: number, wn: boolean, params: [string, number[]][]): Promise<{ weight_norm: string | null }> {
    return (await this.request({ cmd: 'mnist_check', dir, batch, wn, params })) as unknown as { weight_norm: string | null };
  }

  /** mnistCheck for the training suite's networks (peer_torch.py training_network: 'cnn' or 'mlp'). */
  async trainingCheck(dir: string, network: string, batch: number, wn: boolean, params: [string, number[]][]): Promise<{ weight_norm: string | null }> {
    return (await this.request({ cmd: 'training_check', dir, network, batch, wn, params })) as unknown as { weight_norm: string | null };
  }

  /**
   * torch's HiFi-GAN generator (plain convs, `channels` wide) on our weights and mel (files <name>.bin under the
   * torch state dict's names, mel.bin [1, 80, frames] in `dir`); torch writes its waveform to y.bin there.
   */
  async vocoderCheck(dir: string, channels: number, frames: number, params: [string, number[]][]): Promise<void> {
    await this.request({ cmd: 'vocoder_check', dir, channels, frames, params });
  }

  /** One timing round of every variant: per-run milliseconds. */
  async round(warmup: number, repeats: number): Promise<Partial<Record<PeerVariant, number[]>>> {
    const answer = await this.request({ cmd: 'round', warmup, repeats });
    return answer.times as Partial<Record<PeerVariant, number[]>>;
  }

  async release(): Promise<void> {
    await this.request({ cmd: 'release' });
  }

  /** Runs torch on v.bin, g.bin, dw.bin in `dir`; it writes <variant>_<w|norm|dv|dg>.bin next to them. */
  async check(shape: number[], dim: number | null, dir: string): Promise<PeerCheckResult> {
    const answer = await this.request({ cmd: 'check', shape, dim, dir });
    return answer as unknown as PeerCheckResult;
  }

  close(): void {
    this.child.stdin.end(JSON.stringify({ cmd: 'quit' }) + '\n');
    this.reader.close();
  }
}
