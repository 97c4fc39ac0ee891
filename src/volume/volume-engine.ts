// VolumeEngine: block-device semantics over sealed chunks — the Export that nbd/ serves for a
// volume. One engine per open volume, shared by every connection (so CAN_MULTI_CONN is honest:
// a flush from any connection uploads every dirty chunk and commits one root).
//
// Data path:  write → WriteCache (dirty, bounded) → uploader (sealed chunk objects, parallel)
//             → Manifest in memory → commitRoot (pages, then root) = durable.
//             read  → WriteCache → ReadCache → store (fetch + open), deduplicated per chunk.
// Ordering (docs/FORMAT.md, "Write ordering"): chunks before the pages that name them, pages
// before the root; an object is deleted only after a durable root no longer names it, and never
// when an older epoch (a snapshot) may still name it.
// Serialisation: writes to one chunk run under a per-chunk mutex; root commits run one at a time.
import { VaultError, describeError, isVaultError } from '../errors';
import type { Logger } from '../util/log';
import { copyWriteData, writeDataLength, type Export, type ExportCaps, type ContextExtent, type Extent, type ReadOptions, type WriteData, type WriteOptions, type ZeroOptions } from './export';
import { CHUNK_SIZE, chunkCount, chunkLength, splitRange, type ChunkSpan } from './chunk-math';
import { Manifest, PAGE_ENTRIES, type Entry, type PageRef } from './manifest';
import type { RootRecord } from './root-record';
import { ROOT_FORMAT } from './root-record';
import { KeyedMutex } from '../util/keyed-mutex';
import type { VolumeLease } from './volume-lease';
import { ChunkBufferPool } from './chunk-buffer-pool';
import { ReadCache, replySlice } from './read-cache';
import { FetchLimiter } from './fetch-limiter';
import { WriteCache, type DirtyChunk } from './write-cache';
import type { VolumeObjects } from './volume-objects';
import { chunkKey, pageKey } from './object-keys';
import { newObjectId } from './manifest';
import { SNAPSHOT_FORMAT, checkSnapshotName, type SnapshotRecord } from './snapshot-record';
import { VolumeContexts } from './volume-contexts';

export interface EngineOptions {
  readonly dirtyLimitBytes: number;
  readonly readCacheBytes: number;
  readonly uploadConcurrency: number;
  /** upload a partly written chunk once it has been idle this long */
  readonly writebackDelayMs: number;
  /** commit a root in the background this often when the manifest changed (0: only on flush) */
  readonly autoCommitMs: number;
  readonly readaheadChunks: number;
  readonly readOnly: boolean;
  /** called after every durable root, e.g. to record the sequence in local state */
  readonly onRootCommitted?: (seq: number) => Promise<void>;
  /** the writer's lease (writable engines): writes stop if it is lost; released on close */
  readonly lease?: VolumeLease;
  /** the process memory budget (serve --memory-limit) shared with every engine and connection */
  readonly memoryBudget?: import('../util/memory-budget').MemoryBudget;
}

/** chunk fetches (store GET + decode) at once: reads spread over many chunks hold at most this
 *  many sealed and decoded chunks in flight, not one per request */
const FETCHES_IN_FLIGHT = 16;

/** how many recent chunk reads the readahead remembers (several sequential streams at once) */
const RECENT_READS = 16;
/** background retries of a failed chunk upload: exponential backoff between these bounds */
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;
/** how often a writer stalled on a full cache of failing uploads is reported */
const STALL_LOG_MS = 10_000;

export const DEFAULT_ENGINE_OPTIONS: EngineOptions = {
  dirtyLimitBytes: 256 * 2 ** 20,
  readCacheBytes: 256 * 2 ** 20,
  uploadConcurrency: 16,
  writebackDelayMs: 1000,
  autoCommitMs: 5000,
  readaheadChunks: 8,
  readOnly: false,
};

export interface EngineStats {
  readonly readCacheHits: number;
  readonly readCacheMisses: number;
  readonly readCacheBytes: number;
  readonly dirtyBytes: number;
  /** chunks waiting in the write-back cache (the upload queue, in-flight uploads included) */
  readonly dirtyChunks: number;
  readonly uploadsInFlight: number;
  readonly leaseHeld: boolean;
  readonly leaseLost: boolean;
}

export class VolumeEngine implements Export {
  readonly caps: ExportCaps;
  private readonly manifest: Manifest;
  private readonly readCache: ReadCache;
  private readonly writeCache: WriteCache;
  private readonly chunkLocks = new KeyedMutex<number>();
  private readonly buffers = new ChunkBufferPool(CHUNK_SIZE, 16);
  private readonly fetches = new Map<string, Promise<Buffer>>();
  private readonly fetchSlots = new FetchLimiter(FETCHES_IN_FLIGHT);
  private uploadsInFlight = 0;
  /** chunks with an upload in flight (the record being uploaded may have been replaced since) */
  private readonly uploadingChunks = new Set<number>();
  private kicking = false;
  private kickAgain = false;
  private readonly uploadWaiters = new Set<() => void>();
  private flushWaiters = 0;
  /** objects no longer referenced once the next root is durable */
  private pendingDeletes: string[] = [];
  private commitChain: Promise<unknown> = Promise.resolve();
  private snapshotChain: Promise<unknown> = Promise.resolve();
  private manifestChangedSinceCommit = false;
  private epoch: number;
  private seq: number;
  private etag: string | null;
  private sizeBytes: number;
  private readonly origin: RootRecord['origin'];
  private timer: NodeJS.Timeout | null = null;
  private lastCommitMs = Date.now();
  /** chunks recently read, newest last: several sequential readers (nbdcopy's connections, a
   *  guest's threads) each keep their own stream going */
  private readonly recentReads: number[] = [];
  private closed = false;
  /** Uploads (chunks and pages) that no durable root names yet, by token → start time: what gc
   *  must not take (the lease publishes the oldest). A chunk's token is 'done' once its entry is
   *  in the manifest; a commit that captured it retires it when its root is durable. */
  private readonly unreferenced = new Map<number, { startMs: number; done: boolean }>();
  private uploadToken = 0;
  /** A root put whose outcome is unknown (the store's retries ran out): if it landed, the store
   *  holds exactly these bytes, and the next commit adopts it instead of failing If-Match. */
  private uncertainRoot: { sealed: Buffer; seq: number; pageKeys: string[] } | null = null;
  /** page objects of failed commits: garbage unless an uncertain root that names them landed */
  private orphanPages: string[] = [];
  private lastStallLogMs = 0;
  /** qemu:dirty-bitmap:* and qemu:allocation-depth (volume-contexts.ts) */
  private readonly contexts: VolumeContexts;

  constructor(
    readonly name: string,
    readonly description: string,
    private readonly objects: VolumeObjects,
    root: RootRecord,
    rootEtag: string | null,
    manifest: Manifest,
    private readonly opts: EngineOptions,
    private readonly logger: Logger,
  ) {
    if (root.chunkSize !== CHUNK_SIZE) throw new VaultError('ERR_CORRUPT', `volume "${name}" uses chunk size ${root.chunkSize}, this build supports ${CHUNK_SIZE}`);
    this.manifest = manifest;
    this.epoch = root.epoch;
    this.seq = root.seq;
    this.etag = rootEtag;
    this.sizeBytes = root.size;
    this.origin = root.origin;
    this.readCache = new ReadCache(opts.readCacheBytes);
    this.writeCache = new WriteCache(opts.dirtyLimitBytes);
    this.contexts = new VolumeContexts({
      objects,
      origin: root.origin,
      manifest,
      size: () => this.sizeBytes,
      epoch: () => this.epoch,
      pending: () => new Map([...this.writeCache.entries()].map(([i, d]) => [i, d.data !== null])),
      loadManifest: (o, r) => VolumeEngine.loadManifest(o, r),
    });
    const rw = !opts.readOnly;
    this.caps = { readOnly: !rw, canFlush: rw, canFua: rw, canTrim: rw, canZero: rw, canFastZero: rw, canCache: true, canMultiConn: true };
    if (rw) {
      this.timer = setInterval(() => this.tick(), 100);
      this.timer.unref();
      opts.lease?.reportPending(() => this.oldestUnreferencedMs());
    }
  }

  /** Start time (ms since the epoch) of the oldest upload no durable root names yet, or null. */
  oldestUnreferencedMs(): number | null {
    let oldest: number | null = null;
    for (const { startMs } of this.unreferenced.values()) if (oldest === null || startMs < oldest) oldest = startMs;
    return oldest;
  }

  /** Load a volume's manifest: the root, then every page it names (in parallel). */
  static async loadManifest(objects: VolumeObjects, root: RootRecord): Promise<Manifest> {
    const manifest = new Manifest(chunkCount(root.size, root.chunkSize), root.pages);
    if (root.pageEntries !== PAGE_ENTRIES) throw new VaultError('ERR_CORRUPT', `unsupported page size ${root.pageEntries}`);
    const todo = root.pages.map((ref, p) => ({ ref, p })).filter((x) => x.ref !== null);
    let next = 0;
    const worker = async () => {
      while (next < todo.length) {
        const { ref, p } = todo[next++];
        manifest.decodePage(p, await objects.readPage(p, ref!));
        if (ref!.epoch === 0 && objects.origin) manifest.markOrigin(p);
      }
    };
    await Promise.all(Array.from({ length: Math.min(16, todo.length) }, worker));
    return manifest;
  }

  /** For metrics, read at scrape time (no I/O). */
  stats(): EngineStats {
    const lease = this.opts.lease;
    return {
      readCacheHits: this.readCache.hits,
      readCacheMisses: this.readCache.misses,
      readCacheBytes: this.readCache.sizeBytes,
      dirtyBytes: this.writeCache.sizeBytes,
      dirtyChunks: this.writeCache.size,
      uploadsInFlight: this.uploadsInFlight,
      leaseHeld: lease !== undefined && !lease.lost,
      leaseLost: lease?.lost ?? false,
    };
  }

  get size(): number {
    return this.sizeBytes;
  }

  get currentSeq(): number {
    return this.seq;
  }

  get currentEpoch(): number {
    return this.epoch;
  }

  /** A consistent copy of the committed page list (for snapshots). */
  get committedPages(): Array<PageRef | null> {
    return [...this.manifest.pages];
  }

  usage() {
    return this.manifest.usage();
  }

  // --- reads ------------------------------------------------------------------------------

  async read(offset: number, length: number, opts: ReadOptions = {}): Promise<Buffer> {
    await this.opts.lease?.ensure();
    this.assertOpen();
    const spans = splitRange(offset, length, this.sizeBytes);
    if (spans.length === 1) {
      const s = spans[0];
      // chunkContent decides synchronously: a dirty chunk's buffer may change under a queued
      // reply, a cached or fetched one never does.
      const mutable = this.writeCache.get(s.chunkIndex) !== undefined;
      const data = await this.chunkContent(s.chunkIndex, false, opts.requester);
      this.readahead(s.chunkIndex);
      if (data === null) return Buffer.alloc(s.length);
      return replySlice(data, s.chunkOffset, s.length, mutable);
    }
    const out = Buffer.allocUnsafe(length);
    await Promise.all(
      spans.map(async (s) => {
        const data = await this.chunkContent(s.chunkIndex, false, opts.requester);
        if (data === null) out.fill(0, s.rangeOffset, s.rangeOffset + s.length);
        else data.copy(out, s.rangeOffset, s.chunkOffset, s.chunkOffset + s.length);
      }),
    );
    this.readahead(spans[spans.length - 1].chunkIndex);
    return out;
  }

  /**
   * The current content of a chunk, or null when it is all zeros. With `stable`, the returned
   * buffer will not change later (a dirty buffer is copied), so it may be handed to a socket.
   */
  private async chunkContent(i: number, stable: boolean, requester?: object): Promise<Buffer | null> {
    const d = this.writeCache.get(i);
    if (d) return d.data === null ? null : stable ? Buffer.from(d.data) : d.data;
    const cached = this.readCache.get(i);
    if (cached) return cached;
    const entry = this.manifest.get(i);
    if (entry.id === null) return null;
    return this.fetchChunk(i, entry, requester);
  }

  private fetchChunk(i: number, entry: Entry, requester?: object): Promise<Buffer> {
    const key = entry.id!;
    let p = this.fetches.get(key);
    if (!p) {
      p = this.fetchSlots
        .run(() => this.objects.readChunk(i, entry, chunkLength(this.sizeBytes, i)), requester)
        .then((data) => {
          // Cache only if nothing replaced the chunk while we fetched it.
          if (this.manifest.get(i).id === key && !this.writeCache.get(i)) this.readCache.set(i, data);
          return data;
        })
        .catch((err) => {
          this.logger.error({ volume: this.name, chunk: i, offset: i * CHUNK_SIZE, err: describeError(err) }, 'chunk read failed');
          throw new VaultError('ERR_IO', `volume "${this.name}": cannot read chunk ${i} (byte offset ${i * CHUNK_SIZE}): ${describeError(err)}`, { cause: err });
        })
        .finally(() => this.fetches.delete(key));
      this.fetches.set(key, p);
    }
    return p;
  }

  private readahead(i: number): void {
    const recent = this.recentReads;
    const sequential = recent.includes(i - 1) || recent.includes(i);
    if (recent[recent.length - 1] !== i) {
      const at = recent.indexOf(i);
      if (at >= 0) recent.splice(at, 1);
      recent.push(i);
      if (recent.length > RECENT_READS) recent.shift();
    }
    if (!sequential || this.opts.readaheadChunks <= 0) return;
    const last = Math.min(chunkCount(this.sizeBytes) - 1, i + this.opts.readaheadChunks);
    for (let j = i + 1; j <= last; j++) this.prefetch(j);
  }

  private prefetch(i: number): void {
    if (!this.fetchSlots.hasFreeSlot) return; // readahead never queues behind (or ahead of) reads
    if (this.writeCache.get(i) || this.readCache.has(i)) return;
    const entry = this.manifest.get(i);
    if (entry.id === null || this.fetches.has(entry.id)) return;
    this.fetchChunk(i, entry).catch(() => {}); // logged in fetchChunk; a real read reports it
  }

  async cache(offset: number, length: number): Promise<void> {
    await this.opts.lease?.ensure();
    this.assertOpen();
    const spans = splitRange(offset, length, this.sizeBytes);
    let next = 0;
    const worker = async () => {
      while (next < spans.length) await this.chunkContent(spans[next++].chunkIndex, false);
    };
    await Promise.all(Array.from({ length: Math.min(8, spans.length) }, worker));
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    await this.opts.lease?.ensure();
    this.assertOpen();
    const extents: Extent[] = [];
    const end = Math.min(this.sizeBytes, offset + length);
    let pos = offset;
    while (pos < end && extents.length < 1024) {
      const i = Math.floor(pos / CHUNK_SIZE);
      const chunkEnd = Math.min(end, (i + 1) * CHUNK_SIZE);
      const d = this.writeCache.get(i);
      const zero = d ? d.data === null : this.manifest.isZero(i);
      const last = extents[extents.length - 1];
      if (last && last.zero === zero) extents[extents.length - 1] = { length: last.length + chunkEnd - pos, hole: zero, zero };
      else extents.push({ length: chunkEnd - pos, hole: zero, zero });
      pos = chunkEnd;
    }
    return extents;
  }

  listMetaContexts(): Promise<string[]> {
    this.assertOpen();
    return this.contexts.list();
  }

  async metaContextStatus(name: string, offset: number, length: number): Promise<ContextExtent[]> {
    this.assertOpen();
    return this.contexts.status(name, offset, length);
  }

  // --- writes -----------------------------------------------------------------------------

  async write(offset: number, data: WriteData, opts: WriteOptions = {}): Promise<void> {
    await this.opts.lease?.ensure();
    this.assertWritable();
    await Promise.all(splitRange(offset, writeDataLength(data), this.sizeBytes).map((s) => this.writeSpan(s, data)));
    if (opts.fua) await this.flush();
  }

  async trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    await this.writeZeroes(offset, length, opts);
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    await this.opts.lease?.ensure();
    this.assertWritable();
    const spans = splitRange(offset, length, this.sizeBytes);
    if (opts.fastZero) {
      // Zeroing part of a chunk we would first have to download is not fast: say so up front.
      for (const s of spans) {
        if (!s.whole && !this.writeCache.get(s.chunkIndex) && !this.readCache.has(s.chunkIndex) && !this.manifest.isZero(s.chunkIndex)) {
          throw new VaultError('ERR_NOT_SUPPORTED', 'fast zero is not possible: a partial chunk would need a read');
        }
      }
    }
    const work: Promise<void>[] = [];
    for (const s of spans) {
      // Fast path (a full-device TRIM of an empty volume): a chunk that is zero already,
      // with no write pending or in progress, needs nothing at all.
      if (!this.writeCache.get(s.chunkIndex) && !this.chunkLocks.isLocked(s.chunkIndex) && this.manifest.isZero(s.chunkIndex)) continue;
      work.push(this.writeSpan(s, null));
      if (work.length >= 256) await Promise.all(work.splice(0));
    }
    await Promise.all(work);
    if (opts.fua) await this.flush();
  }

  /** Apply one span of a write (`data` holds the whole write; null: zeros) to its chunk, under
   *  the chunk's lock. */
  private async writeSpan(s: ChunkSpan, data: WriteData | null): Promise<void> {
    const i = s.chunkIndex;
    const release = this.writeCache.get(i) ? null : await this.writeCache.waitForRoom(s.chunkLength);
    try {
      await this.writeSpanLocked(s, data);
    } finally {
      release?.();
    }
    this.kick();
  }

  private async writeSpanLocked(s: ChunkSpan, data: WriteData | null): Promise<void> {
    const i = s.chunkIndex;
    await this.chunkLocks.run(i, async () => {
      this.assertWritable();
      let content: Buffer | null;
      if (s.whole) {
        if (data === null) content = null;
        else {
          content = this.buffers.take(s.chunkLength, 'overwrite');
          copyWriteData(data, s.rangeOffset, content, 0, s.length);
        }
      } else {
        const d = this.writeCache.get(i);
        let base: Buffer | null;
        if (d && !d.uploading) base = d.data; // ours to modify in place
        else {
          const current = await this.chunkContent(i, false);
          base = current === null ? null : this.buffers.take(s.chunkLength, current); // copy: caches and uploads are frozen
        }
        if (base === null && data === null) {
          if (!d) return; // zeroing part of a zero chunk
          content = null;
        } else {
          if (base === null) base = this.buffers.take(s.chunkLength);
          if (data === null) base.fill(0, s.chunkOffset, s.chunkOffset + s.length);
          else copyWriteData(data, s.rangeOffset, base, s.chunkOffset, s.length);
          content = base;
        }
      }
      this.readCache.delete(i);
      this.writeCache.put(i, content, s.length, Date.now());
    });
  }

  // --- upload and commit -------------------------------------------------------------------

  private tick(): void {
    this.kick();
    this.reportStall();
    if (this.opts.autoCommitMs > 0 && this.manifestChangedSinceCommit && Date.now() - this.lastCommitMs >= this.opts.autoCommitMs && this.flushWaiters === 0) {
      this.lastCommitMs = Date.now();
      this.commitRoot().catch((err) => this.logger.warn({ volume: this.name, err: describeError(err) }, 'background commit failed; will retry'));
    }
  }

  /** Writers waiting for room while uploads fail: the store is down. Said in the log, not hidden. */
  private reportStall(): void {
    if (this.writeCache.waiting === 0) return;
    const now = Date.now();
    if (now - this.lastStallLogMs < STALL_LOG_MS) return;
    let failing = 0;
    let lastError: unknown = null;
    for (const [, d] of this.writeCache.entries()) {
      if (d.error) {
        failing++;
        lastError = d.error;
      }
    }
    if (failing === 0) return;
    this.lastStallLogMs = now;
    this.logger.warn({ volume: this.name, waitingWriters: this.writeCache.waiting, failingChunks: failing, dirtyBytes: this.writeCache.sizeBytes, err: describeError(lastError) }, 'writes are waiting: the write cache is full and uploads keep failing; retrying in the background');
  }

  /**
   * Start uploads of the chunks that are due, up to the concurrency limit. Not reentrant: an
   * upload of a zero chunk finishes synchronously and kicks again, which here only asks for
   * another pass (thousands of trimmed chunks must not become thousands of stack frames).
   */
  private kick(): void {
    if (this.closed && this.flushWaiters === 0) return;
    if (this.kicking) {
      this.kickAgain = true;
      return;
    }
    this.kicking = true;
    try {
      do {
        this.kickAgain = false;
        const now = Date.now();
        const pressure = this.writeCache.sizeBytes >= this.opts.dirtyLimitBytes / 2;
        for (const [i, d] of this.writeCache.entries()) {
          if (this.uploadsInFlight >= this.opts.uploadConcurrency) break;
          // One upload per chunk at a time: a newer record waits for the older one's upload,
          // so their results reach the manifest in write order.
          if (d.uploading || this.uploadingChunks.has(i)) continue;
          if (d.error) {
            // failed before: retried in the background with backoff (a flush retries at once)
            if (now >= d.retryAtMs) void this.upload(i, d);
            continue;
          }
          const full = d.data === null || d.bytesWritten >= (d.data?.length ?? 0);
          if (this.flushWaiters > 0 || pressure || full || now - d.lastWriteMs >= this.opts.writebackDelayMs) void this.upload(i, d);
        }
      } while (this.kickAgain);
    } finally {
      this.kicking = false;
    }
  }

  private async upload(i: number, d: DirtyChunk): Promise<void> {
    d.uploading = true;
    this.uploadingChunks.add(i);
    this.uploadsInFlight++;
    const data = d.data;
    const token = ++this.uploadToken;
    this.unreferenced.set(token, { startMs: Date.now(), done: false });
    try {
      // (an all-zero chunk comes back as a zero entry: the codec checks)
      const entry: Entry = data === null ? { id: null, epoch: this.epoch, storedSize: 0 } : await this.objects.writeChunk(i, data, this.epoch);
      if (entry.id === null) this.unreferenced.delete(token);
      else this.unreferenced.get(token)!.done = true;
      // From here to the end of this block nothing awaits: manifest, caches and the delete
      // list change together.
      if (i >= this.manifest.chunkCount) {
        if (entry.id) this.pendingDeletes.push(chunkKey(this.objects.volumeId, entry.id));
      } else {
        const old = this.manifest.get(i);
        this.manifest.set(i, { ...entry, epoch: this.epoch });
        this.manifestChangedSinceCommit = true;
        if (old.id !== null && old.epoch === this.epoch) this.pendingDeletes.push(chunkKey(this.objects.volumeId, old.id));
      }
      // Keep what was just written for readers, unless writes are streaming in (the cache is
      // under pressure): an import would only push the read cache's working set out, and the
      // memory of both caches would be in use at once.
      const streaming = this.writeCache.sizeBytes >= this.opts.dirtyLimitBytes / 2;
      const settled = this.writeCache.settle(i, d);
      if (settled && data !== null && entry.id !== null && !streaming) this.readCache.set(i, data);
      else if (data !== null && this.writeCache.get(i)?.data !== data) this.buffers.give(data); // nobody holds it now
    } catch (err) {
      this.unreferenced.delete(token); // whatever reached the store is garbage: nothing will name it
      d.error = err;
      d.failures++;
      const backoff = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(16, d.failures - 1));
      d.retryAtMs = Date.now() + backoff / 2 + Math.random() * (backoff / 2);
      this.logger.error({ volume: this.name, chunk: i, failures: d.failures, retryInMs: Math.round(d.retryAtMs - Date.now()), err: describeError(err) }, 'chunk upload failed; kept in the write cache and retried');
    } finally {
      d.uploading = false;
      this.uploadingChunks.delete(i);
      this.uploadsInFlight--;
      for (const w of this.uploadWaiters) w();
      this.kick();
    }
  }

  /** Upload every chunk dirtied before this call; throws if one of them cannot be uploaded. */
  private async drainDirty(): Promise<void> {
    const mark = this.writeCache.writeCounter;
    this.flushWaiters++;
    try {
      // Failed chunks get one fresh attempt per flush (the store's retry layer has already
      // retried each attempt); if it fails again, the flush reports it.
      for (const [, d] of this.writeCache.entries()) {
        if (d.firstWrite <= mark && d.error) {
          d.error = null;
          d.retryAtMs = 0;
        }
      }
      for (;;) {
        let pending = false;
        for (const [i, d] of this.writeCache.entries()) {
          if (d.firstWrite > mark) continue;
          if (d.error && !d.uploading) {
            throw new VaultError('ERR_IO', `volume "${this.name}": cannot store chunk ${i}: ${describeError(d.error)}`, { cause: d.error });
          }
          pending = true;
        }
        if (!pending) return;
        this.kick();
        await new Promise<void>((r) => {
          const w = () => {
            this.uploadWaiters.delete(w);
            r();
          };
          this.uploadWaiters.add(w);
        });
      }
    } finally {
      this.flushWaiters--;
    }
  }

  async flush(): Promise<void> {
    await this.opts.lease?.ensure();
    this.assertOpen();
    if (this.opts.readOnly) return;
    this.opts.lease?.check(); // a writer without its lease cannot promise anything is durable
    await this.drainDirty();
    // A commit already running may hold our writes: wait for it. If it did, and nothing changed
    // since, the root in the store is current and there is nothing to write.
    await this.commitChain;
    if (!this.hasUncommittedChanges()) return;
    await this.commitRoot();
  }

  private hasUncommittedChanges(): boolean {
    return this.manifestChangedSinceCommit || this.manifest.dirtyPages.size > 0 || this.pendingDeletes.length > 0;
  }

  /**
   * Write the dirty manifest pages, then the root, one commit at a time. With `snapshot`, the
   * epoch is bumped at the moment the manifest is captured, so the captured state is frozen:
   * nothing it names is ever deleted by later writes. Returns the committed root.
   */
  commitRoot(snapshot = false): Promise<RootRecord> {
    const run = this.commitChain.then(() => this.commitRootNow(snapshot));
    this.commitChain = run.catch(() => {});
    return run;
  }

  private async commitRootNow(snapshot: boolean): Promise<RootRecord> {
    await this.opts.lease?.ensure(); // (resumes a lease lost only to a late heartbeat)
    // Capture (synchronously): which pages to write and with what content.
    const dirty = [...this.manifest.dirtyPages].sort((a, b) => a - b);
    this.manifest.dirtyPages.clear();
    const pageBytes = dirty.map((p) => (this.manifest.pageIsEmpty(p) ? null : this.manifest.encodePage(p)));
    const deletes = this.pendingDeletes;
    this.pendingDeletes = [];
    const epochAtCapture = this.epoch;
    const sizeAtCapture = this.sizeBytes;
    const pages = [...this.manifest.pages];
    this.manifestChangedSinceCommit = false;
    if (snapshot) this.epoch++;
    // chunk uploads this root will name; page uploads get their own tokens below
    const captured = [...this.unreferenced].filter(([, u]) => u.done).map(([t]) => t);
    const pageTokens: number[] = [];
    const writtenPages: string[] = [];
    const oldPages: PageRef[] = [];
    try {
      const refs = await Promise.all(
        dirty.map(async (p, k) => {
          if (pageBytes[k] === null) return null;
          const token = ++this.uploadToken;
          pageTokens.push(token);
          this.unreferenced.set(token, { startMs: Date.now(), done: true });
          const ref = await this.objects.writePage(p, pageBytes[k]!, epochAtCapture);
          writtenPages.push(pageKey(this.objects.volumeId, ref.id));
          return ref;
        }),
      );
      dirty.forEach((p, k) => {
        const old = pages[p];
        if (old && old.epoch === epochAtCapture) oldPages.push(old);
        pages[p] = refs[k];
      });
      const root: RootRecord = {
        v: ROOT_FORMAT,
        volumeId: this.objects.volumeId,
        seq: this.seq + 1,
        size: sizeAtCapture,
        chunkSize: CHUNK_SIZE,
        pageEntries: PAGE_ENTRIES,
        epoch: this.epoch,
        pages,
        updatedAt: new Date().toISOString(),
        ...(this.origin ? { origin: this.origin } : {}),
      };
      const committed = await this.putRoot(root, writtenPages);
      this.seq = committed.seq;
      this.lastCommitMs = Date.now();
      for (const t of [...captured, ...pageTokens]) this.unreferenced.delete(t);
      // Pages may have changed while we wrote: adopt only the refs we wrote, keep later changes dirty.
      dirty.forEach((p) => {
        if (p < this.manifest.pageCount) this.manifest.pages[p] = pages[p];
      });
      await this.opts.onRootCommitted?.(committed.seq);
      this.logger.debug({ volume: this.name, seq: committed.seq, pages: dirty.length, deletes: deletes.length }, 'root committed');
      const doomed = [...deletes, ...oldPages.map((r) => pageKey(this.objects.volumeId, r.id)), ...this.orphanPages];
      this.orphanPages = [];
      if (doomed.length > 0) {
        this.objects.store.deleteMany(doomed).catch((err) => this.logger.warn({ volume: this.name, objects: doomed.length, err: describeError(err) }, 'deleting unreferenced objects failed; gc will remove them'));
      }
      return committed;
    } catch (err) {
      // The root was changed by another writer: the lease is not ours any more (fencing).
      if (isVaultError(err, 'ERR_LEASE')) this.opts.lease?.markLost(err as VaultError);
      // Nothing became durable (or, for an uncertain root put, nothing we may count on): the same
      // pages and deletes belong to the next commit; the pages written here are garbage unless
      // the uncertain root landed (then the next commit adopts it and they go after that).
      for (const t of pageTokens) this.unreferenced.delete(t);
      if (this.uncertainRoot?.pageKeys !== writtenPages) this.orphanPages.push(...writtenPages);
      for (const p of dirty) if (p < this.manifest.pageCount) this.manifest.dirtyPages.add(p);
      this.pendingDeletes.unshift(...deletes);
      this.manifestChangedSinceCommit = true;
      throw err;
    }
  }

  /**
   * Put the root with If-Match on the etag we last wrote. If a previous put's outcome was unknown
   * (its reply was lost after every retry) and the store now holds exactly those bytes, that put
   * landed: adopt it — its etag, its seq — and write this root after it. Anything else in the
   * store is another writer's: refuse (ERR_LEASE).
   */
  private async putRoot(root: RootRecord, writtenPages: string[]): Promise<RootRecord> {
    const sealed = await this.objects.sealRoot(root);
    try {
      this.etag = await this.objects.putRoot(sealed, this.etag);
      // If-Match on the etag before an uncertain put succeeded: that put did not land
      if (this.uncertainRoot) this.orphanPages.push(...this.uncertainRoot.pageKeys);
      this.uncertainRoot = null;
      return root;
    } catch (err) {
      const uncertain = this.uncertainRoot;
      if (isVaultError(err, 'ERR_LEASE') && uncertain) {
        const current = await this.objects.readRootBytes();
        if (current && current.body.equals(uncertain.sealed)) {
          this.logger.warn({ volume: this.name, seq: uncertain.seq }, 'a root put whose reply was lost had landed; adopting it');
          this.etag = current.etag;
          this.seq = uncertain.seq;
          this.uncertainRoot = null;
          await this.opts.onRootCommitted?.(uncertain.seq);
          // its pages are replaced by this commit's (the same dirty pages, written again)
          this.orphanPages.push(...uncertain.pageKeys);
          return this.putRoot({ ...root, seq: uncertain.seq + 1 }, writtenPages);
        }
      }
      if (!isVaultError(err, 'ERR_LEASE') && !isVaultError(err, 'ERR_STORE_PRECONDITION')) {
        // outcome unknown: remember the bytes, the next commit finds out
        this.uncertainRoot = { sealed, seq: root.seq, pageKeys: writtenPages };
      }
      throw err;
    }
  }

  /**
   * Freeze the volume at one consistent point: upload what is dirty, commit a root that bumps the
   * epoch, then record that root's page list. Writes go on meanwhile; those that land after the
   * capture belong to the next epoch. A crash between the root and the record only costs an
   * epoch (objects kept a little longer), never data. O(pages): no chunk is copied.
   */
  snapshot(name: string, opts: { keep?: boolean } = {}): Promise<SnapshotRecord> {
    // One at a time: the name check below must see the previous snapshot's record.
    const run = this.snapshotChain.then(() => this.snapshotNow(name, opts.keep === true));
    this.snapshotChain = run.catch(() => {});
    return run;
  }

  private async snapshotNow(name: string, keep: boolean): Promise<SnapshotRecord> {
    this.assertWritable();
    checkSnapshotName(name);
    if ((await this.objects.listSnapshots()).some((x) => x.name === name)) {
      throw new VaultError('ERR_EXISTS', `volume "${this.name}" has a snapshot named "${name}" already`);
    }
    await this.drainDirty();
    const root = await this.commitRoot(true);
    const record: SnapshotRecord = {
      v: SNAPSHOT_FORMAT,
      id: newObjectId(),
      volumeId: this.objects.volumeId,
      name,
      createdAt: new Date().toISOString(),
      epoch: root.epoch - 1,
      rootSeq: root.seq,
      size: root.size,
      chunkSize: root.chunkSize,
      pageEntries: root.pageEntries,
      pages: root.pages,
      ...(keep ? { keep: true } : {}),
    };
    await this.objects.writeSnapshot(record);
    this.contexts.forget(name);
    this.logger.info({ volume: this.name, snapshot: name, epoch: record.epoch, seq: root.seq }, 'snapshot created');
    return record;
  }

  /**
   * Change the volume's size (no client may be connected: sizes are fixed per connection).
   * A short last chunk that grows is rewritten at full length; bytes cut off by a shrink are
   * zeroed first, so a later grow shows zeros there, never old data.
   */
  async resize(newSize: number): Promise<void> {
    this.assertWritable();
    const oldSize = this.sizeBytes;
    if (newSize === oldSize) return;
    await this.drainDirty();
    // The chunk that holds the smaller end changes length: carry its bytes over (truncated or
    // zero-padded), since a stored chunk must have exactly its chunk's length.
    const edge = chunkCount(Math.min(oldSize, newSize)) - 1;
    let carried: Buffer | null = null;
    if (edge >= 0 && chunkLength(oldSize, edge) !== chunkLength(newSize, edge)) carried = await this.chunkContent(edge, true);
    const newCount = chunkCount(newSize);
    this.writeCache.dropFrom(newCount);
    for (let i = newCount; i < chunkCount(oldSize); i++) this.readCache.delete(i);
    for (const { entry } of this.manifest.resize(newCount)) {
      if (entry.id !== null && entry.epoch === this.epoch) this.pendingDeletes.push(chunkKey(this.objects.volumeId, entry.id));
    }
    this.sizeBytes = newSize;
    this.manifestChangedSinceCommit = true;
    if (carried !== null) {
      const resized = Buffer.alloc(chunkLength(newSize, edge));
      carried.copy(resized, 0, 0, Math.min(carried.length, resized.length));
      this.readCache.delete(edge);
      this.writeCache.put(edge, resized, resized.length, Date.now());
    }
    await this.flush();
  }

  /** Flush, stop background work. The engine serves nothing afterwards. */
  /** Flush, stop background work, release the lease — also when the flush fails (the error is
   *  rethrown: what was not flushed is lost, and the caller must say so). */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.opts.readOnly && !this.opts.lease?.lost) await this.flush();
    } finally {
      this.closed = true;
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
      await this.opts.lease?.release();
    }
  }

  /** The writer's lease was lost: this engine serves nothing more (reads could be stale). */
  get leaseLost(): boolean {
    return this.opts.lease?.lost ?? false;
  }

  /** Take a lost lease back if nobody else took it (see VolumeLease.resume). */
  regainLease(): Promise<boolean> {
    return this.opts.lease?.resume() ?? Promise.resolve(false);
  }

  // The lease is checked where it matters, asynchronously (lease.ensure(): a lease lost only to a
  // late heartbeat is resumed first): at the entry of read, write, zero and flush, and before
  // every root commit, the one write that other writers could conflict with (fenced by the
  // root's If-Match too). Writes into the cache in between need no lease.
  private assertOpen(): void {
    if (this.closed) throw new VaultError('ERR_SHUTDOWN', `volume "${this.name}" is closed`);
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.opts.readOnly) throw new VaultError('ERR_READ_ONLY', `volume "${this.name}" is read-only`);
  }
}

