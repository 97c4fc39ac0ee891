// The sealer: turns dirty blocks into stored objects and folds journals into chunks, one job at a
// time (a promise chain), so that no two jobs ever edit the same chunk's state at once.
//   - seal cycle: freeze the active batch; a chunk that is wholly known (rewritten or zeroed) is
//     sealed as a new chunk object; every other dirty block goes into ONE journal object (so a
//     FLUSH costs O(bytes written), not O(chunks touched)); then the edit is applied to the state
//     synchronously and the frozen batch is dropped.
//   - compaction step: fold the journal blocks of a few chunks (those of the oldest journal first)
//     into new chunk objects; a journal nothing points into any more leaves the root.
//   - exclusive sections (snapshot, resize) run between jobs.
//   - whole-chunk rewrites, beside the chain: a chunk written whole that needs nothing else (no
//     older journal blocks, no older frozen batch) is sealed and stored on its own, several side
//     by side, each applied as soon as it is stored; chain jobs wait for them, and none starts
//     while a chain job waits or runs. A stream of whole chunks (sequential writes) then keeps
//     the codec busy instead of waiting, cycle after cycle, for each cycle's slowest upload.
// Not here: the root (commit.ts) — the sealer only edits the state; deletes wait for a root.
import { BugError, VaultError, describeError } from '../errors';
import type { Logger } from '../util/log';
import type { ChunkBlocks } from './dirty-blocks';
import type { JournalExtent } from './journal-record';
import type { JournalRef } from './root-record';
import type { JournalHandle } from './journal-overlay';
import type { Entry } from './manifest';
import { chunkKey, journalKey } from './object-keys';
import type { ReadPath } from './read-path';
import type { VolumeObjects } from './volume-objects';
import type { VolumeState } from './volume-state';
import type { ChunkBufferPool } from './chunk-buffer-pool';
import type { SealMemory } from './seal-memory';
import { CHUNK_SIZE } from './chunk-math';
import { assembleChunk, buildJournals, mergeBatches, packFrames } from './seal-layout';
import { InFlight } from '../util/in-flight';

/** chunks a compaction step rewrites */
const COMPACT_CHUNKS_PER_STEP = 8;

export class Sealer {
  /** recycled whole-chunk buffers (shared by the volumes of a process, as the memory is) */
  private readonly buffers: ChunkBufferPool;
  private chain: Promise<unknown> = Promise.resolve();
  /** a seal cycle queued but not started: later requests share it (it freezes what they wrote) */
  private queued: Promise<void> | null = null;
  private running = 0;
  /** chain jobs queued or running: no whole-chunk rewrite starts meanwhile */
  private jobs = 0;
  /** whole-chunk rewrites in flight, the blocks they hold, and chain jobs waiting for them */
  private rewrites = 0;
  rewritingBlocks = 0;
  private rewritesDone: Array<() => void> = [];
  /** the engine is closing: a compaction step gives up at its next chunk (the journals stay) */
  private compactionStopped = false;
  private closed = false;
  /** deletes of what failed jobs had stored, still running */
  private readonly discarding = new InFlight();
  failures = 0;
  retryAtMs = 0;
  /** background compaction failed this many times in a row, and waits until compactRetryAtMs
   *  (a full or read-only store failed every step, 11 times a second, one warning each) */
  private compactFailures = 0;
  compactRetryAtMs = 0;
  lastError: unknown = null;

  constructor(
    private readonly name: string,
    private readonly state: VolumeState,
    private readonly objects: VolumeObjects,
    private readonly reads: ReadPath,
    private readonly uploadConcurrency: number,
    private readonly roomFreed: () => void,
    private readonly logger: Logger,
    /** what the buffers of a seal cycle or a compaction step hold while they are in flight */
    private readonly memory: SealMemory,
    /** called when the last job ends: more may be due (no gap until the next tick) */
    private readonly onIdle: () => void = () => {},
  ) {
    this.buffers = memory.buffers;
  }

  /** a job runs, or a flush's cycle waits to (the background may queue another cycle behind a
   *  running one: under random writes, cycles back to back keep dirty data below its limit —
   *  waiting for each to end before queuing the next cost 12 % of 4k random-write IOPS) */
  get busy(): boolean {
    return this.running > 0 || this.queued !== null;
  }

  /** a frozen batch that no rewrite holds: a failed attempt's, which a cycle stores (in order) */
  get retryWaiting(): boolean {
    return this.state.frozen.some((b) => !b.rewriting);
  }

  /** anything being stored: a chain job or a whole-chunk rewrite */
  get storing(): boolean {
    return this.jobs > 0 || this.rewrites > 0;
  }

  /** Seal everything dirty at the time of this call (in a cycle that starts after it). */
  sealDirty(): Promise<void> {
    if (this.queued) return this.queued;
    const run = this.enqueue(() => {
      this.queued = null;
      return this.cycle(() => true);
    });
    this.queued = run;
    return run;
  }

  /** Seal the dirty chunks `pick` chooses when the cycle starts (background write-back: whole
   *  chunks, idle ones, all under pressure); the others stay in the active batch. */
  sealSome(pick: (c: ChunkBlocks) => boolean): Promise<void> {
    return this.enqueue(() => this.cycle(pick));
  }

  compactStep(): Promise<number> {
    return this.enqueue(() => this.compactNow(COMPACT_CHUNKS_PER_STEP, true));
  }

  /** No background compaction step goes on past its chunks in flight (closing: folding is never
   *  owed; the journals stay for the next open). */
  stopCompaction(): void {
    this.compactionStopped = true;
  }

  /** The engine closes: background compaction stops at its next chunk, and once this settles no
   *  job or whole-chunk rewrite is queued or running, and none starts (nothing may store after
   *  the lease is given back). */
  async close(): Promise<void> {
    this.stopCompaction();
    while (this.jobs > 0 || this.rewrites > 0) {
      await this.chain;
      while (this.rewrites > 0) await new Promise<void>((r) => this.rewritesDone.push(r));
    }
    this.closed = true;
    await this.discarding.settled();
  }

  /** Run `work` between jobs, after sealing what is dirty and folding every journal: the state
   *  then has no journal and no frozen batch (what snapshot and resize need). */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    return this.enqueue(async () => {
      await this.cycle(() => true);
      while (this.state.overlay.journals.length > 0) {
        if ((await this.compactNow(64)) === 0 && this.state.overlay.journals.length > 0) {
          throw new VaultError('ERR_BUG', `volume "${this.name}": journals left that no chunk needs folding from`);
        }
      }
      return work();
    });
  }

  private enqueue<T>(job: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new VaultError('ERR_SHUTDOWN', `volume "${this.name}" is closed`));
    this.jobs++;
    const run = this.chain.then(async () => {
      // whole-chunk rewrites edit the state too: a job runs once they are done (none starts now)
      while (this.rewrites > 0) await new Promise<void>((r) => this.rewritesDone.push(r));
      this.running++;
      try {
        return await job();
      } finally {
        this.running--;
        this.jobs--;
        if (this.running === 0 && this.queued === null) queueMicrotask(this.onIdle);
      }
    });
    this.chain = run.catch(() => {});
    return run;
  }

  // --- whole-chunk rewrites -----------------------------------------------------------------

  /** Whether chunk i, written whole in the active batch, can be rewritten on its own now. */
  rewritable(i: number): boolean {
    const s = this.state;
    return i < s.chunkCount && !s.overlay.hasChunk(i) && !s.frozen.some((b) => b.chunks.has(i));
  }

  /** Start a rewrite of every whole chunk of the active batch that can have one, up to the
   *  upload concurrency. Not while a chain job waits or runs, a failure backs off, or a frozen
   *  batch waits for its retry (a cycle stores those, in order). */
  rewriteWhole(nowMs: number): void {
    const s = this.state;
    if (this.closed || this.jobs > 0 || nowMs < this.retryAtMs || this.retryWaiting) return;
    for (const [i, c] of [...s.active.chunks]) {
      if (this.rewrites >= this.uploadConcurrency) return;
      if (c.covered && this.rewritable(i)) void this.rewriteOne(i, c);
    }
  }

  private async rewriteOne(i: number, c: ChunkBlocks): Promise<void> {
    const s = this.state;
    const batch = s.active.split((x) => x === c);
    batch.frozen = true;
    batch.rewriting = true;
    s.frozen.push(batch);
    const blocks = c.blocks.size;
    this.rewrites++;
    this.rewritingBlocks += blocks;
    const tokens: number[] = [];
    const written: string[] = [];
    try {
      const entry = await this.sealWhole(i, c, tokens, written);
      // Apply the edit: from here to the end nothing awaits.
      this.replaceEntry(i, entry);
      s.uploadsApplied(tokens);
      s.manifestChangedSinceCommit = true;
      s.writesSinceCommit = true;
      s.frozen = s.frozen.filter((b) => b !== batch);
      batch.release();
      if (!this.retryWaiting) {
        // (while a failed attempt's batch waits for its cycle, its backoff and report stand)
        this.failures = 0;
        this.lastError = null;
      }
    } catch (err) {
      // The batch stays frozen, in its place: the next cycle stores it with the others.
      batch.rewriting = false;
      void this.discardUploads(tokens, written);
      this.failed(err);
    } finally {
      this.rewrites--;
      this.rewritingBlocks -= blocks;
      this.roomFreed();
      if (this.rewrites === 0) for (const r of this.rewritesDone.splice(0)) r();
      queueMicrotask(this.onIdle); // more may be due
    }
  }

  /** Storing dirty data failed: kept in memory, retried after a backoff. */
  private failed(err: unknown): void {
    this.failures++;
    this.lastError = err;
    const backoff = retryDelayMs(this.failures);
    this.retryAtMs = Date.now() + backoff / 2 + Math.random() * (backoff / 2);
    this.logger.error({ volume: this.name, failures: this.failures, dirtyBytes: this.state.dirtyBytes, err: describeError(err) }, 'storing dirty data failed; kept in memory and retried');
  }

  // --- seal cycle ---------------------------------------------------------------------------

  private async cycle(pick: (c: ChunkBlocks) => boolean): Promise<void> {
    const s = this.state;
    const taken = s.active.split(pick);
    if (taken.chunks.size > 0) {
      taken.frozen = true;
      s.frozen.push(taken);
    }
    if (s.frozen.length === 0) return;
    if (s.frozen.some((b) => b.rewriting)) throw new BugError(`volume "${this.name}": a seal cycle beside a whole-chunk rewrite`);
    const batches = [...s.frozen];
    const merged = mergeBatches(batches);
    const rewrites: Array<[number, ChunkBlocks]> = [];
    const journaled: Array<[number, ChunkBlocks]> = [];
    for (const [i, c] of [...merged].sort((a, b) => a[0] - b[0])) {
      if (i >= s.chunkCount) continue; // cut off by a shrink
      (c.covered ? rewrites : journaled).push([i, c]);
    }
    const tokens: number[] = [];
    const written: string[] = [];
    try {
      const entries = new Map<number, Entry>();
      await eachConcurrently(rewrites.length, this.uploadConcurrency, async (k, stopped) => {
        const [i, c] = rewrites[k];
        entries.set(i, await this.sealWhole(i, c, tokens, written, stopped));
      });
      // A rewritten chunk that older journals still hold blocks of: its journal says "reset", so
      // a reopen applies none of those older blocks over the new chunk object.
      const resets: JournalExtent[] = rewrites.filter(([i]) => s.overlay.hasChunk(i)).map(([i]) => ({ chunkIndex: i, firstBlock: 0, blockCount: 0, zero: false, reset: true, frame: 0, frameOffset: 0 }));
      // Journals are stored side by side (their blocks are disjoint) and listed in this order.
      const parts = buildJournals(journaled, resets);
      const journals: Array<{ ref: JournalRef; extents: JournalExtent[] }> = new Array(parts.length);
      await eachConcurrently(parts.length, this.uploadConcurrency, async (k, stopped) => {
        const part = parts[k];
        tokens.push(s.startUpload(Date.now()));
        // what sealing it really holds, however little data it has: the chunk-sized buffer its
        // frames are packed into and the container memory it is sealed into (counted by data
        // bytes, eight volumes' small journals held many times the share)
        const holds = part.frames.length === 0 ? 0 : 2 * CHUNK_SIZE;
        const ref = await this.memory.hold(holds, async () => {
          if (stopped()) throw STOPPED;
          const packed = packFrames(part.frames, this.buffers);
          try {
            return await this.objects.writeJournal(part.extents, packed.frames);
          } finally {
            for (const b of packed.backings) this.buffers.giveNow(b); // sealed or failed: the codec is done with them
          }
        });
        written.push(journalKey(this.objects.volumeId, ref.id));
        journals[k] = { ref, extents: part.extents };
      });
      // Apply the edit: from here to the end nothing awaits.
      for (const [i, entry] of entries) {
        this.replaceEntry(i, entry);
        s.overlay.dropChunk(i);
      }
      for (const j of journals) s.overlay.apply(j.ref, j.extents, (i) => s.blockCount(i));
      this.dropDeadJournals();
      s.uploadsApplied(tokens);
      if (entries.size > 0 || journals.length > 0) s.manifestChangedSinceCommit = s.writesSinceCommit = true;
      s.frozen = s.frozen.filter((b) => !batches.includes(b));
      for (const b of batches) b.release();
      this.failures = 0;
      this.lastError = null;
      this.roomFreed();
    } catch (err) {
      // Nothing was applied: the frozen batches stay (readable, retried by the next cycle), and
      // what this attempt stored is garbage nothing will name.
      void this.discardUploads(tokens, written);
      this.failed(err);
      throw new VaultError('ERR_IO', `volume "${this.name}": cannot store written data: ${describeError(err)}`, { cause: err });
    }
  }

  /** Assemble a chunk whose dirty state hides everything below, seal and store it (in the seal
   *  memory its buffer and sealed container hold; none stored if it is all zero). */
  private sealWhole(i: number, c: ChunkBlocks, tokens: number[], written: string[], stopped: () => boolean = () => false): Promise<Entry> {
    const s = this.state;
    return this.memory.hold(2 * s.chunkLength(i), async () => {
      if (stopped()) throw STOPPED;
      const data = assembleChunk(c, s.chunkLength(i), this.buffers);
      return data === null ? { id: null, epoch: s.epoch, storedSize: 0 } : this.storeChunk(i, data, tokens, written);
    });
  }

  /** Seal and store one assembled chunk (its buffer goes back to the pool), counting the upload
   *  as unreferenced until a root names it and remembering the object in case the job fails. */
  private async storeChunk(i: number, data: Buffer, tokens: number[], written: string[]): Promise<Entry> {
    const s = this.state;
    tokens.push(s.startUpload(Date.now()));
    try {
      const entry = await this.objects.writeChunk(i, data, s.epoch);
      if (entry.id !== null) written.push(chunkKey(this.objects.volumeId, entry.id));
      return entry;
    } finally {
      this.buffers.giveNow(data);
    }
  }

  /** A job failed before its edit was applied: what it stored is garbage nothing will name.
   *  Deleted now, best effort (gc takes what this misses); settles once the delete has. */
  private discardUploads(tokens: readonly number[], written: readonly string[]): Promise<void> {
    for (const t of tokens) this.state.unreferenced.delete(t);
    if (written.length === 0) return Promise.resolve();
    return this.discarding.track(this.objects.store.deleteMany(written).catch(() => {}));
  }

  /** Point chunk i at a new entry; the old object goes once a root no longer names it, if this
   *  epoch wrote it (an older epoch's object may be a snapshot's). */
  private replaceEntry(i: number, entry: Entry): void {
    const s = this.state;
    const old = s.manifest.get(i);
    s.manifest.set(i, { ...entry, epoch: s.epoch });
    if (old.id !== null && old.epoch === s.epoch) s.pendingDeletes.push(chunkKey(this.objects.volumeId, old.id));
  }

  /** Journals a replay no longer needs leave the root (and the store, after it). */
  private dropDeadJournals(): void {
    const s = this.state;
    const gone = s.overlay.removeDeadJournals();
    if (gone.length === 0) return;
    for (const j of gone) s.pendingDeletes.push(journalKey(this.objects.volumeId, j.ref.id));
    s.manifestChangedSinceCommit = true;
  }

  // --- compaction ---------------------------------------------------------------------------

  /** Fold every journal block of up to `max` chunks (those the oldest journal holds blocks of
   *  first) into new chunk objects. Returns how many chunks it rewrote. `background`: a step the
   *  engine chose, which a close stops (an exclusive section's folds are what its caller asked
   *  for, and a close waits for them). */
  private async compactNow(max: number, background = false): Promise<number> {
    const s = this.state;
    const closing = () => background && this.compactionStopped;
    this.dropDeadJournals();
    const oldest: JournalHandle | undefined = s.overlay.journals[0];
    if (!oldest) return 0;
    const picked: number[] = [];
    for (const i of s.overlay.chunkIndexes()) {
      const m = s.overlay.chunk(i)!;
      for (const loc of m.values()) {
        if (loc.journal === oldest) {
          picked.push(i);
          break;
        }
      }
      if (picked.length >= max) break;
    }
    const tokens: number[] = [];
    const entries = new Map<number, Entry>();
    const written: string[] = [];
    let resetJournal: JournalRef;
    this.logger.debug({ volume: this.name, chunks: picked.length, journals: s.overlay.journals.length }, 'compaction step started');
    // The new chunk objects hold what the journals held for these chunks; a reset journal after
    // every journal of the root voids those journals' extents of them on replay (the journals
    // stay in the root while other chunks still need them).
    const resets: JournalExtent[] = picked.map((i) => ({ chunkIndex: i, firstBlock: 0, blockCount: 0, zero: false, reset: true, frame: 0, frameOffset: 0 }));
    try {
      await eachConcurrently(picked.length, 4, async (k, stopped) => {
        if (closing()) throw STOPPED;
        const i = picked[k];
        // the stored container read back, the chunk it decodes to, and the new sealed container
        const entry = await this.memory.hold(3 * s.chunkLength(i), async () => {
          if (stopped() || closing()) throw STOPPED;
          const data = await this.reads.storedChunk(i, this.buffers.take(s.chunkLength(i), 'overwrite'));
          return this.storeChunk(i, data, tokens, written);
        });
        entries.set(i, entry);
      });
      tokens.push(s.startUpload(Date.now()));
      resetJournal = await this.objects.writeJournal(resets, []);
    } catch (err) {
      const discarded = this.discardUploads(tokens, written);
      if (closing()) {
        await discarded; // before the engine gives its lease back and the store closes
        this.logger.debug({ volume: this.name }, 'compaction stopped: the volume is closing (the journals stay)');
        return 0;
      }
      this.compactFailures++;
      const backoff = retryDelayMs(this.compactFailures);
      this.compactRetryAtMs = Date.now() + backoff;
      this.logger.warn({ volume: this.name, failures: this.compactFailures, retryInMs: backoff, err: describeError(err) }, 'compaction failed; the journals stay and it is retried later');
      throw err;
    } finally {
      this.reads.endFold();
    }
    // Apply the edit: from here to the end nothing awaits.
    this.compactFailures = 0;
    for (const [i, entry] of entries) this.replaceEntry(i, entry);
    s.overlay.apply(resetJournal, resets, (i) => s.blockCount(i));
    this.dropDeadJournals();
    s.uploadsApplied(tokens);
    if (entries.size > 0) s.manifestChangedSinceCommit = true;
    this.logger.debug({ volume: this.name, chunks: entries.size, journals: s.overlay.journals.length, overlayBlocks: s.overlay.entries }, 'compaction step');
    return entries.size;
  }
}

/** How long to wait after `failures` failed attempts in a row: 0.5 s, doubling, at most 30 s. */
function retryDelayMs(failures: number): number {
  return Math.min(30_000, 500 * 2 ** Math.min(16, failures - 1));
}

/** what a task that gave up after another failed throws (never reported: the first failure is) */
const STOPPED = new Error('stopped: another upload of this job failed, or the volume is closing');

/**
 * Runs task(0 … n-1) on up to `width` workers (at least one). After the first failure no worker
 * starts another task, a started one that still waits for seal memory checks `stopped()` and
 * gives up, and the call settles only once every started task has, then rethrows that failure:
 * the caller's cleanup (deleting what was stored) must not race uploads still running, nor may a
 * late task copy blocks a retry has already sealed and given back.
 */
async function eachConcurrently(n: number, width: number, task: (k: number, stopped: () => boolean) => Promise<void>): Promise<void> {
  let next = 0;
  const failures: unknown[] = [];
  const stopped = () => failures.length > 0;
  const worker = async () => {
    while (!stopped() && next < n) {
      try {
        await task(next++, stopped);
      } catch (err) {
        failures.push(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, width), n) }, worker));
  if (failures.length > 0) throw failures[0];
}
