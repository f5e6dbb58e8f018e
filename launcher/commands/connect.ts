/**
 * `dispatch connect`: what an operator needs to reach the database of any cluster (docs/SECURITY.md,
 * "Cluster-internal TLS") — the cluster CA file, a 0600 pgpass and a libpq connection string with
 * sslmode=verify-full. The password goes into the pgpass file only, never on screen or in --json output.
 */
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import type { Command } from 'commander';
import type { ClusterConnectionView } from '../../api/rest.js';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { globals, withClient } from '../command-kit.js';
import { configDir } from '../context.js';

export interface ConnectFiles {
  caFile: string;
  pgpassFile: string;
  url: string;
  readOnlyUrl?: string;
  psql: string;
}

/** A libpq URL that verifies the server against the CA file (IPv6 hosts in brackets). */
export function verifyFullUrl(host: string, port: number, database: string, user: string, caFile: string): string {
  const h = host.includes(':') ? `[${host}]` : host;
  return `postgresql://${encodeURIComponent(user)}@${h}:${port}/${encodeURIComponent(database)}?sslmode=verify-full&sslrootcert=${encodeURIComponent(caFile)}`;
}

/** pgpass fields escape ':' and '\' (libpq's rule). */
function pgpassField(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
}

/** Writes the CA (0644) and the pgpass (0600) for a cluster into `dir` and returns what to print. */
export async function writeConnectFiles(view: ClusterConnectionView, dir: string): Promise<ConnectFiles> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caFile = join(dir, `${view.cluster}-ca.crt`);
  const pgpassFile = join(dir, `${view.cluster}.pgpass`);
  await writeFileAtomic(caFile, view.caCertificate, 0o644);
  const lines = view.coordinators.flatMap((c) => [c.port, c.readOnlyPort].filter((p): p is number => !!p).map((p) => [c.host, String(p), '*', view.user, view.password].map(pgpassField).join(':')));
  await writeFileAtomic(pgpassFile, lines.join('\n') + '\n', 0o600);
  const c = view.coordinators[0];
  if (!c) return { caFile, pgpassFile, url: '', psql: '' };
  const url = verifyFullUrl(c.host, c.port, view.database, view.user, caFile);
  return {
    caFile,
    pgpassFile,
    url,
    ...(c.readOnlyPort ? { readOnlyUrl: verifyFullUrl(c.host, c.readOnlyPort, view.database, view.user, caFile) } : {}),
    psql: `PGPASSFILE=${pgpassFile} psql '${url}'`,
  };
}

export function registerConnectCommand(program: Command): void {
  program
    .command('connect')
    .description('write the cluster CA and a 0600 pgpass, and print a verify-full connection string (no password on screen)')
    .option('--dir <dir>', 'where to write the files (default: <config dir>/clusters)')
    .action(async (opts, cmd) => {
      await withClient(cmd, async (client) => {
        const view = await client.get<ClusterConnectionView>('/v1/cluster/connection');
        const files = await writeConnectFiles(view, opts.dir ?? join(configDir(), 'clusters'));
        if (globals(cmd).json) {
          process.stdout.write(JSON.stringify({ cluster: view.cluster, coordinators: view.coordinators, user: view.user, database: view.database, ...files }) + '\n');
          return;
        }
        process.stdout.write(`cluster ${view.cluster}: connect as ${view.user} through ${view.coordinators.map((c) => `${c.host}:${c.port}`).join(', ') || 'no coordinator'}\n`);
        process.stdout.write(`CA file:  ${files.caFile}\npgpass:   ${files.pgpassFile} (0600)\nurl:      ${files.url}\n`);
        if (files.readOnlyUrl) process.stdout.write(`read-only: ${files.readOnlyUrl}\n`);
        process.stdout.write(`connect:  ${files.psql}\n`);
      });
    });
}
