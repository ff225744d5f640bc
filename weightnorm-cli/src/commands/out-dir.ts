// The --out folder of every command that writes results: created and probed for writing before any work starts,
// so a typo or a read-only place fails at once (exit code 2, naming the path), not after an hour of training.
import { mkdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

import { CommandError } from './errors.js';

/** Resolves `path`, creates it (with its parents) and writes then removes a probe file there; returns the absolute path. */
export function prepareOutDir(path: string, option = '--out'): string {
  const out = resolve(path);
  const fail = (why: string): never => {
    throw new CommandError(`${option} ${path}: ${why} (${out}); give a folder that can be created and written`);
  };
  let kind: 'dir' | 'other' | 'none' = 'none';
  try {
    kind = statSync(out).isDirectory() ? 'dir' : 'other';
  } catch {
    // Absent: created below.
  }
  if (kind === 'other') fail('is a file, not a folder');
  try {
    createFolders(out);
  } catch (error) {
    fail(`cannot create the folder: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const probe = join(out, `.weightnorm-write-probe-${process.pid}`);
  try {
    writeFileSync(probe, '');
    unlinkSync(probe);
  } catch (error) {
    fail(`cannot write there: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  return out;
}

/**
 * mkdir -p one level at a time: Node's recursive mkdirSync loops forever where the kernel refuses a folder with
 * ENOENT although its parent exists (under /proc, for one).
 */
function createFolders(path: string): void {
  const missing: string[] = [];
  let at = path;
  for (;;) {
    try {
      statSync(at);
      break;
    } catch {
      missing.push(at);
      const parent = dirname(at);
      if (parent === at) break;
      at = parent;
    }
  }
  for (const folder of missing.reverse()) mkdirSync(folder);
}
