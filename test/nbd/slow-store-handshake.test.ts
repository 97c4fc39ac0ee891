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
  let hungAt = 0; // (timed from the hang, not from a client's start: qemu-img starts slowly under load)
  const never = () => {
    hungAt = performance.now();
    return new Promise<never>(() => {});
  };
  const list = provider.list.bind(provider);
  const open = provider.open.bind(provider);
  provider.list = () => (hang ? never() : list());
  // the export opens (its engine was open already), but its metadata contexts need the store
  provider.open = async (name: string) => {
    const exp = await open(name);
    if (exp) exp.listMetaContexts = () => (hang ? never() : Promise.resolve([]));
    return exp;
  };
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider, logger: createLogger('silent'), maxConnections: 8, handshakeTimeoutMs: HANDSHAKE_MS });
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;

  const listed = await runCommand('nbdinfo', ['--list', `nbd://127.0.0.1:${port}`], { okCodes: [0, 1], timeoutMs: 30_000 });
  assert.equal(listed.code, 1);
  // (libnbd shows its own text for a list error; the server's message is in its debug output)
  assert.match(listed.stderr, /server replied with error to list request/);
  assert.doesNotMatch(listed.stderr, /disconnected|end-of-file/i);
  assert.ok(performance.now() - hungAt < HANDSHAKE_MS + 500, 'answered within the handshake time (the client exits soon after)');

  // qemu asks for metadata contexts: refused in time, it opens the export without them (an EOF
  // after 10 s before)
  const info = await runCommand('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${port}/a`], { timeoutMs: 30_000 });
  assert.match(info.stdout, /"virtual-size": 16777216/);
  assert.ok(performance.now() - hungAt < HANDSHAKE_MS + 500, 'answered within the handshake time (the client exits soon after)');

  hang = false; // the store answers again: the same clients get in
  assert.match((await runCommand('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${port}/a`], { timeoutMs: 30_000 })).stdout, /"virtual-size": 16777216/);
  assert.match((await runCommand('nbdinfo', ['--list', `nbd://127.0.0.1:${port}`], { timeoutMs: 30_000 })).stdout, /export="a"/);
});

test('an export whose opening hangs (a store that does not answer): qemu-io and nbdinfo are told to retry within the handshake time, and the late export goes back', async (t) => {
  const provider = new MemoryExportProvider([{ name: 'a', size: 16 * 2 ** 20, readOnly: false }]);
  let hanging = true;
  const waiting: Array<() => void> = [];
  let released = 0;
  const open = provider.open.bind(provider);
  const release = provider.release.bind(provider);
  let hungAt = 0;
  provider.open = async (name: string) => {
    if (hanging) {
      hungAt ||= performance.now();
      await new Promise<void>((r) => waiting.push(r));
    }
    return open(name);
  };
  provider.release = async (exp) => {
    released++;
    return release(exp);
  };
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider, logger: createLogger('silent'), maxConnections: 8, handshakeTimeoutMs: HANDSHAKE_MS });
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;

  const io = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', `nbd://127.0.0.1:${port}/a`], { okCodes: [0, 1], timeoutMs: 30_000 });
  assert.notEqual(io.code, 0, io.stdout + io.stderr);
  assert.match(io.stderr + io.stdout, /export "a" is not ready in time: its store is slow to answer, or the lease of a server that stopped is running out .*a client may retry/);
  assert.ok(performance.now() - hungAt < HANDSHAKE_MS + 500, 'answered within the handshake time (the client exits soon after)');
  const info = await runCommand('nbdinfo', [`nbd://127.0.0.1:${port}/a`], { okCodes: [0, 1], timeoutMs: 30_000 });
  assert.equal(info.code, 1);
  assert.doesNotMatch(info.stderr, /end-of-file/i);
  // the store answers: the opens still pending finish, and each late export is handed back
  hanging = false;
  const late = waiting.length;
  assert.ok(late >= 2, `${late} opens were waiting`);
  for (const go of waiting) go();
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(released, late, 'every late export released');
  assert.match((await runCommand('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', `nbd://127.0.0.1:${port}/a`], { timeoutMs: 30_000 })).stdout, /read 4096\/4096 bytes/);
});

test('nbdinfo --list of many exports, each slow to describe, takes longer than the handshake timeout and still completes', async (t) => {
  const names = Array.from({ length: 24 }, (_, k) => `e${k}`);
  const provider = new MemoryExportProvider(names.map((name) => ({ name, size: 2 ** 20, readOnly: true })));
  const open = provider.open.bind(provider);
  provider.open = async (name: string) => {
    await new Promise((r) => setTimeout(r, 150)); // a store round trip per export
    return open(name);
  };
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider, logger: createLogger('silent'), maxConnections: 8, handshakeTimeoutMs: 2000 });
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;
  const t0 = performance.now();
  const listed = await runCommand('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${port}`], { timeoutMs: 60_000 });
  const took = performance.now() - t0;
  assert.deepEqual(JSON.parse(listed.stdout).exports.map((e: { 'export-name': string }) => e['export-name']).sort(), [...names].sort());
  assert.ok(took > 2000, `the listing took ${Math.round(took)} ms: longer than the handshake timeout, as meant`);
});
