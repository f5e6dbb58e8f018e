/**
 * The engines `dispatcherd init --engine NAME` allows: each engine's programs at their Debian paths, every
 * one checked to exist, so init never writes a config that cannot launch (docs/SECURITY.md, "Root on the
 * machine": only root's config names programs).
 */
import { accessSync, constants, statSync } from 'node:fs';
import { DispatcherError, formatProblems } from '../api/errors.js';
import { PG_HA_DEBIAN_BINARIES } from './engines/debian.js';

/** Programs of each engine at their Debian paths (server/engines/debian.ts); refuses when one is missing. */
const DEBIAN_BINARIES: ReadonlyMap<string, Readonly<Record<string, string>>> = new Map([
  ['pg-ha', PG_HA_DEBIAN_BINARIES],
  ['arangodb', { arangod: '/usr/sbin/arangod' }],
]);

export function machineEngines(names: readonly string[], executable: (path: string) => boolean = isExecutable): Record<string, { binaries: Record<string, string> }> {
  const out: Record<string, { binaries: Record<string, string> }> = {};
  const problems: { path: string; message: string }[] = [];
  for (const name of names) {
    const binaries = DEBIAN_BINARIES.get(name);
    if (!binaries) {
      problems.push({ path: `--engine ${name}`, message: `unknown engine; known: ${[...DEBIAN_BINARIES.keys()].join(', ')}` });
      continue;
    }
    for (const [program, path] of Object.entries(binaries)) {
      if (!executable(path)) problems.push({ path: `--engine ${name}`, message: `program ${program} is missing: ${path} is not an executable file (install the engine's Debian packages: deploy/install-deps.sh)` });
    }
    out[name] = { binaries: { ...binaries } };
  }
  if (problems.length) throw new DispatcherError('preflight_failed', `cannot allow the engine(s) on this machine:\n${formatProblems(problems)}`, { problems });
  return out;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

