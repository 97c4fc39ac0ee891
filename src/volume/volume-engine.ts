// VolumeEngine: block-device semantics over sealed chunks and journals — what nbd/ serves for a
// volume (it satisfies nbd/'s Export contract structurally; cli/ hands it over). One engine per
// open volume, shared by every connection (so CAN_MULTI_CONN is honest: a flush from any
// connection seals every dirty block and commits one root).
//
// The engine wires the pieces and owns the lifecycle; each piece says what it does not own:
//   read-path.ts   reads: dirty blocks → journal overlay → chunk frames (ranged reads, cached)
//   write-path.ts  writes and zeroes into 4 KiB dirty blocks, backpressure
//   sealer.ts      seal cycles (chunk objects + one journal), compaction, exclusive sections
//                  (seal-layout.ts: how dirty blocks are laid out for them)
//   commit.ts      the only root writer: pages, then root, then deletes
//   snapshot-and-resize.ts  a snapshot (a new epoch) and a resize, inside the sealer's exclusive section
//   write-back.ts  what is sealed, folded and committed without being asked (a 100 ms tick)
//   volume-state.ts the state they share (manifest, overlay, dirty batches, epoch, seq)
// FLUSH = a seal cycle of everything written before it, then a root naming it (durable).
import { formatSize } from '../util/size';
import { VaultError } from '../errors';
import { isMissingObject } from './framed-reads';
import type { Logger } from '../util/log';
import type { MemoryBudget } from '../util/memory-budget';
import { SealMemory } from './seal-memory';
import { writeDataLength, type BlockCaps, type ContextExtent, type Extent, type ReadOptions, type WriteData, type WriteOptions, type ZeroOptions } from '../block-io';
import { CHUNK_SIZE, chunkCount } from './chunk-math';
import { Manifest, PAGE_ENTRIES, type PageRef } from './manifest';
import type { JournalRef, RootRecord } from './root-record';
import type { VolumeLease } from './volume-lease';
import { ReadCache } from './read-cache';
import type { VolumeObjects } from './volume-objects';
import type { SnapshotRecord } from './snapshot-record';
import { resizeVolume, takeSnapshot, type EngineParts } from './snapshot-and-resize';
import { VolumeContexts } from './volume-contexts';
import { VolumeState } from './volume-state';
import { ReadPath } from './read-path';
import { WritePath } from './write-path';
import { Sealer } from './sealer';
import { Committer } from './commit';
import { WriteBack } from './write-back';

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
  /** a read-only engine on a root another writer replaces (a read-only view): an object gone
   *  is routine there (the view moves to the newer root), logged at debug, not as an error */
  readonly followsWriter?: boolean;
  /** called after every durable root, e.g. to record the sequence in local state */
  readonly onRootCommitted?: (seq: number) => Promise<void>;
  /** the writer's lease (writable engines): writes stop if it is lost; released on close */
  readonly lease?: VolumeLease;
  /** called once the engine has closed (a snapshot's reader mark is removed) */
  readonly onClosed?: () => Promise<void>;
  /** the process memory budget (serve --memory-limit): read cache and dirty blocks draw from it */
  readonly memoryBudget?: MemoryBudget;
  /** what seal cycles and compaction hold in flight, shared by the engines of a process
   *  (default: this engine's own, for upload-concurrency chunks) */
  readonly sealMemory?: SealMemory;
}

export const DEFAULT_ENGINE_OPTIONS: EngineOptions = {
  dirtyLimitBytes: 64 * 2 ** 20,
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
  /** whole chunks (a stream's) and frames (a random read's miss) decoded into a buffer an earlier
   *  one left (decode-buffers.ts) */
  readonly decodeBuffersReused: number;
  /** bytes of such buffers waiting for the next chunk (they hold memory budget) */
  readonly decodeBuffersFreeBytes: number;
  readonly dirtyBytes: number;
  /** chunks with dirty blocks (being sealed included) */
  readonly dirtyChunks: number;
  /** seal cycles and compaction steps running or queued (0 or 1 running) */
  readonly uploadsInFlight: number;
  /** journals the live state names, and blocks they hold that no chunk object has yet */
  readonly journals: number;
  readonly journalBlocks: number;
  readonly leaseHeld: boolean;
  readonly leaseLost: boolean;
}

export class VolumeEngine {
  readonly caps: BlockCaps;
  private readonly state: VolumeState;
  private readonly reads: ReadPath;
  private readonly writes: WritePath;
  private readonly sealer: Sealer;
  private readonly committer: Committer;
  private snapshotChain: Promise<unknown> = Promise.resolve();
  private readonly writeBack: WriteBack;
  private closed = false;
  private closing: Promise<void> | null = null;
  /** qemu:dirty-bitmap:* and qemu:allocation-depth (volume-contexts.ts) */
  private readonly contexts: VolumeContexts;
  /** what snapshot-and-resize.ts works on */
  private readonly parts: EngineParts;

  constructor(
    readonly name: string,
    readonly description: string,
    private readonly objects: VolumeObjects,
    root: RootRecord,
    rootEtag: string | null,
    manifest: Manifest,
    private readonly opts: EngineOptions,
    logger: Logger,
  ) {
    if (root.chunkSize !== CHUNK_SIZE) throw new VaultError('ERR_CORRUPT', `volume "${name}" uses chunk size ${root.chunkSize}, this build supports ${CHUNK_SIZE}`);
    const state = new VolumeState(manifest, root, rootEtag, opts.memoryBudget, opts.dirtyLimitBytes);
    this.state = state;
    this.reads = new ReadPath(name, state, objects, new ReadCache(opts.readCacheBytes, opts.memoryBudget), opts.readaheadChunks, logger, opts.followsWriter === true);
    this.writes = new WritePath(state, this.reads, opts.dirtyLimitBytes, () => this.writeBack.sealSome(), opts.memoryBudget);
    const sealMemory = opts.sealMemory ?? new SealMemory(3 * opts.uploadConcurrency * CHUNK_SIZE);
    this.sealer = new Sealer(name, state, objects, this.reads, opts.uploadConcurrency, () => this.writes.roomFreed(), logger, sealMemory, () => this.writeBack.sealSome());
    this.committer = new Committer(name, state, objects, root.origin, opts.lease, opts.onRootCommitted, logger);
    this.writeBack = new WriteBack(name, { state, writes: this.writes, sealer: this.sealer, committer: this.committer }, opts, logger);
    this.contexts = new VolumeContexts({
      objects,
      origin: root.origin,
      manifest,
      size: () => this.state.sizeBytes,
      epoch: () => this.state.epoch,
      pending: () => this.pendingChunks(),
      loadManifest: (o, r) => VolumeEngine.loadManifest(o, r),
    });
    this.parts = { name, state, objects, reads: this.reads, writes: this.writes, sealer: this.sealer, committer: this.committer, contexts: this.contexts, logger };
    const rw = !opts.readOnly;
    this.caps = { readOnly: !rw, canFlush: rw, canFua: rw, canTrim: rw, canZero: rw, canFastZero: rw, canCache: true, canMultiConn: true };
  }

  /** Open a volume at `root`: replay the root's journals, in order, into the overlay (crash
   *  recovery is exactly this: the root names its journals), then start background work. */
  static async open(name: string, description: string, objects: VolumeObjects, root: RootRecord, rootEtag: string | null, manifest: Manifest, opts: EngineOptions, logger: Logger): Promise<VolumeEngine> {
    const engine = new VolumeEngine(name, description, objects, root, rootEtag, manifest, opts, logger);
    const journals: readonly JournalRef[] = root.journals ?? [];
    const indexes = await Promise.all(journals.map((ref) => objects.readJournalIndex(ref)));
    journals.forEach((ref, k) => engine.state.overlay.apply(ref, indexes[k], (i) => engine.state.blockCount(i)));
    if (!opts.readOnly) {
      engine.writeBack.start();
      opts.lease?.reportPending(() => engine.state.oldestUnreferencedMs());
    }
    return engine;
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
    const s = this.state;
    const dirtyChunks = new Set<number>();
    for (const b of s.batchesNewestFirst()) for (const i of b.chunks.keys()) dirtyChunks.add(i);
    return {
      readCacheHits: this.reads.frames.hits,
      readCacheMisses: this.reads.frames.misses,
      readCacheBytes: this.reads.frames.sizeBytes,
      decodeBuffersReused: this.reads.buffers.reused,
      decodeBuffersFreeBytes: this.reads.buffers.freeBytes,
      dirtyBytes: s.dirtyBytes,
      dirtyChunks: dirtyChunks.size,
      uploadsInFlight: this.sealer.storing ? 1 : 0,
      journals: s.overlay.journals.length,
      journalBlocks: s.overlay.entries,
      leaseHeld: lease !== undefined && !lease.lost,
      leaseLost: lease?.lost ?? false,
    };
  }

  get size(): number {
    return this.state.sizeBytes;
  }

  get currentSeq(): number {
    return this.state.seq;
  }

  /** The volume's id: a view that follows the volume's newest root checks it is still this one. */
  get volumeId(): string {
    return this.objects.volumeId;
  }

  /** The sequence number of the root in the store now, or null when the volume's metadata or
   *  root is gone (deleted, or being deleted): whether a read-only engine reads an older root,
   *  or a volume no longer there. */
  async storeRootSeq(): Promise<number | null> {
    if (!(await this.objects.metaExists())) return null;
    try {
      return (await this.objects.readRoot()).root.seq;
    } catch (err) {
      if (isMissingObject(err)) return null;
      throw err;
    }
  }

  get currentEpoch(): number {
    return this.state.epoch;
  }

  /** A consistent copy of the committed page list (for snapshots). */
  get committedPages(): Array<PageRef | null> {
    return [...this.state.manifest.pages];
  }

  usage() {
    return this.state.manifest.usage();
  }

  /** Chunks whose content is not (only) their manifest entry: true when they may hold data. */
  private pendingChunks(): Map<number, boolean> {
    const s = this.state;
    const out = new Map<number, boolean>();
    for (const i of s.overlay.chunkIndexes()) out.set(i, true);
    for (const b of s.batchesNewestFirst()) {
      for (const [i, c] of b.chunks) {
        if (out.has(i)) continue;
        const data = [...c.blocks.values()].some((x) => x !== null) || !c.zeroBase;
        out.set(i, data);
      }
    }
    return out;
  }

  // --- reads ------------------------------------------------------------------------------

  async read(offset: number, length: number, opts: ReadOptions = {}): Promise<Buffer> {
    await this.enter(false);
    return this.reads.read(offset, length, opts.requester);
  }

  readDone(data: Buffer): void {
    this.reads.readDone(data);
  }

  async cache(offset: number, length: number): Promise<void> {
    await this.enter(false);
    await this.reads.cache(offset, length);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    await this.enter(false);
    const s = this.state;
    const extents: Extent[] = [];
    const end = Math.min(s.sizeBytes, offset + length);
    let pos = offset;
    const pending = this.pendingChunks();
    while (pos < end && extents.length < 1024) {
      const i = Math.floor(pos / CHUNK_SIZE);
      const chunkEnd = Math.min(end, (i + 1) * CHUNK_SIZE);
      const p = pending.get(i);
      const zero = p === undefined ? s.manifest.isZero(i) : !p;
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

  /** Writes, zeroes and trims accepted so far (the snapshot schedule asks what changed). */
  writeCount = 0;

  async write(offset: number, data: WriteData, opts: WriteOptions = {}): Promise<void> {
    await this.enter(true);
    this.writeCount++;
    this.writeBack.noteWrite(Date.now());
    await this.writes.write(offset, writeDataLength(data), data);
    if (opts.fua) await this.flush();
  }

  async trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    await this.writeZeroes(offset, length, opts);
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    await this.enter(true);
    this.writeCount++;
    this.writeBack.noteWrite(Date.now());
    await this.writes.zero(offset, length, opts.fastZero === true);
    if (opts.fua) await this.flush();
  }

  // --- flush, commit (background work: write-back.ts) -------------------------------------

  async flush(): Promise<void> {
    await this.enter(false);
    if (this.opts.readOnly) return;
    this.opts.lease?.check(); // a writer without its lease cannot promise anything is durable
    await this.sealer.sealDirty();
    // A commit already running may hold our writes: wait for it. If it did, and nothing changed
    // since, the root in the store is current and there is nothing to write.
    await this.committer.idle;
    if (!this.committer.hasUncommittedChanges()) return;
    await this.committer.commit();
  }

  /** Fold every journal into chunk objects now and commit (the background does this on its own
   *  when journals grow or the volume is idle). */
  async compact(): Promise<void> {
    this.assertNotClosing();
    await this.sealer.exclusive(async () => {});
    await this.flush();
  }

  /** Commit a root now (tests, and the snapshot path). */
  commitRoot(snapshot = false): Promise<RootRecord> {
    return this.committer.commit(snapshot);
  }

  /** Freeze the volume at one consistent point (snapshot-and-resize.ts); one at a time. */
  snapshot(name: string, opts: { keep?: boolean } = {}): Promise<SnapshotRecord> {
    try {
      this.assertNotClosing(); // asked before a close began: taken before the close flushes
    } catch (err) {
      return Promise.reject(err);
    }
    const run = this.snapshotChain.then(() => {
      this.assertWritable();
      this.opts.lease?.check(); // a lost lease: not a fold of every journal first, only to fail at the commit
      return takeSnapshot(this.parts, name, opts.keep === true);
    });
    this.snapshotChain = run.catch(() => {});
    return run;
  }

  /** Change the volume's size (snapshot-and-resize.ts), then flush. */
  async resize(newSize: number): Promise<void> {
    this.assertNotClosing();
    if (newSize === this.state.sizeBytes) return;
    await resizeVolume(this.parts, newSize);
    await this.flush();
  }

  /** Stop background work, flush, release the lease — also when the flush fails (the error is
   *  rethrown: what was not flushed is lost, and the caller must say so). Snapshots asked for
   *  before the close are taken first; none can start after it began. Nothing is stored once it
   *  settles: a background compaction step stops at its next chunk, and seal jobs, whole-chunk
   *  rewrites, a background commit and read fetches in flight are waited for (work that went on
   *  past the close stored objects after the lease was given back, and failed loudly once the
   *  process had closed its codec threads). */
  close(): Promise<void> {
    if (this.closing) return this.closing; // settles with the first close; its caller has the error
    const run = this.closeNow();
    this.closing = run.catch(() => {});
    return run;
  }

  private async closeNow(): Promise<void> {
    try {
      await this.closeParts();
    } finally {
      await this.opts.onClosed?.(); // (also when a part failed to close)
    }
  }

  private async closeParts(): Promise<void> {
    this.writeBack.stopTicking(); // no background work starts from the timer from here on
    this.sealer.stopCompaction();
    try {
      await this.snapshotChain;
      if (!this.opts.readOnly && this.opts.lease?.lost) this.refuseLostWrites();
      else if (!this.opts.readOnly) await this.flush().catch((err) => this.refuseUnstoredWrites(err));
    } finally {
      this.closed = true;
      this.writeBack.stop();
      this.writes.close();
      await this.sealer.close();
      await this.committer.settled();
      await this.reads.close();
      // Dirty data a flush could not store (a lost lease, a failing store) is given up with the
      // engine: its share of the process budget goes back to the other volumes.
      for (const batch of this.state.batchesNewestFirst()) for (const c of batch.chunks.values()) c.giveBudgetBack();
      this.state.blocks.dropKept(); // and so do the empty slabs it kept for next writes
      await this.opts.lease?.release();
    }
  }

  /** A close without the lease: written data that no durable root holds yet is lost, and the
   *  caller must say so (a clean "flushed and closed" here hid acknowledged writes going away). */
  private refuseLostWrites(): void {
    const dirty = this.state.dirtyBytes;
    if (dirty === 0 && !this.state.writesSinceCommit) return; // (a compaction's edits hold nothing new)
    const what = dirty > 0 ? `${formatSize(dirty)} of written data no FLUSH had covered` : 'written data stored since the last FLUSH';
    throw new VaultError('ERR_LEASE', `volume "${this.name}": the lease was lost, so ${what} could not be made durable and is given up`);
  }

  /** A close whose last flush failed (the store still fails): say how much is given up. */
  private refuseUnstoredWrites(err: unknown): never {
    if (this.state.dirtyBytes === 0 || !(err instanceof VaultError)) throw err;
    throw new VaultError(err.code, `volume "${this.name}": ${formatSize(this.state.dirtyBytes)} of written data could not be stored and is given up: ${err.message}`, { cause: err });
  }

  /** The writer's lease was lost: this engine serves nothing more (reads could be stale). */
  get leaseLost(): boolean {
    return this.opts.lease?.lost ?? false;
  }

  /** The lost lease is another writer's now: what this engine holds unflushed can never be
   *  stored. (Lost otherwise, in a store outage say, it may be taken back: regainLease.) */
  get leaseLostForGood(): boolean {
    return this.opts.lease?.lostForGood ?? false;
  }

  /** Take a lost lease back if nobody else took it (see VolumeLease.resume). */
  regainLease(): Promise<boolean> {
    return this.opts.lease?.resume() ?? Promise.resolve(false);
  }

  // The lease is checked where it matters, asynchronously (lease.ensure(): a lease lost only to a
  // late heartbeat is resumed first): at the entry of read, write, zero and flush, and before
  // every root commit, the one write that other writers could conflict with (fenced by the
  // root's If-Match too). Writes into dirty blocks in between need no lease.

  /** A request's entry: a closed engine says so (not that its released lease refuses), and a
   *  lease lost only to a late heartbeat is resumed first (lease.ensure). */
  private async enter(writable: boolean): Promise<void> {
    this.assertEntry(writable);
    await this.opts.lease?.ensure();
    this.assertEntry(writable);
  }

  private assertEntry(writable: boolean): void {
    if (writable) this.assertWritable();
    else this.assertOpen();
  }

  private assertOpen(): void {
    if (this.closed) throw new VaultError('ERR_SHUTDOWN', `volume "${this.name}" is closed`);
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.opts.readOnly) throw new VaultError('ERR_READ_ONLY', `volume "${this.name}" is read-only`);
  }

  /** Work that folds or commits on its own (snapshot, resize, compact) starts only before a close
   *  does; reads and writes still in flight meanwhile are the close's flush to store. */
  private assertNotClosing(): void {
    this.assertWritable();
    if (this.closing) throw new VaultError('ERR_SHUTDOWN', `volume "${this.name}" is closing`);
  }
}
