// Test helpers: boot a tiny Linux guest with QEMU from an NBD export.
//
// Everything comes from installed Debian packages (linux-image-amd64, busybox-static, kmod,
// cpio, e2fsprogs, qemu-system-x86); nothing is downloaded. Built artefacts are cached under
// <repo>/.nbd-vault-test/guest/ (git-ignored; override with NBD_VAULT_TEST_CACHE).
//
//   buildInitramfs()  a ~2 MB initramfs: busybox + the virtio/ext4 modules, an /init that loads
//                     them, mounts /dev/vda and switch_roots to it.
//   buildRootImage()  a raw ext4 image (mkfs.ext4 -d, no mount needed) whose /sbin/init is a
//                     busybox sh script given by the test (see markerInitScript()).
//   bootGuest()       qemu-system-x86_64 (TCG; KVM only on request) with the export as a virtio
//                     disk; resolves when the guest powers off, rejects on panic or timeout.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, readdirSync, statSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { commandExists, killAndWait, runCommand } from './fuse-disk';

/** The modules the Debian kernel needs for a virtio disk with ext4 (dependencies are resolved). */
export const GUEST_MODULES = [
  'virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci',
  'virtio_blk', 'crc32c_generic', 'jbd2', 'mbcache', 'crc16', 'ext4',
];

const BUSYBOX = '/bin/busybox';

function findRepoRoot(start: string): string {
  let d = start;
  for (let i = 0; i < 10; i++) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, '.git'))) return d;
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  return process.cwd();
}

/** <repo>/.nbd-vault-test/guest, or $NBD_VAULT_TEST_CACHE/guest. */
export function guestCacheDir(): string {
  const base = process.env.NBD_VAULT_TEST_CACHE ?? join(findRepoRoot(__dirname), '.nbd-vault-test');
  return join(base, 'guest');
}

export interface GuestKernel {
  /** /boot/vmlinuz-<kver> */
  path: string;
  kver: string;
}

function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = Number(x);
    const ny = Number(y);
    const c = !Number.isNaN(nx) && !Number.isNaN(ny) ? nx - ny : x.localeCompare(y);
    if (c !== 0) return c;
  }
  return 0;
}

/**
 * The newest /boot/vmlinuz-<kver> whose modules are installed (/lib/modules/<kver>). Not the
 * running kernel: in a container that is the host's. Override with NBD_VAULT_GUEST_KERNEL.
 */
export function findGuestKernel(): GuestKernel {
  const forced = process.env.NBD_VAULT_GUEST_KERNEL;
  if (forced) return { path: forced, kver: basename(forced).replace(/^vmlinuz-/, '') };
  const candidates = existsSync('/boot') ? readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')) : [];
  const usable = candidates
    .map((f) => ({ path: join('/boot', f), kver: f.slice('vmlinuz-'.length) }))
    .filter((k) => existsSync(join('/lib/modules', k.kver, 'modules.dep')))
    .sort((a, b) => compareVersions(b.kver, a.kver));
  if (usable.length === 0) {
    throw new Error(`no kernel with modules in /boot (found: ${candidates.join(', ') || 'none'}); ` +
      'apt-get install -y --no-install-recommends linux-image-amd64');
  }
  return usable[0];
}

/** Tools the guest helpers need; returns the missing ones. */
export async function missingGuestTools(): Promise<string[]> {
  const tools = ['qemu-system-x86_64', 'modprobe', 'cpio', 'gzip', 'mkfs.ext4'];
  const missing: string[] = [];
  for (const t of tools) if (!(await commandExists(t))) missing.push(t);
  if (!existsSync(BUSYBOX)) missing.push(`${BUSYBOX} (busybox-static)`);
  return missing;
}

interface ModuleFile {
  name: string;
  path: string;
}

/** Module files to insmod, in load order, for `modules` (builtins dropped), via modprobe -S. */
export async function resolveModules(kver: string, modules: readonly string[] = GUEST_MODULES): Promise<ModuleFile[]> {
  const seen = new Set<string>();
  const out: ModuleFile[] = [];
  for (const m of modules) {
    const r = await runCommand('modprobe', ['-S', kver, '--show-depends', m], { timeoutMs: 15_000 });
    for (const line of r.stdout.split('\n')) {
      const ins = /^insmod\s+(\S+)/.exec(line.trim());
      if (!ins) continue; // "builtin NAME" or empty
      const path = ins[1];
      if (seen.has(path)) continue;
      seen.add(path);
      out.push({ name: basename(path).replace(/\.ko(\.(xz|gz|zst))?$/, ''), path });
    }
  }
  return out;
}

/** Reads a module file, decompressing .ko.xz/.ko.zst/.ko.gz (busybox insmod takes plain .ko). */
async function readModule(path: string): Promise<Buffer> {
  if (path.endsWith('.ko')) return readFile(path);
  if (path.endsWith('.gz')) return gunzipSync(await readFile(path));
  const tool = path.endsWith('.xz') ? 'xz' : path.endsWith('.zst') ? 'zstd' : null;
  if (!tool) throw new Error(`unknown module format: ${path}`);
  const out: Buffer[] = [];
  await new Promise<void>((resolveP, reject) => {
    const child = spawn(tool, ['-dc', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    child.on('error', (e) => { clearTimeout(timer); reject(new Error(`${tool} -dc ${path}: ${e.message}`)); });
    child.on('close', (code) => {
      clearTimeout(timer);
      code === 0 ? resolveP() : reject(new Error(`${tool} -dc ${path} failed (code ${code}); stderr: ${err.trim()}`));
    });
  });
  return Buffer.concat(out);
}

const INIT_SCRIPT = `#!/bin/busybox sh
# nbd-vault test initramfs: load virtio + ext4, mount /dev/vda, switch_root.
/bin/busybox mkdir -p /proc /sys /dev /newroot /bin /sbin
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "mini-initrd: loading modules"
for m in $(cat /modules.order); do
  insmod /lib/modules/$m.ko || echo "mini-initrd: insmod $m failed"
done
root=/dev/vda
for arg in $(cat /proc/cmdline); do
  case "$arg" in root=*) root="\${arg#root=}";; esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if ! mount -t ext4 -o rw "$root" /newroot; then
  echo "mini-initrd: FAILED to mount $root"; exit 1
fi
if [ ! -x /newroot/sbin/init ]; then echo "mini-initrd: FAILED: no /sbin/init on $root"; exit 1; fi
echo "mini-initrd: switching to $root"
mkdir -p /newroot/dev && mount --move /dev /newroot/dev 2>/dev/null || umount /dev
umount /sys; umount /proc
exec switch_root /newroot /sbin/init
`;

export interface Initramfs {
  /** The gzip'ed newc cpio. */
  path: string;
  kernel: GuestKernel;
  modules: string[];
  /** True if it came from the cache. */
  cached: boolean;
  buildMs: number;
}

/** Builds (or reuses from the cache) the minimal initramfs for `kernel`. */
export async function buildInitramfs(opts: { kernel?: GuestKernel; cacheDir?: string } = {}): Promise<Initramfs> {
  const started = Date.now();
  const kernel = opts.kernel ?? findGuestKernel();
  const cacheDir = opts.cacheDir ?? guestCacheDir();
  const mods = await resolveModules(kernel.kver);
  const bb = await stat(BUSYBOX);
  const key = createHash('sha256')
    .update(JSON.stringify({ kver: kernel.kver, mods: mods.map((m) => m.path), bb: [bb.size, bb.mtimeMs], init: INIT_SCRIPT, v: 1 }))
    .digest('hex')
    .slice(0, 16);
  const out = join(cacheDir, `initrd-${kernel.kver}-${key}.cpio.gz`);
  const modules = mods.map((m) => m.name);
  if (existsSync(out)) return { path: out, kernel, modules, cached: true, buildMs: Date.now() - started };
  // Drop initramfs files of older recipes for this kernel.
  for (const f of existsSync(cacheDir) ? readdirSync(cacheDir) : []) {
    if (f.startsWith(`initrd-${kernel.kver}-`) && f.endsWith('.cpio.gz')) await rm(join(cacheDir, f), { force: true });
  }

  await mkdir(cacheDir, { recursive: true });
  const stage = await mkdtemp(join(cacheDir, 'initrd-stage-'));
  try {
    for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'newroot', 'lib/modules']) await mkdir(join(stage, d), { recursive: true });
    await copyFile(BUSYBOX, join(stage, 'bin/busybox'));
    await chmod(join(stage, 'bin/busybox'), 0o755);
    for (const m of mods) await writeFile(join(stage, 'lib/modules', `${m.name}.ko`), await readModule(m.path));
    await writeFile(join(stage, 'modules.order'), modules.join('\n') + '\n');
    await writeFile(join(stage, 'init'), INIT_SCRIPT, { mode: 0o755 });
    const tmp = `${out}.tmp-${process.pid}`;
    // find | cpio | gzip inside one shell so that a failure anywhere fails the whole pipe.
    await runCommand('bash', ['-o', 'pipefail', '-c', 'cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0 | gzip -6 > "$2"', 'bash', stage, tmp], { timeoutMs: 60_000 });
    await rename(tmp, out);
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
  return { path: out, kernel, modules, cached: false, buildMs: Date.now() - started };
}

/**
 * The guest's /sbin/init for a marker test: writes `content` to `markerPath`, syncs, remounts the
 * root read-only (so the journal is checkpointed and the file is readable from the raw image
 * with debugfs, no journal replay needed), and powers off.
 */
export function markerInitScript(content: string, markerPath = '/marker.txt'): string {
  if (!/^[\w\-.:=+/ ]*$/.test(content)) throw new Error('marker content: use [A-Za-z0-9_-.:=+/ ] only');
  return `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
echo "guest-init: started"
printf '%s' '${content}' > ${markerPath}
sync
mount -o remount,ro / || echo "guest-init: remount ro failed"
echo "guest-init: marker written, powering off"
poweroff -f
`;
}

/**
 * A raw ext4 image of `sizeMB` MiB built with `mkfs.ext4 -q -F -d rootfs IMG` (no mount): busybox
 * with its applets in /bin, /sbin/init = `initScript`, and empty /proc /sys /dev /tmp.
 */
export async function buildRootImage(path: string, sizeMB: number, initScript: string, opts: { files?: Record<string, string | Buffer> } = {}): Promise<void> {
  await mkdir(dirname(resolve(path)), { recursive: true });
  const stage = await mkdtemp(join(dirname(resolve(path)), '.rootfs-stage-'));
  try {
    for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'root']) await mkdir(join(stage, d), { recursive: true });
    await copyFile(BUSYBOX, join(stage, 'bin/busybox'));
    await chmod(join(stage, 'bin/busybox'), 0o755);
    const applets = (await runCommand(BUSYBOX, ['--list'], { timeoutMs: 10_000 })).stdout.split('\n').map((s) => s.trim()).filter((s) => s && s !== 'busybox' && /^[\w.\-[\]]+$/.test(s));
    for (const a of applets) await symlink('busybox', join(stage, 'bin', a));
    await writeFile(join(stage, 'sbin/init'), initScript, { mode: 0o755 });
    await chmod(join(stage, 'sbin/init'), 0o755);
    for (const [rel, content] of Object.entries(opts.files ?? {})) {
      const p = join(stage, rel.replace(/^\/+/, ''));
      await mkdir(dirname(p), { recursive: true });
      await writeFile(p, content);
    }
    await rm(path, { force: true });
    await runCommand('mkfs.ext4', ['-q', '-F', '-d', stage, path, `${sizeMB}M`], { timeoutMs: 60_000 });
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

/** True if /dev/kvm is wanted (NBD_VAULT_GUEST_KVM=1) and openable. Off by default: on the PVM
 * hosts we run on, /dev/kvm exists but stock kernels hang under it. */
export function kvmRequested(): boolean {
  return process.env.NBD_VAULT_GUEST_KVM === '1' && existsSync('/dev/kvm');
}

export interface BootOptions {
  /** e.g. nbd://127.0.0.1:10809/vol — the guest's /dev/vda. */
  nbdUri: string;
  /** Kill QEMU and reject after this long. Default 60 s. */
  timeoutMs?: number;
  kernel?: GuestKernel;
  /** Default: buildInitramfs() (cached). */
  initrd?: string;
  memoryMB?: number;
  /** Console log file. Default: in the guest cache dir. */
  logPath?: string;
  /** Extra kernel command line. */
  append?: string;
  /** Extra QEMU arguments. */
  qemuArgs?: string[];
}

export interface BootResult {
  exitCode: number;
  durationMs: number;
  /** Console output (serial + QEMU's stderr), CRs removed. */
  console: string;
  /** The console log file ('' when the default log was removed after a successful boot). */
  logPath: string;
  accel: string;
}

export class GuestBootError extends Error {
  constructor(message: string, readonly console: string, readonly logPath: string) {
    super(message);
    this.name = 'GuestBootError';
  }
}

/** The console's own lines from our init scripts and the panic line, then the last lines. */
function consoleTail(s: string, lines = 30): string {
  const all = s.split('\n');
  const key = all.filter((l) => /mini-initrd:|guest-init:|Kernel panic|insmod:|mount:|EXT4-fs error/.test(l));
  return `${key.length ? `key lines:\n${key.slice(-20).join('\n')}\n` : ''}last ${lines} lines:\n${all.slice(-lines).join('\n')}`;
}

const PANIC = /Kernel panic - not syncing|end Kernel panic|Attempted to kill init/;

/**
 * Boots the guest from the export. Resolves when QEMU exits 0 (the guest powered off);
 * rejects with the console tail on timeout, kernel panic or a QEMU error.
 */
export async function bootGuest(opts: BootOptions): Promise<BootResult> {
  const kernel = opts.kernel ?? findGuestKernel();
  const initrd = opts.initrd ?? (await buildInitramfs({ kernel })).path;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  // A default log is kept only when the boot fails (its path is in the error).
  const logPath = opts.logPath ?? join(guestCacheDir(), 'logs', `boot-${process.pid}-${Date.now()}.log`);
  await mkdir(dirname(logPath), { recursive: true });
  const accel = kvmRequested() ? 'kvm:tcg' : 'tcg';
  const append = ['root=/dev/vda', 'rw', 'console=ttyS0', 'panic=-1', 'quiet', 'loglevel=4', opts.append ?? ''].filter(Boolean).join(' ');
  const args = [
    '-machine', `q35,accel=${accel}`,
    '-m', String(opts.memoryMB ?? 512),
    '-nographic', '-no-reboot', '-nic', 'none',
    '-kernel', kernel.path,
    '-initrd', initrd,
    '-append', append,
    '-drive', `file=${opts.nbdUri},format=raw,if=virtio,cache=none`,
    ...(opts.qemuArgs ?? []),
  ];
  const started = Date.now();
  const log = createWriteStream(logPath);
  let consoleText = '';
  return new Promise<BootResult>((resolveP, reject) => {
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let failure: string | null = null;
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      log.end(fn);
    };
    const stop = (why: string) => {
      if (failure) return;
      failure = why;
      if (child.pid) void killAndWait(child.pid, 5000);
    };
    const timer = setTimeout(() => stop(`guest did not power off within ${timeoutMs} ms`), timeoutMs);
    const onData = (d: Buffer) => {
      log.write(d);
      consoleText += d.toString('latin1');
      if (consoleText.length > 1_000_000) consoleText = consoleText.slice(-500_000);
      if (PANIC.test(consoleText)) setTimeout(() => stop('kernel panic in the guest'), 500); // let the panic text arrive
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (err) => finish(() => reject(new GuestBootError(`qemu-system-x86_64: cannot start: ${err.message}`, consoleText, logPath))));
    child.on('close', (code, signal) => {
      const durationMs = Date.now() - started;
      const text = consoleText.replace(/\r/g, '');
      if (!failure && PANIC.test(text)) failure = 'kernel panic in the guest';
      if (!failure && code !== 0) failure = `qemu-system-x86_64 exited with ${code === null ? `signal ${signal}` : `code ${code}`}`;
      finish(() => {
        if (failure) {
          reject(new GuestBootError(`${failure} (after ${durationMs} ms; log ${logPath}); console tail:\n${consoleTail(text)}`, text, logPath));
        } else {
          if (!opts.logPath) void rm(logPath, { force: true }).catch(() => undefined);
          resolveP({ exitCode: code ?? 0, durationMs, console: text, logPath: opts.logPath ?? '', accel });
        }
      });
    });
  });
}

/** Size of a file in bytes (for images). */
export function fileSize(path: string): number {
  return statSync(path).size;
}
