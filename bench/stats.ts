/**
 * What every benchmark here shares: its numeric command-line options, the median and spread it reports
 * (docs/BENCHMARKS.md: medians and spread, ratios against a baseline from the same run), and a sleep.
 */

/** `--name N` from the command line, or `def`. */
export function numberArg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

/** The median; for an even count, the mean of the two middle values. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The spread as [min, max]. */
export function minMax(xs: readonly number[]): [number, number] {
  return [Math.min(...xs), Math.max(...xs)];
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
