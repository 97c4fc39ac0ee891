// FsStore: the embedded default store, objects as files under one directory.
//
// Layout. A key `a/b/name` is the file `ROOT/a/b/hh~/name`, where each segment is escaped (bytes
// outside [A-Za-z0-9._-] become %XX, so no name contains '~') and `hh` is the first two hex digits
// of sha256(name): at most 256 fan-out directories per key directory, whatever the ids look like,
// so a 1 TiB volume's 262,144 chunks sit ~1,024 to a directory (5,000 keys: ~20). Names ending in
// '~' are fan-out directories, names starting with '~' are temp files (crash leftovers, ignored by
// list), any other directory is a key segment. So the keys `a/b` and `a/b/c` can coexist, as in S3.
//
// File format: 8-byte magic "NBDVOBJ1", 16-byte etag, then the body; head/list read 24 bytes. The
// etag is 16 random bytes drawn per put (32 hex chars): every version its own tag, even of the
// same bytes, as conditional puts want; not a content hash, which cost a write's main thread a
// third of its time (sha256 of every 4 MiB chunk). Older files hold a content hash: as opaque.
//
// Guarantees:
// - put is atomic and durable on return: temp file, write, fsync, rename (or link), fsync of the
//   directory (and of each directory it had to create). A crash leaves the old or the new object,
//   never a mix, plus perhaps a `~tmp-*` file that list ignores.
// - ifNoneMatch '*' uses link(temp, final), which fails with EEXIST if the key exists: atomic even
//   across processes sharing the directory.
// - ifMatch compares the current etag and renames under a per-key in-process lock (KeyedMutex): atomic
//   within one process; two processes doing ifMatch on one key are NOT serialised (use s3 for that).
// - delete is idempotent; empty directories are left in place (removing them would race with puts).
// - A full filesystem: `~reserve` at the root holds room that only puts of metadata spend
//   (space-reserve.ts), so the commands that free room still run.
// - Errors: ENOENT on read → ERR_STORE_NOT_FOUND; EACCES/EPERM/EROFS → ERR_STORE_DENIED; a file with a
//   bad header → ERR_STORE_IO; EMFILE/ENFILE/EAGAIN/EBUSY → ERR_STORE_TRANSIENT; others → ERR_STORE_IO.
import { randomBytes } from 'node:crypto';
import { promises as fsp, constants as fsc, type Dirent } from 'node:fs';
import * as path from 'node:path';
import { VaultError, isVaultError } from '../errors';
import { MAX_OBJECT_BYTES, childSegmentsFromList, readTarget, type ObjectInfo, type ObjectStore, type PutOptions, type StoredObject, type StoreProps } from './object-store';
import { checkKey, checkPrefix, checkRange } from './keys';
import { KeyedMutex } from '../util/keyed-mutex';
import { compareKeys } from './memory-store';
import { OpenFileCache, readAt } from './open-file-cache';
import { writevAll } from '../util/write-all';
import { makeDirs } from '../util/make-dirs';
import { RESERVE_BYTES, SpaceReserve, isSpaceExhausted } from './space-reserve';
import { escapeSegment, fanoutDir, unescapeSegment } from './fs-layout';
import { removeEmptyTrees, sweepTemporaryFiles } from './fs-tidy';

const MAGIC = Buffer.from('NBDVOBJ1', 'ascii');
const ETAG_BYTES = 16;
const HEADER_BYTES = MAGIC.length + ETAG_BYTES;

interface OpenObjectFile {
  readonly handle: fsp.FileHandle;
  readonly ino: bigint;
  readonly dev: bigint;
  readonly fileSize: bigint;
  readonly bodySize: number;
  close(): Promise<void>;
}

// Test hook (crash-safety tests): NBD_VAULT_TEST_FS_CRASH_AT=<step> kills this process at that step
// of a put; =mutation:<n> right after the n-th durable put or delete of the process.
const CRASH_AT = process.env.NBD_VAULT_TEST_FS_CRASH_AT;
let mutations = 0;
function crashPoint(step: string): void {
  if (CRASH_AT === undefined) return;
  if ((step === 'dir-synced' || step === 'unlinked') && CRASH_AT === `mutation:${++mutations}`) process.kill(process.pid, 'SIGKILL');
  if (CRASH_AT === step) process.kill(process.pid, 'SIGKILL');
}

export interface FsStoreOptions {
  /** fsync files and directories (default true). Tests may turn it off for speed. */
  readonly fsync?: boolean;
  readonly maxConcurrency?: number;
  /** bytes kept in `~reserve` for the puts that free space when the filesystem is full
   *  (space-reserve.ts; default RESERVE_BYTES, 0: none) */
  readonly reserveBytes?: number;
}

export class FsStore implements ObjectStore {
  readonly name: string;
  readonly props: StoreProps;
  readonly root: string;
  private readonly fsync: boolean;
  private readonly locks = new KeyedMutex<string>();
  private readonly reserve: SpaceReserve;
  /** object files kept open for getRange, by key; put and delete retire theirs */
  private readonly openFiles = new OpenFileCache<string, OpenObjectFile>((key) => this.openForRanges(key));

  constructor(root: string, opts: FsStoreOptions = {}) {
    if (typeof root !== 'string' || root === '') {
      throw new VaultError('ERR_INVALID_ARGUMENT', 'fs store: empty directory path');
    }
    this.root = path.resolve(root);
    this.name = `fs(${this.root})`;
    this.fsync = opts.fsync ?? true;
    this.props = { atomicReplace: true, conditionalPut: true, maxConcurrency: opts.maxConcurrency ?? 16 };
    this.reserve = new SpaceReserve(this.root, opts.reserveBytes ?? RESERVE_BYTES, this.fsync);
  }

  /** The file that holds `key` (tests and tools). */
  pathOf(key: string): string {
    checkKey(key);
    const segs = key.split('/');
    const last = segs.pop()!;
    return path.join(this.root, ...segs.map(escapeSegment), fanoutDir(last), escapeSegment(last));
  }

  async get(key: string, into?: Buffer): Promise<StoredObject> {
    const file = this.pathOf(key);
    let data: Buffer;
    try {
      data = await this.readWhole(file, key, into);
    } catch (err) {
      throw this.fsError(err, 'get', key);
    }
    const etag = this.parseHeader(data, key);
    return { body: data.subarray(HEADER_BYTES), etag };
  }

  /**
   * A whole object file in one pread, into `into` when it fits, else into fresh memory (readFile
   * reads in 512 KiB pieces, a thread-pool request each, and always into fresh memory).
   */
  private async readWhole(file: string, key: string, into?: Buffer): Promise<Buffer> {
    const { fh, size } = await this.openObjectFile(file, key);
    try {
      if (size > MAX_OBJECT_BYTES + HEADER_BYTES) throw new VaultError('ERR_STORE_IO', `${this.name}: ${key}: ${size} bytes, larger than any object nbd-vault writes (at most ${MAX_OBJECT_BYTES}): not read`);
      const out = readTarget(into, size);
      // objects are replaced by rename, never rewritten in place: the open file keeps its size
      if ((await readAt(fh, out, 0)) < size) throw new VaultError('ERR_STORE_IO', `${this.name}: ${key}: file shorter than its size while reading`);
      return out;
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  /**
   * A pread of the body bytes (never the whole file) from a file kept open between reads (its
   * header checked and its size taken when opened), beside a stat of the path: a file replaced
   * (rename of a new one) or deleted since it was opened — by this process or another sharing
   * the directory — is never read through the stale descriptor. Two thread-pool requests per
   * read instead of five (open, header, fstat, pread, close).
   */
  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    const file = this.pathOf(key);
    checkRange(offset, length);
    try {
      for (let attempt = 1; ; attempt++) {
        const got = await this.openFiles.use(key, async (opened) => {
          const want = Math.max(0, Math.min(offset + length, opened.bodySize) - offset);
          const out = Buffer.allocUnsafe(want);
          const [now, read] = await Promise.allSettled([fsp.stat(file, { bigint: true }), readAt(opened.handle, out, HEADER_BYTES + offset)]);
          if (now.status === 'rejected') throw now.reason; // deleted: ENOENT → not found
          if (read.status === 'rejected') throw read.reason;
          if (read.value < want) throw new VaultError('ERR_STORE_IO', `${this.name}: ${key}: file shorter than its size while reading`);
          const same = now.value.ino === opened.ino && now.value.dev === opened.dev && now.value.size === opened.fileSize;
          return same ? out : null;
        });
        if (got) return got;
        this.openFiles.retire(key); // a newer file under the same name: open that one
        if (attempt === 3) throw new VaultError('ERR_STORE_TRANSIENT', `${this.name}: ${key} was replaced during each of 3 reads`);
      }
    } catch (err) {
      throw this.fsError(err, 'getRange', key);
    }
  }

  /** Opens an object's file to read it: nonblocking, so that a FIFO put where an object was
   *  (the open of one waits for a writer, holding a thread-pool thread for good) is refused as
   *  what it is, as is anything but a regular file. */
  private async openObjectFile(file: string, key: string): Promise<{ fh: fsp.FileHandle; size: number; mtime: Date; ino: bigint; dev: bigint }> {
    const fh = await fsp.open(file, fsc.O_RDONLY | fsc.O_NONBLOCK);
    const st = await fh.stat({ bigint: true }).catch(async (err) => {
      await fh.close().catch(() => undefined);
      throw err;
    });
    if (!st.isFile()) {
      await fh.close().catch(() => undefined);
      throw new VaultError('ERR_STORE_IO', `${this.name}: ${key}: not a regular file (${file}): not read`);
    }
    return { fh, size: Number(st.size), mtime: st.mtime, ino: st.ino, dev: st.dev };
  }

  /** Opens an object file for ranged reads: its header checked, its identity and size noted. */
  private async openForRanges(key: string): Promise<OpenObjectFile> {
    const { fh: handle, size, ino, dev } = await this.openObjectFile(this.pathOf(key), key);
    try {
      const hdr = Buffer.alloc(HEADER_BYTES);
      const { bytesRead } = await handle.read(hdr, 0, HEADER_BYTES, 0);
      this.parseHeader(hdr.subarray(0, bytesRead), key);
      return { handle, ino, dev, fileSize: BigInt(size), bodySize: size - HEADER_BYTES, close: () => handle.close() };
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw err;
    }
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const file = this.pathOf(key);
    try {
      return await this.readInfo(file, key);
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) return null;
      throw err;
    }
  }

  async put(key: string, body: Buffer, opts: PutOptions = {}): Promise<{ etag: string }> {
    checkKey(key);
    await this.reserve.ensure();
    try {
      return await this.putOnce(key, body, opts);
    } catch (err) {
      // a full filesystem: what is not volume data may have the reserve's room, once
      if (opts.data || !isSpaceExhausted((err as { cause?: unknown }).cause) || !(await this.reserve.spend())) throw err;
      return this.putOnce(key, body, opts);
    }
  }

  private async putOnce(key: string, body: Buffer, opts: PutOptions): Promise<{ etag: string }> {
    const file = this.pathOf(key);
    const etagRaw = randomBytes(ETAG_BYTES);
    const etag = etagRaw.toString('hex');
    const dir = path.dirname(file);
    return this.locks.run(key, async () => {
      let tmp: string | null = null;
      try {
        await this.ensureDir(dir);
        tmp = await this.writeTemp(dir, etagRaw, body).catch(async (err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
          // the directory went between the two (gc removes a deleted volume's empty tree): again
          await this.ensureDir(dir);
          return this.writeTemp(dir, etagRaw, body);
        });
        if (opts.ifNoneMatch === '*') {
          try {
            await fsp.link(tmp, file);
            crashPoint('linked');
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
              throw new VaultError('ERR_STORE_PRECONDITION', `${this.name}: ${key} already exists`);
            }
            throw err;
          }
          await fsp.unlink(tmp);
          tmp = null;
        } else {
          if (opts.ifMatch !== undefined) {
            const cur = await this.head(key);
            if (!cur || cur.etag !== opts.ifMatch) {
              throw new VaultError('ERR_STORE_PRECONDITION', `${this.name}: ${key} is not at etag ${opts.ifMatch}`);
            }
          }
          await fsp.rename(tmp, file);
          crashPoint('renamed');
          tmp = null;
          this.openFiles.retire(key);
        }
        await this.syncDir(dir);
        crashPoint('dir-synced');
        return { etag };
      } catch (err) {
        throw this.fsError(err, 'put', key);
      } finally {
        if (tmp) await fsp.unlink(tmp).catch(() => undefined);
      }
    });
  }

  async delete(key: string): Promise<void> {
    const file = this.pathOf(key);
    await this.locks.run(key, async () => {
      try {
        await fsp.unlink(file);
        this.openFiles.retire(key);
        this.reserve.remakeSoon();
        await this.syncDir(path.dirname(file));
        crashPoint('unlinked');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw this.fsError(err, 'delete', key);
      }
    });
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    for (const k of keys) checkKey(k);
    const queue = [...keys];
    const worker = async (): Promise<void> => {
      for (let k = queue.shift(); k !== undefined; k = queue.shift()) await this.delete(k);
    };
    await Promise.all(Array.from({ length: Math.min(this.props.maxConcurrency, queue.length) }, worker));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkPrefix(prefix);
    const segs = prefix.split('/');
    const partial = segs.pop()!; // '' when prefix ends with '/' (or is '')
    const base = segs.join('/');
    const dir = path.join(this.root, ...segs.map(escapeSegment));
    yield* this.walk(dir, base === '' ? '' : `${base}/`, partial);
  }

  /** The key segments below `prefix`: the subdirectories of its directory that are key
   *  segments (not fan-out directories, not leftovers). A prefix that ends mid-segment is
   *  answered from a listing. */
  async listChildren(prefix: string): Promise<string[]> {
    checkPrefix(prefix);
    if (prefix !== '' && !prefix.endsWith('/')) return childSegmentsFromList(this, prefix);
    const dir = path.join(this.root, ...prefix.split('/').filter((seg) => seg !== '').map(escapeSegment));
    let entries: Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw this.fsError(err, 'list', prefix);
    }
    const segs: string[] = [];
    for (const e of entries) {
      // (as list() does: every other name is a key segment; a symlink to a directory counts)
      if (e.isFile() || e.name.startsWith('~') || e.name.endsWith('~')) continue;
      const seg = unescapeSegment(e.name);
      if (seg !== null) segs.push(seg);
    }
    return segs.sort();
  }

  /** Remove the `~tmp-*` files of puts cut off by a kill, once older than `olderThanMs` (fs-tidy.ts). */
  sweepTemporaryFiles(olderThanMs: number, dryRun: boolean, now = Date.now()): Promise<{ files: number; bytes: number }> {
    return sweepTemporaryFiles(this.root, olderThanMs, dryRun, now).catch((err) => {
      throw this.fsError(err, 'list', '');
    });
  }

  /** Remove the empty directory trees below `prefix`, once unchanged for `olderThanMs` (fs-tidy.ts). */
  removeEmptyTrees(prefix: string, olderThanMs: number, dryRun: boolean, now = Date.now()): Promise<number> {
    checkPrefix(prefix);
    const base = path.join(this.root, ...prefix.split('/').filter((seg) => seg !== '').map(escapeSegment));
    return removeEmptyTrees(base, olderThanMs, dryRun, now, (dir) => this.syncDir(dir));
  }

  async close(): Promise<void> {
    await this.openFiles.closeAll();
    await this.reserve.close();
  }

  unwrap(): ObjectStore | null {
    return null;
  }

  // ---- internals ----

  /** Yields, in key order, every object under `dir` (whose keys start with `keyBase`) whose next
   *  segment starts with `partial`. */
  private async *walk(dir: string, keyBase: string, partial: string): AsyncGenerator<ObjectInfo> {
    let names: string[];
    try {
      names = await fsp.readdir(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw this.fsError(err, 'list', keyBase);
    }
    type Entry = { sortKey: string; seg: string; kind: 'file' | 'dir'; file: string };
    const entries: Entry[] = [];
    for (const n of names) {
      if (n.startsWith('~')) continue; // temp file or other leftover
      if (n.endsWith('~')) {
        let files: string[];
        try {
          files = await fsp.readdir(path.join(dir, n));
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT' || code === 'ENOTDIR') continue;
          throw this.fsError(err, 'list', keyBase);
        }
        for (const f of files) {
          if (f.startsWith('~')) continue;
          const seg = unescapeSegment(f);
          if (seg === null || !seg.startsWith(partial)) continue;
          entries.push({ sortKey: seg, seg, kind: 'file', file: path.join(dir, n, f) });
        }
      } else {
        const seg = unescapeSegment(n);
        if (seg === null || !seg.startsWith(partial)) continue;
        entries.push({ sortKey: `${seg}/`, seg, kind: 'dir', file: path.join(dir, n) });
      }
    }
    entries.sort((a, b) => compareKeys(a.sortKey, b.sortKey));
    for (const e of entries) {
      const key = keyBase + e.seg;
      if (e.kind === 'dir') {
        yield* this.walk(e.file, `${key}/`, '');
        continue;
      }
      try {
        yield await this.readInfo(e.file, key);
      } catch (err) {
        if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) continue; // deleted while listing
        throw err;
      }
    }
  }

  private async readInfo(file: string, key: string): Promise<ObjectInfo> {
    let fh: fsp.FileHandle | null = null;
    try {
      const opened = await this.openObjectFile(file, key);
      fh = opened.fh;
      const hdr = Buffer.alloc(HEADER_BYTES);
      const { bytesRead } = await fh.read(hdr, 0, HEADER_BYTES, 0);
      const etag = this.parseHeader(hdr.subarray(0, bytesRead), key);
      return { key, size: opened.size - HEADER_BYTES, etag, lastModified: opened.mtime };
    } catch (err) {
      throw this.fsError(err, 'head', key);
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }

  private parseHeader(data: Buffer, key: string): string {
    if (data.length < HEADER_BYTES || !data.subarray(0, MAGIC.length).equals(MAGIC)) {
      throw new VaultError('ERR_STORE_IO', `${this.name}: ${key}: not an object file (bad or short header)`);
    }
    return data.subarray(MAGIC.length, HEADER_BYTES).toString('hex');
  }

  private async writeTemp(dir: string, etagRaw: Buffer, body: Buffer): Promise<string> {
    const tmp = path.join(dir, `~tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
    const fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    crashPoint('temp-created');
    try {
      if (CRASH_AT === 'temp-half') await fh.write(Buffer.concat([MAGIC, etagRaw, body]).subarray(0, (HEADER_BYTES + body.length) >> 1)).then(() => crashPoint('temp-half'));
      await writevAll(fh, [MAGIC, etagRaw, body], 0);
      crashPoint('temp-written');
      if (this.fsync) await fh.sync();
      crashPoint('temp-synced');
    } catch (err) {
      await fh.close().catch(() => undefined);
      await fsp.unlink(tmp).catch(() => undefined);
      throw err;
    }
    await fh.close();
    return tmp;
  }

  private async ensureDir(dir: string): Promise<void> {
    const first = await makeDirs(dir).catch(async (err: NodeJS.ErrnoException & { pseudoFilesystem?: string }) => {
      if (err.pseudoFilesystem) throw err; // (it says why already)
      // Node's recursive mkdir says ENOENT where a directory could not be made on a read-only
      // filesystem: a plain mkdir of the first missing one tells the real cause (EROFS).
      for (let d = dir; err.code === 'ENOENT' && d !== path.dirname(d); d = path.dirname(d)) {
        const real = await fsp.mkdir(d).then(() => null, (e: NodeJS.ErrnoException) => e);
        if (real === null) break;
        if (real.code !== 'ENOENT') throw real;
      }
      throw err;
    });
    if (first === undefined || !this.fsync) return;
    // Make each new directory entry durable: fsync the parent of every directory we created.
    let d = dir;
    const created: string[] = [];
    while (d.length >= first.length) {
      created.push(d);
      d = path.dirname(d);
    }
    for (const c of created) await this.syncDir(path.dirname(c));
  }

  private async syncDir(dir: string): Promise<void> {
    if (!this.fsync) return;
    const fh = await fsp.open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  private fsError(err: unknown, op: string, key: string): VaultError {
    if (err instanceof VaultError) return err;
    const e = err as NodeJS.ErrnoException;
    const what = `${this.name}: ${op} ${key}: ${e.code ?? ''} ${e.message ?? String(err)}`.replace(/\s+/g, ' ');
    switch (e.code) {
      case 'ENOENT':
        if (op === 'put') return new VaultError('ERR_STORE_IO', what, { cause: err }); // a directory vanished
        return new VaultError('ERR_STORE_NOT_FOUND', `${this.name}: no object ${key}`, { cause: err });
      case 'EACCES':
      case 'EPERM':
      case 'EROFS':
        return new VaultError('ERR_STORE_DENIED', `${what} (permission denied on ${this.root})`, { cause: err });
      case 'ENOSPC':
      case 'EDQUOT':
        return new VaultError('ERR_STORE_IO', `${what} (the filesystem of ${this.root} is full: \`nbd-vault snapshot delete\`, \`snapshot prune\` or \`volume delete\` and \`gc\` free room)`, { cause: err });
      case 'EMFILE':
      case 'ENFILE':
      case 'EAGAIN':
      case 'EBUSY':
      case 'EINTR':
        return new VaultError('ERR_STORE_TRANSIENT', what, { cause: err });
      default:
        return new VaultError('ERR_STORE_IO', what, { cause: err });
    }
  }
}
