// The same product over S3 (the Ceph RADOS Gateway that scripts/test.sh starts on loopback):
// qemu-img convert in and out, nbdcopy, a restart, objects in the bucket that reveal nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '../helpers/fuse-disk';
import { CLI, makeTestVault, s3Available, startVaultServer } from '../helpers/vault-server';
import { openStore } from '../../src/store';

const MiB = 2 ** 20;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const W = 32;
/** rolling hash of b[i..i+W) from that of b[i-1..i-1+W) (polynomial, mod 2^32) */
const BASE = 257;
let BASE_POW_W1 = 1;
for (let k = 0; k < W - 1; k++) BASE_POW_W1 = Math.imul(BASE_POW_W1, BASE);
function windowHash(b: Buffer, at: number): number {
  let h = 0;
  for (let k = 0; k < W; k++) h = (Math.imul(h, BASE) + b[at + k]) | 0;
  return h;
}

/**
 * Where some object body holds a 64-byte slice of `input`, or null. Any 64-byte slice contains a
 * 32-byte slice that starts at a multiple of 32 in the input, so it is enough to look for those
 * (hashed in a set) at every offset of every body (a rolling hash), and to confirm each hit.
 */
function findLeak(input: Buffer, bodies: Map<string, Buffer>): string | null {
  const at = new Map<number, number[]>();
  for (let off = 0; off + W <= input.length; off += W) {
    const h = windowHash(input, off);
    const list = at.get(h);
    if (!list) at.set(h, [off]);
    else if (list.length < 4) list.push(off); // equal windows (zeros, repeated text) once or so
  }
  for (const [key, body] of bodies) {
    if (body.length < W) continue;
    let h = windowHash(body, 0);
    for (let i = 0; ; i++) {
      const cands = at.get(h);
      if (cands) for (const off of cands) if (body.compare(input, off, off + W, i, i + W) === 0) return `${key} holds input bytes ${off}..${off + W} at ${i}`;
      if (i + W >= body.length) break;
      h = (Math.imul(h - Math.imul(body[i], BASE_POW_W1), BASE) + body[i + W]) | 0;
    }
  }
  return null;
}

test('a volume on S3 (RGW): qemu-img convert in and out, nbdcopy, restart, opaque object names', async (t) => {
  if (!s3Available(t)) return;
  const v = await makeTestVault({ s3: true });
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vm-disk', '--size', '48M');
  let srv = await v.serve();
  t.after(() => srv.kill());
  const img = Buffer.alloc(48 * MiB);
  randomBytes(16 * MiB).copy(img, 0);
  Buffer.from('text '.repeat(4 * MiB)).copy(img, 24 * MiB, 0, 16 * MiB);
  writeFileSync(join(v.dir, 'in.img'), img);
  await runCommand('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', join(v.dir, 'in.img'), srv.uri('vm-disk')], { timeoutMs: 180_000 });
  await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('vm-disk'), join(v.dir, 'out.img')], { timeoutMs: 180_000 });
  assert.equal(sha(readFileSync(join(v.dir, 'out.img'))), sha(img));
  assert.equal(await srv.stop(), 0);

  srv = await v.serve();
  await runCommand('nbdcopy', [srv.uri('vm-disk'), join(v.dir, 'out2.img')], { timeoutMs: 180_000 });
  assert.equal(sha(readFileSync(join(v.dir, 'out2.img'))), sha(img), 'same bytes from S3 after a restart');
  assert.equal(await srv.stop(), 0);

  const store = openStore(v.storeUrl);
  t.after(() => store.close());
  const keys: string[] = [];
  for await (const o of store.list('')) keys.push(o.key);
  const chunks = keys.filter((k) => k.includes('/chunks/'));
  assert.equal(chunks.length, 8, `8 non-zero chunks stored (${chunks.length})`);
  assert.ok(keys.includes('vault'));
  assert.ok(keys.every((k) => !k.includes('vm-disk')), 'no volume name in object names');
  // and no body reveals content: no object holds any 64-byte slice of the image (random, text or zeros)
  const bodies = new Map<string, Buffer>();
  for (const k of keys) bodies.set(k, (await store.get(k)).body);
  const leak = findLeak(img, bodies);
  assert.equal(leak, null, 'no object body contains a 64-byte slice of the input');
  assert.ok(bodies.get(chunks[0])!.length > 0);
  // the check finds a slice when there is one (a body that holds 64 bytes of the text part)
  bodies.set('planted', Buffer.concat([randomBytes(1000), img.subarray(24 * MiB + 12_345, 24 * MiB + 12_345 + 64), randomBytes(10)]));
  assert.match(findLeak(img, bodies) ?? '', /^planted holds input bytes/);
  bodies.set('planted', Buffer.concat([randomBytes(77), img.subarray(5 * MiB + 3, 5 * MiB + 67)]));
  assert.match(findLeak(img, bodies) ?? '', /^planted holds input bytes/, 'a random-region slice at an odd offset is found');
});

test('two servers on one bucket: the second cannot write a volume the first is serving (lease on RGW)', async (t) => {
  if (!s3Available(t)) return;
  const v = await makeTestVault({ s3: true });
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'shared', '--size', '16M');
  const first = await v.serve();
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4096', first.uri('shared')]); // opens the volume: lease taken
  // another machine: same bucket and key, its own state directory
  const otherEnv = { ...v.env, NBD_VAULT_STATE: join(v.dir, 'state-other') };
  const second = await startVaultServer(otherEnv, v.dir);
  t.after(() => second.kill());
  const refused = await runCommand('qemu-img', ['info', second.uri('shared')], { okCodes: [0, 1] });
  assert.notEqual(refused.code, 0, 'the second server does not serve a volume another writer holds');
  assert.match(refused.stderr, /is being written by another server or command/, 'the client is told why');
  assert.match(second.log(), /is being written by nbd-vault \(serve\)/);
  const snap = await runCommand(process.execPath, [CLI, 'snapshot', 'shared', 'x'], { env: otherEnv, okCodes: [0, 1] });
  assert.equal(snap.code, 1);
  assert.match(snap.stderr, /being written by .*stop it first \[ERR_LEASE\]/);
  assert.equal(await first.stop(), 0); // releases the lease
  const info = await runCommand('qemu-img', ['info', '--output=json', second.uri('shared')]);
  assert.equal(JSON.parse(info.stdout)['virtual-size'], 16 * MiB, 'after the first stops, the second serves it');
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'read -P 0x11 0 4096', second.uri('shared')]);
  assert.equal(await second.stop(), 0);
});
