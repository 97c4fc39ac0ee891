// Hostile and broken clients over raw sockets. Each case must cost only that client its
// connection (or get an NBD error and go on), and is followed by a real client (qemu-io) proving
// the seeded data is intact and the server still serves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runTool, startNbdServerProcess, type NbdServerProcess } from '../helpers/nbd-server';
import { MIB, Wire, greet, go, infoPayload, option, readOptionReply, readSimpleReply, request } from './raw-client';

const NBD_REP_ACK = 1;
const NBD_REP_ERR_UNSUP = 2 ** 31 + 1;
const NBD_REP_ERR_INVALID = 2 ** 31 + 3;
const NBD_REP_ERR_UNKNOWN = 2 ** 31 + 6;
const NBD_REP_ERR_TOO_BIG = 2 ** 31 + 9;
const EINVAL = 22;
const MAX_CONNECTIONS = 40;

let srv: NbdServerProcess;

before(async () => {
  srv = await startNbdServerProcess({
    memory: ['disk=64M'],
    extraArgs: ['--max-connections', String(MAX_CONNECTIONS), '--handshake-timeout', '2'],
  });
  const r = await runTool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 8M', srv.uri('disk')]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  assert.equal(await srv.stop(), 0, 'graceful exit after all the abuse');
  assert.doesNotMatch(srv.log(), /"level":50/, 'no error-level log lines (bugs) during the run');
});

/** The seeded 8 MiB still reads back and the server accepts a real client. */
async function assertHealthy(): Promise<void> {
  assert.ok(srv.alive(), 'server process alive');
  const r = await runTool('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 0 8M', srv.uri('disk')], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /verification failed/);
}

test('garbage instead of client flags: connection dropped', async () => {
  const w = new Wire(srv.port);
  await w.read(18);
  await w.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  assert.ok(await w.closedWithin(3000));
  await assertHealthy();
});

test('bad option magic: connection dropped', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await w.write(Buffer.from('NOTMAGIC\0\0\0\x07\0\0\0\0'));
  assert.ok(await w.closedWithin(3000));
  await assertHealthy();
});

test('unknown option, malformed INFO, unknown export: errors and the session continues', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await w.write(option(999, Buffer.from('whatever payload')));
  assert.equal((await readOptionReply(w)).type, NBD_REP_ERR_UNSUP);
  await w.write(option(6, Buffer.from([0, 0, 0, 9, 1])));
  assert.equal((await readOptionReply(w)).type, NBD_REP_ERR_INVALID);
  await w.write(option(3, Buffer.from('x')));
  assert.equal((await readOptionReply(w)).type, NBD_REP_ERR_INVALID, 'LIST with data');
  await w.write(option(7, infoPayload('nope')));
  assert.equal((await readOptionReply(w)).type, NBD_REP_ERR_UNKNOWN);
  await w.write(option(5)); // STARTTLS: not offered
  assert.equal((await readOptionReply(w)).type, NBD_REP_ERR_UNSUP);
  assert.equal(await go(w, 'disk'), 64 * MIB);
  await w.write(request(0, 0, 7, 0, 4096));
  const r = await readSimpleReply(w, 4096);
  assert.equal(r.error, 0);
  assert.equal(r.handle, 7);
  assert.ok(r.data.equals(Buffer.alloc(4096, 0x5a)));
  w.destroy();
  await assertHealthy();
});

test('option payload over 64 KiB is drained and refused; an absurd one disconnects', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await w.write(option(7, Buffer.alloc(200 * 1024, 0xee)));
  const r = await readOptionReply(w);
  assert.equal(r.type, NBD_REP_ERR_TOO_BIG);
  await w.write(option(3));
  const list = await readOptionReply(w);
  assert.equal(list.type, 2, 'still in sync: LIST answers NBD_REP_SERVER');
  assert.equal((await readOptionReply(w)).type, NBD_REP_ACK);
  await w.write(option(7, Buffer.alloc(0), 0xffffffff));
  assert.ok(await w.closedWithin(3000));
  await assertHealthy();
});

test('too many options: disconnected after 32', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  const opts = Buffer.concat(Array.from({ length: 40 }, () => option(8)));
  await w.write(opts);
  for (let i = 0; i < 32; i++) assert.equal((await readOptionReply(w)).type, NBD_REP_ACK);
  assert.ok(await w.closedWithin(3000));
  await assertHealthy();
});

test('disconnect mid-handshake and mid-option', async () => {
  for (const bytes of [Buffer.alloc(0), Buffer.from([0, 0]), option(7, infoPayload('disk')).subarray(0, 10)]) {
    const w = new Wire(srv.port);
    await w.read(18);
    if (bytes.length) await w.write(bytes);
    w.destroy();
  }
  await assertHealthy();
});

test('disconnect mid-write-payload: the partial write is not applied', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await go(w, 'disk');
  const full = request(1, 0, 1, 0, MIB, Buffer.alloc(MIB, 0x00));
  await w.write(full.subarray(0, 28 + MIB / 2));
  w.destroy();
  await assertHealthy();
});

test('bad request magic: lost sync, connection dropped', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await go(w, 'disk');
  await w.write(Buffer.alloc(28, 0x41));
  assert.ok(await w.closedWithin(3000));
  await assertHealthy();
});

test('unknown command and bad flags get EINVAL; the connection goes on', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await go(w, 'disk');
  await w.write(request(42, 0, 1, 0, 0));
  assert.deepEqual(await readSimpleReply(w), { error: EINVAL, handle: 1, data: Buffer.alloc(0) });
  await w.write(request(0, 0x8000, 2, 0, 16));
  assert.equal((await readSimpleReply(w)).error, EINVAL);
  await w.write(request(7, 0, 3, 0, 16)); // BLOCK_STATUS without a meta context
  assert.equal((await readSimpleReply(w)).error, EINVAL);
  await w.write(request(0, 0, 4, 0, 16));
  assert.equal((await readSimpleReply(w, 16)).data.toString('hex'), '5a'.repeat(16));
  w.destroy();
  await assertHealthy();
});

test('write payload over 32 MiB is drained, refused, and the stream stays in sync', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await go(w, 'disk');
  const len = 33 * MIB;
  await w.write(request(1, 0, 9, 0, len));
  const zeros = Buffer.alloc(MIB);
  for (let i = 0; i < 33; i++) await w.write(zeros);
  const r = await readSimpleReply(w);
  assert.equal(r.handle, 9);
  assert.equal(r.error, EINVAL);
  await w.write(request(0, 0, 10, 0, 8));
  assert.equal((await readSimpleReply(w, 8)).data.toString('hex'), '5a'.repeat(8));
  w.destroy();
  await assertHealthy();
});

test('flood of pipelined reads without reading replies: backpressure, then every reply arrives', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await go(w, 'disk');
  const N = 3000; // 3000 × 64 KiB = 187 MiB of replies, far over the 64 MiB in-flight bound
  const reqs = Buffer.concat(Array.from({ length: N }, (_, i) => request(0, 0, i + 1, (i % 128) * 65536, 65536)));
  await w.write(reqs);
  const seen = new Set<number>();
  for (let i = 0; i < N; i++) {
    const r = await readSimpleReply(w, 65536);
    assert.equal(r.error, 0);
    seen.add(r.handle);
    if (i === 0) assert.ok(r.data.equals(Buffer.alloc(65536, 0x5a)));
  }
  assert.equal(seen.size, N, 'each handle answered once');
  w.destroy();
  await assertHealthy();
});

test('ABORT is acked and the connection closes cleanly', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await w.write(option(2, Buffer.from('ignored')));
  const r = await readOptionReply(w);
  assert.equal(r.type, NBD_REP_ACK);
  assert.equal(r.opt, 2);
  assert.ok(await w.closedWithin(3000));
});

test('EXPORT_NAME of an unknown export closes; a known one with no flags gets 124 zero bytes', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await w.write(option(1, Buffer.from('nope')));
  assert.ok(await w.closedWithin(3000));
  const w2 = new Wire(srv.port);
  await greet(w2, 0);
  await w2.write(option(1, Buffer.from('disk')));
  const reply = await w2.read(10 + 124);
  assert.equal(Number(reply.readBigUInt64BE(0)), 64 * MIB);
  assert.ok(reply.subarray(10).equals(Buffer.alloc(124)));
  await w2.write(request(0, 0, 5, 0, 4));
  assert.equal((await readSimpleReply(w2, 4)).data.toString('hex'), '5a5a5a5a');
  w2.destroy();
});

test('idle connections: handshake slots per address bounded, idle handshakes timed out, then real clients served', async () => {
  const idle: Wire[] = [];
  for (let i = 0; i < MAX_CONNECTIONS + 20; i++) idle.push(new Wire(srv.port));
  // 32 handshake slots per address (admission.ts): the oldest idle ones give way to newer ones
  const droppedNow = () => idle.filter((w) => w.ended).length;
  for (let k = 0; k < 100 && droppedNow() < 20; k++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(droppedNow() >= 20, `idle connections over the per-address handshake limit dropped (${droppedNow()})`);
  // The 2 s handshake timeout frees every slot.
  const all = await Promise.all(idle.map((w) => w.closedWithin(10_000)));
  assert.ok(all.every(Boolean), 'every idle connection dropped by the handshake timeout');
  // A refused connection is closed before any greeting; an accepted one was greeted, then timed out.
  const greeted = await Promise.all(idle.map((w) => w.read(18, 0).then((g) => g.toString('latin1', 0, 8) === 'NBDMAGIC', () => false)));
  const refused = greeted.filter((g) => !g).length;
  // (earlier tests' connections may still hold a slot or two: at least 20 refused, at most the limit greeted)
  assert.ok(refused >= 20, `connections over the limit refused (${refused})`);
  assert.ok(idle.length - refused <= MAX_CONNECTIONS && idle.length - refused > 0, `${idle.length - refused} greeted`);
  await assertHealthy();
});
