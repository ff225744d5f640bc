/**
 * A command line that parses but cannot run as asked (--device cuda without a GPU, --batch larger than the data,
 * an --out that cannot be written): reported like a usage error (exit code 2), before any training.
 */
export class CommandError extends Error {
  override name = 'CommandError';
}
