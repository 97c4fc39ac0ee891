// Test helpers: a real block device and filesystem on an NBD export, without /dev/nbd*.
//
//   nbdfuse exposes the export as DIR/disk.img (a FUSE file), `losetup` turns that file into a
//   loop device, and the kernel's ext4 runs on top. TRIM from the filesystem (mkfs, fstrim)
//   reaches the NBD server. See /work/shared/reference/test-infrastructure.md.
//
// Every external command runs with a time limit; a failure names the command and carries its
// stderr. Cleanup (`detach`) is idempotent and carries on past partial failures.
import { spawn, ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, lstat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

// ---------------------------------------------------------------------------------------------
// Running commands

export interface RunOptions {
  /** Kill the command (SIGKILL) after this many ms. Default 60 s. */
  timeoutMs?: number;
  /** Written to the command's stdin. */
  input?: string | Buffer;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Exit codes that count as success. Default [0]. */
  okCodes?: number[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
  durationMs: number;
}

export class CommandError extends Error {
  constructor(
    message: string,
    readonly command: string,
    readonly stderr: string,
    readonly code: number | null,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

function quote(a: string): string {
  return /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

export function formatCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map(quote).join(' ');
}

function tail(s: string, max = 4000): string {
  return s.length > max ? '…' + s.slice(-max) : s;
}

/** Runs a command to completion, bounded in time. Rejects with a CommandError naming it. */
export function runCommand(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const okCodes = opts.okCodes ?? [0];
  const shown = formatCommand(cmd, args);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(cmd, args, {
        cwd: opts.cwd,
        env: opts.env ?? process.env,
        stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      });
    } catch (err) {
      reject(new CommandError(`${shown}: cannot start: ${(err as Error).message}`, shown, '', null));
      return;
    }
    const out: Buffer[] = [];
    const errb: Buffer[] = [];
    let timedOut = false;
    let settled = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => errb.push(d));
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => undefined); // EPIPE if the command exits early
      child.stdin!.end(opts.input);
    }
    child.on('error', (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new CommandError(`${shown}: cannot start: ${err.message}`, shown, '', null));
    });
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(errb).toString();
      const durationMs = Date.now() - started;
      if (timedOut) {
        reject(new CommandError(`${shown}: timed out after ${timeoutMs} ms; stderr: ${tail(stderr.trim()) || '(empty)'}`, shown, stderr, null));
      } else if (code === null || !okCodes.includes(code)) {
        const how = code === null ? `killed by ${signal}` : `exit code ${code}`;
        reject(new CommandError(`${shown} failed (${how}); stderr: ${tail(stderr.trim()) || '(empty)'}`, shown, stderr, code));
      } else {
        resolve({ stdout, stderr, code, durationMs });
      }
    });
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` every `intervalMs` until it returns true or `timeoutMs` passes. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Sends SIGTERM, then SIGKILL, waiting at most `timeoutMs` in all. True if the pid is gone. */
export async function killAndWait(pid: number, timeoutMs = 5000): Promise<boolean> {
  if (!isAlive(pid)) return true;
  try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
  if (await waitFor(() => !isAlive(pid), Math.floor(timeoutMs * 0.6))) return true;
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  return waitFor(() => !isAlive(pid), Math.ceil(timeoutMs * 0.4));
}

// ---------------------------------------------------------------------------------------------
// Environment checks

/** Why a real filesystem on an export cannot be tested here, or null if it can. */
export async function fuseLoopUnavailableReason(): Promise<string | null> {
  if (!existsSync('/dev/fuse')) return '/dev/fuse is absent (FUSE is needed for nbdfuse)';
  try {
    closeSync(openSync('/dev/fuse', 'r+'));
  } catch (err) {
    return `/dev/fuse cannot be opened: ${(err as Error).message}`;
  }
  try {
    await runCommand('losetup', ['-f'], { timeoutMs: 10_000 });
  } catch (err) {
    return `no free loop device (losetup -f): ${(err as Error).message}`;
  }
  for (const tool of ['nbdfuse', 'fusermount3', 'mkfs.ext4']) {
    if (!(await commandExists(tool))) return `${tool} is not installed`;
  }
  return null;
}

export async function commandExists(cmd: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    if (dir && existsSync(join(dir, cmd))) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// A reference NBD server (nbdkit) for proving helpers before our own server exists

export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface NbdkitServer {
  uri: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/**
 * Starts `nbdkit -P PIDFILE -i 127.0.0.1 -p PORT PLUGIN ARGS…` in its own daemon mode (a
 * foreground nbdkit dies with its parent script). Default plugin: `memory 1G`.
 */
export async function startNbdkit(pluginArgs: string[] = ['memory', '1G'], extraArgs: string[] = []): Promise<NbdkitServer> {
  const dir = await mkdtemp(join(tmpdir(), 'nbdkit-'));
  const pidFile = join(dir, 'nbdkit.pid');
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freeLoopbackPort();
    try {
      await runCommand('nbdkit', ['-P', pidFile, '-i', '127.0.0.1', '-p', String(port), ...extraArgs, ...pluginArgs], { timeoutMs: 15_000 });
    } catch (err) {
      lastErr = err; // port taken between probe and bind: try another
      continue;
    }
    if (!(await waitFor(() => existsSync(pidFile), 5000))) throw new Error(`nbdkit started but wrote no pid file ${pidFile}`);
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    let stopped: Promise<void> | undefined;
    return {
      uri: `nbd://127.0.0.1:${port}`,
      port,
      pid,
      stop: () =>
        (stopped ??= (async () => {
          const gone = await killAndWait(pid, 5000);
          await rm(dir, { recursive: true, force: true });
          if (!gone) throw new Error(`nbdkit pid ${pid} did not exit`);
        })()),
    };
  }
  throw lastErr;
}

// ---------------------------------------------------------------------------------------------
// Export → file → loop device

export interface AttachOptions {
  /** nbdfuse -r and losetup -r. */
  readOnly?: boolean;
  /** Max time to wait for nbdfuse's pid file (= ready). Default 15 s. */
  readyTimeoutMs?: number;
  /** nbdfuse -C N (connections). Default: nbdfuse's own (several if the server allows multi-conn). */
  connections?: number;
}

export interface AttachedDisk {
  /** DIR/disk.img, the export as a file. */
  file: string;
  /** /dev/loopN on top of `file`. */
  loopDevice: string;
  /** The FUSE mount point (DIR). */
  fuseDir: string;
  readOnly: boolean;
  nbdfusePid: number;
  /** Syncs, detaches the loop device, unmounts FUSE, waits for nbdfuse. Idempotent. */
  detach(): Promise<void>;
}

/**
 * Exposes the export `uri` as the file DIR/disk.img with nbdfuse (DIR is created and becomes the
 * FUSE mount point: keep it empty and dedicated), then attaches a loop device to it.
 */
export async function attachNbdAsFile(uri: string, dir: string, opts: AttachOptions = {}): Promise<AttachedDisk> {
  const readOnly = opts.readOnly ?? false;
  await mkdir(dir, { recursive: true });
  const side = await mkdtemp(join(tmpdir(), 'nbdfuse-')); // pid file + log, outside the mount point
  const pidFile = join(side, 'nbdfuse.pid');
  const logFile = join(side, 'nbdfuse.log');
  const file = join(dir, 'disk.img');
  const args = ['-P', pidFile];
  if (readOnly) args.push('-r');
  if (opts.connections !== undefined) args.push('-C', String(opts.connections));
  args.push(file, uri);
  const shown = formatCommand('nbdfuse', args);

  const logFd = openSync(logFile, 'w');
  let child: ChildProcess;
  try {
    // Detached: its own process group, so a Ctrl-C to the test run does not kill it before the
    // filesystem on top of it is unmounted.
    child = spawn('nbdfuse', args, { detached: true, stdio: ['ignore', logFd, logFd] });
  } finally {
    closeSync(logFd);
  }
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  let spawnError: Error | null = null;
  const exitPromise = new Promise<void>((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve();
    });
    child.on('error', (err) => {
      spawnError = err;
      exited = { code: null, signal: null };
      resolve();
    });
  });
  child.unref(); // the test process must not hang on it; detach() waits for it explicitly
  const readLog = async () => tail((await readFile(logFile, 'utf8').catch(() => '')).trim()) || '(empty)';

  let loopDevice = '';
  let detachPromise: Promise<void> | undefined;
  const fuseDir = dir;

  const detach = (): Promise<void> =>
    (detachPromise ??= (async () => {
      const problems: string[] = [];
      // 1. Flush page caches down to the loop device and the FUSE file.
      await runCommand('sync', [], { timeoutMs: 60_000 }).catch((e) => problems.push((e as Error).message));
      // 2. Loop device. `losetup -d` on a busy device only sets autoclear; check it is gone.
      if (loopDevice) {
        const dev = loopDevice;
        // A filesystem still mounted from it (a test that failed half-way): unmount it first,
        // else the loop device stays busy and nbdfuse cannot go.
        for (const m of await mountPointsOf(dev)) {
          await unmount(m, 30_000).catch(async (e) => {
            problems.push((e as Error).message);
            await runCommand('umount', ['-l', m], { timeoutMs: 15_000 }).catch(() => undefined);
          });
        }
        let ok = false;
        let lastErr = '';
        for (let i = 0; i < 5 && !ok; i++) {
          try {
            await runCommand('losetup', ['-d', dev], { timeoutMs: 15_000 });
            ok = true;
          } catch (e) {
            lastErr = (e as Error).message;
            if (!(await loopBackedBy(dev, file))) ok = true; // already gone
            else await sleep(200 * (i + 1));
          }
        }
        if (!ok) problems.push(lastErr);
        // Wait (bounded) until the kernel has really released the backing file.
        if (ok && !(await waitFor(async () => !(await loopBackedBy(dev, file)), 10_000, 100))) {
          problems.push(`${dev} still attached to ${file} 10 s after losetup -d (still in use?)`);
        }
      }
      // 3. FUSE mount. Busy for a moment after the loop device lets go: retry, then lazy.
      if (exited === null && (await isMountPoint(fuseDir))) {
        let ok = false;
        let lastErr = '';
        for (let i = 0; i < 10 && !ok; i++) {
          try {
            await runCommand('fusermount3', ['-u', fuseDir], { timeoutMs: 15_000 });
            ok = true;
          } catch (e) {
            lastErr = (e as Error).message;
            if (!(await isMountPoint(fuseDir))) ok = true;
            else await sleep(200 * (i + 1));
          }
        }
        if (!ok) {
          problems.push(lastErr);
          await runCommand('fusermount3', ['-u', '-z', fuseDir], { timeoutMs: 15_000 }).catch((e) => problems.push((e as Error).message));
        }
      }
      // 4. nbdfuse exits by itself once unmounted; make sure.
      if (exited === null && !(await Promise.race([exitPromise.then(() => true), sleep(10_000).then(() => false)]))) {
        problems.push(`nbdfuse (pid ${child.pid}) did not exit within 10 s after unmount; killed`);
        if (child.pid) await killAndWait(child.pid, 5000);
      }
      if (await isMountPoint(fuseDir)) {
        await runCommand('fusermount3', ['-u', '-z', fuseDir], { timeoutMs: 15_000 }).catch(() => undefined);
      }
      const log = await readLog();
      await rm(side, { recursive: true, force: true }).catch(() => undefined);
      if (problems.length > 0) {
        throw new Error(`detach of ${uri} (${fuseDir}) had problems:\n- ${problems.join('\n- ')}\nnbdfuse log: ${log}`);
      }
    })());

  try {
    const ready = await waitFor(() => exited !== null || existsSync(pidFile), opts.readyTimeoutMs ?? 15_000);
    if (spawnError) throw new CommandError(`${shown}: cannot start: ${(spawnError as Error).message}`, shown, '', null);
    if (exited !== null) {
      const e = exited as { code: number | null; signal: NodeJS.Signals | null };
      throw new CommandError(`${shown} exited early (code ${e.code}, signal ${e.signal}); output: ${await readLog()}`, shown, await readLog(), e.code);
    }
    if (!ready) throw new CommandError(`${shown}: no pid file after ${opts.readyTimeoutMs ?? 15_000} ms; output: ${await readLog()}`, shown, await readLog(), null);
    if (!existsSync(file)) throw new Error(`${shown} is running but ${file} does not exist`);
    const r = await runCommand('losetup', [...(readOnly ? ['-r'] : []), '-f', '--show', file], { timeoutMs: 30_000 });
    loopDevice = r.stdout.trim();
    if (!loopDevice.startsWith('/dev/loop')) throw new Error(`losetup -f --show ${file} printed ${JSON.stringify(r.stdout)}`);
  } catch (err) {
    await detach().catch(() => undefined);
    throw err;
  }
  return { file, loopDevice, fuseDir, readOnly, nbdfusePid: child.pid ?? 0, detach };
}

/** True if `dev` is a loop device currently backed by `file`. */
async function loopBackedBy(dev: string, file: string): Promise<boolean> {
  const name = dev.replace(/^\/dev\//, '');
  try {
    const backing = (await readFile(`/sys/block/${name}/loop/backing_file`, 'utf8')).trim();
    return backing === file || backing.startsWith(file);
  } catch {
    return false; // no loop/ directory: not attached
  }
}

/** Mount points whose source is `device` (per /proc/self/mountinfo), deepest first. */
export async function mountPointsOf(device: string): Promise<string[]> {
  const unescaped = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
  try {
    const info = await readFile('/proc/self/mountinfo', 'utf8');
    const out: string[] = [];
    for (const line of info.split('\n')) {
      const [left, right] = line.split(' - ');
      if (!right) continue;
      if (unescaped(right.split(' ')[1] ?? '') === device) out.push(unescaped(left.split(' ')[4]));
    }
    return out.sort((a, b) => b.length - a.length);
  } catch {
    return [];
  }
}

/** True if `dir` is a mount point (per /proc/self/mountinfo). */
export async function isMountPoint(dir: string): Promise<boolean> {
  try {
    const info = await readFile('/proc/self/mountinfo', 'utf8');
    const unescaped = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
    return info.split('\n').some((line) => line.split(' ')[4] !== undefined && unescaped(line.split(' ')[4]) === dir);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Filesystems

export interface MountOptions {
  readOnly?: boolean;
  /** Extra `-o` options, e.g. ['noload'] for a read-only mount that must not replay a journal. */
  options?: string[];
  fsType?: string;
  timeoutMs?: number;
}

/** `mkfs.ext4 -q -F DEVICE` (discards the whole device first), then mounts it on `mountDir`. */
export async function mkfsAndMount(device: string, mountDir: string, opts: { mkfsArgs?: string[]; timeoutMs?: number } = {}): Promise<void> {
  await runCommand('mkfs.ext4', ['-q', '-F', ...(opts.mkfsArgs ?? []), device], { timeoutMs: opts.timeoutMs ?? 120_000 });
  await mountDevice(device, mountDir, { fsType: 'ext4', timeoutMs: opts.timeoutMs });
}

/** Mounts an existing filesystem; creates `mountDir` if needed. */
export async function mountDevice(device: string, mountDir: string, opts: MountOptions = {}): Promise<void> {
  await mkdir(mountDir, { recursive: true });
  const o = [...(opts.readOnly ? ['ro'] : []), ...(opts.options ?? [])];
  const args = [...(opts.fsType ? ['-t', opts.fsType] : []), ...(o.length ? ['-o', o.join(',')] : []), device, mountDir];
  await runCommand('mount', args, { timeoutMs: opts.timeoutMs ?? 60_000 });
}

/** Unmounts `mountDir` (after a sync), retrying while busy; a no-op if it is not mounted. */
export async function unmount(mountDir: string, timeoutMs = 60_000): Promise<void> {
  if (!(await isMountPoint(mountDir))) return;
  await runCommand('sync', [], { timeoutMs }).catch(() => undefined);
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (let i = 0; Date.now() < deadline; i++) {
    try {
      await runCommand('umount', [mountDir], { timeoutMs: Math.max(1000, deadline - Date.now()) });
      return;
    } catch (err) {
      lastErr = err;
      if (!(await isMountPoint(mountDir))) return;
      await sleep(Math.min(1000, 100 * (i + 1)));
    }
  }
  throw lastErr ?? new Error(`umount ${mountDir}: timed out`);
}

// ---------------------------------------------------------------------------------------------
// Checksums

/** sha256 of a file's content, hex. Streams: memory stays small for big images. */
export function fileSha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path, { highWaterMark: 1 << 20 })
      .on('data', (d) => h.update(d))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

export interface TreeChecksumOptions {
  /** Relative paths (files or directories) to leave out. Default ['lost+found']. */
  exclude?: string[];
}

/**
 * One sha256 over every regular file's and symlink's relative path and content (symlinks: their
 * target), sorted by path — equal trees give equal sums wherever they are mounted. Directories
 * count only through what they hold; modes, owners and times do not count.
 */
export async function treeChecksum(dir: string, opts: TreeChecksumOptions = {}): Promise<string> {
  const exclude = new Set(opts.exclude ?? ['lost+found']);
  const entries: { rel: string; kind: 'f' | 'l'; abs: string }[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const name of await readdir(d)) {
      const abs = join(d, name);
      const rel = relative(dir, abs);
      if (exclude.has(rel)) continue;
      const st = await lstat(abs);
      if (st.isDirectory()) await walk(abs);
      else if (st.isSymbolicLink()) entries.push({ rel, kind: 'l', abs });
      else if (st.isFile()) entries.push({ rel, kind: 'f', abs });
    }
  };
  await walk(dir);
  entries.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  const h = createHash('sha256');
  for (const e of entries) {
    const content = e.kind === 'l' ? createHash('sha256').update(await readlink(e.abs)).digest('hex') : await fileSha256(e.abs);
    h.update(`${e.kind} ${Buffer.from(e.rel).toString('base64')} ${content}\n`);
  }
  return h.digest('hex');
}
