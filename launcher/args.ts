/**
 * The one parser of number arguments for every `dispatch` command: a whole number ≥ min, or a usage error
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
