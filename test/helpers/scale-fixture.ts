/**
 * The scale-out of the network tier and its benchmark (test/net/scale-out.test.ts, bench/scale.ts): a
 * running plan grown by a fourth host with two agents (the agency goes 3 → 5, one at a time), a DB server
 * and a coordinator, each a copy of a running process of its role on the new host's address.
 */
import type { Plan, PlanProcess } from '../../api/plan.js';

export function grownByHost(plan: Plan, host: { id: string; endpoint: string; fingerprint: string; addresses: string[] }): Plan {
  const p = structuredClone(plan);
  p.dispatchers.push({ ...p.dispatchers[0], id: host.id, endpoint: host.endpoint, fingerprint: host.fingerprint, addresses: host.addresses });
  const like = (role: string) => p.processes.find((x) => x.role === role)!;
  const clone = (src: PlanProcess, id: string, offset = 0): PlanProcess => ({
    ...structuredClone(src),
    id,
    dispatcher: host.id,
    address: host.addresses[0],
    dataDir: `${p.dataRoot}/${id}`,
    // Two agents on one host: the second's ports 10 apart (the engine's portOffsetStep).
    ports: src.ports.map((x) => ({ ...x, port: x.port + offset })),
  });
  p.processes.push(clone(like('agent'), 'agent-4'), clone(like('agent'), 'agent-5', 10), clone(like('dbserver'), 'dbserver-4'), clone(like('coordinator'), 'coordinator-2'));
  return p;
}
