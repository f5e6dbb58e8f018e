/**
 * A call's own timeout bounds the whole call, the first contact's pin fetch included
 * (client/dispatcher-client.ts): a peer that accepts TCP but never answers TLS — what a scale operation's
 * cluster view meets at a dead host — fails that call with peer_unreachable naming the call's timeout, not
 * the client's longer default. Loopback only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { DispatcherClient } from '../../client/dispatcher-client.js';
import { isDispatcherError } from '../../api/errors.js';

test('a silent peer fails a call after the call\'s timeout, not the client\'s', { timeout: 20_000 }, async () => {
  const sockets: Socket[] = [];
  const server = createServer((s) => void sockets.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  const client = new DispatcherClient({ endpoint: `https://127.0.0.1:${port}`, fingerprint: Array(32).fill('AB').join(':'), timeoutMs: 60_000 });
  try {
    await assert.rejects(client.get('/v1/node/status', { timeoutMs: 300 }), (e: unknown) => isDispatcherError(e) && e.code === 'peer_unreachable' && /within 300 ms/.test(e.message));
  } finally {
    client.close();
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
