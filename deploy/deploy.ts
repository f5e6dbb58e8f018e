/**
 * `dispatch deploy`: the orchestration. Builds the release once, then runs deployHost / uninstallHost for
 * every inventory host with a concurrency limit, reporting progress live (listr2, or one JSON object per
 * line with --json). One failing host never stops the others; the report says which host failed in which
 * step, and `ok` is true only when every host succeeded.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile, rename } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Listr } from 'listr2';
import { parse as parseYaml } from 'yaml';
import { DispatcherError } from '../api/errors.js';
import { systemClock, type Clock } from '../shared/poll.js';
import { httpsHealth, type HealthChecker } from './health.js';
import { parseInventory, resolveHosts, type Inventory, type ResolvedHost } from './inventory.js';
import { buildPackage, type BuiltPackage } from './package.js';
import { packageRoot, renderDispatchersFile, type DeployedDispatcher } from './render.js';
import { connectSsh, type Connector } from './ssh.js';
import { deployHost, uninstallHost, type DeployEvent, type HostResult, type PasswordPlan, type StepStatus } from './steps.js';

export interface DeployOptions {
  inventoryFile: string;
  uninstall?: boolean;
  /** With uninstall: also remove data dirs; must equal the inventory's cluster name. */
  purgeData?: string;
  json?: boolean;
  parallel?: number;
  /** Dispatchers file to write (default ./dispatchers.yaml). */
  output?: string;
  acceptNewHostKeys?: boolean;
  /** An existing `npm pack` tarball to ship instead of packing this checkout. */
  packageFile?: string;
  /** Run the package's build (prepare) when packing (default true). */
  build?: boolean;
  /** The checkout to pack (default: the package this code runs from). */
  checkout?: string;
  connect?: Connector;
  health?: HealthChecker;
  /** Where lines for the operator go (default process.stdout). */
  write?: (line: string) => void;
  /** The time stamped on --json events; default systemClock. */
  clock?: Clock;
}

export interface DeployReport {
  ok: boolean;
  results: HostResult[];
  dispatchers: DeployedDispatcher[];
  dispatchersFile?: string;
}

/** Runs fn over items with at most `limit` at once; results in input order. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}

const PASSWORD_RULE = /^[^:\n\r]{12,}$/;

async function passwordPlan(inv: Inventory, baseDir: string): Promise<PasswordPlan> {
  if (inv.password.file) {
    const file = path.resolve(baseDir, inv.password.file);
    const value = (await readFile(file, 'utf8')).split(/\r?\n/)[0];
    if (!PASSWORD_RULE.test(value)) {
      throw new DispatcherError('validation_failed', `password file ${file}: the password must be at least 12 characters without ':'`, {
        problems: [{ path: 'password.file', message: 'at least 12 characters, no ":" (HTTP Basic splits at the first colon)' }],
      });
    }
    return { user: inv.password.user, value, generated: false };
  }
  // 144 random bits, base64url: no ':' and nothing a shell or YAML would trip over.
  return { user: inv.password.user, value: randomBytes(18).toString('base64url'), generated: true };
}

/** Keeps entries of the existing file for hosts not deployed this time (e.g. a host that failed now). */
async function mergeDispatchers(file: string, fresh: DeployedDispatcher[], inventoryIds: Set<string>): Promise<DeployedDispatcher[]> {
  let old: DeployedDispatcher[] = [];
  try {
    const data = parseYaml(await readFile(file, 'utf8')) as { dispatchers?: DeployedDispatcher[] } | null;
    old = Array.isArray(data?.dispatchers) ? data.dispatchers : [];
  } catch {
    old = [];
  }
  const byId = new Map(old.filter((d) => d && inventoryIds.has(d.id)).map((d) => [d.id, d]));
  for (const d of fresh) byId.set(d.id, d);
  return [...byId.values()].sort((a, b) => a.id.localeCompare(b.id));
}

export async function runDeploy(o: DeployOptions): Promise<DeployReport> {
  const write = o.write ?? ((l: string) => process.stdout.write(l + '\n'));
  const inventoryFile = path.resolve(o.inventoryFile);
  const baseDir = path.dirname(inventoryFile);
  const text = await readFile(inventoryFile, 'utf8').catch((e: Error) => {
    throw new DispatcherError('bad_request', `cannot read inventory ${inventoryFile}: ${e.message}`);
  });
  const inv = parseInventory(text, inventoryFile);
  const hosts = resolveHosts(inv, baseDir);
  const parallel = o.parallel ?? inv.parallelism;
  if (!Number.isInteger(parallel) || parallel < 1) throw new DispatcherError('bad_request', '--parallel must be a positive integer');
  if (o.purgeData !== undefined) {
    if (!o.uninstall) throw new DispatcherError('bad_request', '--purge-data only goes with --uninstall');
    if (o.purgeData !== inv.name) throw new DispatcherError('bad_request', `--purge-data must repeat the cluster name "${inv.name}" exactly; data dirs were not touched`);
  }
  const connect = o.connect ?? connectSsh;
  const health = o.health ?? httpsHealth;
  const json = o.json ?? false;
  const clock = o.clock ?? systemClock;

  const emitJson = (e: Record<string, unknown>): void => write(JSON.stringify({ time: new Date(clock.now()).toISOString(), ...e }));

  let pkg: BuiltPackage | undefined;
  let workDir: string | undefined;
  let password: PasswordPlan | undefined;
  try {
    if (!o.uninstall) {
      password = await passwordPlan(inv, baseDir);
      workDir = await mkdtemp(path.join(os.tmpdir(), 'dispatch-deploy-'));
      if (json) emitJson({ type: 'step', host: '*', step: 'package', status: 'start' });
      pkg = await buildPackage({ checkout: o.checkout ?? packageRoot(), workDir, build: o.build ?? true, tarball: o.packageFile });
      if (json) emitJson({ type: 'step', host: '*', step: 'package', status: 'ok', message: `${pkg.releaseName} (${pkg.sha256})` });
      else write(`package: ${pkg.releaseName}`);
    }

    const runOne = (h: ResolvedHost, emit: (step: string, status: StepStatus, message?: string) => void): Promise<HostResult> => {
      const common = { inv, host: h, connect, health, acceptNewHostKeys: o.acceptNewHostKeys ?? false, emit };
      return o.uninstall ? uninstallHost({ ...common, purgeData: o.purgeData !== undefined }) : deployHost({ ...common, pkg: pkg!, password: password! });
    };

    let results: HostResult[];
    if (json) {
      results = await mapLimit(hosts, parallel, (h) =>
        runOne(h, (step, status, message) => {
          const e: DeployEvent = { time: new Date(clock.now()).toISOString(), host: h.id, step, status, ...(message ? { message } : {}) };
          write(JSON.stringify({ type: 'step', ...e }));
        }),
      );
    } else {
      results = new Array<HostResult>(hosts.length);
      const list = new Listr(
        hosts.map((h, i) => ({
          title: `${h.id} (${h.user}@${h.address}:${h.sshPort})`,
          task: async (_ctx: unknown, task: { output: string; title: string }) => {
            const r = await runOne(h, (step, status, message) => {
              task.output = `${step}: ${status}${message ? ` — ${message.split('\n')[0]}` : ''}`;
            });
            results[i] = r;
            if (!r.ok) throw new Error(r.error);
            task.title = `${h.id}: ${o.uninstall ? 'removed' : r.dispatcher?.endpoint}`;
          },
        })),
        { concurrent: parallel, exitOnError: false, rendererOptions: { collapseErrors: false } },
      );
      await list.run().catch(() => undefined); // failures are in `results`
    }

    const ok = results.every((r) => r.ok);
    const dispatchers = results.flatMap((r) => (r.dispatcher ? [r.dispatcher] : []));
    let dispatchersFile: string | undefined;
    if (!o.uninstall) {
      dispatchersFile = path.resolve(o.output ?? 'dispatchers.yaml');
      const merged = await mergeDispatchers(dispatchersFile, dispatchers, new Set(hosts.map((h) => h.id)));
      const tmpFile = `${dispatchersFile}.tmp-${process.pid}`;
      await writeFile(tmpFile, renderDispatchersFile(inv.name, merged), { mode: 0o644 });
      await rename(tmpFile, dispatchersFile);
      // The one and only time a generated password is shown; it is stored nowhere but as hashes.
      const took = results.filter((r) => r.passwordSet).map((r) => r.id);
      if (password?.generated && took.length > 0) {
        if (json) emitJson({ type: 'password', user: password.user, password: password.value, hosts: took });
        else {
          write(`\nGenerated password for user "${password.user}" (shown only now; stored on the hosts as a scrypt hash):`);
          write(`  ${password.value}`);
          if (took.length < hosts.length) write(`  set on: ${took.join(', ')} (the other hosts kept their existing password)`);
        }
      }
    }
    if (json) emitJson({ type: 'summary', ok, results, dispatchersFile });
    else {
      for (const r of results) if (!r.ok) write(`FAILED ${r.error}`);
      if (dispatchersFile) write(`dispatchers file: ${dispatchersFile}`);
      write(ok ? `all ${results.length} host(s) done` : `${results.filter((r) => !r.ok).length} of ${results.length} host(s) failed`);
    }
    return { ok, results, dispatchers, dispatchersFile };
  } finally {
    if (workDir) await rm(workDir, { recursive: true, force: true });
  }
}
