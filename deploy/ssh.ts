/**
 * The SSH transport: a small interface (exec a command line, upload a file, write a file) with ssh2 as
 * the real default. Steps only see `RemoteSession`, so they can be driven by a fake in unit tests.
 * The host key is decided in ssh2's hostVerifier — during key exchange, before authentication — so a
 * refused key means nothing was sent to the host at all.
 */
import ssh2 from 'ssh2';
import type { ConnectConfig, SFTPWrapper } from 'ssh2';
import { DispatcherError } from '../api/errors.js';
import { decideHostKey, type HostKeyDecision, type HostKeyPolicy } from './hostkeys.js';

export interface ExecResult {
  code: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
}

export interface RemoteSession {
  /** Runs one command line (built by deploy/remote.ts) and collects its output. Never throws on exit codes. */
  exec(command: string, opts?: { stdin?: string | Buffer; timeoutMs?: number }): Promise<ExecResult>;
  upload(localPath: string, remotePath: string, mode?: number): Promise<void>;
  writeFile(remotePath: string, content: string | Buffer, mode: number): Promise<void>;
  close(): void;
}

export interface ConnectOptions {
  host: string;
  port: number;
  username: string;
  privateKey?: Buffer;
  agent?: string;
  hostKey: HostKeyPolicy;
  readyTimeoutMs?: number;
}

export interface Connected {
  session: RemoteSession;
  hostKey: Extract<HostKeyDecision, { ok: true }> & { keyBlob: Buffer };
}

export type Connector = (o: ConnectOptions) => Promise<Connected>;

export const connectSsh: Connector = (o) =>
  new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let decision: (HostKeyDecision & { keyBlob: Buffer }) | undefined;
    let settled = false;
    const fail = (e: Error): void => {
      if (settled) return;
      settled = true;
      client.end();
      reject(e);
    };
    const cfg: ConnectConfig = {
      host: o.host,
      port: o.port,
      username: o.username,
      readyTimeout: o.readyTimeoutMs ?? 20_000,
      privateKey: o.privateKey,
      agent: o.agent,
      hostVerifier: (key: Buffer): boolean => {
        const d = decideHostKey(key, o.host, o.port, o.hostKey);
        decision = { ...d, keyBlob: Buffer.from(key) };
        return d.ok;
      },
    };
    client.on('ready', () => {
      if (settled) return;
      settled = true;
      if (!decision || !decision.ok) {
        client.end();
        reject(new DispatcherError('peer_untrusted', 'SSH connected without a host-key decision (internal error)'));
        return;
      }
      resolve({ session: wrap(client), hostKey: decision });
    });
    client.on('error', (err: Error) => {
      if (decision && !decision.ok) fail(new DispatcherError('peer_untrusted', decision.reason, { details: { fingerprint: decision.fingerprint } }));
      else fail(new DispatcherError('peer_unreachable', `SSH to ${o.username}@${o.host}:${o.port} failed: ${err.message}`, { cause: err }));
    });
    client.on('close', () => fail(new DispatcherError('peer_unreachable', `SSH connection to ${o.host}:${o.port} closed before it was ready`)));
    try {
      client.connect(cfg);
    } catch (err) {
      fail(new DispatcherError('peer_unreachable', `SSH to ${o.host}:${o.port}: ${(err as Error).message}`, { cause: err }));
    }
  });

function wrap(client: InstanceType<typeof ssh2.Client>): RemoteSession {
  let sftp: Promise<SFTPWrapper> | undefined;
  const getSftp = (): Promise<SFTPWrapper> =>
    (sftp ??= new Promise((res, rej) => client.sftp((err, s) => (err ? rej(err) : res(s)))));
  return {
    exec: (command, opts = {}) =>
      new Promise((resolve, reject) => {
        client.exec(command, (err, stream) => {
          if (err) return reject(err);
          const out: Buffer[] = [];
          const errb: Buffer[] = [];
          let code: number | null = null;
          let signal: string | undefined;
          const timer = opts.timeoutMs
            ? setTimeout(() => {
                stream.close();
                reject(new Error(`remote command timed out after ${opts.timeoutMs} ms`));
              }, opts.timeoutMs)
            : undefined;
          stream.on('data', (d: Buffer) => out.push(d));
          stream.stderr.on('data', (d: Buffer) => errb.push(d));
          stream.on('exit', (c: number | null, s?: string) => {
            code = c;
            signal = s ?? undefined;
          });
          stream.on('close', () => {
            if (timer) clearTimeout(timer);
            resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(errb).toString('utf8') });
          });
          if (opts.stdin !== undefined) stream.end(opts.stdin);
          else stream.end();
        });
      }),
    upload: async (localPath, remotePath, mode = 0o600) => {
      const s = await getSftp();
      await new Promise<void>((res, rej) => s.fastPut(localPath, remotePath, { mode }, (err) => (err ? rej(err) : res())));
    },
    writeFile: async (remotePath, content, mode) => {
      const s = await getSftp();
      await new Promise<void>((res, rej) => s.writeFile(remotePath, content, { mode }, (err) => (err ? rej(err) : res())));
    },
    close: () => client.end(),
  };
}
