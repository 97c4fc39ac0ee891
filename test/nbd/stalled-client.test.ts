// A client that stops reading must not keep the server from shutting down (and flushing its
// exports), nor hold its replies forever.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startNbdServer } from '../../src/nbd';
import { MemoryExportProvider } from '../../src/nbd/memory-export';
import { createLogger } from '../../src/util/log';
import { Wire, greet, go, request } from './raw-client';

test('shutdown completes and flushes exports although a client stopped reading its replies', async () => {
  const provider = new MemoryExportProvider([{ name: 'a', size: 64 * 2 ** 20, readOnly: false }]);
  let closedAll = false;
  const closeAll = provider.closeAll.bind(provider);
  provider.closeAll = async () => {
    closedAll = true;
    await closeAll();
  };
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider, logger: createLogger('silent'), maxConnections: 8, handshakeTimeoutMs: 5000, shutdownGraceMs: 500 });
  const w = new Wire((server.address() as { port: number }).port);
  await greet(w);
  await go(w, 'a');
  w.sock.pause(); // reads nothing from now on
  for (let i = 0; i < 8; i++) w.sock.write(request(0, 0, i + 1, 0, 32 * 2 ** 20));
  await new Promise((r) => setTimeout(r, 1000));
  const started = Date.now();
  const done = server.close().then(() => 'closed');
  const timeout = new Promise((r) => setTimeout(() => r('hung'), 10_000));
  assert.equal(await Promise.race([done, timeout]), 'closed', 'close() finished');
  assert.ok(Date.now() - started < 5000, `within the grace period and a little (${Date.now() - started} ms)`);
  assert.equal(closedAll, true, 'exports flushed and closed');
  w.sock.destroy();
});

test('shutdown completes although a write waits on its export until the export closes (a store that fails)', async () => {
  // As a vault write waiting for room while its store is full: it ends only when the export
  // closes. Waiting for it before closing the exports hung the stop for good.
  const provider = new MemoryExportProvider([{ name: 'a', size: 64 * 2 ** 20, readOnly: false }]);
  let wakeWriters: () => void = () => {};
  const exportClosed = new Promise<void>((r) => (wakeWriters = r));
  const closeAll = provider.closeAll.bind(provider);
  provider.closeAll = async () => {
    wakeWriters();
    await closeAll();
  };
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider, logger: createLogger('silent'), maxConnections: 8, handshakeTimeoutMs: 5000, shutdownGraceMs: 300 });
  const exp = (await provider.open('a'))!;
  await provider.release(exp);
  (exp as any).write = async () => {
    await exportClosed;
    throw Object.assign(new Error('the volume was closed while this write waited for room'), { code: 'ERR_SHUTDOWN' });
  };
  const w = new Wire((server.address() as { port: number }).port);
  await greet(w);
  await go(w, 'a');
  w.sock.write(request(1, 0, 1, 0, 4096, Buffer.alloc(4096, 1)));
  await new Promise((r) => setTimeout(r, 200));
  const done = server.close().then(() => 'closed');
  const timeout = new Promise((r) => setTimeout(() => r('hung'), 15_000));
  assert.equal(await Promise.race([done, timeout]), 'closed', 'close() finished');
  w.sock.destroy();
});
