// serve --metrics: Prometheus text scraped while real clients (qemu-io, nbdcopy, nbdsh) do I/O;
// every counter must move by exactly what the clients did.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCommand } from '../helpers/fuse-disk';
import { makeTestVault } from '../helpers/vault-server';
import { parseMetrics } from '../helpers/metrics-text';

const MiB = 2 ** 20;

test('serve --metrics: counters move by what qemu-io, nbdcopy and nbdsh did', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'm', '--size', '64M');
  const srv = await v.serve(['--metrics', '0']); // a bare port: loopback
  t.after(() => srv.kill());
  const m = /"host":"([^"]+)","port":(\d+),"url":"([^"]+)","msg":"metrics listening"/.exec(srv.log());
  assert.ok(m, `no metrics listening line in:\n${srv.log()}`);
  assert.equal(m[1], '127.0.0.1', 'a bare port listens on loopback');
  const url = m[3];
  const scrape = async () => {
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    return parseMetrics(await res.text());
  };
  const delta = (a: Map<string, number>, b: Map<string, number>, key: string) => (b.get(key) ?? 0) - (a.get(key) ?? 0);
  assert.equal((await fetch(url.replace('/metrics', '/other'))).status, 404);

  const s0 = await scrape();
  // qemu-io: two writes (3 MiB and 1 MiB), one read of 3 MiB, each one NBD request.
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 3M', '-c', 'write -P 0x22 8M 1M', '-c', 'read -P 0x11 0 3M', srv.uri('m')]);
  const s1 = await scrape();
  assert.equal(delta(s0, s1, 'nbd_vault_nbd_requests_total{volume="m",command="write",result="ok"}'), 2);
  assert.equal(delta(s0, s1, 'nbd_vault_nbd_requests_total{volume="m",command="read",result="ok"}'), 1);
  assert.equal(delta(s0, s1, 'nbd_vault_nbd_bytes_total{volume="m",direction="write"}'), 4 * MiB);
  assert.equal(delta(s0, s1, 'nbd_vault_nbd_bytes_total{volume="m",direction="read"}'), 3 * MiB);
  assert.equal(delta(s0, s1, 'nbd_vault_nbd_request_duration_seconds_count{volume="m",command="write"}'), 2);
  assert.equal(delta(s0, s1, 'nbd_vault_nbd_request_duration_seconds_bucket{le="+Inf",volume="m",command="write"}'), 2);
  assert.ok(delta(s0, s1, 'nbd_vault_nbd_requests_total{volume="m",command="flush",result="ok"}') >= 1, 'qemu-io flushes on close');
  // The flush made it durable: the partial writes went into a journal, then a page and a root were put.
  assert.ok(delta(s0, s1, 'nbd_vault_store_requests_total{op="put",result="ok"}') >= 3, 'a journal, a page and a root put');
  assert.equal(s1.get('nbd_vault_store_request_duration_seconds_count{op="put"}'), s1.get('nbd_vault_store_requests_total{op="put",result="ok"}'));
  assert.equal(s1.get('nbd_vault_dirty_bytes{volume="m"}'), 0, 'nothing dirty after the flush');
  assert.equal(s1.get('nbd_vault_upload_queue_chunks{volume="m"}'), 0);
  assert.equal(s1.get('nbd_vault_lease_held{volume="m"}'), 1);
  assert.equal(s1.get('nbd_vault_leases_held'), 1);
  assert.equal(s1.get('nbd_vault_leases_lost'), 0);
  assert.equal(s1.get('nbd_vault_memory_limit_bytes'), 2 ** 30, 'the default --memory-limit');
  // the clients are gone: what the budget still holds is the read cache (frames the read fetched)
  // and the shares set aside for good: sealing's (a sixteenth of the limit: 64 MiB) and the
  // runtime's (a quarter: 256 MiB)
  assert.equal(
    s1.get('nbd_vault_memory_used_bytes'),
    s1.get('nbd_vault_read_cache_bytes{volume="m"}')! +
      s1.get('nbd_vault_decode_buffers_free_bytes{volume="m"}')! +
      s1.get('nbd_vault_payload_buffers_kept_bytes')! +
      s1.get('nbd_vault_dirty_slabs_kept_bytes')! +
      64 * MiB +
      256 * MiB,
    'only the read cache, memory kept for reuse (decode buffers, payloads, dirty-block slabs) and the two shares hold the budget',
  );
  assert.equal(s1.get('nbd_vault_memory_waiting'), 0);
  assert.equal(s1.get('nbd_vault_fetch_floor_bytes'), 0, 'the fetches are over: none holds the floor');
  assert.equal(s1.get('nbd_vault_fetches_waiting'), 0);

  // The same read again comes from the read cache: one chunk lookup per chunk, all hits.
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'read -P 0x11 0 3M', srv.uri('m')]);
  const s2 = await scrape();
  assert.ok(delta(s1, s2, 'nbd_vault_read_cache_hits_total{volume="m"}') >= 1, 'read cache hit');
  assert.equal(delta(s1, s2, 'nbd_vault_read_cache_misses_total{volume="m"}'), 0, 'no miss on a cached chunk');

  // nbdcopy: 8 MiB of random data (no zero runs to skip), over several connections.
  const img = join(v.dir, 'r.img');
  writeFileSync(img, randomBytes(8 * MiB));
  await runCommand('nbdcopy', [img, srv.uri('m')], { timeoutMs: 120_000 });
  const s3 = await scrape();
  assert.equal(delta(s2, s3, 'nbd_vault_nbd_bytes_total{volume="m",direction="write"}'), 8 * MiB);
  assert.ok(delta(s2, s3, 'nbd_vault_nbd_requests_total{volume="m",command="write",result="ok"}') >= 1);

  // nbdsh: a read past the end (strict mode off, so libnbd sends it) is answered EINVAL and counted so.
  const py = `h.set_strict_mode(0)\nh.connect_uri(${JSON.stringify(srv.uri('m'))})\ntry:\n    h.pread(4096, h.get_size())\n    raise SystemExit('read past the end succeeded')\nexcept nbd.Error as e:\n    print('refused', e.errnum)\n`;
  const sh = await runCommand('nbdsh', ['-c', py]);
  assert.match(sh.stdout, /^refused 22$/m);
  const s4 = await scrape();
  assert.equal(delta(s3, s4, 'nbd_vault_nbd_requests_total{volume="m",command="read",result="EINVAL"}'), 1);
  assert.equal(delta(s3, s4, 'nbd_vault_nbd_bytes_total{volume="m",direction="read"}'), 0, 'a refused read moves no bytes');

  // Default process metrics come along; nothing secret is in the text.
  const text = await (await fetch(url)).text();
  assert.match(text, /^nbd_vault_process_cpu_seconds_total /m);
  assert.doesNotMatch(text, /passphrase|secret|"key"/i);
  assert.equal(await srv.stop(), 0);
});
