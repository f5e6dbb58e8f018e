/**
 * A dispatcher left `launching` by a launch whose runner died rolls its own part back (docs/DESIGN.md,
 * "Operation lifecycle"). Before the agency is up there is nobody to ask whether the runner lives, so the
 * sign is silence: no operation runs here, no node call from the runner is in flight, and none came for
 * `staleMs` (config operations.launchStaleSeconds; a launch calls every dispatcher at every step, and a
 * start that waits for readiness is in flight all along). Then it stops the processes of the plan that it
 * runs (coordinators first) and records the cluster `failed`, from which both relaunch and cleanup go on.
 */
import type { ClusterState } from '../../api/rest.js';
import type { ClusterStore } from './store.js';
import type { NodeApi } from './node-api.js';
import { shutdownGroups } from '../core/order.js';
import { systemClock, type Clock } from '../../shared/poll.js';

export interface LaunchWatchdogDeps {
  self: string;
  store: Pick<ClusterStore, 'get'>;
  node: Pick<NodeApi, 'stopProcess' | 'setClusterState'>;
  /** An operation runs on this dispatcher (then it is the runner, alive). */
  runningHere(): boolean;
  staleMs: number;
  clock?: Clock;
  log(message: string): void;
}

export class LaunchWatchdog {
  private readonly clock: Clock;
  private lastActivity: number;
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: LaunchWatchdogDeps) {
    this.clock = deps.clock ?? systemClock;
    this.lastActivity = this.clock.now();
  }

  /**
   * `target` with every method call counted as activity of a launch (from its start to its end), except
   * reads (status, logs) that anyone may poll and that say nothing about a runner being alive.
   */
  observe<T extends object>(target: T, reads: string[] = ['status', 'logTail']): T {
    return new Proxy(target, {
      get: (t, key, receiver) => {
        const v = Reflect.get(t, key, receiver) as unknown;
        if (typeof v !== 'function' || reads.includes(String(key))) return v;
        return (...args: unknown[]) => {
          this.inFlight++;
          this.lastActivity = this.clock.now();
          const done = () => {
            this.inFlight--;
            this.lastActivity = this.clock.now();
          };
          try {
            const r = (v as (...a: unknown[]) => unknown).apply(t, args);
            if (r instanceof Promise) return r.finally(done);
            done();
            return r;
          } catch (e) {
            done();
            throw e;
          }
        };
      },
    });
  }

  /** One look; true when it rolled this dispatcher's part back. */
  async check(): Promise<boolean> {
    const snap = this.deps.store.get();
    const now = this.clock.now();
    if (!snap || snap.state !== 'launching' || this.deps.runningHere() || this.inFlight > 0) {
      if (snap?.state !== 'launching') this.lastActivity = now;
      return false;
    }
    if (now - this.lastActivity < this.deps.staleMs) return false;
    this.deps.log(`cluster ${snap.plan.name} has been launching without a word from its runner for ${Math.round((now - this.lastActivity) / 1000)} s: rolling back this dispatcher's part (data dirs stay)`);
    for (const group of shutdownGroups(snap.plan)) {
      for (const p of group.processes.filter((x) => x.dispatcher === this.deps.self)) {
        await this.deps.node.stopProcess(p.id).catch((e: Error) => this.deps.log(`could not stop ${p.id}: ${e.message}`));
      }
    }
    const failed: ClusterState = 'failed';
    await this.deps.node.setClusterState(failed);
    this.lastActivity = this.clock.now();
    return true;
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.check().catch((e: Error) => this.deps.log(`launch watchdog: ${e.message}`)), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
