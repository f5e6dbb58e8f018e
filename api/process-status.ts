/**
 * A supervised process as the REST API shows it (GET /v1/processes, the cluster view). The supervisor
 * (server/supervisor) produces it; clients read it. Plain JSON, also persisted in state.json.
 */

export type ProcessState = 'starting' | 'running' | 'ready' | 'backoff' | 'stopping' | 'stopped' | 'failed';

export interface ProcessFailure {
  reason: string;
  exitCode: number | null;
  signal: string | null;
  logTail: string[];
}

export interface ProcessStatus {
  id: string;
  role: string;
  cluster?: string;
  state: ProcessState;
  pid?: number;
  /** ISO time the current incarnation started. */
  startedAt?: string;
  /** ISO time it was last seen becoming ready. */
  readySince?: string;
  restarts: number;
  /** true when this dispatcher adopted the process after its own restart. */
  adopted?: boolean;
  lastExit?: { code: number | null; signal: string | null; at: string };
  failure?: ProcessFailure;
  command: string[];
}
