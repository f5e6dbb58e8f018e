/**
 * Reading what an operator hands the CLI for a launch: a plan (JSON or YAML) or a spec to plan first, and
 * the optional peer-credentials file. Unreadable or malformed files are usage errors (exit 2) naming the file.
 */
import { readFile } from 'node:fs/promises';
import YAML from 'yaml';
import { DispatcherError } from '../api/errors.js';
import { PlanSchema, SpecDispatcherSchema, zodProblems, type Plan, type SpecDispatcher } from '../api/plan.js';
import type { Credential } from '../api/rest.js';
import { readPasswordFile } from './connect.js';
import { planFromSpecText } from './planner.js';

async function readInput(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new DispatcherError('bad_request', `cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
}

function parseYamlOrJson(text: string, file: string): unknown {
  try {
    return YAML.parse(text);
  } catch (e) {
    throw new DispatcherError('validation_failed', `${file} is neither JSON nor YAML: ${(e as Error).message}`, { cause: e });
  }
}

/** Reads a plan (JSON or YAML) or makes one from a spec file. */
export async function loadPlanOrSpec(opts: { plan?: string; spec?: string }): Promise<Plan> {
  if (opts.spec) return planFromSpecText(await readInput(opts.spec, 'spec'), opts.spec);
  if (!opts.plan) throw new DispatcherError('bad_request', 'give --plan FILE or --spec FILE');
  const r = PlanSchema.safeParse(parseYamlOrJson(await readInput(opts.plan, 'plan'), opts.plan));
  if (!r.success) throw new DispatcherError('validation_failed', `${opts.plan} is not a valid plan`, { problems: zodProblems(r.error) });
  return r.data;
}

/** Peer credentials file: `{ <dispatcher id>: { user, passwordFile } }` (YAML or JSON). Passwords stay in files. */
export async function loadPeerCredentials(file?: string): Promise<Record<string, Credential>> {
  if (!file) return {};
  const raw = parseYamlOrJson(await readInput(file, 'peer credentials'), file) as Record<string, { user?: string; passwordFile?: string }> | null;
  const out: Record<string, Credential> = {};
  for (const [id, v] of Object.entries(raw ?? {})) {
    if (!v?.user || !v?.passwordFile) throw new DispatcherError('validation_failed', `${file}: ${id} needs user and passwordFile`, { problems: [{ path: id, message: 'needs user and passwordFile' }] });
    out[id] = { user: v.user, password: await readPasswordFile(v.passwordFile) };
  }
  return out;
}

/** One dispatcher as a spec names it (id, endpoint, fingerprint, addresses), from a YAML or JSON file. */
export async function loadDispatcherEntry(file: string): Promise<SpecDispatcher> {
  const r = SpecDispatcherSchema.safeParse(parseYamlOrJson(await readInput(file, 'dispatcher'), file));
  if (!r.success) throw new DispatcherError('validation_failed', `${file} is not a dispatcher entry (id, endpoint, fingerprint, addresses)`, { problems: zodProblems(r.error) });
  return r.data;
}
