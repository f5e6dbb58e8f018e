/**
 * What the guard reports about itself (`GET /v1/cluster`, metrics: docs/OBSERVABILITY.md), kept apart from
 * the code that changes rules: the guard records each apply and check here, and status() reads it back.
 */
import type { Clock } from '../../shared/poll.js';

export interface GuardLogger {
  info(msg: string, meta?: Record<string, unknown>): void;
  warn(msg: string, meta?: Record<string, unknown>): void;
  error(msg: string, meta?: Record<string, unknown>): void;
}

export const silentGuardLogger: GuardLogger = { info() {}, warn() {}, error() {} };

export interface GuardStatus {
  backend: string;
  /** Result of the last check (apply or verify); false before the first apply. */
  inSync: boolean;
  /** ISO time of the last successful apply (including drift repairs and rollbacks), or null. */
  lastAppliedAt: string | null;
  lastCheckedAt: string | null;
  /** How many times the drift loop (or verify with repair) found our rules changed and re-applied them. */
  driftRepairs: number;
  /** How long the last successful apply took (ms), or null before the first (a metric: docs/OBSERVABILITY.md). */
  lastApplyMs: number | null;
  /** Other tables/chains that may drop ports we allow; problems the last check met. */
  warnings: string[];
  /** Set while a commit-confirmed change waits for confirm(): ISO deadline. */
  pendingConfirmUntil: string | null;
  /** Whether a policy is installed by this guard. */
  active: boolean;
}

/** The guard's record of its applies and checks; times come from the guard's clock. */
export class GuardRecord {
  inSync = false;
  private lastAppliedAt: string | null = null;
  private lastCheckedAt: string | null = null;
  private driftRepairs = 0;
  private lastApplyMs: number | null = null;
  private warnings: string[] = [];

  constructor(private readonly clock: Clock) {}

  /** A successful apply that took `ms`. */
  applied(ms: number): void {
    this.inSync = true;
    this.lastApplyMs = ms;
    this.lastAppliedAt = new Date(this.clock.now()).toISOString();
    this.lastCheckedAt = this.lastAppliedAt;
  }

  /** What the backend found after the last apply (foreign drops, sessions the rules would cut). */
  warned(warnings: string[]): void {
    this.warnings = warnings;
  }

  /** A read-back compared with the installed policy. */
  checked(inSync: boolean): void {
    this.inSync = inSync;
    this.lastCheckedAt = new Date(this.clock.now()).toISOString();
  }

  repaired(): void {
    this.driftRepairs++;
  }

  view(backend: string, pendingConfirmUntil: Date | null, active: boolean): GuardStatus {
    return {
      backend,
      inSync: this.inSync,
      lastAppliedAt: this.lastAppliedAt,
      lastCheckedAt: this.lastCheckedAt,
      driftRepairs: this.driftRepairs,
      lastApplyMs: this.lastApplyMs,
      warnings: [...this.warnings],
      pendingConfirmUntil: pendingConfirmUntil ? pendingConfirmUntil.toISOString() : null,
      active,
    };
  }
}
