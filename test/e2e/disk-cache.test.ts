// serve --disk-cache with real clients (nbdcopy, qemu-img, nbdsh) on the fs store and on RGW:
// writes land in the cache (write-through), reads fill it, restarts keep it warm, `cache warm`
// and NBD_CMD_CACHE fill it, a second server cannot take the same directory. The store request
// counts (metrics) prove where the bytes came from; every read is compared with the source.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCommand } from '../helpers/fuse-disk';
import { makeTestVault, s3Available, testS3Url, type TestVault, type VaultServer } from '../helpers/vault-server';
import { startLatencyProxy } from '../helpers/latency-proxy';
import { parseMetrics } from '../helpers/metrics-text';

const MiB = 2 ** 20;

async function scrape(srv: VaultServer): Promise<Map<string, number>> {
  const m = /"url":"([^"]+)","msg":"metrics listening"/.exec(srv.log());
  assert.ok(m, `no metrics line in:\n${srv.log()}`);
  const res = await fetch(m[1]);
  assert.equal(res.status, 200);
  return parseMetrics(await res.text());
}

for (const backend of ['fs', 's3'] as const) {
  test(`serve --disk-cache on ${backend === 's3' ? 'RGW behind a proxy adding 10 ms per request' : 'fs'}: write-through, cold and warm reads, restarts, cache warm, NBD_CMD_CACHE, one owner`, async (t) => {
    if (backend === 's3' && !s3Available(t)) return;
    const v: TestVault = await makeTestVault({ s3: backend === 's3' });
    t.after(() => v.cleanup());
    if (backend === 's3') {
      // From here on the server reaches RGW through the latency proxy (same bucket and prefix).
      const proxy = await startLatencyProxy(new URL(testS3Url()!).searchParams.get('endpoint')!, 10);
      t.after(() => proxy.close());
      const u = new URL(v.storeUrl);
      u.searchParams.set('endpoint', `http://127.0.0.1:${proxy.port}`);
      v.env.NBD_VAULT_STORE = u.toString();
    }
    await v.cli('volume', 'create', 'd', '--size', '40M');
    // 13 MiB of random data over 5 chunks (two partial), the rest zeros (no objects).
    const src = Buffer.alloc(40 * MiB);
    randomBytes(9 * MiB).copy(src, 0);
    randomBytes(4 * MiB).copy(src, 22 * MiB + 12345);
    const img = join(v.dir, 'src.img');
    writeFileSync(img, src);
    const serve = (dir: string) => v.serve(['--disk-cache', join(v.dir, dir), '--disk-cache-size', '64M', '--metrics', '0']);
    const misses = (m: Map<string, number>) => m.get('nbd_vault_disk_cache_misses_total') ?? NaN;
    const hits = (m: Map<string, number>) => m.get('nbd_vault_disk_cache_hits_total') ?? NaN;
    const readBack = async (srv: VaultServer, how: 'nbdcopy' | 'qemu-img', name: string) => {
      const out = join(v.dir, name);
      if (how === 'nbdcopy') await runCommand('nbdcopy', [srv.uri('d'), out], { timeoutMs: 120_000 });
      else await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('d'), out], { timeoutMs: 120_000 });
      assert.ok(readFileSync(out).equals(src), `${how} read back what was written`);
    };

    // 1. Written through a server with cache A: the uploads land in the cache.
    let srv = await serve('cache-a');
    await runCommand('nbdcopy', ['--flush', img, srv.uri('d')], { timeoutMs: 120_000 });
    const w = await scrape(srv);
    assert.ok((w.get('nbd_vault_disk_cache_inserted_bytes_total') ?? 0) > 9 * MiB, `uploaded chunks were written through: ${[...w].filter(([k]) => /disk_cache/.test(k)).join(' ')}`);
    // A second server cannot use the same cache directory (its own state dir, so only the cache clashes).
    if (backend === 'fs') {
      const clash = await v.cliResult('serve', '--listen', '127.0.0.1:0', '--disk-cache', join(v.dir, 'cache-a'), '--state', join(v.dir, 'state-2'));
      assert.notEqual(clash.code, 0);
      assert.match(clash.stderr, /disk cache .*cache-a is in use by another nbd-vault process/);
    }
    assert.equal(await srv.stop(), 0);
    // (To stay fast, each backend runs half of what follows; every step is backend-neutral.)

    // 2. Restart on cache A: a read after the write never goes to the store.
    if (backend === 'fs') {
      srv = await serve('cache-a');
      await readBack(srv, 'qemu-img', 'a.img');
      const m = await scrape(srv);
      assert.equal(misses(m), 0, 'nothing read from the store');
      assert.ok(hits(m) >= 5, `hits: ${hits(m)}`);
      assert.equal(await srv.stop(), 0);
    }

    // 3. Cold cache B: reads fill it; a restart finds it warm.
    if (backend === 's3') {
      srv = await serve('cache-b');
      await readBack(srv, 'nbdcopy', 'b1.img');
      let m = await scrape(srv);
      assert.ok(misses(m) >= 5, `cold: misses ${misses(m)}`);
      assert.equal(m.get('nbd_vault_disk_cache_corrupt_total'), 0);
      assert.equal(m.get('nbd_vault_disk_cache_rejected_total'), 0);
      assert.equal(await srv.stop(), 0);
      srv = await serve('cache-b');
      await readBack(srv, 'nbdcopy', 'b2.img');
      m = await scrape(srv);
      assert.equal(misses(m), 0, 'warm after a restart');
      assert.ok((m.get('nbd_vault_disk_cache_bytes') ?? 0) <= (m.get('nbd_vault_disk_cache_limit_bytes') ?? 0));
      assert.equal(await srv.stop(), 0);
    }

    // 4. `cache warm` through the running server fills cache C; the next server reads nothing from the store.
    if (backend === 'fs') {
      srv = await serve('cache-c');
      const warm = await v.cli('cache', 'warm', 'd');
      assert.match(warm.stdout, /^warmed d: \d+ objects, .* read from the store/m);
      assert.equal(await srv.stop(), 0);
      srv = await serve('cache-c');
      await readBack(srv, 'nbdcopy', 'c.img');
      assert.equal(misses(await scrape(srv)), 0, 'cache warm filled it');
      assert.equal(await srv.stop(), 0);
    }

    // 5. NBD_CMD_CACHE over the whole disk (nbdsh) fills cache D.
    if (backend === 's3') {
      srv = await serve('cache-d');
      const py = `h.connect_uri(${JSON.stringify(srv.uri('d'))})\nassert h.can_cache()\nfor off in range(0, h.get_size(), 8 << 20):\n    h.cache(min(8 << 20, h.get_size() - off), off)\nprint('cached')\n`;
      assert.match((await runCommand('nbdsh', ['-c', py])).stdout, /cached/);
      assert.equal(await srv.stop(), 0);
      srv = await serve('cache-d');
      await readBack(srv, 'qemu-img', 'd.img');
      assert.equal(misses(await scrape(srv)), 0, 'NBD_CMD_CACHE filled it');
      assert.equal(await srv.stop(), 0);
      return;
    }

    // 5b. Without a server, `cache warm` opens the directory itself.
    const here = await v.cli('cache', 'warm', 'd', '--disk-cache', join(v.dir, 'cache-e'), '--disk-cache-size', '64M');
    const counted = /^warmed d: (\d+) objects, ([\d.]+) MiB read from the store/m.exec(here.stdout);
    assert.ok(counted, here.stdout);
    assert.equal(Number(counted[1]), 6, '5 chunks and 1 page');
    assert.ok(Number(counted[2]) > 12.5, `every byte counted: ${counted[2]} MiB`);
    assert.doesNotMatch(here.stdout, /cached already/, 'a fresh cache held nothing');
    const again = await v.cli('cache', 'warm', 'd', '--disk-cache', join(v.dir, 'cache-e'), '--disk-cache-size', '64M');
    assert.match(again.stdout, /^warmed d: 6 objects, 0 B read from the store \(6 were cached already\)$/m);
    const typo = await v.cliResult('cache', 'warm', 'nosuch', '--disk-cache', join(v.dir, 'cache-e'), '--disk-cache-size', '64M');
    assert.equal(typo.code, 1);
    assert.match(typo.stderr, /no volume named "nosuch" \[ERR_NOT_FOUND\]/);
    srv = await serve('cache-e');
    await readBack(srv, 'nbdcopy', 'e.img');
    assert.equal(misses(await scrape(srv)), 0);
    assert.equal(await srv.stop(), 0);
  });
}
