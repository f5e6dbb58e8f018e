/**
 * Wires the daemon together: config -> logger, TLS material, users, supervisor, the express app, the
 * HTTPS server, the control socket and the optional redirect port. Closing the daemon stops serving and
 * stops watching processes, but never stops the processes: they outlive the daemon and are adopted again
 * at the next start (supervisor.recover()).
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { connect } from 'node:net';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { isIPv6 } from 'node:net';
import { join } from 'node:path';
import type express from 'express';
import { DispatcherError } from '../api/errors.js';
import type { DispatcherConfig } from './config.js';
import { closeLogger, createLogger, type Logger } from './log.js';
import { dataDirMode } from './data-tree.js';
import { ensureCertificate, fingerprint256, tlsServerOptions } from './tls.js';
import { fileUserDirectory, listUsers, revokeLegacyClusterUsers, type UserDirectory } from './users.js';
import { createSupervisor } from './supervisor/supervisor.js';
import type { Supervisor } from './supervisor/types.js';
import { createApp, logAudit, type AppContext, type RouteModule } from './http/app.js';
import { createAuthenticator, VIA_SOCKET } from './http/auth.js';
import { answerClientError } from './http/errors.js';
import { usersModule } from './http/routes/users.js';
import { readOnlyUsers } from './http/read-only.js';
import { systemModule } from './http/routes/system.js';
import { processesModule } from './http/routes/processes.js';
import { observabilityModule } from './http/routes/observability.js';
import { consoleModule } from './http/routes/console.js';
import { addObservability } from './observability/wiring.js';

export interface StartDaemonOptions {
  /** Default: a winston logger from config.log (file + stdout). */
  logger?: Logger;
  /** Log to stdout as well as the file (default true; tests turn it off). */
  console?: boolean;
  /** Default: createSupervisor over <dataDir>/supervisor. */
  supervisor?: Supervisor;
  /** Default: fileUserDirectory(config.usersFile). */
  users?: UserDirectory;
  /** Route modules added after the built-in ones (system, processes, observability, console). */
  modules?: RouteModule[];
  /** Adds fields to the context before the app is built (see AppContext's declaration merging). */
  extendContext?: (ctx: AppContext) => void | Promise<void>;
  /**
   * Runs before the supervisor adopts or restarts any process: the cluster side installs the firewall guard
   * here, so a process restarted at boot never listens unguarded (docs/FIREWALL.md). Returning
   * `{ restartGone: false }` keeps gone processes stopped (the guard could not be installed).
   */
  beforeProcesses?: (config: DispatcherConfig, logger: Logger) => Promise<{ restartGone: boolean } | void>;
}

export interface DaemonHandle {
  /** The HTTPS port actually bound (config.port may be 0). */
  port: number;
  url: string;
  redirectPort?: number;
  socketPath: string;
  fingerprint: string;
  cert: string;
  ctx: AppContext;
  app: express.Express;
  close(): Promise<void>;
}

export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

function hostForUrl(host: string): string {
  return isIPv6(host) ? `[${host}]` : host;
}

function listenAsync(server: HttpServer | HttpsServer, ...args: [number, string] | [string]): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    const done = () => {
      server.off('error', onError);
      resolve();
    };
    if (args.length === 2) server.listen(args[0], args[1], done);
    else server.listen(args[0], done);
  });
}

function closeAsync(server: HttpServer | HttpsServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** True when something accepts connections on the Unix socket (another daemon is running). */
function socketInUse(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Loads (or, for the default paths in the data dir, creates) the key and certificate. */
async function tlsMaterial(config: DispatcherConfig): Promise<{ cert: string; key: string }> {
  const defaults = config.cert === join(config.dataDir, 'tls', 'cert.pem') && config.key === join(config.dataDir, 'tls', 'key.pem');
  if (!existsSync(config.cert) || !existsSync(config.key)) {
    if (!defaults) throw new DispatcherError('config_invalid', `certificate ${config.cert} or key ${config.key} does not exist`);
    const addresses = config.listen === '0.0.0.0' || config.listen === '::' ? [] : [config.listen];
    await ensureCertificate({ certFile: config.cert, keyFile: config.key, addresses });
  }
  return { cert: readFileSync(config.cert, 'utf8'), key: readFileSync(config.key, 'utf8') };
}

export async function startDaemon(config: DispatcherConfig, opts: StartDaemonOptions = {}): Promise<DaemonHandle> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const ownLogger = !opts.logger;
  const logger = opts.logger ?? createLogger({ level: config.log.level, file: config.log.file, console: opts.console ?? true });
  const cleanups: (() => Promise<void> | void)[] = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) await Promise.resolve(fn()).catch((err) => logger.error('shutdown step failed', { err }));
  };
  try {
    // 0711 is the intended mode when cluster processes run as another user (they walk to their own process
    // dirs, docs/SECURITY.md); only bits beyond the mode `init` gives are worth a warning.
    const mode = statSync(config.dataDir).mode & 0o777;
    const expected = dataDirMode(Boolean(config.runAs));
    if (mode & ~expected) logger.warn(`data dir is accessible by other users; it should be 0${expected.toString(8)}`, { dataDir: config.dataDir, mode: mode.toString(8) });

    const { cert, key } = await tlsMaterial(config);
    const fingerprint = fingerprint256(cert);
    const users = opts.users ?? fileUserDirectory(config.usersFile);
    // Migration: peers used to log in as `cluster-<name>` accounts; they use certificates now.
    const revoked = await revokeLegacyClusterUsers(config.usersFile);
    if (revoked.length) logger.warn('revoked legacy cluster accounts (peers authenticate by certificate now)', { audit: true, action: 'revoke legacy accounts', accounts: revoked });
    if (!opts.users && (await listUsers(config.usersFile)).length === 0) {
      logger.warn('no users defined: only the control socket can be used (add one with `dispatcherd user add`)', { usersFile: config.usersFile });
    }

    const supervisor = opts.supervisor ?? (await createSupervisor({ stateDir: join(config.dataDir, 'supervisor'), logger }));
    // Closing the supervisor only stops watching; processes keep running.
    cleanups.push(() => supervisor.close());
    const guarded = await opts.beforeProcesses?.(config, logger);
    if (!opts.supervisor) await supervisor.recover({ restartGone: config.relaunchOnBoot && guarded?.restartGone !== false });

    const advertised = config.listen === '0.0.0.0' || config.listen === '::' ? hostname() : config.listen;
    // Cast: `cluster` is filled by extendContext (server/cluster-daemon.ts) before any route is served.
    const ctx = {
      config,
      logger,
      supervisor,
      identity: { id: config.id, version: packageVersion(), endpoint: config.endpoint ?? '', fingerprint },
      audit: logAudit(logger),
    } as AppContext;
    await opts.extendContext?.(ctx);
    const observability = await addObservability(ctx, cert);
    cleanups.push(() => observability.close());

    const authenticator = createAuthenticator(users, config.auth, logger, ctx.peerTrust);
    const modules: RouteModule[] = [];
    modules.push(systemModule(() => modules), processesModule, usersModule, observabilityModule, consoleModule, ...(opts.modules ?? []));
    const app = createApp(ctx, modules, { authenticator, before: [ctx.metrics.middleware], authorize: [readOnlyUsers(config.readOnlyUsers)] });

    // HTTPS. A client certificate is requested but not required (operators use passwords) and not
    // verified against a CA: peers are recognised by its pinned fingerprint (server/http/auth.ts).
    const server = createHttpsServer({ ...tlsServerOptions(cert, key), requestCert: true, rejectUnauthorized: false }, app);
    server.on('clientError', answerClientError);
    server.headersTimeout = 20_000;
    server.requestTimeout = 60_000;
    await listenAsync(server, config.port, config.listen);
    cleanups.push(() => closeAsync(server));
    const addr = server.address();
    const port = typeof addr === 'object' && addr ? addr.port : config.port;
    ctx.identity.endpoint = config.endpoint ?? `https://${hostForUrl(advertised)}:${port}`;

    // Control socket: same app, no password. The data dir is 0700, so the socket is unreachable for
    // others even in the instant between listen() and chmod().
    if (existsSync(config.socketPath)) {
      if (!lstatSync(config.socketPath).isSocket()) throw new DispatcherError('config_invalid', `${config.socketPath} exists and is not a socket`);
      if (await socketInUse(config.socketPath)) throw new DispatcherError('conflict', `another dispatcherd is serving ${config.socketPath}`);
      unlinkSync(config.socketPath); // stale socket of a daemon that died
    }
    const socketServer = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
      (req as unknown as Record<symbol, unknown>)[VIA_SOCKET] = true;
      app(req, res);
    });
    socketServer.on('clientError', answerClientError);
    await listenAsync(socketServer, config.socketPath);
    chmodSync(config.socketPath, 0o600);
    cleanups.push(async () => {
      await closeAsync(socketServer);
      try {
        unlinkSync(config.socketPath);
      } catch {
        /* already gone */
      }
    });

    // Optional plain-HTTP port that only redirects. The target host comes from our own endpoint, never
    // from the request's Host header (which would make this an open redirect).
    let redirectPort: number | undefined;
    if (config.redirectPort !== undefined) {
      const base = ctx.identity.endpoint.replace(/\/+$/, '');
      const redirect = createHttpServer((req, res) => {
        res.writeHead(308, { Location: base + (req.url?.startsWith('/') ? req.url : '/'), 'Content-Length': '0' });
        res.end();
      });
      await listenAsync(redirect, config.redirectPort, config.listen);
      cleanups.push(() => closeAsync(redirect));
      const ra = redirect.address();
      redirectPort = typeof ra === 'object' && ra ? ra.port : config.redirectPort;
    }

    logger.info('dispatcherd started', { id: config.id, endpoint: ctx.identity.endpoint, listen: config.listen, port, fingerprint, socket: config.socketPath });
    const urlHost = config.listen === '0.0.0.0' ? '127.0.0.1' : config.listen === '::' ? '::1' : config.listen;
    let closing: Promise<void> | undefined;
    return {
      port,
      url: `https://${hostForUrl(urlHost)}:${port}`,
      redirectPort,
      socketPath: config.socketPath,
      fingerprint,
      cert,
      ctx,
      app,
      close() {
        closing ??= (async () => {
          logger.info('dispatcherd stopping (supervised processes keep running)');
          await cleanup();
          if (ownLogger) await closeLogger(logger);
        })();
        return closing;
      },
    };
  } catch (err) {
    await cleanup();
    if (ownLogger) {
      logger.error('dispatcherd failed to start', { err });
      await closeLogger(logger);
    }
    throw err;
  }
}
