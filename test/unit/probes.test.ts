/**
 * Probes against real loopback servers: tcp, http status and body match, https pinned by SHA-256
 * fingerprint (right pin passes, wrong pin fails, no pin keeps CA verification on), command with timeout.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import { createServer as netServer, type Server } from 'node:net';
import { X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { generate } from 'selfsigned';
import { commandProbe, httpProbe, normalizeFingerprint, runProbe, tcpProbe } from '../../server/supervisor/probes.js';

const portOf = (s: { address(): AddressInfo | string | null }) => (s.address() as AddressInfo).port;
const listen = <S extends Server | http.Server>(s: S) => new Promise<S>((r) => s.listen(0, '127.0.0.1', () => r(s)));
const close = (s: Server | http.Server) => new Promise<void>((r) => s.close(() => r()));

describe('probes', () => {
  let tcp: Server;
  let web: http.Server;
  let tls: https.Server;
  let fingerprint = '';
  let closedPort = 0;

  before(async () => {
    tcp = await listen(netServer((s) => s.end()));
    web = await listen(
      http.createServer((req, res) => {
        if (req.url === '/health') res.end('{"state": "running"}');
        else if (req.url === '/slow') setTimeout(() => res.end('late'), 2_000);
        else {
          res.statusCode = 503;
          res.end('starting');
        }
      }),
    );
    const pems = await generate([{ name: 'commonName', value: 'probe-test' }], { keyType: 'ec', algorithm: 'sha256' });
    fingerprint = new X509Certificate(pems.cert).fingerprint256;
    tls = await listen(https.createServer({ key: pems.private, cert: pems.cert }, (_req, res) => res.end('{"ok":true}')));
    const tmp = await listen(netServer());
    closedPort = portOf(tmp);
    await close(tmp);
  });

  after(async () => {
    // Probes use agent:false, so no keep-alive socket holds the servers open.
    web.closeAllConnections();
    tls.closeAllConnections();
    await Promise.all([close(tcp), close(web), close(tls)]);
  });

  test('tcp: connects to a listener, fails on a closed port', async () => {
    assert.equal((await tcpProbe('127.0.0.1', portOf(tcp))).ok, true);
    const r = await tcpProbe('127.0.0.1', closedPort);
    assert.equal(r.ok, false);
    assert.match(r.detail, /ECONNREFUSED/);
  });

  test('http: status and body match', async () => {
    const base = `http://127.0.0.1:${portOf(web)}`;
    assert.equal((await httpProbe({ url: `${base}/health` })).ok, true);
    assert.equal((await httpProbe({ url: `${base}/health`, bodyMatch: '"state":\\s*"running"' })).ok, true);
    const nomatch = await httpProbe({ url: `${base}/health`, bodyMatch: 'stopped' });
    assert.equal(nomatch.ok, false);
    assert.match(nomatch.detail, /does not match/);
    const bad = await httpProbe({ url: `${base}/other` });
    assert.equal(bad.ok, false);
    assert.match(bad.detail, /status 503/);
    assert.equal((await httpProbe({ url: `${base}/other`, expectStatus: [503] })).ok, true);
  });

  test('http: times out', async () => {
    const t0 = Date.now();
    const r = await httpProbe({ url: `http://127.0.0.1:${portOf(web)}/slow` }, 300);
    assert.equal(r.ok, false);
    assert.match(r.detail, /no answer within 300 ms/);
    assert.ok(Date.now() - t0 < 1_500);
  });

  test('https: the pinned fingerprint passes, another fails, no pin keeps CA verification on', async () => {
    const url = `https://127.0.0.1:${portOf(tls)}/`;
    assert.equal((await httpProbe({ url, fingerprint })).ok, true);
    assert.equal((await httpProbe({ url, fingerprint: fingerprint.toLowerCase().replace(/:/g, '') })).ok, true, 'pin format is normalised');
    const wrong = fingerprint.replace(/^../, fingerprint.startsWith('00') ? '11' : '00');
    const r = await httpProbe({ url, fingerprint: wrong });
    assert.equal(r.ok, false);
    assert.match(r.detail, /fingerprint does not match/);
    const nopin = await httpProbe({ url });
    assert.equal(nopin.ok, false, 'a self-signed certificate is refused without a pin');
  });

  test('command: exit 0 passes, non-zero fails with its stderr, a hang is killed at the timeout', async () => {
    assert.equal((await commandProbe(['/bin/true'])).ok, true);
    const f = await commandProbe(['/bin/sh', '-c', 'echo nope >&2; exit 4']);
    assert.equal(f.ok, false);
    assert.match(f.detail, /exit 4 \(nope\)/);
    const t0 = Date.now();
    const h = await runProbe({ kind: 'command', argv: ['/bin/sleep', '10'], timeoutMs: 200 });
    assert.equal(h.ok, false);
    assert.match(h.detail, /no result within 200 ms/);
    assert.ok(Date.now() - t0 < 2_000);
    assert.equal((await commandProbe(['/no/such/binary'])).ok, false);
  });

  test('normalizeFingerprint', () => {
    assert.equal(normalizeFingerprint('ab:cd:EF'), 'ABCDEF');
    assert.equal(normalizeFingerprint('sha256:abcd'), 'ABCD');
  });
});
