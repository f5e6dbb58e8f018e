/**
 * Pure rendering of what deploy writes onto a host: the systemd unit (from templates/systemd/), the
 * daemon's config file, and the dispatchers file handed to the operator. No I/O except reading the
 * template, which the caller may pass in instead.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import Handlebars from 'handlebars';
import { stringify as toYaml } from 'yaml';
import type { Inventory, ResolvedHost } from './inventory.js';

/** The package root, from dist/deploy/render.js or deploy/render.ts alike. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      readFileSync(path.join(dir, 'package.json'));
      return dir;
    } catch {
      dir = path.dirname(dir);
    }
  }
  throw new Error('cannot find the package root (package.json) above ' + fileURLToPath(import.meta.url));
}

export const UNIT_TEMPLATE = 'templates/systemd/dispatcherd.service.hbs';

/**
 * Capabilities the daemon keeps. It runs as root so it can start processes as another user; the bounding
 * set removes everything else (no CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, ...). Why each one is
 * needed: docs/DEPLOY.md.
 */
export const DAEMON_CAPABILITIES = ['CAP_NET_ADMIN', 'CAP_SETUID', 'CAP_SETGID', 'CAP_KILL', 'CAP_CHOWN', 'CAP_FOWNER', 'CAP_DAC_OVERRIDE'] as const;

export interface UnitParams {
  id: string;
  prefix: string;
  dataDir: string;
  configFile: string;
  runAs: string;
  port: number;
}

export function renderUnit(p: UnitParams, template = readFileSync(path.join(packageRoot(), UNIT_TEMPLATE), 'utf8')): string {
  const bindLowPort = p.port < 1024;
  const capabilities = [...DAEMON_CAPABILITIES, ...(bindLowPort ? ['CAP_NET_BIND_SERVICE'] : [])].join(' ');
  // noEscape: this is not HTML; strict: a misspelt variable fails instead of rendering empty.
  const render = Handlebars.compile(template, { noEscape: true, strict: true });
  // Values are inventory-validated (paths without spaces or specials), so nothing needs unit-file quoting.
  return render({ ...p, capabilities, bindLowPort });
}

export function configFileFor(h: ResolvedHost): string {
  return `${h.configDir}/dispatcherd.yaml`;
}
export function pidFileFor(h: ResolvedHost): string {
  return `${h.dataDir}/dispatcherd.pid`;
}
export function outFileFor(h: ResolvedHost): string {
  return `${h.dataDir}/dispatcherd.out`;
}
export function usersFileFor(h: ResolvedHost): string {
  return `${h.dataDir}/users.json`;
}

/** The daemon config (server/config.ts ConfigFileSchema) for one host. */
export function renderConfig(inv: Inventory, h: ResolvedHost): string {
  // One address: listen on it only. Several: listen on all (the firewall limits who may connect).
  const listen = h.addresses.length === 1 ? h.addresses[0] : h.addresses.some((a) => a.includes(':')) ? '::' : '0.0.0.0';
  const cfg = {
    id: h.id,
    listen,
    port: h.port,
    endpoint: h.endpoint,
    dataDir: h.dataDir,
    usersFile: usersFileFor(h),
    engines: inv.engines,
    runAs: inv.runAs,
    log: { level: inv.logLevel },
    firewall: { backend: inv.firewall.backend },
  };
  return `# Written by \`dispatch deploy\` (inventory cluster "${inv.name}"); the next deploy overwrites it.\n${toYaml(cfg)}`;
}

export interface DeployedDispatcher {
  id: string;
  endpoint: string;
  fingerprint: string;
  addresses: string[];
}

/** The operator's dispatchers file: paste `dispatchers:` into a spec (api/plan.ts SpecDispatcherSchema). */
export function renderDispatchersFile(cluster: string, ds: DeployedDispatcher[]): string {
  const body = toYaml({ dispatchers: ds.map((d) => ({ id: d.id, endpoint: d.endpoint, fingerprint: d.fingerprint, addresses: d.addresses })) });
  return `# Dispatchers deployed for cluster "${cluster}" by \`dispatch deploy\`.\n${body}`;
}
