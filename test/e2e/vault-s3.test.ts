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
