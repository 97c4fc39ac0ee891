// A real ext4 filesystem on a vault volume (nbdfuse + loop device: there is no /dev/nbd0 here):
// mkfs, copy a tree, fstrim frees the stored data, restart the server, same checksums.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { attachNbdAsFile, fuseLoopUnavailableReason, mkfsAndMount, mountDevice, runCommand, treeChecksum, unmount, waitFor } from '../helpers/fuse-disk';
import { makeTestVault, s3Available } from '../helpers/vault-server';
import { openStore } from '../../src/store';

/**
 * Bytes of volume data in the vault's store: chunk and journal objects, listed through the store
 * itself (fs or S3). Both count, because where a write lives at a given moment (a journal, or a
 * chunk once the volume has been idle and compaction folded it) is the write-back's business.
 */
export async function storedDataBytes(storeUrl: string): Promise<number> {
  const store = openStore(storeUrl);
  let bytes = 0;
  try {
    for await (const o of store.list('volumes/')) if (/\/(chunks|journals)\//.test(o.key)) bytes += o.size;
  } finally {
    await store.close();
  }
  return bytes;
}

const MiB = 2 ** 20;

for (const backend of ['fs', 's3'] as const) test(`ext4 on a vault volume (${backend} store): files survive a restart, fstrim frees the stored data`, async (t) => {
  if (backend === 's3' && !s3Available(t)) return;
  const unavailable = await fuseLoopUnavailableReason();
  if (unavailable) {
    if (process.env.NBD_VAULT_REQUIRE_ALL === '1') assert.fail(unavailable);
    return t.skip(unavailable);
  }
  const v = await makeTestVault({ s3: backend === 's3' });
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'fs', '--size', '512M');
  let srv = await v.serve();
  t.after(() => srv.kill());
  const mnt = join(v.dir, 'mnt');
  mkdirSync(mnt);
  let disk = await attachNbdAsFile(srv.uri('fs'), join(v.dir, 'fuse'));
  t.after(() => disk.detach()); // idempotent: resolves at once after the explicit detach below
  await mkfsAndMount(disk.loopDevice, mnt);
  // a tree of real files, plus a big random file we delete again
  await runCommand('cp', ['-a', '/usr/share/doc', join(mnt, 'doc')], { timeoutMs: 120_000 });
  // and a generated tree (whatever /usr holds on this machine, this part is always there)
  const gen = join(mnt, 'gen');
  mkdirSync(gen);
  for (let i = 0; i < 64; i++) writeFileSync(join(gen, `f${i}.bin`), randomBytes(1 + ((i * 7919) % 300_000)));
  writeFileSync(join(mnt, 'big.bin'), randomBytes(64 * 2 ** 20));
  await runCommand('sync', ['-f', join(mnt, 'big.bin')]);
  const withBig = await storedDataBytes(v.storeUrl);
  assert.ok(withBig >= 64 * MiB, `the random file is stored: ${withBig} bytes of volume data`);
  await runCommand('rm', [join(mnt, 'big.bin')]);
  // ext4 frees the file's blocks only when its journal commits: sync first, or fstrim may run
  // before the blocks are free and trim nothing
  await runCommand('sync', ['-f', mnt]);
  const sum = await treeChecksum(mnt);
  const trim = await runCommand('fstrim', ['-v', mnt], { timeoutMs: 120_000 });
  assert.match(trim.stdout, /trimmed/);
  await runCommand('sync', ['-f', mnt]); // FLUSH: a durable root no longer names the trimmed chunks
  // the trimmed 64 MiB of random data leave the store: chunk objects deleted, or journals folded
  // and deleted by the compaction an idle volume starts after 10 s
  const freed = await waitFor(async () => (await storedDataBytes(v.storeUrl)) <= withBig - 48 * MiB, 40_000, 250);
  const problems = srv.log().split('\n').filter((l) => /"level":(40|50)/.test(l)).slice(-5).join('\n');
  assert.ok(freed, `fstrim freed stored bytes: ${withBig} before, ${await storedDataBytes(v.storeUrl)} after\n${problems}`);
  await unmount(mnt);
  await disk.detach();

  assert.equal(await srv.stop(), 0);
  srv = await v.serve();
  disk = await attachNbdAsFile(srv.uri('fs'), join(v.dir, 'fuse'));
  await runCommand('e2fsck', ['-fn', disk.loopDevice], { timeoutMs: 120_000 });
  await mountDevice(disk.loopDevice, mnt);
  assert.equal(await treeChecksum(mnt), sum, 'same files after a restart');
  await unmount(mnt);
  await disk.detach();
  assert.equal(await srv.stop(), 0);
});
