// The NBD server under a process memory budget: a client that never reads its replies stops
// being read from once its share covers the budget, other clients wait their turn (never an
// error), and everything held comes back; a client that does not read stops being read from
// after 8 MiB of unsent replies; real clients (nbdcopy with deep queues of 32 MiB requests) copy
// correctly through a budget much smaller than what they keep in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNbdServer } from '../../src/nbd';
import { MemoryExportProvider } from '../../src/nbd/memory-export';
import { createLogger } from '../../src/util/log';
import { MemoryBudget } from '../../src/util/memory-budget';
import { Wire, greet, go, readSimpleReply, request, MIB } from './raw-client';
import { runTool, startNbdServerProcess } from '../helpers/nbd-server';

const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;

async function until(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('a client that never reads its replies is held to the process budget; another waits its turn, then all is given back', async () => {
  const provider = new MemoryExportProvider([{ name: 'a', size: 64 * MIB, readOnly: false }]);
  const budget = new MemoryBudget(4 * MIB);
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider, logger: createLogger('silent'), memoryBudget: budget });
  const port = (server.address() as { port: number }).port;
  const pattern = randomBytes(MIB);
  try {
    const seed = new Wire(port);
    await greet(seed);
    await go(seed, 'a');
    await seed.write(request(NBD_CMD_WRITE, 0, 1, 0, MIB, pattern));
    assert.equal((await readSimpleReply(seed)).error, 0);
    seed.destroy();
    await until('the seeding client is gone', () => budget.usedBytes === 0);

    // 1,000 reads of 64 KiB (62.5 MiB: under the 64 MiB per-connection limit, far over the
    // 4 MiB budget and what the loopback socket buffers absorb), none of them read.
    const flood = new Wire(port);
    await greet(flood);
    await go(flood, 'a');
    flood.sock.pause();
    const n = 1000;
    const len = 64 * 1024;
    const offsetOf = (i: number) => ((i * 7) % 16) * len;
    flood.sock.write(Buffer.concat(Array.from({ length: n }, (_, i) => request(NBD_CMD_READ, 0, i + 1, offsetOf(i), len))));
    let peak = 0;
    await until('the flooding connection waits for budget', () => {
      peak = Math.max(peak, budget.usedBytes);
      return budget.stats().waiting > 0;
    });
    assert.ok(budget.usedBytes <= budget.limitBytes && peak <= budget.limitBytes, `held ${peak} bytes of a ${budget.limitBytes}-byte budget`);

    // A second client: negotiation needs no budget; its read waits its turn (FIFO).
    const other = new Wire(port);
    await greet(other);
    await go(other, 'a');
    await other.write(request(NBD_CMD_READ, 0, 7, 4096, 4096));
    const otherReply = readSimpleReply(other, 4096, 60_000);

    // The flooder now reads: every reply arrives, in some order, with the right data.
    flood.sock.resume();
    const seen = new Set<number>();
    for (let k = 0; k < n; k++) {
      const r = await readSimpleReply(flood, len, 60_000);
      assert.equal(r.error, 0);
      assert.ok(r.handle >= 1 && r.handle <= n && !seen.has(r.handle), `handle ${r.handle}`);
      seen.add(r.handle);
      const at = offsetOf(r.handle - 1);
      assert.ok(r.data.equals(pattern.subarray(at, at + len)), `data of read ${r.handle}`);
      peak = Math.max(peak, budget.usedBytes);
    }
    const o = await otherReply;
    assert.equal(o.error, 0);
    assert.ok(o.data.equals(pattern.subarray(4096, 8192)));
    assert.ok(peak <= budget.limitBytes, `peak ${peak}`);
    assert.ok(budget.stats().waitsTotal > 0);
    flood.destroy();
    other.destroy();
    await until('every share given back', () => budget.usedBytes === 0 && budget.stats().waiting === 0);
  } finally {
    await server.close();
  }
});

test('a client that does not read its replies stops being read from once 8 MiB of them wait (not its whole 64 MiB budget)', async () => {
  const provider = new MemoryExportProvider([{ name: 'a', size: 64 * MIB, readOnly: false }]);
  let answered = 0;
  const metrics = { nbdRequest: () => void answered++, storeRequest() {}, storeRetry() {} };
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider, logger: createLogger('silent'), metrics });
  const port = (server.address() as { port: number }).port;
  try {
    const flood = new Wire(port);
    await greet(flood);
    await go(flood, 'a');
    flood.sock.pause();
    const n = 1000; // 62.5 MiB: the per-connection budget (64 MiB) alone would let all of them in
    flood.sock.write(Buffer.concat(Array.from({ length: n }, (_, i) => request(NBD_CMD_READ, 0, i + 1, (i % 512) * 65536, 65536))));
    // wait until the server stops answering (steady for 500 ms)
    let last = -1;
    let steadySince = Date.now();
    const deadline = Date.now() + 30_000;
    while (Date.now() - steadySince < 500) {
      assert.ok(Date.now() < deadline, 'the answered count settles');
      if (answered !== last) [last, steadySince] = [answered, Date.now()];
      await new Promise((r) => setTimeout(r, 20));
    }
    // what the kernel may hold on loopback: the server's send buffer and the client's receive buffer
    const maxOf = (f: string) => Number(readFileSync(f, 'utf8').trim().split(/\s+/)[2]);
    const kernel = maxOf('/proc/sys/net/ipv4/tcp_wmem') + maxOf('/proc/sys/net/ipv4/tcp_rmem');
    const bound = 8 * MIB + kernel + MIB;
    assert.ok(answered * 65536 <= bound, `${answered} replies made (${(answered / 16).toFixed(1)} MiB), at most ${(bound / MIB).toFixed(1)} MiB expected`);
    assert.ok(answered < n, 'the flood was not all read');
    // once the client reads, every reply comes
    flood.sock.resume();
    const seen = new Set<number>();
    for (let k = 0; k < n; k++) {
      const r = await readSimpleReply(flood, 65536, 60_000);
      assert.equal(r.error, 0);
      seen.add(r.handle);
    }
    assert.equal(seen.size, n);
    flood.destroy();
  } finally {
    await server.close();
  }
});

test('nbdcopy with 4 connections of 64 requests of 4 MiB copies 128 MiB in and out through a 6 MiB budget, byte for byte', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-budget-'));
  const provider = new MemoryExportProvider([{ name: 'disk', size: 128 * MIB, readOnly: false }]);
  const budget = new MemoryBudget(6 * MIB);
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider, logger: createLogger('silent'), memoryBudget: budget });
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, budget.usedBytes)), 2);
  try {
    const src = join(dir, 'src.img');
    const back = join(dir, 'back.img');
    writeFileSync(src, randomBytes(128 * MIB));
    const copy = async (from: string, to: string) => {
      // nbdcopy runs in a child process: this event loop is the server's
      const r = await runTool('nbdcopy', ['--connections=4', '--requests=64', '--request-size=4194304', from, to], { timeoutMs: 300_000 });
      assert.equal(r.code, 0, `nbdcopy ${from} ${to}: ${r.stderr}`);
    };
    await copy(src, server.uri('disk'));
    await copy(server.uri('disk'), back);
    assert.ok(readFileSync(src).equals(readFileSync(back)), 'the copy read back equals the source');
    assert.ok(budget.stats().waitsTotal > 0, 'the budget was binding: requests waited for room');
    assert.ok(peak <= budget.limitBytes, `peak ${peak} within the limit`);
    await until('every share given back', () => budget.usedBytes === 0 && budget.stats().waiting === 0);
  } finally {
    clearInterval(sampler);
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve --memory-limit: the budget is in the metrics, and a limit too small is refused', async () => {
  const srv = await startNbdServerProcess({ memory: ['disk=64M'], extraArgs: ['--memory-limit', '256M', '--metrics', '0'] });
  try {
    const metricsPort = Number(/"port":(\d+)[^\n]*"msg":"metrics listening"/.exec(srv.log())?.[1]);
    const io = await runTool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 8M', '-c', 'read -P 0x5a 0 8M', srv.uri('disk')], { timeoutMs: 60_000 });
    assert.equal(io.code, 0, io.stderr);
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const metric = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    assert.equal(metric('nbd_vault_memory_limit_bytes'), 256 * MIB);
    assert.equal(metric('nbd_vault_memory_used_bytes'), 0, 'nothing held once the client is gone');
    assert.equal(metric('nbd_vault_memory_waiting'), 0);
    assert.equal(metric('nbd_vault_memory_waits_total'), 0);
  } finally {
    assert.equal(await srv.stop(), 0, 'graceful exit');
  }
  await assert.rejects(startNbdServerProcess({ memory: ['disk=1M'], extraArgs: ['--memory-limit', '1M'] }), /--memory-limit must be at least 128M/);
});
