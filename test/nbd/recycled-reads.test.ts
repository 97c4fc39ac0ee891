// Without TLS, the server reads every socket into one shared buffer and copies WRITE payloads into
// recycled memory (socket-reads.ts, payload-buffers.ts). What must hold: the server does read this
// way; clients writing at once on several connections, with payloads of every size and requests
// split anywhere across reads, get exactly their bytes stored; and a payload an export still
// works on is never lent to another request meanwhile, while one whose write has returned is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { startNbdServer } from '../../src/nbd';
import { MemoryExport } from '../../src/nbd/memory-export';
import type { Export, ExportProvider } from '../../src/nbd/export';
import type { WriteData } from '../../src/block-io';
import { recycledReadSockets } from '../../src/nbd/socket-reads';
import { createLogger } from '../../src/util/log';
import { Wire, greet, go, readSimpleReply, request, MIB } from './raw-client';

const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const NBD_CMD_DISC = 2;

function providerOf(exp: Export): ExportProvider {
  return { defaultName: exp.name, list: async () => [{ name: exp.name, description: '' }], open: async (n) => (n === exp.name ? exp : null), release: async () => {}, closeAll: async () => {} };
}

async function serve(exp: Export) {
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider: providerOf(exp), logger: createLogger('silent') });
  return { server, port: (server.address() as { port: number }).port };
}

test('recycled reads: four clients writing at once store exactly their bytes', async () => {
  const exp = new MemoryExport('a', 64 * MIB);
  const before = recycledReadSockets();
  const { server, port } = await serve(exp);
  try {
    const sizes = [1, 511, 4096, 65536, 65537, 300 * 1024, 2 * MIB, 4 * MIB + 3];
    const clients = await Promise.all(
      [0, 1, 2, 3].map(async (c) => {
        const w = new Wire(port);
        await greet(w);
        await go(w, 'a');
        return { w, c };
      }),
    );
    assert.equal(recycledReadSockets() - before, 4, 'every connection reads into the shared buffer');
    // each client: its own 16 MiB region, writes of every size, all sent before any reply is read
    const expected = new Map<number, Buffer>(); // offset -> bytes, per client region
    await Promise.all(
      clients.map(async ({ w, c }) => {
        let at = c * 16 * MIB;
        const reqs: Buffer[] = [];
        sizes.forEach((n, k) => {
          const data = randomBytes(n);
          expected.set(at, data);
          reqs.push(request(NBD_CMD_WRITE, 0, k + 1, at, n, data));
          at += n;
        });
        // written in odd pieces, so requests straddle the server's reads
        const all = Buffer.concat(reqs);
        for (let i = 0, step = 1000 + c * 777; i < all.length; i += step) await w.write(all.subarray(i, i + step));
        for (let k = 0; k < sizes.length; k++) assert.equal((await readSimpleReply(w)).error, 0);
      }),
    );
    for (const [offset, data] of expected) {
      const got = await exp.read(offset, data.length);
      assert.ok(got.equals(data), `the ${data.length} bytes at ${offset} are the client's`);
    }
    // and read back over NBD
    const { w } = clients[0];
    const [offset, data] = [...expected].find(([, d]) => d.length === 300 * 1024)!;
    await w.write(request(NBD_CMD_READ, 0, 99, offset, data.length));
    assert.ok((await readSimpleReply(w, data.length)).data.equals(data));
    for (const { w } of clients) w.destroy();
  } finally {
    await server.close();
  }
});

/** An export whose writes wait at a gate, checking afterwards that their payload did not change. */
class GatedExport extends MemoryExport {
  gate: Promise<void> | null = null;
  readonly seen: Array<{ backing: ArrayBufferLike; intact: boolean }> = [];
  entered = 0;
  override async write(offset: number, data: WriteData): Promise<void> {
    this.entered++;
    const buf = data as Buffer;
    const copy = Buffer.from(buf);
    if (offset === 0 && this.gate) await this.gate; // (the held write only)
    this.seen.push({ backing: buf.buffer, intact: buf.equals(copy) });
    await super.write(offset, data);
  }
}

test('recycled reads: a payload in use is never lent again; one whose write returned is', async () => {
  const exp = new GatedExport('a', 64 * MIB);
  const { server, port } = await serve(exp);
  try {
    const a = new Wire(port);
    const b = new Wire(port);
    for (const w of [a, b]) {
      await greet(w);
      await go(w, 'a');
    }
    let open!: () => void;
    exp.gate = new Promise((r) => (open = r));
    const held = randomBytes(256 * 1024);
    await a.write(request(NBD_CMD_WRITE, 0, 1, 0, held.length, held)); // waits at the gate
    for (let i = 0; i < 200 && exp.entered === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(exp.entered, 1, 'the held write reached the export');
    // meanwhile another connection's writes of the same size pass, each sent after the one before
    // was answered, so the memory of each could be the next one's
    const other = randomBytes(256 * 1024);
    for (let i = 0; i < 8; i++) {
      await b.write(request(NBD_CMD_WRITE, 0, 10 + i, MIB + i * other.length, other.length, other));
      assert.equal((await readSimpleReply(b)).error, 0);
    }
    assert.equal(exp.seen.length, 8, 'the held write is still held');
    open();
    assert.equal((await readSimpleReply(a)).error, 0);
    assert.equal(exp.seen.length, 9);
    assert.ok(exp.seen.every((s) => s.intact), 'no payload changed while its write was running');
    assert.ok((await exp.read(0, held.length)).equals(held));
    const backings = new Set(exp.seen.slice(0, 8).map((s) => s.backing));
    assert.ok(!backings.has(exp.seen[8].backing), "the held write's memory was lent to no other write");
    assert.ok(backings.size < 8, `sequential writes reuse payload memory (${backings.size} distinct buffers for 8 writes)`);
    a.destroy();
    b.destroy();
  } finally {
    await server.close();
  }
});

test('recycled reads: a client that sends DISC and closes is gone from the server at once', async () => {
  // A socket reading into our buffer stops reading the moment it is paused: a DISC paused it,
  // the client's FIN was never read, and the connection outlived its client until the shutdown
  // grace period (a CI run of nbdcopy then SIGTERM).
  const exp = new MemoryExport('a', 8 * MIB);
  const { server, port } = await serve(exp);
  try {
    const sockets = await Promise.all(
      [0, 1, 2].map(async () => {
        const s = net.connect(port, '127.0.0.1');
        const w = new Wire(s);
        await greet(w);
        await go(w, 'a');
        await w.write(request(NBD_CMD_WRITE, 0, 1, 0, 4096, randomBytes(4096)));
        assert.equal((await readSimpleReply(w)).error, 0);
        return { s, w };
      }),
    );
    assert.equal(server.connectionCount(), 3);
    for (const { s, w } of sockets) {
      await w.write(request(NBD_CMD_DISC, 0, 2, 0, 0));
      s.end();
    }
    for (let i = 0; i < 200 && server.connectionCount() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(server.connectionCount(), 0, 'every connection ended with its client');
  } finally {
    await server.close();
  }
});
