// Proves test/helpers/guest.ts against the reference server nbdkit: a Linux guest boots under
// QEMU (TCG) from an NBD export, writes a marker file and powers off; the marker is then found
// in the export's filesystem without mounting it (debugfs on a copy read back with nbdcopy).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commandExists, runCommand, startNbdkit, NbdkitServer } from '../helpers/fuse-disk';
import { bootGuest, buildInitramfs, buildRootImage, findGuestKernel, guestCacheDir, markerInitScript, missingGuestTools } from '../helpers/guest';

/** debugfs prints a file's content without mounting (no journal replay: the guest remounted ro). */
async function readFromImage(image: string, path: string): Promise<string> {
  const r = await runCommand('debugfs', ['-R', `cat ${path}`, image], { timeoutMs: 30_000 });
  return r.stdout;
}

test('guest boots from an nbdkit export, writes a marker, powers off', { timeout: 180_000 }, async (t) => {
  const missing = await missingGuestTools();
  for (const tool of ['nbdkit', 'nbdcopy', 'debugfs']) if (!(await commandExists(tool))) missing.push(tool);
  assert.deepEqual(missing, [], 'tools for the boot test are missing: apt-get install -y --no-install-recommends ' +
    'qemu-system-x86 linux-image-amd64 busybox-static kmod cpio e2fsprogs nbdkit libnbd-bin');

  const work = await mkdtemp(join(tmpdir(), 'guest-boot-test-'));
  let server: NbdkitServer | undefined;
  t.after(async () => {
    await server?.stop().catch((e) => console.error('cleanup nbdkit:', e.message));
    await rm(work, { recursive: true, force: true }).catch(() => undefined);
  });

  const kernel = findGuestKernel();
  const initrd = await buildInitramfs({ kernel });
  t.diagnostic(`kernel ${kernel.path}; initramfs ${initrd.path} (${initrd.cached ? 'cached' : 'built'} in ${initrd.buildMs} ms; modules ${initrd.modules.join(' ')})`);

  const token = `nbd-vault-${randomBytes(12).toString('hex')}`;
  const root = join(work, 'root.img');
  let t0 = Date.now();
  await buildRootImage(root, 64, markerInitScript(token));
  t.diagnostic(`root image built in ${Date.now() - t0} ms`);
  assert.equal(await readFromImage(root, '/marker.txt').catch(() => ''), '', 'no marker before the boot');

  server = await startNbdkit(['memory', '64M']);
  await runCommand('nbdcopy', [root, server.uri], { timeoutMs: 60_000 });

  const boot = await bootGuest({ nbdUri: server.uri, initrd: initrd.path, kernel, timeoutMs: 90_000, logPath: join(guestCacheDir(), 'last-boot-nbdkit.log') });
  t.diagnostic(`guest booted and powered off in ${boot.durationMs} ms (accel ${boot.accel}); console ${boot.logPath}`);
  assert.match(boot.console, /guest-init: marker written/, 'guest ran its /sbin/init to the end');

  const out = join(work, 'out.img');
  await runCommand('nbdcopy', [server.uri, out], { timeoutMs: 60_000 });
  // The filesystem the guest left behind is clean (it remounted read-only before powering off).
  await runCommand('e2fsck', ['-f', '-n', out], { timeoutMs: 60_000 });
  assert.equal(await readFromImage(out, '/marker.txt'), token, 'marker written by the guest is in the export');
  // The original image is untouched: the marker is only in what the server holds.
  assert.equal(await readFromImage(root, '/marker.txt').catch(() => ''), '');
});

test('bootGuest rejects with the console tail when the root filesystem is missing', { timeout: 120_000 }, async (t) => {
  const missing = await missingGuestTools();
  if (!(await commandExists('nbdkit'))) missing.push('nbdkit');
  assert.deepEqual(missing, [], 'tools for the boot test are missing');
  let server: NbdkitServer | undefined;
  t.after(async () => {
    await server?.stop().catch((e) => console.error('cleanup nbdkit:', e.message));
  });
  server = await startNbdkit(['memory', '16M']); // all zeros: no filesystem → /init exits → panic
  await assert.rejects(bootGuest({ nbdUri: server.uri, timeoutMs: 60_000, logPath: join(guestCacheDir(), 'last-boot-fail.log') }), (err: Error) => {
    assert.match(err.message, /kernel panic/);
    assert.match(err.message, /mini-initrd: FAILED to mount/);
    return true;
  });
});
