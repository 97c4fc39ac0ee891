// A store that does not answer during negotiation (listing exports, listing an export's metadata
// contexts): real clients get an error reply within the handshake time, instead of a connection
// dropped by the handshake timer with nothing said.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startNbdServer } from '../../src/nbd';
import { MemoryExportProvider } from '../../src/nbd/memory-export';
import { createLogger } from '../../src/util/log';
import { runCommand } from '../helpers/fuse-disk';

const HANDSHAKE_MS = 3000;

test('a store that hangs during negotiation: nbdinfo gets an error reply and qemu-img opens without metadata contexts, not an EOF', async (t) => {
  const provider = new MemoryExportProvider([{ name: 'a', size: 16 * 2 ** 20, readOnly: false }]);
  let hang = true;
  const never = new Promise<never>(() => {});
  const list = provider.list.bind(provider);
  const open = provider.open.bind(provider);
  provider.list = () => (hang ? never : list());
  // the export opens (its engine was open already), but its metadata contexts need the store
  provider.open = async (name: string) => {
    const exp = await open(name);
    if (exp) exp.listMetaContexts = () => (hang ? never : Promise.resolve([]));
    return exp;
  };
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider, logger: createLogger('silent'), maxConnections: 8, handshakeTimeoutMs: HANDSHAKE_MS });
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;

  const started = performance.now();
  const listed = await runCommand('nbdinfo', ['--list', `nbd://127.0.0.1:${port}`], { okCodes: [0, 1], timeoutMs: 30_000 });
  assert.equal(listed.code, 1);
  // (libnbd shows its own text for a list error; the server's message is in its debug output)
  assert.match(listed.stderr, /server replied with error to list request/);
  assert.doesNotMatch(listed.stderr, /disconnected|end-of-file/i);
  assert.ok(performance.now() - started < HANDSHAKE_MS + 1000, 'answered within the handshake time');

  // qemu asks for metadata contexts: refused in time, it opens the export without them (an EOF
  // after 10 s before)
  const t0 = performance.now();
  const info = await runCommand('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${port}/a`], { timeoutMs: 30_000 });
  assert.match(info.stdout, /"virtual-size": 16777216/);
  assert.ok(performance.now() - t0 < HANDSHAKE_MS + 1000, 'answered within the handshake time');

  hang = false; // the store answers again: the same clients get in
  assert.match((await runCommand('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${port}/a`], { timeoutMs: 30_000 })).stdout, /"virtual-size": 16777216/);
  assert.match((await runCommand('nbdinfo', ['--list', `nbd://127.0.0.1:${port}`], { timeoutMs: 30_000 })).stdout, /export="a"/);
});
