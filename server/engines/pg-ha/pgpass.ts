/**
 * pg-ha: the text of a libpq password file (pgpass) for the superuser, one line per coordinator port
 * (read-write and read-only), so a printed `psql` line needs no password on screen. Pure. Fields are
 * escaped as libpq reads them (`\` and `:` are backslash-escaped).
 */
import type { ClusterView } from '../../../api/rest.js';

const field = (v: string | number) => String(v).replace(/[\\:]/g, (c) => `\\${c}`);

export function pgpassText(coordinators: ClusterView['coordinators'], superuserPassword: string): string {
  const lines = coordinators.flatMap((c) =>
    [c.port, c.readOnlyPort].filter((p): p is number => p !== undefined).map((p) => [c.host, p, '*', 'postgres', superuserPassword].map(field).join(':')),
  );
  return lines.join('\n') + '\n';
}
