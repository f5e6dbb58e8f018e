/**
 * The dispatchers of a plan as NodeApi, for one cluster operation (docs/DESIGN.md, "Components"): this
 * dispatcher directly, every peer through a client that the operation closes when it ends. Shared by the
 * orchestrator's operations, the firewall change and the certificate operations, so each opens and closes
 * its peers the same way.
 */
import { DispatcherError } from '../../api/errors.js';
import type { Plan, PlanDispatcher } from '../../api/plan.js';
import type { Credential } from '../../api/rest.js';
import type { NodeApi } from './node-api.js';
import type { ClusterStore } from './store.js';
import type { Nodes } from './fan-out.js';

export interface PlanNodesDeps {
  /** This dispatcher (LocalNode in production). */
  self: NodeApi;
  store: Pick<ClusterStore, 'get'>;
  /**
   * A client for a peer (RemoteNode in production: mutual TLS with this dispatcher's certificate).
   * `firstContact` is the operator credential for adopting a plan; only launch passes one.
   */
  peer(d: PlanDispatcher, firstContact?: Credential): NodeApi & { close?(): void };
}

/** The stored plan, its secrets and its nodes, for one operation. */
export interface StoredPlanNodes {
  plan: Plan;
  secrets: Record<string, string>;
  nodes: Nodes;
}

export class PlanNodes {
  constructor(private readonly deps: PlanNodesDeps) {}

  /** Nodes of `plan`; `firstContact` gives a peer the credential to adopt it (a launch). */
  of(plan: Plan, firstContact: (d: PlanDispatcher) => Credential | undefined = () => undefined): Nodes {
    const nodes: Nodes = new Map();
    for (const d of plan.dispatchers) nodes.set(d.id, d.id === this.deps.self.id ? this.deps.self : this.deps.peer(d, firstContact(d)));
    return nodes;
  }

  close(nodes: Nodes): void {
    for (const n of nodes.values()) n.close?.();
  }

  /** Runs `work` on the nodes of the persisted plan (peers trust this dispatcher by the certificate it pins), then closes them. */
  async withStored<T>(work: (s: StoredPlanNodes) => Promise<T>): Promise<T> {
    const snap = this.deps.store.get();
    if (!snap) throw new DispatcherError('not_found', `dispatcher ${this.deps.self.id} has no cluster plan; launch one first`);
    const nodes = this.of(snap.plan);
    try {
      return await work({ plan: snap.plan, secrets: snap.secrets, nodes });
    } finally {
      this.close(nodes);
    }
  }
}
