// `nbd-vault gc` for real (not --dry-run) beside a running server while a client writes: it removes
// exactly the old unreferenced objects, keeps the server's fresh uploads (the grace period), and
// every byte the client wrote reads back afterwards; `verify --all` passes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { utimesSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { FsStore } from '../../src/store/fs-store';
import { runCommand } from '../helpers/fuse-disk';
import { makeTestVault } from '../helpers/vault-server';

// Writes 1 MiB blocks (block i: sha256(i) repeated) with no FLUSH until the end; "wrote N" after each.
const WRITER = `
import nbd, sys, hashlib
h = nbd.NBD()
h.connect_uri(sys.argv[1])
n = int(sys.argv[2])
for i in range(n):
    h.pwrite(hashlib.sha256(str(i).encode()).digest() * 32768, i * 1048576)
    print("wrote", i + 1, flush=True)
    if i == 8:
        sys.stdin.readline()  # hold here, uploads in flight, until the test has run gc
h.flush()
print("flushed", flush=True)
h.shutdown()
`;
const CHECKER = `
import nbd, sys, hashlib
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(int(sys.argv[2])):
    if h.pread(1048576, i * 1048576) != hashlib.sha256(str(i).encode()).digest() * 32768:
        print("MISMATCH", i); sys.exit(1)
print("ok")
`;

test('gc beside a running server with uploads in flight removes only old garbage', { timeout: 300_000 }, async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'live', '--size', '64M');
  const store = new FsStore(join(v.dir, 'data'), { fsync: false });
  let liveId = '';
  for await (const o of store.list('volumes/')) if (o.key.endsWith('/meta')) liveId = o.key.split('/')[1];
  assert.match(liveId, /^[0-9a-f]{32}$/);
  // old garbage: an unreferenced chunk of the live volume and an object of a volume that is gone
  const planted = [`volumes/${liveId}/chunks/${'ab'.repeat(16)}`, `volumes/${'cd'.repeat(16)}/chunks/${'ef'.repeat(16)}`];
  const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
  for (const k of planted) {
    await store.put(k, randomBytes(1000));
    utimesSync(store.pathOf(k), twoHoursAgo, twoHoursAgo);
  }

  const srv = await v.serve();
  t.after(() => srv.kill());
  const writer = spawn('/usr/bin/python3', ['-c', WRITER, srv.uri('live'), '24'], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.after(() => {
    if (writer.exitCode === null) writer.kill('SIGKILL'); // a failed assertion must not leave it waiting
  });
  let out = '';
  let err = '';
  writer.stdout.on('data', (d) => (out += d));
  writer.stderr.on('data', (d) => (err += d));
  const writerExit = new Promise<number | null>((r) => writer.once('exit', (c) => r(c)));
  const until = async (re: RegExp, what: string) => {
    const end = Date.now() + 120_000;
    while (!re.test(out)) {
      if (writer.exitCode !== null || Date.now() > end) throw new Error(`writer: no ${what}: ${out}${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await until(/wrote 9\n/, '9 blocks');
  // the server has data it took but no FLUSH asked for: wait until some of it is uploaded (young, maybe unreferenced yet)
  const end = Date.now() + 60_000;
  let chunks = 0;
  while ((chunks = [...(await listKeys(store))].filter((k) => k.startsWith(`volumes/${liveId}/chunks/`)).length) < 2) {
    assert.ok(Date.now() < end, 'the server uploads in the background');
    await new Promise((r) => setTimeout(r, 50));
  }
  const gc = await v.cli('gc', '--json'); // the default grace period; a real run
  const r = JSON.parse(gc.stdout);
  assert.equal(r.dryRun, false);
  assert.equal(r.garbageObjects, 2, gc.stdout);
  assert.equal(r.deleted, 2, gc.stdout);
  const after = await listKeys(store);
  for (const k of planted) assert.ok(!after.has(k), `${k} removed`);
  assert.ok([...after].filter((k) => k.startsWith(`volumes/${liveId}/chunks/`)).length >= chunks - 1, 'the server\'s uploads are kept');

  writer.stdin.end('go on\n'); // the rest of the writes, then FLUSH
  assert.equal(await writerExit, 0, out + err);
  assert.match(out, /flushed/);
  const check = await runCommand('/usr/bin/python3', ['-c', CHECKER, srv.uri('live'), '24'], { okCodes: [0, 1], timeoutMs: 120_000 });
  assert.equal(check.code, 0, check.stdout + check.stderr);
  assert.equal(await srv.stop(), 0);
  const verify = await v.cliResult('verify', '--all');
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  // after a restart, from the store alone
  const srv2 = await v.serve();
  t.after(() => srv2.kill());
  const again = await runCommand('/usr/bin/python3', ['-c', CHECKER, srv2.uri('live'), '24'], { okCodes: [0, 1], timeoutMs: 120_000 });
  assert.equal(again.code, 0, again.stdout + again.stderr);
  assert.equal(await srv2.stop(), 0);
});

async function listKeys(store: FsStore): Promise<Set<string>> {
  const keys = new Set<string>();
  for await (const o of store.list('')) keys.add(o.key);
  return keys;
}
