// The seed's boot test: a Linux guest boots under QEMU (TCG) from a vault volume over NBD, writes
// a marker and powers off. The marker is then in the volume — and not in a snapshot taken before
// the boot. KVM is used only when NBD_VAULT_GUEST_KVM=1 (it hangs on these machines).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '../helpers/fuse-disk';
import { bootGuest, buildInitramfs, buildRootImage, findGuestKernel, guestCacheDir, markerInitScript, missingGuestTools } from '../helpers/guest';
import { makeTestVault } from '../helpers/vault-server';

async function readFromImage(image: string, path: string): Promise<string> {
  const r = await runCommand('debugfs', ['-R', `cat ${path}`, image], { timeoutMs: 30_000 });
  return r.stdout;
}

test('a guest boots from a vault volume; its marker is in the volume, not in the pre-boot snapshot', { timeout: 240_000 }, async (t) => {
  assert.deepEqual(await missingGuestTools(), [], 'tools for the boot test are missing (scripts/install-test-deps.sh)');
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const kernel = findGuestKernel();
  const initrd = await buildInitramfs({ kernel });
  const token = `vault-guest-${randomBytes(12).toString('hex')}`;
  const root = join(v.dir, 'root.img');
  await buildRootImage(root, 64, markerInitScript(token));

  await v.cli('volume', 'create', 'guest', '--size', '64M');
  await v.cli('import', root, 'guest');
  await v.cli('snapshot', 'guest', 'pre-boot');
  const srv = await v.serve();
  t.after(() => srv.kill());

  const boot = await bootGuest({ nbdUri: srv.uri('guest'), initrd: initrd.path, kernel, timeoutMs: 150_000, logPath: join(guestCacheDir(), 'last-boot-vault.log') });
  t.diagnostic(`guest booted from the vault and powered off in ${boot.durationMs} ms (accel ${boot.accel})`);
  assert.match(boot.console, /guest-init: marker written/);

  await runCommand('nbdcopy', [srv.uri('guest'), join(v.dir, 'after.img')], { timeoutMs: 60_000 });
  await runCommand('nbdcopy', [srv.uri('guest@pre-boot'), join(v.dir, 'pre.img')], { timeoutMs: 60_000 });
  assert.equal(await srv.stop(), 0, 'the server flushes and exits cleanly');
  await runCommand('e2fsck', ['-f', '-n', join(v.dir, 'after.img')], { timeoutMs: 60_000 });
  assert.equal(await readFromImage(join(v.dir, 'after.img'), '/marker.txt'), token, 'the marker is in the volume');
  // The pre-boot snapshot is exactly the imported image, byte for byte: no marker, no boot writes.
  const imported = readFileSync(root);
  const pre = readFileSync(join(v.dir, 'pre.img'));
  assert.equal(pre.length, imported.length, 'the pre-boot snapshot has the imported size');
  assert.ok(pre.equals(imported), 'the pre-boot snapshot reads as the imported image');
  // (the token itself is in the image's init script; the marker file is what the boot adds)
  assert.ok(!readFileSync(join(v.dir, 'after.img')).equals(imported), 'the boot changed the volume');
  // and after a restart, from the store itself
  const srv2 = await v.serve();
  t.after(() => srv2.kill());
  await runCommand('nbdcopy', [srv2.uri('guest'), join(v.dir, 'after2.img')], { timeoutMs: 60_000 });
  assert.equal(await readFromImage(join(v.dir, 'after2.img'), '/marker.txt'), token, 'the marker survived a restart');
  await srv2.stop();
});
