/**
 * Contracts of the supervisor: what a process to run looks like once an engine has rendered it, how its
 * readiness is probed, and what its status looks like in the API. Engines (server/engines) produce
 * ProcessSpec; the supervisor (server/supervisor) runs them; the HTTP layer shows ProcessStatus.
 * Everything here is plain JSON so that it can be persisted in state.json and re-read after a restart.
 */
import type { Role } from '../../api/plan.js';

/** How to tell that a process is ready (or still alive). Plain data, so it can be persisted. */
export type ProbeSpec =
  | { kind: 'tcp'; host: string; port: number }
  | {
      kind: 'http';
      url: string;
      /** Accepted status codes (default [200]). */
      expectStatus?: number[];
      /** Regular expression the body must match, e.g. "\"state\":\s*\"running\"". */
      bodyMatch?: string;
      /** For https URLs: the SHA-256 fingerprint to pin (verification stays on otherwise). */
      fingerprint?: string;
      /** For https URLs: verify against this CA file and present this client certificate (cluster TLS). */
      tls?: { caFile: string; certFile: string; keyFile: string };
    }
  /** runAs: the probe runs as the process's own user, so it reads only what that user may (e.g. its pgpass). */
  | { kind: 'command'; argv: string[]; timeoutMs?: number; runAs?: { uid: number; gid: number } };

// The restart policy's settings belong to the pure policy (server/core may import only api/).
export { DEFAULT_RESTART_POLICY, type RestartPolicyConfig } from '../core/restart-policy.js';
import type { RestartPolicyConfig } from '../core/restart-policy.js';

/** A fully resolved process: nothing left to template. Never run through a shell. */
export interface ProcessSpec {
  id: string;
  role: Role | string;
  /** Name of the cluster (plan) this process belongs to, if any. */
  cluster?: string;
  /** argv[0] is an absolute path to an executable allowed by this machine's config. */
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  /** The process's own directory: stdout.log, stderr.log and command.txt go here. */
  dir: string;
  /** Run as this unprivileged user (numeric ids resolved by the caller). */
  runAs?: { uid: number; gid: number; user?: string };
  readiness: ProbeSpec;
  /** Probe interval while waiting for readiness (ms, default 250). */
  readinessIntervalMs?: number;
  liveness?: ProbeSpec;
  stopSignal: NodeJS.Signals;
  /** After this long without exiting, the process group gets SIGKILL (ms). */
  stopTimeoutMs: number;
  restart: RestartPolicyConfig;
}

// The REST-facing status types live in api/ (the API may not import server code, docs/DESIGN.md).
export type { ProcessFailure, ProcessState, ProcessStatus } from '../../api/process-status.js';
import type { ProcessStatus } from '../../api/process-status.js';

export interface Supervisor {
  list(): ProcessStatus[];
  get(id: string): ProcessStatus | undefined;
  /** Last N lines of the process's stdout+stderr logs. */
  logTail(id: string, lines: number): Promise<string[]>;
  /** Spawns (or, if the same id runs with the same spec, keeps) the process; resolves once spawned. */
  start(spec: ProcessSpec): Promise<ProcessStatus>;
  /** Resolves when the readiness probe passes; rejects (DispatcherError) on timeout or when the process fails. */
  waitReady(id: string, timeoutMs: number): Promise<ProcessStatus>;
  /** Graceful stop of the process group: stopSignal, wait stopTimeoutMs, then SIGKILL. Keeps its files. */
  stop(id: string): Promise<void>;
  /** Forget a stopped process (its files stay). */
  remove(id: string): Promise<void>;
  /**
   * Adopt recorded processes still alive (same pid and start time); start again those that should run
   * but are gone (after a reboot) — unless `restartGone` is false, which leaves them stopped.
   */
  recover(opts?: { restartGone?: boolean }): Promise<void>;
  /** Stop watching; processes keep running (they outlive the daemon). */
  close(): Promise<void>;
  /** Subscribe to state changes (for logs and operation events). Returns an unsubscribe function. */
  onChange(listener: (status: ProcessStatus) => void): () => void;
}
