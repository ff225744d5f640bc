// Option parsers for the training commands. Commander calls them with the raw text; an InvalidArgumentError becomes
// "error: option '--lr <x>' argument 'abc' is invalid. <our message>", so the message names what was expected.
// Nothing here loads the native addon: `weightnorm --help` and usage errors stay instant.
import { InvalidArgumentError } from 'commander';

export const MODELS = ['mlp', 'cnn'] as const;
export const NORMS = ['none', 'wn', 'bn', 'wn+mobn'] as const;
export const OPTIMIZERS = ['adam', 'sgd'] as const;
export const DEVICES = ['auto', 'cpu', 'cuda'] as const;
export const DATASETS = ['mnist', 'fashion-mnist'] as const;

export type ModelKind = (typeof MODELS)[number];
export type NormKind = (typeof NORMS)[number];
export type OptimizerKind = (typeof OPTIMIZERS)[number];
export type DeviceChoice = (typeof DEVICES)[number];
export type DatasetKind = (typeof DATASETS)[number];

export function integer(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (text: string): number => {
    const n = Number(text);
    if (text.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `in [${min}, ${max}]`;
      throw new InvalidArgumentError(`Expected an integer ${range}.`);
    }
    return n;
  };
}

function parsePositive(text: string): number | null {
  const n = Number(text);
  return text.trim() !== '' && Number.isFinite(n) && n > 0 ? n : null;
}

export function positiveNumber(text: string): number {
  const n = parsePositive(text);
  if (n === null) throw new InvalidArgumentError('Expected a positive finite number, e.g. 1e-3.');
  return n;
}

export function fraction(text: string): number {
  const n = Number(text);
  if (text.trim() === '' || !(n >= 0 && n < 1)) throw new InvalidArgumentError('Expected a number in [0, 1).');
  return n;
}

/** A comma-separated list of positive numbers (learning rates), sorted ascending, duplicates removed. */
export function positiveList(text: string): number[] {
  const items = text.split(',').map((s) => s.trim());
  const values = items.map(parsePositive);
  const bad = items.filter((_, i) => values[i] === null);
  if (items.length === 0 || bad.length > 0) {
    throw new InvalidArgumentError(
      `Expected a comma-separated list of positive numbers, e.g. 3e-4,1e-3,3e-3${bad.length ? ` (not a positive number: '${bad.join("', '")}')` : ''}.`,
    );
  }
  return [...new Set(values as number[])].sort((a, b) => a - b);
}

/** A comma-separated subset of `choices`, kept in the order of `choices`. */
export function choiceList<T extends string>(choices: readonly T[]) {
  return (text: string): T[] => {
    const items = text.split(',').map((s) => s.trim());
    const bad = items.filter((s) => !(choices as readonly string[]).includes(s));
    if (items.length === 0 || bad.length > 0) {
      throw new InvalidArgumentError(`Expected a comma-separated list of ${choices.join(', ')} (not one of them: '${bad.join("', '")}').`);
    }
    return choices.filter((c) => items.includes(c));
  };
}
