/**
 * Where Debian 12's packages put each engine's programs (etcd-server, patroni, postgresql-15, haproxy, pgbouncer).
 * The default for a machine's config (`engines.<name>.binaries`) when it runs the Debian packages; a plan
 * can never choose a binary, only a machine's config can.
 */
export const PG_HA_DEBIAN_BINARIES: Readonly<Record<string, string>> = Object.freeze({
  etcd: '/usr/bin/etcd',
  python3: '/usr/bin/python3',
  patroni: '/usr/bin/patroni',
  postgres: '/usr/lib/postgresql/15/bin/postgres',
  psql: '/usr/lib/postgresql/15/bin/psql',
  haproxy: '/usr/sbin/haproxy',
  pgbouncer: '/usr/sbin/pgbouncer',
});
