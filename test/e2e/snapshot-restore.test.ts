// Backups as users run them: a filesystem written through the vault, a snapshot taken through the
// running server, more writes, then restores of VOL@SNAP with dd (from a loop device: what
// /dev/nbd0 gives users), nbdcopy and qemu-img convert; a clone mounts and shows the snapshot's
// files; the snapshot export is read-only; CLI export/verify/diff agree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { attachNbdAsFile, fileSha256, fuseLoopUnavailableReason, mkfsAndMount, mountDevice, runCommand, treeChecksum, unmount } from '../helpers/fuse-disk';
import { makeTestVault } from '../helpers/vault-server';

test('snapshot a mounted filesystem through the server, keep writing, restore by dd / nbdcopy / qemu-img, clone', async (t) => {
  const unavailable = await fuseLoopUnavailableReason();
  if (unavailable) {
    if (process.env.NBD_VAULT_REQUIRE_ALL === '1') assert.fail(unavailable);
    return t.skip(unavailable);
  }
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vm', '--size', '256M');
  const srv = await v.serve();
  t.after(() => srv.kill());
  const mnt = join(v.dir, 'mnt');
  mkdirSync(mnt);
  const disk = await attachNbdAsFile(srv.uri('vm'), join(v.dir, 'fuse'));
  t.after(() => disk.detach().catch(() => {}));
  await mkfsAndMount(disk.loopDevice, mnt);
  await runCommand('cp', ['-a', '/usr/share/doc', join(mnt, 'doc')], { timeoutMs: 120_000 });
  writeFileSync(join(mnt, 'payload.bin'), randomBytes(8 * 2 ** 20));
  const treeAtSnapshot = await treeChecksum(mnt);
  // Quiesce (as a backup agent's fsfreeze would), record the exact bytes, then snapshot.
  await unmount(mnt);
  await runCommand('sync', []);
  await runCommand('dd', [`if=${disk.loopDevice}`, `of=${join(v.dir, 'truth.img')}`, 'bs=1M', 'iflag=direct'], { timeoutMs: 120_000 });
  const truth = await fileSha256(join(v.dir, 'truth.img'));
  const snap = await v.cli('snapshot', 'vm', 'before');
  assert.match(snap.stdout, /created snapshot vm@before .* through the running server/);

  // keep writing to the live volume
  await mountDevice(disk.loopDevice, mnt);
  writeFileSync(join(mnt, 'after-snapshot.txt'), 'written after the snapshot\n');
  await runCommand('rm', ['-rf', join(mnt, 'doc')]);
  await runCommand('sync', ['-f', mnt]);

  const list = JSON.parse((await runCommand('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${srv.port}`])).stdout);
  const snapExport = list.exports.find((e: any) => e['export-name'] === 'vm@before');
  assert.ok(snapExport, 'vm@before is listed by NBD_OPT_LIST');
  assert.equal(snapExport['is_read_only'], true);

  // restore 1: dd from a (read-only) block device of the snapshot export
  const snapDisk = await attachNbdAsFile(srv.uri('vm@before'), join(v.dir, 'fuse-snap'), { readOnly: true });
  t.after(() => snapDisk.detach().catch(() => {}));
  const dd = await runCommand('dd', [`if=${snapDisk.loopDevice}`, `of=${join(v.dir, 'restored-dd.img')}`, 'bs=1M', 'status=progress'], { timeoutMs: 120_000 });
  assert.match(dd.stderr, /268435456 bytes/);
  await snapDisk.detach();
  assert.equal(await fileSha256(join(v.dir, 'restored-dd.img')), truth, 'dd restore equals the volume at snapshot time');
  // restore 2 and 3: nbdcopy and qemu-img convert
  await runCommand('nbdcopy', [srv.uri('vm@before'), join(v.dir, 'restored-nbdcopy.img')], { timeoutMs: 120_000 });
  assert.equal(await fileSha256(join(v.dir, 'restored-nbdcopy.img')), truth, 'nbdcopy restore');
  await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('vm@before'), join(v.dir, 'restored-qemu.img')], { timeoutMs: 120_000 });
  assert.equal(await fileSha256(join(v.dir, 'restored-qemu.img')), truth, 'qemu-img convert restore');

  // the snapshot export refuses writes
  const w = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write 0 4096', srv.uri('vm@before')], { okCodes: [0, 1] });
  assert.match(w.stdout + w.stderr, /read-only|Operation not permitted|Permission denied/i);

  // the restored image has the snapshot's files; the live volume kept its later changes
  const restoredMnt = join(v.dir, 'restored');
  mkdirSync(restoredMnt);
  const loop = (await runCommand('losetup', ['-f', '--show', '-r', join(v.dir, 'restored-dd.img')])).stdout.trim();
  t.after(() => runCommand('losetup', ['-d', loop]).catch(() => {}));
  await mountDevice(loop, restoredMnt, { readOnly: true });
  assert.equal(await treeChecksum(restoredMnt), treeAtSnapshot, 'the restored filesystem holds the snapshot-time files');
  await unmount(restoredMnt);
  assert.equal(readFileSync(join(mnt, 'after-snapshot.txt'), 'utf8'), 'written after the snapshot\n');
  await unmount(mnt);
  await disk.detach();

  // diff from the manifests: the later writes show as changed ranges
  const diff = JSON.parse((await v.cli('diff', 'vm@before', 'vm', '--json')).stdout);
  assert.ok(diff.ranges.length > 0 && diff.changedBytes > 0, 'diff sees the later writes');

  // a clone of the snapshot mounts and shows the snapshot's files; writing it leaves the snapshot alone
  await v.cli('clone', 'vm@before', 'vm-clone');
  const cloneDisk = await attachNbdAsFile(srv.uri('vm-clone'), join(v.dir, 'fuse-clone'));
  t.after(() => cloneDisk.detach().catch(() => {}));
  await mountDevice(cloneDisk.loopDevice, mnt);
  assert.equal(await treeChecksum(mnt), treeAtSnapshot, 'the clone shows the snapshot-time files');
  writeFileSync(join(mnt, 'clone-only.txt'), 'clone\n');
  await unmount(mnt);
  await cloneDisk.detach();
  await runCommand('nbdcopy', [srv.uri('vm@before'), join(v.dir, 'restored-again.img')], { timeoutMs: 120_000 });
  assert.equal(await fileSha256(join(v.dir, 'restored-again.img')), truth, 'the snapshot is unchanged by the clone');

  // CLI export of the snapshot and verify of everything, beside the running server
  await v.cli('export', 'vm@before', join(v.dir, 'exported.img'));
  assert.equal(await fileSha256(join(v.dir, 'exported.img')), truth, 'nbd-vault export');
  const verify = await v.cli('verify', '--all');
  assert.match(verify.stdout, /vm@before: ok/);
  assert.equal(await srv.stop(), 0);
});
