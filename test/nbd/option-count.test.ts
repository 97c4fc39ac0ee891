// How many options one handshake may send: enough for `nbdinfo --list` of a vault with many
// snapshots (about two options per export), not endless.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startNbdServer } from '../../src/nbd';
import { MemoryExportProvider } from '../../src/nbd/memory-export';
import { NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK } from '../../src/nbd/constants';
import { MAX_OPTIONS } from '../../src/nbd/limits';
import { createLogger } from '../../src/util/log';
import { runCommand } from '../helpers/fuse-disk';
import { Wire, greet, option, readOptionReply } from './raw-client';

test('nbdinfo --list shows 24 exports (a volume with its snapshots); a client past the option limit is cut off', async (t) => {
  const names = Array.from({ length: 24 }, (_, i) => (i === 0 ? 'web01' : `web01@daily-${String(i).padStart(2, '0')}`));
  const provider = new MemoryExportProvider(names.map((name) => ({ name, size: 2 ** 20, readOnly: name.includes('@') })));
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider, logger: createLogger(process.env.TEST_LOG_LEVEL ?? 'silent'), maxConnections: 8 });
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;
  // 32 options per handshake (nbdkit's figure) cut this off after ~16 exports. (Not more here:
  // libnbd waits ~200 ms on each LIST_META_CONTEXT reply, and 10 s is the handshake's limit.)
  const listed = JSON.parse((await runCommand('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${port}`], { timeoutMs: 60_000 })).stdout);
  assert.deepEqual(listed.exports.map((e: { 'export-name': string }) => e['export-name']).sort(), [...names].sort());

  const w = new Wire(port);
  await greet(w);
  for (let i = 0; i < MAX_OPTIONS; i++) {
    w.sock.write(option(NBD_OPT_STRUCTURED_REPLY));
    assert.equal((await readOptionReply(w)).type, NBD_REP_ACK);
  }
  w.sock.write(option(NBD_OPT_STRUCTURED_REPLY));
  await w.closed; // one more: disconnected
  assert.equal(w.ended, true);
});
