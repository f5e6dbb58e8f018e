/**
 * The cluster PKI (docs/SECURITY.md, "Cluster-internal TLS"): certificates made by server/pki verify with
 * OpenSSL against the cluster CA and carry exactly the plan's names; the signer ignores what a request asks
 * for and refuses names the plan does not give a dispatcher; a dispatcher installs only certificates of
 * its CA for the keys it holds, and its keys never appear in what it sends.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planFromSpec } from '../../launcher/planner.js';
import { certificateNamesOf, processCertificateNames, DISPATCHER_CERT } from '../../server/core/cert-names.js';
import { certificateInfo, checkIssuedFor, createCa, createKeyAndRequest, signRequest } from '../../server/pki/certificates.js';
import { clusterCa, issueCertificates } from '../../server/cluster/issue-certificates.js';
import { ClusterStore } from '../../server/cluster/store.js';
import { NodeCertificates } from '../../server/cluster/node-certificates.js';
import type { NodeApi } from '../../server/cluster/node-api.js';
import { nextCaRotationPhase, recordCaRotationOperation } from '../../server/cluster/ca-rotation.js';
import { X509Certificate } from 'node:crypto';

const FP = Array(32).fill('AB').join(':');
const plan = planFromSpec({
  name: 'pki',
  dispatchers: [
    { id: 'd1', endpoint: 'https://10.0.0.11:8528', fingerprint: FP, addresses: ['10.0.0.11', 'fd00::11'] },
    { id: 'd2', endpoint: 'https://10.0.0.12:8528', fingerprint: FP, addresses: ['10.0.0.12'] },
    { id: 'd3', endpoint: 'https://10.0.0.13:8528', fingerprint: FP, addresses: ['10.0.0.13'] },
  ],
  dbservers: 3,
  coordinators: 1,
});

function openssl(args: string[], files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'pki-'));
  try {
    for (const [n, c] of Object.entries(files)) writeFileSync(join(dir, n), c);
    return execFileSync('openssl', args.map((a) => a.replace(/^@/, `${dir}/`)), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('cluster PKI', () => {
  test('names: every host address (IPv4 and IPv6); a DB server also carries the coordinators\' addresses', () => {
    const db1 = plan.processes.find((p) => p.role === 'dbserver' && p.dispatcher === 'd1')!;
    const names = processCertificateNames(plan, db1.id);
    assert.deepEqual(names.ips.sort(), ['10.0.0.11', 'fd00::11'].sort());
    const db2 = plan.processes.find((p) => p.role === 'dbserver' && p.dispatcher === 'd2')!;
    const coord = plan.processes.find((p) => p.role === 'coordinator')!;
    assert.ok(processCertificateNames(plan, db2.id).ips.includes(coord.address), 'clients dialling the coordinator can verify-full');
    const local = planFromSpec({ name: 'lo', dispatchers: [{ id: 'a', endpoint: 'https://127.0.0.2:8528', fingerprint: FP, addresses: ['127.0.0.2'] }], agents: 1, dbservers: 1, coordinators: 1 });
    assert.ok(processCertificateNames(local, 'agent-1').ips.includes('127.0.0.1'), 'loopback hosts carry the kernel\'s source address');
    assert.deepEqual(Object.keys(certificateNamesOf(plan, 'd2')).sort(), [DISPATCHER_CERT, ...plan.processes.filter((p) => p.dispatcher === 'd2').map((p) => p.id)].sort());
  });

  test('a leaf verifies with OpenSSL against the CA, for server and client use, with the plan\'s SANs only', async () => {
    const ca = await createCa('pki');
    const { keyPem, csrPem } = await createKeyAndRequest('agent-1.pki');
    const names = processCertificateNames(plan, 'agent-1');
    const cert = await signRequest(ca, csrPem, names);
    for (const purpose of ['sslserver', 'sslclient']) {
      assert.match(openssl(['verify', '-purpose', purpose, '-CAfile', '@ca.pem', '@leaf.pem'], { 'ca.pem': ca.certPem, 'leaf.pem': cert }), /leaf\.pem: OK/);
    }
    // A certificate of another CA does not verify.
    const other = await createCa('other');
    assert.throws(() => openssl(['verify', '-CAfile', '@ca.pem', '@leaf.pem'], { 'ca.pem': other.certPem, 'leaf.pem': cert }));
    const info = certificateInfo(cert);
    assert.deepEqual(info.ips.sort(), names.ips.sort());
    const days = (Date.parse(info.notAfter) - Date.now()) / 86_400_000;
    assert.ok(days > 360 && days < 366, `a year of validity (${days})`);
    await checkIssuedFor(ca.certPem, cert, keyPem);
    await assert.rejects(checkIssuedFor(other.certPem, cert, keyPem), /not signed by the cluster CA/);
    await assert.rejects(checkIssuedFor(ca.certPem, cert, (await createKeyAndRequest('x')).keyPem), /does not carry this dispatcher's key/);
    // The key is PKCS#8 EC P-256, which PostgreSQL, etcd, HAProxy and Patroni read.
    assert.match(openssl(['pkey', '-in', '@k.pem', '-noout', '-text'], { 'k.pem': keyPem }), /P-256|prime256v1/);
  });

  test('the signer refuses a name the plan does not give the dispatcher; a request with a forged signature is refused', async () => {
    const ca = await createCa('pki');
    const greedy: NodeApi = {
      id: 'd2',
      certificateRequests: async () => ({ requests: [{ name: plan.processes.find((p) => p.dispatcher === 'd1')!.id, csr: (await createKeyAndRequest('x')).csrPem }] }),
      installCertificates: async () => assert.fail('nothing may be installed'),
    } as unknown as NodeApi;
    await assert.rejects(issueCertificates(plan, new Map([['d2', greedy]]), ca), /does not give it/);
    const { csrPem } = await createKeyAndRequest('x');
    const b64 = csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    const der = Buffer.from(b64, 'base64');
    der[der.length - 5] ^= 0xff; // inside the signature
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await assert.rejects(signRequest(ca, forged, processCertificateNames(plan, 'agent-1')), /bad signature|not a PKCS#10/);
  });

  test('a dispatcher: requests carry no key; install takes only its CA\'s certificates for its pending keys; keys stay 0600', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pki-node-'));
    try {
      const store = new ClusterStore(dir);
      await store.save({ plan, state: 'launching', secrets: {} });
      const node = new NodeCertificates('d2', store);
      const { requests } = await node.requests();
      assert.ok(requests.every((r) => !r.csr.includes('PRIVATE KEY')), 'no key leaves the dispatcher');
      const ca = await createCa('pki');
      const names = certificateNamesOf(plan, 'd2');
      const certs = Object.fromEntries(await Promise.all(requests.map(async (r) => [r.name, await signRequest(ca, r.csr, names[r.name])] as const)));
      const other = await createCa('other');
      await assert.rejects(node.install({ ca: other.certPem, certs }), /not signed by the cluster CA/);
      await assert.rejects(node.install({ ca: ca.certPem, certs: { ...certs, 'agent-1': certs[DISPATCHER_CERT] } }), /did not request|does not carry/);
      await node.install({ ca: ca.certPem, certs });
      assert.ok(node.material(DISPATCHER_CERT)?.key.includes('PRIVATE KEY'));
      assert.equal(node.views().find((v) => v.name === '@ca')?.host, 'd2');
      const mode = (f: string) => Number(execFileSync('stat', ['-c', '%a', join(dir, 'cluster', f)], { encoding: 'utf8' }).trim());
      assert.equal(mode('tls.json'), 600);
      assert.equal(mode('ca.crt'), 644);
      const again = new ClusterStore(dir);
      assert.equal((await again.load())?.tls?.certs[DISPATCHER_CERT], certs[DISPATCHER_CERT], 'persisted');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('CA rotation: trust new+old, new certificates, trust new only; a phase whose restart failed is redone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pki-rot-'));
    try {
      const stores = new Map<string, ClusterStore>();
      const nodes = new Map<string, NodeApi>();
      for (const d of plan.dispatchers) {
        const store = new ClusterStore(join(dir, d.id));
        await store.save({ plan, state: 'running', secrets: {} });
        stores.set(d.id, store);
        const certs = new NodeCertificates(d.id, store);
        nodes.set(d.id, { id: d.id, certificateRequests: () => certs.requests(), installCertificates: (x: any) => certs.install(x), trustCa: (b: string) => certs.trust(b) } as unknown as NodeApi);
      }
      const home = stores.get('d1')!;
      const ca = await clusterCa(home, { create: true });
      await issueCertificates(plan, nodes, ca);
      const cas = (id: string) => (stores.get(id)!.get()!.tls!.ca!.match(/BEGIN CERTIFICATE/g) ?? []).length;
      const ok = new Set<string>();

      assert.equal(await nextCaRotationPhase(home, plan, nodes, (id) => ok.has(id)), 'trust');
      for (const d of plan.dispatchers) assert.equal(cas(d.id), 2, `${d.id} trusts new and old`);
      // OpenSSL (what etcd's Go, PostgreSQL, HAProxy and Node read the same way) finds both certificates in the file.
      assert.match(openssl(['storeutl', '-noout', '-certs', '@b.pem'], { 'b.pem': stores.get('d2')!.get()!.tls!.ca! }), /Total found: 2/);
      await recordCaRotationOperation(home, 'op-1');
      // The rolling restart op-1 failed: the trust phase is redone, with the same new CA.
      const newCa = home.get()!.tls!.rotation!.ca;
      assert.equal(await nextCaRotationPhase(home, plan, nodes, (id) => ok.has(id)), 'trust');
      assert.equal(home.get()!.tls!.rotation!.ca, newCa);
      await recordCaRotationOperation(home, 'op-2');
      ok.add('op-2');
      assert.equal(await nextCaRotationPhase(home, plan, nodes, (id) => ok.has(id)), 'leaves');
      for (const d of plan.dispatchers) {
        const t = stores.get(d.id)!.get()!.tls!;
        for (const c of Object.values(t.certs)) assert.ok(new X509Certificate(c).checkIssued(new X509Certificate(newCa)), `${d.id}: new certificates`);
      }
      // Each leaf travels with the cross certificate (the new CA's key certified by the old CA): a verifier
      // that holds only the OLD CA (etcd loads its CA file once, at start) accepts the new leaves.
      const oldCaPem = ca.certPem;
      const m = new NodeCertificates('d2', stores.get('d2')!).material('agent-2')!;
      const [leafPem, ...chainPems] = m.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)!;
      assert.equal(chainPems.length, 1, 'leaf + cross certificate');
      assert.match(openssl(['verify', '-purpose', 'sslclient', '-CAfile', '@old.pem', '-untrusted', '@chain.pem', '@leaf.pem'], { 'old.pem': oldCaPem, 'chain.pem': chainPems.join(''), 'leaf.pem': leafPem }), /leaf\.pem: OK/);
      assert.throws(() => openssl(['verify', '-CAfile', '@old.pem', '@leaf.pem'], { 'old.pem': oldCaPem, 'leaf.pem': leafPem }), 'without the cross certificate the old CA alone does not verify a new leaf');
      assert.match(openssl(['verify', '-CAfile', '@new.pem', '-untrusted', '@chain.pem', '@leaf.pem'], { 'new.pem': newCa, 'chain.pem': chainPems.join(''), 'leaf.pem': leafPem }), /leaf\.pem: OK/);
      // A chain that certifies a key which is not a trusted CA is refused.
      const stranger = await createCa('stranger');
      const pending = await nodes.get('d3')!.certificateRequests();
      const d3certs = Object.fromEntries(await Promise.all(pending.requests.map(async (r) => [r.name, await signRequest({ keyPem: home.get()!.tls!.rotation!.caKey, certPem: newCa }, r.csr, certificateNamesOf(plan, 'd3')[r.name])])));
      await assert.rejects(nodes.get('d3')!.installCertificates({ ca: newCa, certs: d3certs, chain: stranger.certPem }), /not a trusted CA/);
      // Dropping the old CA too early (before the leaves' restart succeeded) is not possible: the phase repeats.
      await recordCaRotationOperation(home, 'op-3');
      assert.equal(await nextCaRotationPhase(home, plan, nodes, (id) => ok.has(id)), 'leaves');
      await recordCaRotationOperation(home, 'op-4');
      ok.add('op-4');
      assert.equal(await nextCaRotationPhase(home, plan, nodes, (id) => ok.has(id)), 'finish');
      for (const d of plan.dispatchers) assert.equal(stores.get(d.id)!.get()!.tls!.ca, newCa, `${d.id} trusts only the new CA`);
      // The finish phase issues new leaves again (programs that rebuild their TLS context only on a new
      // certificate then drop the old CA); they verify against the new CA alone.
      const fin = new NodeCertificates('d2', stores.get('d2')!).material('agent-2')!;
      assert.notEqual(fin.cert, m.cert);
      assert.match(openssl(['verify', '-CAfile', '@new.pem', '@leaf.pem'], { 'new.pem': newCa, 'leaf.pem': fin.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/)![0] }), /leaf\.pem: OK/);
      assert.equal(home.get()!.tls!.rotation, undefined);
      assert.equal(home.get()!.tls!.caKey, (await clusterCa(home, { create: false })).keyPem);
      // A dispatcher refuses a CA bundle its installed certificates do not chain to.
      await assert.rejects(nodes.get('d2')!.trustCa(ca.certPem), /not signed by the cluster CA/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
