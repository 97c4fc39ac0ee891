// End to end on the fs store with real clients: qemu-img, nbdcopy, qemu-io, fio, nbdinfo; the
// first-run experience; tampering with a stored chunk; a graceful restart keeps every byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync, writeFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '../helpers/fuse-disk';
import { makeTestVault, startVaultServer, s3Available } from '../helpers/vault-server';

const MiB = 2 ** 20;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A raw disk image with a realistic mix: text, random and zero regions. */
function makeImage(path: string, size: number): Buffer {
  const img = Buffer.alloc(size);
  for (let off = 0; off < size; off += 4 * MiB) {
    const kind = (off / (4 * MiB)) % 3;
    const len = Math.min(4 * MiB, size - off);
    if (kind === 0) randomBytes(len).copy(img, off);
    else if (kind === 1) Buffer.from('nbd-vault test line of text\n'.repeat(Math.ceil(len / 28))).copy(img, off, 0, len);
  }
  writeFileSync(path, img);
  return img;
}

test('first run: `serve` in an empty directory creates a key, a vault and a default volume', async (t) => {
  const v = await makeTestVault({ init: false });
  t.after(() => v.cleanup());
  const srv = await startVaultServer(v.env, v.dir);
  t.after(() => srv.kill());
  assert.match(srv.log(), /created a new master key/);
  // stdout and stderr are separate pipes: the hint may arrive a moment after the log line
  for (let k = 0; k < 100 && !/try: qemu-img info/.test(srv.log()); k++) await new Promise((r) => setTimeout(r, 20));
  assert.match(srv.log(), /try: qemu-img info nbd:\/\/127\.0\.0\.1:\d+\/default/);
  const info = await runCommand('qemu-img', ['info', '--output=json', srv.uri('default')]);
  assert.equal(JSON.parse(info.stdout)['virtual-size'], 10 * 2 ** 30);
  const list = await runCommand('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${srv.port}`]);
  assert.deepEqual(JSON.parse(list.stdout).exports.map((e: any) => e['export-name']), ['default']);
  assert.equal(await srv.stop(), 0, 'graceful stop exits 0');
  // no key material in the logs: none of the key file's long strings appears in them
  const keyFile = readFileSync(join(v.dir, 'keys', 'master-key.json'), 'utf8');
  const secrets = [...keyFile.matchAll(/"([A-Za-z0-9+/=_-]{40,})"/g)].map((m) => m[1]);
  assert.ok(secrets.length > 0, 'found the key in the key file');
  for (const secret of secrets) assert.ok(!srv.log().includes(secret), 'key material in the server log');

  // a first run told which volume is the default makes that one
  const named = await makeTestVault({ init: false });
  t.after(() => named.cleanup());
  const srv2 = await startVaultServer(named.env, named.dir, ['--default-volume', 'web01']);
  t.after(() => srv2.kill());
  const list2 = await runCommand('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${srv2.port}`]);
  assert.deepEqual(JSON.parse(list2.stdout).exports.map((e: any) => e['export-name']), ['web01']);
  assert.equal(await srv2.stop(), 0);
});

for (const backend of ['fs', 's3'] as const) test(`qemu-img convert into a volume and back, nbdcopy, qemu-io and fio on the ${backend} store`, async (t) => {
  if (backend === 's3' && !s3Available(t)) return;
  const v = await makeTestVault({ s3: backend === 's3' });
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'disk', '--size', '64M');
  await v.cli('volume', 'create', 'odd', '--size', '10000000'); // not a multiple of the chunk size
  const srv = await v.serve();
  t.after(() => srv.kill());
  const img = makeImage(join(v.dir, 'in.img'), 64 * MiB);

  await runCommand('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', join(v.dir, 'in.img'), srv.uri('disk')], { timeoutMs: 120_000 });
  await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('disk'), join(v.dir, 'out.img')], { timeoutMs: 120_000 });
  assert.equal(sha(readFileSync(join(v.dir, 'out.img'))), sha(img), 'qemu-img round trip');

  const map = JSON.parse((await runCommand('nbdinfo', ['--map', '--json', srv.uri('disk')])).stdout);
  const holes = map.filter((e: any) => e.type & 1).reduce((a: number, e: any) => a + e.length, 0);
  assert.ok(holes >= 5 * 4 * MiB, `zero chunks are reported as holes (${holes} bytes)`);

  const odd = randomBytes(10_000_000);
  writeFileSync(join(v.dir, 'odd.img'), odd);
  await runCommand('nbdcopy', [join(v.dir, 'odd.img'), srv.uri('odd')], { timeoutMs: 120_000 });
  await runCommand('nbdcopy', [srv.uri('odd'), join(v.dir, 'odd-out.img')], { timeoutMs: 120_000 });
  assert.equal(sha(readFileSync(join(v.dir, 'odd-out.img'))), sha(odd), 'nbdcopy round trip of an odd-sized volume');

  // qemu-io: patterns aligned and unaligned, across chunk boundaries, verified
  const io = (cmd: string) => runCommand('qemu-io', ['-f', 'raw', '-c', cmd, srv.uri('disk')]);
  await io('write -P 0xa5 4194000 1000');
  await io('write -P 0x3c 8388608 4194304');
  await io('write -z 20971000 600');
  await io('read -P 0xa5 4194000 1000');
  await io('read -P 0x3c 8388608 4194304');
  await io('read -P 0 20971000 600');
  const bad = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read -P 0x77 4194000 1000', srv.uri('disk')], { okCodes: [0, 1] });
  assert.match(bad.stdout + bad.stderr, /Pattern verification failed/, 'qemu-io verification can fail');

  // fio's nbd engine: random writes with verification
  const fio = await runCommand(
    'fio',
    ['--name=verify', '--ioengine=nbd', `--uri=${srv.uri('disk')}`, '--rw=randwrite', '--bs=4k', '--size=32M', '--io_size=8M', '--iodepth=16', '--verify=crc32c', '--do_verify=1', '--verify_state_save=0', '--output-format=json'],
    { timeoutMs: 180_000 },
  );
  const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf('{'))).jobs[0];
  assert.equal(job.error, 0);
  assert.ok(job.write.io_bytes >= 8 * MiB && job.read.io_bytes >= 8 * MiB, 'fio wrote and verified');

  // graceful restart: everything written reads back from the store
  const before = await runCommand('nbdcopy', [srv.uri('disk'), join(v.dir, 'before.img')]);
  void before;
  assert.equal(await srv.stop(), 0);
  const srv2 = await v.serve();
  t.after(() => srv2.kill());
  await runCommand('nbdcopy', [srv2.uri('disk'), join(v.dir, 'after.img')]);
  assert.equal(sha(readFileSync(join(v.dir, 'after.img'))), sha(readFileSync(join(v.dir, 'before.img'))), 'same bytes after restart');
  await srv2.stop();

  const list = JSON.parse((await v.cli('volume', 'list', '--json')).stdout);
  const disk = list.find((x: any) => x.name === 'disk');
  assert.ok(disk.allocated > 0 && disk.storedBytes > 0 && disk.storedBytes < disk.allocated, 'compressed: stored < allocated');
});

function listFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? listFiles(p) : [p];
  });
}

test('a flipped byte in a stored chunk fails that read with EIO; other chunks still read', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'disk', '--size', '16M');
  let srv = await v.serve();
  t.after(() => srv.kill());
  const data = randomBytes(16 * MiB);
  writeFileSync(join(v.dir, 'in.img'), data);
  await runCommand('nbdcopy', [join(v.dir, 'in.img'), srv.uri('disk')]);
  assert.equal(await srv.stop(), 0);
  const chunks = listFiles(join(v.dir, 'data')).filter((p) => p.includes('chunks') && statSync(p).size > 1000);
  assert.equal(chunks.length, 4, 'four chunk objects');
  // Damage one chunk object, whichever it is; exactly one 4 MiB range must then fail.
  const victim = chunks[0];
  const bytes = readFileSync(victim);
  bytes[Math.floor(bytes.length / 2)] ^= 0x01;
  writeFileSync(victim, bytes);
  srv = await v.serve();
  const results = [];
  for (let i = 0; i < 4; i++) {
    // each chunk read whole: format 2 authenticates frame by frame, and the flipped byte sits in
    // one frame in the middle of the object
    results.push(await runCommand('qemu-io', ['-f', 'raw', '-c', `read ${i * 4 * MiB} ${4 * MiB}`, srv.uri('disk')], { okCodes: [0, 1] }));
  }
  const failed = results.filter((r) => /Input\/output error/.test(r.stdout + r.stderr));
  assert.equal(failed.length, 1, 'exactly the damaged chunk fails');
  assert.equal(results.filter((r) => /read 4194304\/4194304 bytes/.test(r.stdout)).length, 3, 'the other chunks read');
  assert.match(srv.log(), /chunk read failed/);
  await srv.stop();
});

test('a client that shuts down its sending side after pipelining reads still gets every reply', async (t) => {
  const { Wire, greet, go, request, readSimpleReply } = await import('../nbd/raw-client');
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'hc', '--size', '32M');
  let srv = await v.serve();
  t.after(() => srv.kill());
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 32M', srv.uri('hc')]);
  assert.equal(await srv.stop(), 0);
  srv = await v.serve(); // cold caches: every read goes to the store and the codec
  const w = new Wire(srv.port);
  await greet(w);
  await go(w, 'hc');
  for (let i = 0; i < 4; i++) w.sock.write(request(0, 0, i + 1, i * 8 * MiB, 4 * MiB));
  w.sock.end(); // FIN: no more requests, but the four are owed replies
  for (let i = 0; i < 4; i++) {
    const r = await readSimpleReply(w, 4 * MiB);
    assert.equal(r.error, 0);
    assert.ok(r.data.every((b) => b === 0x5a), `reply ${r.handle} intact`);
  }
  assert.ok(await w.closedWithin(10_000), 'then the server closes');
  assert.equal(await srv.stop(), 0);
});
