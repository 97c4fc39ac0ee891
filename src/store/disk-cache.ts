// DiskCache: a bounded directory of cache entries (disk-cache-entry.ts), their in-memory index
// and their eviction order (SlruPolicy). It stores byte ranges of objects and knows nothing of
// what they mean; DiskCacheStore decides what goes in.
//
// Layout: DIR/CACHEDIR.TAG (backup tools skip the directory), DIR/lock.sock, DIR/entries/xx/NAME
// (xx: the first two hex digits of NAME, 256 fan-out directories), DIR/entries/xx/~tmp-* while an
// entry is written.
// Guarantees:
// - One process owns DIR: it listens on DIR/lock.sock; a second open (another process or the same
//   one) finds it answering and fails with ERR_EXISTS. The kernel drops the socket when the owner
//   dies (kill -9 included), so a stale lock is told apart from a live one by connecting.
// - An entry becomes visible by rename() of a complete temp file, so a crash leaves whole files or
//   `~tmp-*` leftovers (removed at the next open). No fsync: after a power loss a renamed file may
//   hold garbage, which the CRCs catch (a cache may lose entries, never serve wrong ones).
// - Startup rebuilds the index from a scan: a file is kept only if its header CRC holds, its name
//   is the hash of what its header says and its size is exactly header + data. Reads check the
//   CRC of every piece they return; a mismatch or a short read drops the entry (counted `corrupt`).
// - Size bound: every entry is charged its file size rounded up to 4 KiB (the filesystem block)
//   and 64 bytes for its directory entry, plus the fixed cost of the directories (the inode
//   tables are the filesystem's, preallocated), and room is made (evicting) BEFORE a file is written,
//   so the directory never holds more than maxBytes (apart from unlinks in flight).
import { randomBytes } from 'node:crypto';
import { constants as fsc, promises as fsp } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import * as path from 'node:path';
import { VaultError } from '../errors';
import { log } from '../util/log';
import { encodeHeader, entryName, headerBytesFor, MAX_ENTRY_BYTES, MAX_HEADER_BYTES, parseHeader, pieceCrcs, PIECE_BYTES, piecesIntact, storableEtag, type EntryHeader } from './disk-cache-entry';
import { OpenFileCache, readAt } from './open-file-cache';
import { readTarget } from './object-store';
import { SlruPolicy } from './slru-policy';
import { writeAll } from '../util/write-all';
import { InFlight } from '../util/in-flight';
import { makeDirs } from '../util/make-dirs';

const FS_BLOCK = 4096;
/** A 40-character name in an ext4/xfs directory, rounded up. */
const DIRENT_BYTES = 64;
/** Copies of missed reads waiting for their cache write, at most. */
const MAX_PENDING_BYTES = 128 * 1024 * 1024;
const FANOUT = 256;
/** The directories and small files every cache has: DIR, entries/, 256 fan-out dirs, the tag. */
export const DISK_CACHE_FIXED_BYTES = (FANOUT + 3) * FS_BLOCK;
export const DISK_CACHE_MIN_BYTES = DISK_CACHE_FIXED_BYTES + 16 * 1024 * 1024;
const CACHEDIR_TAG = 'Signature: 8a477f597d28d172789f06886806bc55\n# nbd-vault disk cache: sealed store bytes only, safe to delete while no server runs.\n';

/** An entry's header (the object range it holds: `toEnd` = it reaches the object's end, so
 *  offset 0 + toEnd is the whole object), plus its file and what it costs. */
export interface CacheRecord extends EntryHeader {
  readonly name: string;
  /** bytes charged against the bound */
  readonly cost: number;
}

export interface DiskCacheCounters {
  evictions: number;
  evictedBytes: number;
  corrupt: number;
  writeErrors: number;
  insertedBytes: number;
  droppedAtOpen: number;
  /** entries not cached because too many were waiting for the disk, or the room was taken by
   *  entries being written */
  skipped: number;
}

export interface StagedEntry {
  commit(etag: string): Promise<void>;
  abort(): Promise<void>;
}

/** An entry's file in 4 KiB blocks, plus its name in a directory (what grows the fan-out dirs). */
export const entryCost = (headerBytes: number, length: number): number => Math.ceil((headerBytes + length) / FS_BLOCK) * FS_BLOCK + DIRENT_BYTES;

export class DiskCache {
  readonly counters: DiskCacheCounters = { evictions: 0, evictedBytes: 0, corrupt: 0, writeErrors: 0, insertedBytes: 0, droppedAtOpen: 0, skipped: 0 };
  private readonly byName = new Map<string, CacheRecord>();
  private readonly byKey = new Map<string, CacheRecord[]>();
  private readonly policy = new SlruPolicy<string>();
  private readonly entriesDir: string;
  /** bytes charged: entries indexed plus room reserved for entries being written */
  private used = DISK_CACHE_FIXED_BYTES;
  private readonly writing = new Set<string>();
  private readonly pending = new InFlight();
  private closed = false;
  private laterBytes = 0;
  private lastWriteWarn = 0;
  private readonly later = new Map<string, Set<{ cancelled: boolean }>>();
  /** unlinks of dropped entries' files in flight, by entry name */
  private readonly unlinking = new Map<string, Promise<unknown>>();
  private readonly handles = new OpenFileCache<CacheRecord, fsp.FileHandle>((r) => fsp.open(this.fileOf(r.name), 'r'));

  private constructor(
    readonly dir: string,
    readonly maxBytes: number,
    private readonly lock: Server,
  ) {
    this.entriesDir = path.join(dir, 'entries');
  }

  /** Opens (creating) DIR, takes its lock and rebuilds the index from the files there. */
  static async open(dir: string, maxBytes: number): Promise<DiskCache> {
    const abs = path.resolve(dir);
    if (!Number.isSafeInteger(maxBytes) || maxBytes < DISK_CACHE_MIN_BYTES) {
      throw new VaultError('ERR_INVALID_ARGUMENT', `disk cache size must be at least ${DISK_CACHE_MIN_BYTES} bytes (16 MiB + directories), got ${maxBytes}`);
    }
    await makeDirs(path.join(abs, 'entries'), 0o700).catch((err: NodeJS.ErrnoException) => {
      throw new VaultError('ERR_IO', `disk cache ${abs}: cannot create the directory (${err.code ?? err.message})`);
    });
    const lock = await takeLock(abs);
    const cache = new DiskCache(abs, maxBytes, lock);
    try {
      await fsp.writeFile(path.join(abs, 'CACHEDIR.TAG'), CACHEDIR_TAG, { mode: 0o600 });
      await cache.scan();
    } catch (err) {
      lock.close();
      if (err instanceof VaultError) throw err;
      const e = err as NodeJS.ErrnoException;
      throw new VaultError('ERR_IO', `disk cache ${abs}: cannot read it (${e.code ?? e.message})`, { cause: err });
    }
    return cache;
  }

  get usedBytes(): number {
    return this.used;
  }

  get entries(): number {
    return this.byName.size;
  }

  /** The largest range worth caching: 32 MiB, and at most 1/8 of the cache. */
  get maxEntryBytes(): number {
    return Math.min(MAX_ENTRY_BYTES, Math.floor((this.maxBytes - DISK_CACHE_FIXED_BYTES) / 8));
  }

  /** An entry holding [offset, offset + length) of key, clipped at the object's end; or
   *  length 'whole' for the whole object. Null when none does. */
  find(key: string, offset: number, length: number | 'whole'): CacheRecord | null {
    const recs = this.byKey.get(key);
    if (!recs) return null;
    for (const r of recs) {
      if (length === 'whole') {
        if (r.offset === 0 && r.toEnd) return r;
        continue;
      }
      if (r.offset > offset) continue;
      if (offset + length <= r.offset + r.length || r.toEnd) return r;
    }
    return null;
  }

  /** The bytes [offset, offset + length) of the object from entry r (clipped at the object's
   *  end), CRC-checked; null if the file is gone, short or corrupt (then the entry is dropped).
   *  `into`: memory the pieces are read into when they fit (ObjectStore.get's `into`). */
  async read(r: CacheRecord, offset: number, length: number, into?: Buffer): Promise<Buffer | null> {
    const from = offset - r.offset;
    const to = Math.min(from + length, r.length);
    if (from >= r.length) return Buffer.alloc(0); // at/after the end of an entry that reaches it
    const firstPiece = Math.floor(from / PIECE_BYTES);
    const pieceStart = firstPiece * PIECE_BYTES;
    const pieceEnd = Math.min(Math.ceil(to / PIECE_BYTES) * PIECE_BYTES, r.length);
    const buf = readTarget(into, pieceEnd - pieceStart);
    try {
      const got = await this.handles.use(r, (fh) => readAt(fh, buf, r.headerBytes + pieceStart));
      if (got !== buf.length || !piecesIntact(buf, firstPiece, r.crcs)) {
        this.counters.corrupt++;
        log().warn({ cacheEntry: r.name, objectKey: r.key, offset: r.offset, length: r.length }, 'disk cache entry is torn or corrupt: dropped, reading from the store');
        this.drop(r);
        return null;
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') {
        this.counters.corrupt++;
        log().warn({ cacheEntry: r.name, objectKey: r.key, code }, 'disk cache entry unreadable: dropped, reading from the store');
      }
      this.drop(r);
      return null;
    }
    if (this.byName.get(r.name) === r) this.policy.touch(r.name, this.budget());
    return buf.subarray(from - pieceStart, to - pieceStart);
  }

  /**
   * Writes the data of an entry for [offset, offset + data.length) of key to a temp file. Resolves
   * to `commit(etag)`, which writes the header and makes the entry visible (replacing every other
   * entry of the key when `replace`), and `abort()`; or to null when it is not cached (too big,
   * already there, being written, or the write failed).
   */
  async stage(key: string, offset: number, data: Buffer, toEnd: boolean, replace = false): Promise<StagedEntry | null> {
    if (this.closed || data.length > this.maxEntryBytes) return null;
    const name = entryName(key, offset, data.length);
    if (this.writing.has(name)) return null;
    if (!replace && (this.byName.has(name) || (!(offset === 0 && toEnd) && this.find(key, offset, data.length) !== null))) return null; // covered
    const headerBytes = headerBytesFor(key, data.length);
    const cost = entryCost(headerBytes, data.length);
    this.makeRoom(cost);
    if (this.used + cost > this.maxBytes) {
      this.counters.skipped++; // the room is taken by entries being written: never exceed the bound
      return null;
    }
    this.writing.add(name);
    this.used += cost;
    const file = this.fileOf(name);
    const tmp = path.join(path.dirname(file), `~tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
    let done = false;
    const release = async (): Promise<void> => {
      if (done) return;
      done = true;
      this.used -= cost;
      this.writing.delete(name);
      await fsp.unlink(tmp).catch(() => undefined);
    };
    let opened: fsp.FileHandle | undefined;
    const crcs = pieceCrcs(data);
    try {
      opened = await fsp.open(tmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600);
      await writeAll(opened, data, headerBytes);
    } catch (err) {
      await opened?.close().catch(() => undefined);
      await release();
      this.writeFailed(err, key);
      return null;
    }
    const fh = opened;
    return {
      commit: async (etag: string) => {
        if (done) return;
        if (!replace && !(offset === 0 && toEnd) && this.find(key, offset, data.length) !== null) {
          // covered meanwhile (the whole object landed while this range was being written)
          await fh.close().catch(() => undefined);
          await release();
          return;
        }
        try {
          if (this.closed) throw new Error('disk cache closed');
          await writeAll(fh, encodeHeader(key, offset, data.length, crcs, toEnd, etag), 0);
          await fh.close();
          await this.unlinking.get(name); // a dropped entry of this name: its unlink must not take the new file
          await fsp.rename(tmp, file);
        } catch (err) {
          await fh.close().catch(() => undefined);
          await release();
          if (!this.closed) this.writeFailed(err, key);
          return;
        }
        done = true;
        this.writing.delete(name);
        this.used -= cost; // add() charges it again
        if (replace) this.dropKey(key, name);
        if (this.add({ name, key, offset, length: data.length, toEnd, etag: storableEtag(etag), headerBytes, crcs, cost })) this.counters.insertedBytes += data.length;
      },
      abort: async () => {
        await fh.close().catch(() => undefined);
        await release();
      },
    };
  }

  /** Writes and commits an entry in the background; close() waits for it. It is not committed
   *  if `stillWanted()` turns false or cancelPending(key) runs before its commit. */
  insertLater(key: string, offset: number, data: Buffer, toEnd: boolean, etag: string, stillWanted: () => boolean): void {
    // Reads never wait for the disk, and never pile up unbounded copies behind a slow one.
    if (this.laterBytes + data.length > MAX_PENDING_BYTES) {
      this.counters.skipped++;
      return;
    }
    this.laterBytes += data.length;
    const token = { cancelled: false };
    let set = this.later.get(key);
    if (!set) this.later.set(key, (set = new Set()));
    set.add(token);
    const p = (async () => {
      const staged = await this.stage(key, offset, data, toEnd);
      if (!staged) return;
      if (stillWanted() && !token.cancelled) await staged.commit(etag);
      else await staged.abort();
    })()
      .catch((err) => this.writeFailed(err, key))
      .finally(() => {
        this.laterBytes -= data.length;
        set.delete(token);
        if (set.size === 0 && this.later.get(key) === set) this.later.delete(key);
      });
    void this.pending.track(p);
  }

  /** Background inserts of key begun so far will not be committed (the object is being
   *  replaced or deleted: they may hold its old bytes). */
  cancelPending(key: string): void {
    for (const t of this.later.get(key) ?? []) t.cancelled = true;
  }

  /** Some entry of key is indexed. */
  hasKey(key: string): boolean {
    return this.byKey.has(key);
  }

  /** A background insert of key is under way. */
  hasPending(key: string): boolean {
    return this.later.has(key);
  }

  /** Forgets every entry of key (but `keepName`); their files are unlinked in the background. */
  dropKey(key: string, keepName?: string): void {
    for (const r of [...(this.byKey.get(key) ?? [])]) if (r.name !== keepName) this.drop(r);
  }

  /** Resolves once the background writes and unlinks begun so far are done. */
  async settle(): Promise<void> {
    await this.pending.settled();
  }

  /** Waits for background writes, then releases the lock. Entries stay for the next open. */
  async close(): Promise<void> {
    await this.settle();
    this.closed = true;
    await this.handles.closeAll();
    await new Promise<void>((resolve) => this.lock.close(() => resolve()));
  }

  /** Entry names from the next victim to the hottest (tests). */
  evictionOrder(): string[] {
    return this.policy.order();
  }

  fileOf(name: string): string {
    return path.join(this.entriesDir, name.slice(0, 2), name);
  }

  // ---- internals ----

  private budget(): number {
    return this.maxBytes - DISK_CACHE_FIXED_BYTES;
  }

  /** Indexes an entry whose file is in place; false (and its file unlinked) when a whole-object
   *  entry of the key covers it already: the whole object may have landed while this range's
   *  file was being written, or (at open) after it. */
  private add(r: CacheRecord): boolean {
    const old = this.byName.get(r.name);
    if (old) this.drop(old, false);
    const whole = r.offset === 0 && r.toEnd;
    if (whole) for (const o of [...(this.byKey.get(r.key) ?? [])]) this.drop(o); // the whole object covers them
    else if (this.find(r.key, 0, 'whole')) {
      this.unlinkLater(r.name);
      return false;
    }
    this.makeRoom(r.cost);
    this.byName.set(r.name, r);
    const list = this.byKey.get(r.key);
    if (list) list.push(r);
    else this.byKey.set(r.key, [r]);
    this.used += r.cost;
    this.policy.insert(r.name, r.cost, this.budget());
    return true;
  }

  private makeRoom(cost: number): void {
    while (this.used + cost > this.maxBytes) {
      const victim = this.policy.victim();
      if (victim === undefined) break; // only entries being written: they are charged already
      const r = this.byName.get(victim)!;
      this.counters.evictions++;
      this.counters.evictedBytes += r.length;
      this.drop(r);
    }
  }

  private drop(r: CacheRecord, unlink = true): void {
    if (this.byName.get(r.name) !== r) return;
    this.handles.retire(r);
    this.byName.delete(r.name);
    this.policy.remove(r.name);
    this.used -= r.cost;
    const list = this.byKey.get(r.key);
    if (list) {
      const rest = list.filter((x) => x !== r);
      if (rest.length > 0) this.byKey.set(r.key, rest);
      else this.byKey.delete(r.key);
    }
    if (unlink && !this.writing.has(r.name)) this.unlinkLater(r.name);
  }

  /** Unlinks an entry's file in the background; settle() and close() wait for it. */
  private unlinkLater(name: string): void {
    const p = fsp.unlink(this.fileOf(name)).catch(() => undefined);
    this.unlinking.set(name, this.pending.track(p));
    void p.finally(() => {
      if (this.unlinking.get(name) === p) this.unlinking.delete(name);
    });
  }

  private writeFailed(err: unknown, key: string): void {
    this.counters.writeErrors++;
    // A full disk fails every write: one line per 10 s (with the count since), not one per write.
    const now = Date.now();
    if (now - this.lastWriteWarn < 10_000) return;
    this.lastWriteWarn = now;
    const code = (err as NodeJS.ErrnoException)?.code;
    log().warn({ objectKey: key, code, err: code ? undefined : String((err as Error)?.message ?? err), writeErrors: this.counters.writeErrors }, 'disk cache write failed (the read or write itself went on)');
  }

  /** Rebuilds the index from the files (oldest first, so eviction starts with them). */
  private async scan(): Promise<void> {
    const started = Date.now();
    const found: Array<{ rec: CacheRecord; mtimeMs: number }> = [];
    for (let i = 0; i < FANOUT; i++) await fsp.mkdir(path.join(this.entriesDir, i.toString(16).padStart(2, '0')), { recursive: true, mode: 0o700 });
    const names: string[] = [];
    for (let i = 0; i < FANOUT; i++) {
      const sub = i.toString(16).padStart(2, '0');
      for (const n of await fsp.readdir(path.join(this.entriesDir, sub))) names.push(n);
    }
    const queue = [...names];
    const header = async (n: string): Promise<void> => {
      if (n.startsWith('~')) return; // a temp file: removed below
      let fh: fsp.FileHandle | null = null;
      try {
        fh = await fsp.open(this.fileOf(n), 'r');
        const st = await fh.stat();
        const buf = Buffer.alloc(Math.min(MAX_HEADER_BYTES, st.size));
        const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
        const h = parseHeader(buf.subarray(0, bytesRead));
        if (!h || entryName(h.key, h.offset, h.length) !== n || st.size !== h.headerBytes + h.length || h.length > MAX_ENTRY_BYTES) {
          this.counters.droppedAtOpen++;
          await fsp.unlink(this.fileOf(n)).catch(() => undefined);
          return;
        }
        found.push({ rec: { name: n, key: h.key, offset: h.offset, length: h.length, toEnd: h.toEnd, etag: h.etag, headerBytes: h.headerBytes, crcs: h.crcs, cost: entryCost(h.headerBytes, h.length) }, mtimeMs: st.mtimeMs });
      } catch {
        this.counters.droppedAtOpen++;
        await fsp.unlink(this.fileOf(n)).catch(() => undefined);
      } finally {
        await fh?.close().catch(() => undefined);
      }
    };
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let n = queue.shift(); n !== undefined; n = queue.shift()) await header(n);
    }));
    // Temp files of a writer that died: never an entry.
    for (let i = 0; i < FANOUT; i++) {
      const sub = path.join(this.entriesDir, i.toString(16).padStart(2, '0'));
      for (const n of await fsp.readdir(sub)) if (n.startsWith('~')) await fsp.unlink(path.join(sub, n)).catch(() => undefined);
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const { rec } of found) this.add(rec);
    log().info({ dir: this.dir, entries: this.byName.size, bytes: this.used, dropped: this.counters.droppedAtOpen, ms: Date.now() - started }, 'disk cache opened');
  }
}

/** DIR/lock.sock: listening = owned. A socket nobody answers on is a dead owner's: replaced. */
async function takeLock(dir: string): Promise<Server> {
  const sock = path.join(dir, 'lock.sock');
  if (Buffer.byteLength(sock) > 100) throw new VaultError('ERR_INVALID_ARGUMENT', `disk cache directory path too long for its lock socket (${sock}): use a shorter path`);
  const alive = await new Promise<boolean>((resolve) => {
    const c = createConnection(sock);
    c.on('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
  if (alive) throw new VaultError('ERR_EXISTS', `disk cache ${dir} is in use by another nbd-vault process (one server owns a cache directory; give each its own --disk-cache)`);
  await fsp.unlink(sock).catch(() => undefined);
  const server = createServer((c) => c.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new VaultError(err.code === 'EADDRINUSE' ? 'ERR_EXISTS' : 'ERR_IO', `disk cache ${dir}: cannot take the lock ${sock} (${err.code ?? err.message})`)),
    );
    server.listen(sock, () => resolve());
  });
  server.unref();
  return server;
}
