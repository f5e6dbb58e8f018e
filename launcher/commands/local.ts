/** `dispatch local [--down [--purge]]`: the options of the embedded local cluster and what it prints. */
import { Option, type Command } from 'commander';
import { DispatcherError } from '../../api/errors.js';
import { wholeNumber } from '../args.js';
import { DEFAULT_RUN_AS, caFileOf, defaultLocalDir, localDown, localUp, writePgpass, type LocalOptions } from '../local.js';
import { verifyFullUrl } from './connect.js';

/** The superuser's URL through a coordinator, verifying the server against the cluster CA. */
function localUrl(host: string, port: number, caFile: string): string {
  return verifyFullUrl(host, port, 'postgres', 'postgres', caFile);
}

export function registerLocalCommand(program: Command): void {
  program
    .command('local')
    .description('run a pg-ha cluster on this machine: three dispatchers on loopback, launched through the first; the CLI is left pointing at it')
    .addOption(new Option('--dbservers <n>', 'PostgreSQL/Patroni DB servers').default(3).argParser(wholeNumber(1)))
    .addOption(new Option('--coordinators <n>', 'HAProxy coordinators').default(1).argParser(wholeNumber(1)))
    .option('--dir <dir>', 'directory holding the local dispatchers (default: $DISPATCH_LOCAL_DIR, else /var/lib/cluster-dispatcher/local for root, ~/.local/share/cluster-dispatcher/local for others)')
    .addOption(new Option('--base-port <port>', 'HTTPS port of the first dispatcher (the others follow)').default(18528).argParser(wholeNumber(1)))
    .option('--run-as <user>', `unprivileged user for the database processes (default when root: ${DEFAULT_RUN_AS})`)
    .addOption(new Option('--engine-port-offset <n>', 'add N to every pg-ha default port (etcd 2381/2382, postgres 5433, patroni 8008, haproxy 5000/5001/7000)').default(0).argParser(wholeNumber(0)))
    .addOption(new Option('--ready-timeout <seconds>', 'how long each process may take to become ready').default(120).argParser(wholeNumber(1)))
    .option('--down', 'shut the local cluster and its dispatchers down (data stays)')
    .option('--purge', 'with --down: also delete the cluster, its data and the dispatchers')
    .addHelpText('after', '\nFirst run on a fresh Debian machine, as root (or with sudo): `bash deploy/install-deps.sh` (packages and the unprivileged user).')
    .action(async (o, cmd) => {
      const g = cmd.optsWithGlobals();
      const opts: LocalOptions = {
        dir: o.dir ?? defaultLocalDir(),
        dbservers: o.dbservers,
        coordinators: o.coordinators,
        basePort: o.basePort,
        runAs: o.runAs ?? (process.getuid?.() === 0 ? DEFAULT_RUN_AS : undefined),
        json: !!g.json,
        readyTimeoutMs: o.readyTimeout * 1000,
        enginePortOffset: o.enginePortOffset,
      };
      if (o.purge && !o.down) throw new DispatcherError('bad_request', '--purge goes with --down');
      if (o.down) return localDown({ ...opts, purge: !!o.purge });
      const view = await localUp(opts);
      const pgpass = await writePgpass(opts);
      const caFile = caFileOf(opts);
      const c = view.coordinators[0];
      if (g.json) {
        process.stdout.write(
          JSON.stringify({
            cluster: view.name,
            state: view.state,
            coordinators: view.coordinators,
            ...(c ? { url: localUrl(c.host, c.port, caFile), ...(c.readOnlyPort ? { readOnlyUrl: localUrl(c.host, c.readOnlyPort, caFile) } : {}) } : {}),
            pgpassFile: pgpass,
            caFile,
          }) + '\n',
        );
        return;
      }
      process.stdout.write(`\ncluster ${view.name} is ${view.state}.\n`);
      if (c) {
        process.stdout.write(`coordinator (read-write): ${c.host}:${c.port}${c.readOnlyPort ? `   read-only: ${c.host}:${c.readOnlyPort}` : ''}\n`);
        process.stdout.write(`connect:  PGPASSFILE=${pgpass} psql '${localUrl(c.host, c.port, caFile)}'\n`);
        process.stdout.write(`CA file:  ${caFile} (the cluster CA; sslmode=verify-full checks the server against it)\n`);
      }
      process.stdout.write(`then:     dispatch status · dispatch restart · dispatch shell · dispatch local --down [--purge]\n`);
    });
}
