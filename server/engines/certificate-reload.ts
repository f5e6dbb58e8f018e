/**
 * The engine-neutral side of certificate renewal (docs/DESIGN.md, "Certificate renewal"): after the new TLS
 * files are in place, tell the running program to re-read them the way its engine declares
 * (templates/<engine>/engine.yaml `certificateReload`). Named actions are engine code under
 * server/engines/<engine>/; nothing here stops or restarts a process.
 */
import { resolve } from 'node:path';
import { DispatcherError } from '../../api/errors.js';
import { TLS_FILES, type CertificateReload } from './render.js';
import { haproxySslUpdate } from './pg-ha/haproxy-ssl-update.js';

export interface ReloadTarget {
  processId: string;
  /** The supervised process's pid (signals go to it only). */
  pid: number;
  dir: string;
  /** Content of the TLS files just written (server/engines/render.ts TLS_FILES), by key. */
  tls: Record<keyof typeof TLS_FILES, string>;
  runAs?: { uid: number; gid: number };
  /** Whether the trusted CA changed (a CA rotation phase) or only the leaves. */
  caChanged: boolean;
}

type Action = (reload: Extract<CertificateReload, { kind: 'action' }>, target: ReloadTarget) => Promise<string>;

const ACTIONS: Record<string, Action> = {
  'haproxy-ssl-update': (reload, t) => {
    if (!reload.socket) throw new DispatcherError('config_invalid', `certificateReload haproxy-ssl-update of ${t.processId} names no socket`);
    return haproxySslUpdate({
      processId: t.processId,
      socket: reload.socket,
      pemFile: { path: resolve(t.dir, TLS_FILES.pemFile), content: t.tls.pemFile },
      caFile: { path: resolve(t.dir, TLS_FILES.caFile), content: t.tls.caFile },
      caChanged: t.caChanged,
      ...(t.runAs ? { runAs: t.runAs } : {}),
    });
  },
};

/** Names of the actions an engine may declare (checked when an engine loads). */
export const CERTIFICATE_RELOAD_ACTIONS: readonly string[] = Object.keys(ACTIONS);

/** Makes the running process use its new TLS files; returns what was done (for the operation's events). */
export async function reloadCertificates(reload: CertificateReload, target: ReloadTarget): Promise<string> {
  switch (reload.kind) {
    case 'per-handshake':
      return `nothing to do: ${reload.description}`;
    case 'signal':
      process.kill(target.pid, reload.signal);
      return `${reload.signal} to pid ${target.pid}: ${reload.description}`;
    case 'action': {
      const act = ACTIONS[reload.action];
      if (!act) throw new DispatcherError('config_invalid', `unknown certificateReload action ${reload.action} (known: ${CERTIFICATE_RELOAD_ACTIONS.join(', ')})`);
      return act(reload, target);
    }
  }
}
