// Proves test/helpers/fuse-disk.ts against the reference server nbdkit: a real ext4 filesystem
// on an NBD export (nbdfuse → loop device), written, trimmed, detached, re-attached and compared.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile, readFile, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  attachNbdAsFile,
  fuseLoopUnavailableReason,
  mkfsAndMount,
  mountDevice,
  runCommand,
  startNbdkit,
  treeChecksum,
  unmount,
  AttachedDisk,
  NbdkitServer,
} from '../helpers/fuse-disk';

async function skipReason(): Promise<string | false> {
  const why = await fuseLoopUnavailableReason();
  if (!why) return false;
  if (process.env.NBD_VAULT_REQUIRE_ALL === '1') throw new Error(`NBD_VAULT_REQUIRE_ALL=1 but ${why}`);
  return `skipped: ${why}`;
}

/** A small tree with nested directories, a symlink, an empty file and a 3 MiB random file. */
async function writeTree(root: string): Promise<void> {
  await mkdir(join(root, 'a/b/c'), { recursive: true });
  await mkdir(join(root, 'empty-dir'), { recursive: true });
  await writeFile(join(root, 'hello.txt'), 'hello from nbd-vault\n');
  await writeFile(join(root, 'a/b/c/random.bin'), randomBytes(3 * 1024 * 1024));
  await writeFile(join(root, 'a/zero.bin'), Buffer.alloc(1024 * 1024));
  await writeFile(join(root, 'a/empty'), '');
  for (let i = 0; i < 50; i++) await writeFile(join(root, 'a/b', `small-${i}.txt`), `file ${i} ${randomBytes(8).toString('hex')}\n`);
  await symlink('a/b/c/random.bin', join(root, 'link-to-random'));
}

test('fuse-disk: ext4 on an nbdkit export survives detach and re-attach', { timeout: 120_000 }, async (t) => {
  const skip = await skipReason();
  if (skip) return t.skip(skip);
  const started = Date.now();
  const work = await mkdtemp(join(tmpdir(), 'fuse-disk-test-'));
  let server: NbdkitServer | undefined;
  let disk: AttachedDisk | undefined;
  const mnt = join(work, 'mnt');
  t.after(async () => {
    // Reverse order; each step bounded and tolerant.
    await unmount(mnt).catch((e) => console.error('cleanup unmount:', e.message));
    await disk?.detach().catch((e) => console.error('cleanup detach:', e.message));
    await server?.stop().catch((e) => console.error('cleanup nbdkit:', e.message));
    await rm(work, { recursive: true, force: true }).catch(() => undefined);
  });

  server = await startNbdkit(['memory', '256M']);
  const src = join(work, 'src');
  await writeTree(src);
  const expected = await treeChecksum(src);

  disk = await attachNbdAsFile(server.uri, join(work, 'fuse1'));
  assert.match(disk.loopDevice, /^\/dev\/loop\d+$/);
  const size = Number((await runCommand('blockdev', ['--getsize64', disk.loopDevice])).stdout.trim());
  assert.equal(size, 256 * 1024 * 1024, 'loop device has the export size');

  await mkfsAndMount(disk.loopDevice, mnt);
  await cp(src, mnt, { recursive: true, verbatimSymlinks: true });
  assert.equal(await treeChecksum(mnt), expected, 'tree as written through the mount');
  // A file written then deleted: fstrim must pass its blocks to the server as TRIM.
  await writeFile(join(mnt, 'to-delete.bin'), randomBytes(4 * 1024 * 1024));
  await runCommand('sync', []);
  await rm(join(mnt, 'to-delete.bin'));
  const trim = await runCommand('fstrim', ['-v', mnt], { timeoutMs: 60_000 });
  assert.match(trim.stdout, /trimmed/, `fstrim output: ${trim.stdout}`);
  await unmount(mnt);
  await disk.detach();
  await disk.detach(); // idempotent

  // Everything is now only on the NBD server: attach anew and compare.
  disk = await attachNbdAsFile(server.uri, join(work, 'fuse2'));
  await runCommand('e2fsck', ['-f', '-n', disk.loopDevice], { timeoutMs: 60_000 });
  await mountDevice(disk.loopDevice, mnt);
  assert.equal(await treeChecksum(mnt), expected, 'tree after detach and re-attach');
  assert.equal(await readFile(join(mnt, 'hello.txt'), 'utf8'), 'hello from nbd-vault\n');
  await unmount(mnt);
  await disk.detach();

  // Read-only attach: mounts ro, refuses writes at the block layer.
  disk = await attachNbdAsFile(server.uri, join(work, 'fuse3'), { readOnly: true });
  const ro = (await runCommand('blockdev', ['--getro', disk.loopDevice])).stdout.trim();
  assert.equal(ro, '1', 'loop device is read-only');
  await mountDevice(disk.loopDevice, mnt, { readOnly: true });
  assert.equal(await treeChecksum(mnt), expected, 'tree through a read-only attach');
  await assert.rejects(writeFile(join(mnt, 'nope'), 'x'), /EROFS|read-only/i);
  await unmount(mnt);
  await disk.detach();
  disk = undefined;

  // A different tree must give a different checksum (the comparison can fail).
  await writeFile(join(src, 'hello.txt'), 'changed\n');
  assert.notEqual(await treeChecksum(src), expected);
  t.diagnostic(`fuse-disk test took ${Date.now() - started} ms`);
});

test('fuse-disk: attach reports which command failed', { timeout: 60_000 }, async (t) => {
  const skip = await skipReason();
  if (skip) return t.skip(skip);
  const work = await mkdtemp(join(tmpdir(), 'fuse-disk-fail-'));
  t.after(() => rm(work, { recursive: true, force: true }));
  const port = await (await import('../helpers/fuse-disk')).freeLoopbackPort(); // nothing listens
  await assert.rejects(attachNbdAsFile(`nbd://127.0.0.1:${port}`, join(work, 'f'), { readyTimeoutMs: 10_000 }), (err: Error) => {
    assert.match(err.message, /nbdfuse/);
    return true;
  });
});

test('fuse-disk: detach cleans up a filesystem left mounted', { timeout: 90_000 }, async (t) => {
  const skip = await skipReason();
  if (skip) return t.skip(skip);
  const work = await mkdtemp(join(tmpdir(), 'fuse-disk-left-'));
  let server: NbdkitServer | undefined;
  let disk: AttachedDisk | undefined;
  const mnt = join(work, 'mnt');
  t.after(async () => {
    await unmount(mnt).catch(() => undefined);
    await disk?.detach().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    await rm(work, { recursive: true, force: true }).catch(() => undefined);
  });
  server = await startNbdkit(['memory', '64M']);
  disk = await attachNbdAsFile(server.uri, join(work, 'fuse'));
  await mkfsAndMount(disk.loopDevice, mnt);
  await writeFile(join(mnt, 'kept.txt'), 'kept\n');
  const { loopDevice, nbdfusePid, fuseDir } = disk;
  await disk.detach(); // without unmount first
  const { isMountPoint, mountPointsOf } = await import('../helpers/fuse-disk');
  assert.equal(await isMountPoint(mnt), false, 'filesystem unmounted');
  assert.equal(await isMountPoint(fuseDir), false, 'FUSE unmounted');
  assert.deepEqual(await mountPointsOf(loopDevice), []);
  assert.throws(() => process.kill(nbdfusePid, 0), /ESRCH/, 'nbdfuse exited');
  // and the data reached the server
  disk = await attachNbdAsFile(server.uri, join(work, 'fuse2'), { readOnly: true });
  await mountDevice(disk.loopDevice, mnt, { readOnly: true });
  assert.equal(await readFile(join(mnt, 'kept.txt'), 'utf8'), 'kept\n');
  await unmount(mnt);
  await disk.detach();
});
