// The hostile- and greedy-client cases, over raw sockets, against any backend that serves a
// 64 MiB export "disk" (hostile-clients.test.ts: a memory export; hostile-clients-vault.test.ts:
// a vault volume on the fs store). Each case must cost only that client its connection (or get
// an NBD error and go on), and is followed by a real client (qemu-io) proving the seeded data is
// intact and the server still serves. Not a test file itself (no .test suffix).
//
// Seeded data: 0x5a over 0-8 MiB (chunks 0-1), 64 KiB of 0xc0+c at 1 MiB into each chunk c of
// 4-15 (data-bearing chunks for reads spread over many chunks; the vault server runs with a
// 16 MiB read cache, so they miss).
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { runTool } from '../helpers/nbd-server';
import { MIB, Wire, greet, go, infoPayload, option, readOptionReply, readSimpleReply, request } from './raw-client';

const NBD_REP_ACK = 1;
const NBD_REP_ERR_UNSUP = 2 ** 31 + 1;
const NBD_REP_ERR_INVALID = 2 ** 31 + 3;
const NBD_REP_ERR_UNKNOWN = 2 ** 31 + 6;
const NBD_REP_ERR_TOO_BIG = 2 ** 31 + 9;
const EINVAL = 22;
const CMD_READ = 0;
const CMD_WRITE = 1;
const CMD_FLUSH = 3;
export const MAX_CONNECTIONS = 40;
/** the server's per-connection in-flight budget (DEFAULT_MAX_IN_FLIGHT_BYTES) and chunk size */
const BUDGET = 64 * MIB;
const CHUNK = 4 * MIB;
/** RSS noise allowed on top of a bound (GC timing, allocator, probes); the unfixed vault server
 *  grew by gigabytes */
const RSS_SLACK = 48 * MIB;
const SPREAD_CHUNKS = Array.from({ length: 12 }, (_, k) => k + 4);
const spreadByte = (c: number) => 0xc0 + c;

export interface HostileServer {
  readonly port: number;
  readonly pid: number;
  uri(name: string): string;
  alive(): boolean;
  log(): string;
  /** graceful stop; resolves with the exit code */
  stop(): Promise<number | null>;
}

export interface HostileBackend {
  /** Serves a 64 MiB export "disk" with --max-connections MAX_CONNECTIONS and a 2 s handshake
   *  timeout. */
  start(): Promise<HostileServer>;
  /** after the server stopped: remove what start() made */
  cleanup?(): Promise<void>;
}

function rss(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

/** Samples a process's RSS every 5 ms until stop(); returns the peak growth over the start. */
function rssWatch(pid: number): { stop(): number } {
  const base = rss(pid);
  let peak = base;
  const timer = setInterval(() => (peak = Math.max(peak, rss(pid))), 5);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, rss(pid)) - base;
    },
  };
}

/** A client that pipelines `n` 64 KiB reads at offsetOf(i) and never reads a reply. */
async function unreadFlood(port: number, n: number, offsetOf: (i: number) => number): Promise<Wire> {
  const w = new Wire(port);
  await greet(w);
  await go(w, 'disk');
  w.sock.pause();
  w.sock.removeAllListeners('data');
  w.sock.write(Buffer.concat(Array.from({ length: n }, (_, i) => request(CMD_READ, 0, i + 1, offsetOf(i), 65536))));
  return w;
}

/** A new client: handshake and a 4 KiB read of the seeded data; returns how long it took. */
async function probe(port: number): Promise<number> {
  const t0 = performance.now();
  const w = new Wire(port);
  try {
    await greet(w);
    await go(w, 'disk');
    await w.write(request(CMD_READ, 0, 1, 4096, 4096));
    const r = await readSimpleReply(w, 4096);
    assert.equal(r.error, 0);
    assert.ok(r.data.equals(Buffer.alloc(4096, 0x5a)), 'probe reads the seeded data');
    return performance.now() - t0;
  } finally {
    w.destroy();
  }
}

/** Waits until the server's RSS has been steady (within 1 MiB) for 300 ms: the flood has been
 *  taken in up to the budget (deadline 10 s; a server still growing then fails the bound). */
async function rssSteady(pid: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  let last = rss(pid);
  let steadySince = Date.now();
  while (Date.now() < deadline && Date.now() - steadySince < 300) {
    await new Promise((r) => setTimeout(r, 50));
    const now = rss(pid);
    if (Math.abs(now - last) > MIB) steadySince = Date.now();
    last = now;
  }
}

export function hostileClientSuite(backend: HostileBackend): void {
  let srv: HostileServer;

  before(async () => {
    srv = await backend.start();
    const cmds = ['-c', 'write -P 0x5a 0 8M'];
    for (const c of SPREAD_CHUNKS) cmds.push('-c', `write -P ${spreadByte(c)} ${c * CHUNK + MIB} 64k`);
    const r = await runTool('qemu-io', ['-f', 'raw', ...cmds, srv.uri('disk')], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
  });

  after(async () => {
    try {
      assert.equal(await srv.stop(), 0, 'graceful exit after all the abuse');
      assert.doesNotMatch(srv.log(), /"level":50/, 'no error-level log lines (bugs) during the run');
    } finally {
      await backend.cleanup?.();
    }
  });

  /** The seeded data still reads back and the server accepts a real client. */
  async function assertHealthy(): Promise<void> {
    assert.ok(srv.alive(), 'server process alive');
    const cmds = ['-c', 'read -P 0x5a 0 8M'];
    for (const c of [SPREAD_CHUNKS[0], SPREAD_CHUNKS[SPREAD_CHUNKS.length - 1]]) cmds.push('-c', `read -P ${spreadByte(c)} ${c * CHUNK + MIB} 64k`);
    const r = await runTool('qemu-io', ['-f', 'raw', ...cmds, srv.uri('disk')], { timeoutMs: 30_000 });
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

  test('an EXPORT_NAME over 64 KiB closes the connection (it has no error reply); error messages quoting a name stay a legal string', async () => {
    const w = new Wire(srv.port);
    await greet(w);
    // an error reply here was read by the client as the export's size and flags
    await w.write(option(1, Buffer.alloc(70_000, 0x61)));
    assert.ok(await w.closedWithin(3000), 'closed, no option reply');
    const w2 = new Wire(srv.port);
    await greet(w2);
    // INFO of a 4096-byte unknown name, and of a name with a NUL: the spec's strings are at most
    // 4096 bytes with no NUL, error messages included (the first was 4114 bytes)
    for (const name of ['x'.repeat(4096), 'a\0b']) {
      await w2.write(option(6, infoPayload(name)));
      const r = await readOptionReply(w2);
      assert.equal(r.type, NBD_REP_ERR_UNKNOWN);
      assert.ok(r.data.length <= 4096, `a message of ${r.data.length} bytes`);
      assert.ok(!r.data.includes(0), 'no NUL in the message');
    }
    w2.destroy();
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

  test('bad request magic after requests: their replies still come, then the connection drops', async () => {
    // The WRITE before the garbage is applied: its client must hear so, not guess from a close.
    const w = new Wire(srv.port);
    await greet(w);
    await go(w, 'disk');
    const at = 9 * MIB; // unseeded (assertHealthy reads 0-8 MiB and the spread chunks)
    await w.write(Buffer.concat([request(CMD_WRITE, 0, 7, at, 64 * 1024, Buffer.alloc(64 * 1024, 0x77)), request(CMD_FLUSH, 0, 8, 0, 0), Buffer.alloc(28, 0x41)]));
    const replies = [await readSimpleReply(w), await readSimpleReply(w)];
    assert.deepEqual(replies.map((r) => r.handle).sort(), [7, 8]);
    assert.deepEqual(replies.map((r) => r.error), [0, 0]);
    assert.ok(await w.closedWithin(3000), 'then the connection drops');
    const r = await runTool('qemu-io', ['-f', 'raw', '-c', `read -P 0x77 ${at} 64k`, srv.uri('disk')], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /verification failed/);
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

  test('1,000 unread 64 KiB reads of a just-written chunk: RSS bounded by the budget, new clients served meanwhile', async (t: TestContext) => {
    // The chunk is dirty (written, not yet uploaded) when the flood starts: the vault case that
    // once copied the whole 4 MiB chunk per request (4 GB, no greeting for a minute).
    const w = new Wire(srv.port);
    await greet(w);
    await go(w, 'disk');
    const at = 3 * CHUNK;
    await w.write(request(CMD_WRITE, 0, 1, at, MIB, Buffer.alloc(MIB, 0x77)));
    assert.equal((await readSimpleReply(w)).error, 0);
    const watch = rssWatch(srv.pid);
    const flood = await unreadFlood(srv.port, 1000, (i) => at + (i % 16) * 65536);
    const latencies: number[] = [];
    for (let k = 0; k < 5; k++) latencies.push(await probe(srv.port));
    await rssSteady(srv.pid);
    const growth = watch.stop();
    t.diagnostic(`new client during the flood (handshake + 4 KiB read): ${latencies.map((ms) => ms.toFixed(0)).join(', ')} ms; RSS growth ${(growth / MIB).toFixed(0)} MiB`);
    assert.ok(growth <= BUDGET + CHUNK + RSS_SLACK, `RSS grew by ${(growth / MIB).toFixed(0)} MiB`);
    flood.destroy();
    // The data the flood read is intact and a reading client gets it.
    await w.write(request(CMD_READ, 0, 2, at + 65536, 65536));
    assert.ok((await readSimpleReply(w, 65536)).data.equals(Buffer.alloc(65536, 0x77)));
    w.destroy();
    await assertHealthy();
  });

  test('four clients flooding unread reads at once: RSS bounded by their budgets, a well-behaved client is served', async (t: TestContext) => {
    const watch = rssWatch(srv.pid);
    const floods = await Promise.all(Array.from({ length: 4 }, () => unreadFlood(srv.port, 1000, (i) => (i % 128) * 65536)));
    const latency = await probe(srv.port);
    const r = await runTool('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 0 8M', srv.uri('disk')], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    await rssSteady(srv.pid);
    const growth = watch.stop();
    t.diagnostic(`probe ${latency.toFixed(0)} ms; RSS growth ${(growth / MIB).toFixed(0)} MiB`);
    assert.ok(growth <= 4 * BUDGET + CHUNK + RSS_SLACK, `RSS grew by ${(growth / MIB).toFixed(0)} MiB`);
    for (const f of floods) f.destroy();
    await assertHealthy();
  });

  test('unread reads spread over many data-bearing chunks (cache misses): bounded, then every reply is right', async (t: TestContext) => {
    const offsetOf = (i: number) => SPREAD_CHUNKS[i % SPREAD_CHUNKS.length] * CHUNK + MIB;
    const watch = rssWatch(srv.pid);
    const flood = await unreadFlood(srv.port, 1000, offsetOf);
    const latency = await probe(srv.port);
    await rssSteady(srv.pid);
    const growth = watch.stop();
    t.diagnostic(`probe ${latency.toFixed(0)} ms; RSS growth ${(growth / MIB).toFixed(0)} MiB`);
    // the budget, plus the chunks being fetched (at most 16 at once, for the whole process)
    assert.ok(growth <= BUDGET + 16 * CHUNK + RSS_SLACK, `RSS grew by ${(growth / MIB).toFixed(0)} MiB`);
    flood.destroy();
    // The same pattern with a client that reads: every reply carries its chunk's bytes.
    const w = new Wire(srv.port);
    await greet(w);
    await go(w, 'disk');
    const N = 600;
    await w.write(Buffer.concat(Array.from({ length: N }, (_, i) => request(CMD_READ, 0, i, offsetOf(i), 65536))));
    for (let k = 0; k < N; k++) {
      const r = await readSimpleReply(w, 65536);
      assert.equal(r.error, 0);
      const c = SPREAD_CHUNKS[r.handle % SPREAD_CHUNKS.length];
      assert.ok(r.data.equals(Buffer.alloc(65536, spreadByte(c))), `reply ${r.handle}: chunk ${c}'s bytes`);
    }
    w.destroy();
    await assertHealthy();
  });

  test('a huge pipeline of small writes into one chunk: every write acknowledged and applied in order', async () => {
    const w = new Wire(srv.port);
    await greet(w);
    await go(w, 'disk');
    const at = 2 * CHUNK;
    const SECTORS = CHUNK / 2 / 512;
    const N = 2 * SECTORS; // every sector of half the chunk twice: the second pass wins
    const batch: Buffer[] = [];
    for (let i = 0; i < N; i++) batch.push(request(CMD_WRITE, 0, i, at + (i % SECTORS) * 512, 512, Buffer.alloc(512, i < SECTORS ? 0xb1 : 0xb2)));
    const sent = w.write(Buffer.concat(batch));
    const seen = new Set<number>();
    for (let k = 0; k < N; k++) {
      const r = await readSimpleReply(w);
      assert.equal(r.error, 0);
      seen.add(r.handle);
    }
    await sent;
    assert.equal(seen.size, N, 'each write answered once');
    w.destroy();
    const r = await runTool('qemu-io', ['-f', 'raw', '-c', `read -P 0xb2 ${at} 2M`, srv.uri('disk')], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /verification failed/);
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
    await assertHealthy();
  });
}
