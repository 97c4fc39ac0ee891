// The same product over S3 (the Ceph RADOS Gateway that scripts/test.sh starts on loopback):
// qemu-img convert in and out, nbdcopy, a restart, objects in the bucket that reveal nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '../helpers/fuse-disk';
import { makeTestVault, s3Available } from '../helpers/vault-server';
import { openStore } from '../../src/store';

const MiB = 2 ** 20;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

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
});
