/** The fixed plans the firewall golden tests render (literal Plan objects: no planner involved). */
import type { Plan } from '../../../api/plan.js';

const FP = Array.from({ length: 32 }, () => 'AB').join(':');

function dispatcher(id: string, v4: string, v6: string): Plan['dispatchers'][number] {
  return { id, endpoint: `https://${v4}:8528`, fingerprint: FP, addresses: [v4, v6], allowAgents: true, allowDBservers: true, allowCoordinators: true };
}

function proc(id: string, role: 'agent' | 'dbserver' | 'coordinator', host: string, address: string, ports: Plan['processes'][number]['ports']): Plan['processes'][number] {
  return { id, role, dispatcher: host, address, ports, dataDir: `clusters/demo/${id}`, args: [] };
}

const hosts = [
  ['d1', '10.0.0.1', 'fd00:10::1'],
  ['d2', '10.0.0.2', 'fd00:10::2'],
  ['d3', '10.0.0.3', 'fd00:10::3'],
] as const;

export const guardPlan: Plan = {
  apiVersion: 'dispatcher/v1',
  name: 'demo',
  engine: 'pg-ha',
  binaries: {},
  dataRoot: 'clusters',
  dispatchers: hosts.map(([id, v4, v6]) => dispatcher(id, v4, v6)),
  processes: [
    ...hosts.map(([id, v4], i) =>
      proc(`agent-${i + 1}`, 'agent', id, v4, [
        { name: 'client', port: 2379, exposure: 'cluster' },
        { name: 'peer', port: 2380, exposure: 'cluster' },
      ]),
    ),
    ...hosts.map(([id, v4], i) =>
      proc(`db-${i + 1}`, 'dbserver', id, v4, [
        { name: 'postgres', port: 5432, exposure: 'cluster' },
        { name: 'rest', port: 8008, exposure: 'cluster' },
      ]),
    ),
    proc('coord-1', 'coordinator', 'd1', '10.0.0.1', [
      { name: 'rw', port: 5000, exposure: 'public' },
      { name: 'ro', port: 5001, exposure: 'public' },
    ]),
  ],
  firewall: { mode: 'guard', backend: 'auto', clientSources: ['0.0.0.0/0', '::/0'], operatorSources: ['203.0.113.10', '2001:db8:1::/48'], sshPort: 22, outboundAllow: false },
};

/** Deny mode with the outbound allowlist, restricted clients, and an empty IPv6 operator list. */
export const denyPlan: Plan = {
  ...guardPlan,
  name: 'demo-deny',
  firewall: { mode: 'deny', backend: 'nftables', clientSources: ['198.51.100.0/24', '2001:db8:2::/64'], operatorSources: ['203.0.113.10'], sshPort: 2222, outboundAllow: true },
};
