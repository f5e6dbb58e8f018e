/**
 * The one parser of number (and plan version) arguments for every `dispatch` command: a whole number ≥ min, or a usage error
 * (exit 2) naming the option — never NaN passed on (`restart --ready-timeout abc`).
 */
import { InvalidArgumentError } from 'commander';

/** A commander argParser: `.argParser(wholeNumber(1))`. Give the option's default as a number. */
export function wholeNumber(min: number): (value: string) => number {
  return (value: string) => {
    if (!/^\d+$/.test(value) || Number(value) < min) throw new InvalidArgumentError(`expected a whole number ≥ ${min}, got "${value}"`);
    return Number(value);
  };
}

/** `--base-version N:HASH` (as `dispatch plan --diff` prints it): the plan version a change was computed against. */
export function planVersionArg(value: string): { number: number; hash: string } {
  const m = /^([1-9]\d{0,8}):([0-9a-f]{16})$/.exec(value);
  if (!m) throw new InvalidArgumentError(`expected VERSION:HASH as \`dispatch plan --diff\` prints it (e.g. 3:0123456789abcdef), got "${value}"`);
  return { number: Number(m[1]), hash: m[2] };
}
