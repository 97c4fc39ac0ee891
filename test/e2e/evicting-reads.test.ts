// Random reads through a read cache far smaller than the volume, from a real client (python3-libnbd)
// that sends 24 MiB of reads at once and drains its socket late, so replies queue in the server while
// later misses decode into the memory of frames the cache evicted (decode-buffers.ts, ReadBuffers).
// Every byte must be the image's: a reply whose view was reused before it was written would show
// another frame's bytes. The server's metrics must show that frames were in fact decoded into
// reused memory, or the test proves nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { seededRandom } from '../../src/store/seeded-random';
import { runCommand } from '../helpers/fuse-disk';
import { parseMetrics } from '../helpers/metrics-text';
import { makeTestVault } from '../helpers/vault-server';

const MiB = 2 ** 20;
const SIZE = 32 * MiB;

// argv: uri, image, reads. Rounds of 256 aio reads (4 KiB, 64 KiB or 128 KiB, aligned; ~24 MiB,
// more than loopback's socket buffers hold) at seeded random offsets; the socket is left alone for
// 100 ms after each round is sent.
const READER = `
import nbd, sys, random, time
uri, image, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(image, 'rb').read()
h = nbd.NBD()
h.connect_uri(uri)
rng = random.Random(5)
done = 0
while done < total:
    reqs = []
    for _ in range(256):
        n = rng.choice([4096, 65536, 131072, 131072])
        off = rng.randrange(len(data) // n) * n
        buf = nbd.Buffer(n)
        reqs.append((h.aio_pread(buf, off), buf, off, n))
    time.sleep(0.1)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for cookie, buf, off, n in reqs:
        assert h.aio_command_completed(cookie)
        if buf.to_bytearray() != data[off:off + n]:
            print("BAD", off, n, flush=True)
            sys.exit(1)
    done += len(reqs)
print("ok", done, flush=True)
h.shutdown()
`;

test('random reads through a full read cache, replies queued behind a slow client, return the image byte for byte', { timeout: 300_000 }, async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vm', '--size', '32M');
  // half random (frames sealed near 128 KiB), half text-like (frames of a few KiB)
  const rnd = seededRandom(3);
  const image = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE / 2; i++) image[i] = Math.floor(rnd() * 256);
  for (let i = SIZE / 2; i < SIZE; i++) image[i] = 97 + ((i * 7 + Math.floor(i / 4096)) % 23);
  const file = join(v.dir, 'image.raw');
  writeFileSync(file, image);

  const srv = await v.serve(['--read-cache', '2M', '--metrics', '0']);
  t.after(() => srv.kill());
  const url = /"url":"([^"]+)","msg":"metrics listening"/.exec(srv.log())?.[1];
  assert.ok(url, `no metrics line in:\n${srv.log()}`);
  await runCommand('nbdcopy', ['--flush', file, srv.uri('vm')], { timeoutMs: 120_000 });

  const read = await runCommand('/usr/bin/python3', ['-c', READER, srv.uri('vm'), file, '3072'], { okCodes: [0, 1], timeoutMs: 240_000 });
  assert.equal(read.code, 0, read.stdout + read.stderr);
  assert.match(read.stdout, /ok 3072/);

  const m = parseMetrics(await (await fetch(url)).text());
  const misses = m.get('nbd_vault_read_cache_misses_total{volume="vm"}') ?? 0;
  const reused = m.get('nbd_vault_decode_buffers_reused_total{volume="vm"}') ?? 0;
  assert.ok(misses >= 1000, `the 2 MiB cache missed: ${misses}`);
  assert.ok(reused >= 500, `frames decoded into reused memory: ${reused} (of ${misses} misses)`);
});
