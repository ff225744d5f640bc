// The PyTorch peer: bench/peer_torch.py in a child process, one JSON request per line on its stdin and one JSON
// answer per line on its stdout. A missing python or torch is a normal outcome ("peer not installed"), never a
// benchmark failure.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline';
import type { Device } from '../native.js';

export interface PeerInfo {
  torch: string;
  python: string;
  executable: string;
  deviceName: string;
  threads: number;
}

export interface PeerTiming {
  forward_ms: number;
  backward_ms: number;
  forward_call: string;
  backward_call: string;
}

export interface PeerCaseResult {
  /** torch's out.copy_(v) on the same rotation: a cross-check of our copy roofline. */
  copy_ms: number;
  fused: PeerTiming | null;
  /** Why torch has no fused kernel for this case (then `fused` is null). */
  fused_na: string | null;
  composite: PeerTiming | null;
}

export interface PeerCheckResult {
  variants: string[];
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
  ): Promise<{ peer: TorchPeer } | { reasons: string[] }> {
    const reasons: string[] = [];
    for (const python of pythons) {
      const child = spawn(python, [script], {
        stdio: ['pipe', 'pipe', 'pipe'],
        // Same thread count as ours from the first import on (torch.set_num_threads is also called in hello).
        env: { ...process.env, OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) },
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
        python: String(answer.python),
        executable: String(answer.executable),
        deviceName: String(answer.device_name),
        threads: Number(answer.threads),
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

  /** Times torch's fused and composite weight norm on `shape`, rotating `sets` input sets like ours. */
  async time(shape: number[], dim: number | null, sets: number, warmup: number, repeats: number): Promise<PeerCaseResult> {
    const answer = await this.request({ cmd: 'time', shape, dim, sets, warmup, repeats });
    return answer as unknown as PeerCaseResult;
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
