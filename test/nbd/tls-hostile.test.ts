// Hostile clients against a TLS-only (PSK) server: garbage after STARTTLS, a disconnect in the
// middle of the TLS handshake, STARTTLS twice, garbage inside TLS; then a crowd of 300 idle
// connections from one address. Each case must cost only that connection, and is followed by a
// real client (qemu-io over TLS) proving the seeded data is intact and the server serves at once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { runTool, startNbdServerProcess, type NbdServerProcess } from '../helpers/nbd-server';
import { makeTlsFixtures, qemuTlsArgs, type TlsFixtures } from '../helpers/tls-fixtures';
import { Wire, greet, go, option, readOptionReply, readSimpleReply, request } from './raw-client';
import { pskKeyOf, startTls, tlsWire as tlsWireAs } from './tls-wire';

const NBD_REP_ERR_INVALID = 2 ** 31 + 3;
const STARTTLS = 5;
const MIB = 1024 * 1024;

let fx: TlsFixtures;
let srv: NbdServerProcess;
let aliceKey: Buffer;

before(async () => {
  fx = makeTlsFixtures();
  aliceKey = pskKeyOf(readFileSync(fx.pskFile, 'utf8'), 'alice');
  srv = await startNbdServerProcess({ memory: ['disk=64M'], extraArgs: ['--tls-psk', fx.pskFile, '--max-connections', '16'] });
  const r = await runTool('qemu-io', [...qemuTlsArgs(srv.port, 'disk', { psk: fx.pskDir, identity: 'alice' }), '-c', 'write -P 0x5a 0 8M']);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  assert.equal(await srv.stop(), 0, 'graceful exit after all the abuse');
  assert.doesNotMatch(srv.log(), /"level":50/, 'no error-level log lines (bugs) during the run');
  assert.ok(!srv.log().includes(aliceKey.toString('hex')), 'no key in the log');
  rmSync(fx.dir, { recursive: true, force: true });
});

/** A real client over TLS reads the seeded data back, within `timeoutMs`. */
async function assertHealthy(timeoutMs = 30_000): Promise<void> {
  assert.ok(srv.alive(), 'server process alive');
  const r = await runTool('qemu-io', [...qemuTlsArgs(srv.port, 'disk', { psk: fx.pskDir, identity: 'alice' }), '-c', 'read -P 0x5a 0 8M'], { timeoutMs });
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /verification failed/);
}

const tlsWire = (w: Wire) => tlsWireAs(w, 'alice', aliceKey);

test('raw TLS client: STARTTLS, handshake, GO and a read (the harness itself works)', async () => {
  const w = new Wire(srv.port);
  await startTls(w);
  const t = await tlsWire(w);
  assert.equal(await go(t, 'disk'), 64 * MIB);
  await t.write(request(0, 0, 1, 0, 4096));
  const r = await readSimpleReply(t, 4096);
  assert.equal(r.error, 0);
  assert.ok(r.data.equals(Buffer.alloc(4096, 0x5a)));
  t.destroy();
});

test('plaintext sent right behind STARTTLS (before its reply) is refused: connection dropped', async () => {
  const w = new Wire(srv.port);
  await greet(w);
  await w.write(Buffer.concat([option(STARTTLS), option(3)])); // STARTTLS + an injected LIST
  assert.ok(await w.closedWithin(5000));
  await assertHealthy();
});

test('garbage instead of a TLS ClientHello after STARTTLS: connection dropped', async () => {
  const w = new Wire(srv.port);
  await startTls(w);
  await w.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(20)));
  assert.ok(await w.closedWithin(5000));
  await assertHealthy();
});

test('disconnect in the middle of the TLS handshake', async () => {
  const w = new Wire(srv.port);
  await startTls(w);
  // the first bytes of a TLS record header (handshake, TLS 1.0 record version, length 512)
  await w.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]));
  w.destroy();
  await assertHealthy();
});

test('STARTTLS twice: the second gets ERR_INVALID and the TLS session goes on', async () => {
  const w = new Wire(srv.port);
  await startTls(w);
  const t = await tlsWire(w);
  await t.write(option(STARTTLS));
  assert.equal((await readOptionReply(t)).type, NBD_REP_ERR_INVALID);
  assert.equal(await go(t, 'disk'), 64 * MIB);
  await t.write(request(0, 0, 2, 4 * MIB, 512));
  assert.ok((await readSimpleReply(t, 512)).data.equals(Buffer.alloc(512, 0x5a)));
  t.destroy();
  await assertHealthy();
});

test('garbage inside TLS (a forged record after the handshake): connection dropped', async () => {
  const w = new Wire(srv.port);
  await startTls(w);
  const t = await tlsWire(w);
  // The TCP socket under the TLS one still writes straight to the wire: a forged
  // application-data record there is what an attacker in the middle would inject.
  await w.write(Buffer.concat([Buffer.from([0x17, 0x03, 0x03, 0x00, 0x40]), Buffer.alloc(64, 0xee)]));
  assert.ok(await t.closedWithin(5000), 'the forged record ends the connection');
  const line = srv.log().trim().split('\n').reverse().find((l) => l.includes('TLS error'));
  assert.ok(line, 'the TLS failure is logged');
  assert.equal(JSON.parse(line).remote, '127.0.0.1', 'with the peer address');
  await assertHealthy();
});

test('300 idle connections from one address: a real TLS client still gets in and does I/O at once', async () => {
  const idle: Wire[] = [];
  for (let i = 0; i < 300; i++) idle.push(new Wire(srv.port));
  const log0 = srv.log().length;
  // half of them go as far as STARTTLS and then stall in the TLS handshake
  await Promise.all(idle.slice(0, 150).map((w) => startTls(w).catch(() => {})));
  const t0 = Date.now();
  await assertHealthy(15_000);
  const ms = Date.now() - t0;
  // well inside the 10 s handshake timeout: the client was not waiting for idle sockets to expire
  assert.ok(ms < 8000, `good client took ${ms} ms`);
  const stillOpen = idle.filter((w) => !w.ended).length;
  assert.ok(stillOpen > 0, 'idle connections were still holding on while the client was served');
  // refusals and evictions are logged, but a bounded number of lines for 300 connections
  const evictions = srv.log().slice(log0).split('\n').filter((l) => l.includes('dropped to make room')).length;
  assert.ok(evictions >= 1 && evictions <= 12, `eviction log lines rate-limited (${evictions})`);
  for (const w of idle) w.destroy();
});
