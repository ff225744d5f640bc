// Child processes of the tests run the library as plain JavaScript: the TypeScript sources transpiled one file at a
// time (type-only imports vanish), with the addon and node_modules linked from the checkout.
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repositoryRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Every .ts file below `directory`. */
export function typeScriptFilesIn(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? typeScriptFilesIn(join(directory, e.name)) : e.name.endsWith('.ts') ? [join(directory, e.name)] : [],
  );
}

/**
 * Writes ts/** and `extraSources` (absolute paths inside the repository) as ES modules under `directory`, keeping
 * their relative paths, so `<directory>/ts/index.js` is the library.
 */
export async function transpileForNode(directory: string, extraSources: readonly string[]): Promise<void> {
  const { default: ts } = await import('typescript');
  for (const file of [...typeScriptFilesIn(join(repositoryRoot, 'ts')), ...extraSources]) {
    const out = join(directory, relative(repositoryRoot, file)).replace(/\.ts$/, '.js');
    mkdirSync(dirname(out), { recursive: true });
    const { outputText } = ts.transpileModule(readFileSync(file, 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
      fileName: file,
    });
    writeFileSync(out, outputText);
  }
  writeFileSync(join(directory, 'package.json'), '{ "type": "module" }\n');
  symlinkSync(join(repositoryRoot, 'build'), join(directory, 'build')); // ts/native.js loads the addon from <root>/build
  symlinkSync(join(repositoryRoot, 'node_modules'), join(directory, 'node_modules'));
}
