/**
 * `dispatcherd`: init a data dir, manage users, print the fingerprint, start the daemon.
 * Every failure is a DispatcherError printed as one clear message (plus its problems) and a non-zero exit.
 */
import { Command } from 'commander';
import { existsSync, mkdirSync, chmodSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { DispatcherError, formatProblems } from '../api/errors.js';
import { NameSchema } from '../api/plan.js';
import { CONFIG_FILE_NAME, ENV_KEYS, defaultId, loadConfig, parseConfig, type DispatcherConfig } from './config.js';
import { ensureCertificate, fingerprint256 } from './tls.js';
import { addUser, changePassword, listUsers, removeUser } from './users.js';
import { closeLogger, createLogger } from './log.js';
import { writeFileAtomic } from '../shared/atomic-file.js';
import { packageVersion, startDaemon } from './daemon.js';
import { clusterDaemonOptions } from './cluster-daemon.js';
import { coordinatorsOf } from '../api/rest.js';
import { resolveUser } from './cluster/run-as-user.js';
import { checkDataTree, dataDirMode } from './data-tree.js';
import { machineEngines } from './machine-engines.js';

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Config for commands that act on a data dir: --config FILE, else <data-dir>/config.yaml, else env. */
function configFrom(opts: { config?: string; dataDir?: string }): DispatcherConfig {
  if (opts.config) return loadConfig(resolve(opts.config));
  if (opts.dataDir) {
    const dir = resolve(opts.dataDir);
    const file = join(dir, CONFIG_FILE_NAME);
    if (existsSync(file)) return loadConfig(file);
    return loadConfig(undefined, { ...process.env, DISPATCHER_DATA_DIR: dir });
  }
  return loadConfig(undefined, process.env);
}

async function readPassword(passwordFile?: string): Promise<string> {
  let text: string;
  if (passwordFile) {
    text = readFileSync(passwordFile, 'utf8');
  } else {
    if (process.stdin.isTTY) throw new DispatcherError('bad_request', 'give the password on stdin (e.g. a pipe) or with --password-file; it is never taken from the command line');
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  }
  // One trailing newline belongs to the file/pipe, not to the password.
  return text.replace(/\r?\n$/, '');
}

export function buildCli(): Command {
  const program = new Command('dispatcherd')
    .description('cluster-dispatcher daemon: one per machine, HTTPS + password, supervises the cluster processes of this machine')
    .version(packageVersion())
    .showHelpAfterError();

  program
    .command('init')
    .description('create a data dir (0700) with a self-signed certificate (EC P-256, sha256) and a config file; print id and SHA-256 fingerprint. Safe to run again: never overwrites a key or the config.')
    .requiredOption('--data-dir <dir>', 'data directory to create')
    .option('--id <id>', 'dispatcher id (lowercase letters, digits, dashes; default: host name)')
    .option('--address <addr>', 'an address peers and clients use to reach this machine (repeatable); each becomes a certificate SAN', collect, [])
    .option('--cert <file>', 'use this certificate instead of making one (needs --key)')
    .option('--key <file>', 'private key of --cert')
    .option('--port <port>', 'HTTPS port written to the config', String(8528))
    .option('--listen <addr>', 'listen address written to the config', '0.0.0.0')
    .option('--engine <name>', 'allow this engine on the machine (repeatable); its programs are looked up at the Debian paths and must exist', collect, [])
    .option('--run-as <user>', 'the unprivileged user cluster processes run as (never an account with uid 0)')
    .action(async (o: { dataDir: string; id?: string; address: string[]; cert?: string; key?: string; port: string; listen: string; engine: string[]; runAs?: string }) => {
      if (Boolean(o.cert) !== Boolean(o.key)) throw new DispatcherError('bad_request', '--cert and --key go together');
      if (o.engine.length > 0 && !o.runAs && process.getuid?.() === 0) {
        throw new DispatcherError('bad_request', '--engine needs --run-as USER: cluster processes never run as root (e.g. --run-as cluster-dispatcher, created by deploy/install-deps.sh)');
      }
      if (o.runAs) await resolveUser(o.runAs);
      const engines = machineEngines(o.engine);
      const dataDir = resolve(o.dataDir);
      // A new data dir gets its mode from the data tree's one owner; an existing one is never changed.
      if (!existsSync(dataDir)) {
        mkdirSync(dataDir, { recursive: true, mode: dataDirMode(Boolean(o.runAs)) });
        chmodSync(dataDir, dataDirMode(Boolean(o.runAs)));
      }
      const configFile = join(dataDir, CONFIG_FILE_NAME);
      let id = o.id ?? defaultId();
      if (!NameSchema.safeParse(id).success) throw new DispatcherError('validation_failed', `invalid id ${JSON.stringify(id)}`, { problems: [{ path: 'id', message: 'must be 1-63 lowercase letters, digits or dashes' }] });
      const port = Number(o.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new DispatcherError('validation_failed', `invalid --port ${o.port}`);
      let config: DispatcherConfig;
      if (existsSync(configFile)) {
        config = loadConfig(configFile, {});
        if (o.id && o.id !== config.id) process.stderr.write(`dispatcherd: keeping the existing id ${config.id} from ${configFile} (--id ${o.id} ignored)\n`);
        if (o.engine.length || o.runAs) process.stderr.write(`dispatcherd: keeping the existing config ${configFile} (--engine/--run-as ignored; edit the file to change them)\n`);
        id = config.id;
      } else {
        const file: Record<string, unknown> = { id, listen: o.listen, port, dataDir };
        if (Object.keys(engines).length) file.engines = engines;
        if (o.runAs) file.runAs = o.runAs;
        if (o.cert && o.key) {
          file.cert = resolve(o.cert);
          file.key = resolve(o.key);
        }
        const header = '# dispatcherd configuration (written by `dispatcherd init`). Unknown keys stop start-up.\n';
        // Validate before writing so init never leaves a config that `start` refuses.
        config = parseConfig(file, {}, dataDir);
        await writeFileAtomic(configFile, header + toYaml(file), 0o600);
      }
      let fingerprint: string;
      if (o.cert && existsSync(config.cert)) {
        fingerprint = fingerprint256(readFileSync(config.cert, 'utf8'));
      } else {
        ({ fingerprint } = await ensureCertificate({ certFile: config.cert, keyFile: config.key, addresses: o.address, commonName: id }));
      }
      for (const p of checkDataTree(dataDir, process.getuid?.() ?? 0)) process.stderr.write(`dispatcherd: warning: ${p.path} ${p.message}\n`);
      process.stdout.write(`id: ${id}\nfingerprint: ${fingerprint}\nconfig: ${configFile}\n`);
    });

  const user = program.command('user').description('manage the operator accounts (scrypt hashes in the users file, 0600)');
  const userTarget = (c: Command) =>
    c
      .option('--data-dir <dir>', 'data dir whose config/users file to use')
      .option('--config <file>', 'config file naming the users file')
      .option('--users-file <file>', 'users file to edit directly');
  const usersFileOf = (o: { dataDir?: string; config?: string; usersFile?: string }) => (o.usersFile ? resolve(o.usersFile) : configFrom(o).usersFile);
  type Target = { dataDir?: string; config?: string; usersFile?: string };
  /** Account changes are audited in the dispatcher's log (never the secret), like those made over REST. */
  const auditAccount = async (o: Target, action: string, account: string) => {
    if (o.usersFile) return; // a bare users file names no dispatcher log
    const logger = createLogger({ level: 'info', file: configFrom(o).log.file, console: false });
    logger.info('audit', { audit: true, user: `${process.env.SUDO_USER ?? process.env.USER ?? 'unknown'}@cli`, source: 'dispatcherd user', action, account, outcome: 'success' });
    await closeLogger(logger);
  };

  userTarget(
    user
      .command('add <name>')
      .description("add a user; the password comes from stdin or --password-file (>= 12 characters, no ':')")
      .option('--password-file <file>', 'read the password from this file')
      .option('--admin', 'may list and remove accounts over REST')
      .option('--replace', 'set a new password for an existing user'),
  ).action(async (name: string, o: Target & { passwordFile?: string; replace?: boolean; admin?: boolean }) => {
    const file = usersFileOf(o);
    const password = await readPassword(o.passwordFile);
    const { replaced } = await addUser(file, name, password, { replace: o.replace, ...(o.admin ? { role: 'admin' as const } : {}) });
    await auditAccount(o, replaced ? 'replace account' : 'add account', name);
    process.stdout.write(`${replaced ? 'updated' : 'added'} user ${name}\n`);
  });
  userTarget(
    user
      .command('passwd <name>')
      .description("set a new password for an existing user; from stdin or --password-file (>= 12 characters, no ':')")
      .option('--password-file <file>', 'read the password from this file'),
  ).action(async (name: string, o: Target & { passwordFile?: string }) => {
    await changePassword(usersFileOf(o), name, await readPassword(o.passwordFile));
    await auditAccount(o, 'change password', name);
    process.stdout.write(`changed the password of ${name}\n`);
  });
  userTarget(user.command('remove <name>').description('remove a user')).action(async (name: string, o: Target) => {
    await removeUser(usersFileOf(o), name);
    await auditAccount(o, 'remove account', name);
    process.stdout.write(`removed user ${name}\n`);
  });
  userTarget(user.command('list').description('list user names and roles (never hashes)')).action(async (o: Target) => {
    for (const u of await listUsers(usersFileOf(o))) process.stdout.write(`${u.name}\t${u.role}\t${u.createdAt}\n`);
  });

  program
    .command('start')
    .description('run the daemon in the foreground (SIGTERM/SIGINT stop it; supervised processes keep running)')
    .option('--config <file>', 'YAML or JSON config file')
    .option('--data-dir <dir>', 'use <dir>/config.yaml (when --config is not given)')
    .addHelpText('after', `\nEnvironment overrides:\n${Object.entries(ENV_KEYS).map(([k, v]) => `  ${k.padEnd(30)} ${v.path.join('.')}`).join('\n')}\n`)
    .action(async (o: { config?: string; dataDir?: string }) => {
      const config = configFrom(o);
      const cluster = clusterDaemonOptions();
      const daemon = await startDaemon(config, { modules: cluster.modules, extendContext: cluster.extendContext, beforeProcesses: cluster.beforeProcesses });
      await new Promise<void>((resolveStop) => {
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) return;
          stopping = true;
          daemon.ctx.logger.info('signal received', { signal });
          cluster.runtime()?.close();
          daemon.close().then(resolveStop, (err) => {
            process.stderr.write(`dispatcherd: error while stopping: ${(err as Error).message}\n`);
            process.exitCode = 1;
            resolveStop();
          });
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
    });

  program
    .command('fingerprint')
    .description("print the SHA-256 fingerprint of this dispatcher's certificate")
    .option('--data-dir <dir>', 'data dir (uses its config.yaml)')
    .option('--config <file>', 'config file')
    .action((o: { dataDir?: string; config?: string }) => {
      const config = configFrom(o);
      if (!existsSync(config.cert)) throw new DispatcherError('not_found', `no certificate at ${config.cert}; run \`dispatcherd init\` first`);
      process.stdout.write(fingerprint256(readFileSync(config.cert, 'utf8')) + '\n');
    });

  program
    .command('pgpass')
    .description("write a 0600 libpq password file for the pg-ha cluster's superuser (for psql through the coordinators); the password is never printed")
    .requiredOption('--output <file>', 'the file to write (atomically, mode 0600)')
    .option('--data-dir <dir>', 'data dir (uses its config.yaml)')
    .option('--config <file>', 'config file')
    .action(async (o: { output: string; dataDir?: string; config?: string }) => {
      // Imported here, not at the top: `dispatcherd start` without a plan never loads the cluster store.
      const { ClusterStore } = await import('./cluster/store.js');
      const { pgpassText } = await import('./engines/pg-ha/pgpass.js');
      const snapshot = await new ClusterStore(configFrom(o).dataDir).load();
      if (!snapshot) throw new DispatcherError('not_found', 'this dispatcher has no cluster; launch one first');
      const password = snapshot.secrets['superuser-password'];
      if (snapshot.plan.engine !== 'pg-ha' || !password) throw new DispatcherError('bad_request', `cluster ${snapshot.plan.name} (engine ${snapshot.plan.engine}) has no PostgreSQL superuser password`);
      await writeFileAtomic(resolve(o.output), pgpassText(coordinatorsOf(snapshot.plan), password), 0o600);
      process.stdout.write(`${resolve(o.output)}\n`);
    });
  return program;
}

export async function main(argv = process.argv): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (err) {
    if (err instanceof DispatcherError) {
      process.stderr.write(`dispatcherd: error: ${err.message}\n`);
      if (err.problems.length) process.stderr.write(formatProblems(err.problems) + '\n');
      process.exitCode = err.code === 'config_invalid' || err.code === 'validation_failed' || err.code === 'bad_request' ? 2 : 1;
    } else {
      const e = err as NodeJS.ErrnoException;
      process.stderr.write(`dispatcherd: error: ${e?.message ?? String(err)}\n`);
      process.exitCode = 1;
    }
  }
}

await main();
