/**
 * The cluster side of a dispatcher, as the HTTP routes see it: its LocalNode (what peers ask of it), the
 * Orchestrator (what an operator asks of it), the rolling restarts, and the operations it runs. Built once
 * by the daemon (server/cluster/setup.ts).
 */
import type { Credential } from '../../api/rest.js';
import { DispatcherError } from '../../api/errors.js';
import type { LocalNode } from './node.js';
import type { Orchestrator, LaunchInput } from './orchestrator.js';
import type { OperationStore } from './operations.js';
import type { ClusterStore } from './store.js';
import type { RestartService } from './restart.js';

export class ClusterService {
  constructor(
    readonly node: LocalNode,
    readonly orchestrator: Orchestrator,
    readonly operations: OperationStore,
    readonly store: ClusterStore,
    readonly restarts: RestartService,
  ) {}

  async launch(input: LaunchInput) {
    this.orchestrator.precheckLaunch(input);
    return this.operations.start('launch', input.plan.name, (op) => this.orchestrator.launch(op, input));
  }

  private clusterName(): string {
    return this.store.get()?.plan.name ?? '(none)';
  }

  shutdown() {
    return this.operations.start('shutdown', this.clusterName(), (op) => this.orchestrator.shutdown(op));
  }

  relaunch(readyTimeoutMs: number) {
    return this.operations.start('relaunch', this.clusterName(), (op) => this.orchestrator.relaunch(op, readyTimeoutMs));
  }

  cleanup(confirmName: string) {
    // Refuse a missing or wrong name before an operation starts: the caller gets a 400 naming the cluster.
    const name = this.store.get()?.plan.name;
    if (name && confirmName !== name) {
      throw new DispatcherError('bad_request', `cleanup deletes every data dir of the cluster: repeat its name (${name}) to confirm`, {
        problems: [{ path: 'confirmName', message: `must be ${name}` }],
      });
    }
    return this.operations.start('cleanup', this.clusterName(), (op) => this.orchestrator.cleanup(op, confirmName));
  }
}

/** Reads the HTTP Basic credentials of an already-authenticated request, to forward to peers at first contact. */
export function basicCredential(authorization: string | undefined): Credential | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(authorization ?? '');
  if (!m) return undefined;
  const text = Buffer.from(m[1], 'base64').toString('utf8');
  const i = text.indexOf(':');
  return i < 0 ? undefined : { user: text.slice(0, i), password: text.slice(i + 1) };
}
