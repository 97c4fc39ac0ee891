// The write path: client writes and zeroes become dirty 4 KiB blocks in the active batch
// (dirty-blocks.ts). A block the write covers wholly needs no read; a partly covered block is
// merged with its current content (read-path.ts) under the chunk's lock, so two partial writes
// of one block never lose each other. A whole-chunk zero is one mark, not 1,024 blocks.
// Backpressure: a writer waits while the dirty bytes are at the limit (the sealer drains them);
// writes never fail for room. Not here: sealing and committing (sealer.ts, commit.ts).
import { VaultError } from '../errors';
import { KeyedMutex } from '../util/keyed-mutex';
import { copyWriteData, type WriteData } from '../block-io';
import { splitRange, type ChunkSpan } from './chunk-math';
import { BLOCK_BYTES } from './journal-record';
import type { ReadPath } from './read-path';
import type { VolumeState } from './volume-state';
import type { MemoryBudget } from '../util/memory-budget';

export class WritePath {
  private readonly chunkLocks = new KeyedMutex<number>();
  private roomWaiters: Array<() => void> = [];

  constructor(
    private readonly state: VolumeState,
    private readonly reads: ReadPath,
    private readonly dirtyLimitBytes: number,
    /** asks the sealer to drain dirty data (pressure, or a chunk became wholly written) */
    private readonly onPressure: () => void,
    /** the process memory budget: dirty blocks hold their bytes of it until sealed */
    private readonly budget?: MemoryBudget,
  ) {}

  get waiting(): number {
    return this.roomWaiters.length;
  }

  private closed = false;

  /** The engine closed: writers still waiting for room wake with ERR_SHUTDOWN (nothing seals for
   *  them any more: before, they waited for good). */
  close(): void {
    this.closed = true;
    this.roomFreed();
  }

  private async waitForRoom(): Promise<void> {
    if (!this.closed) {
      this.onPressure();
      await new Promise<void>((r) => this.roomWaiters.push(r));
    }
    if (this.closed) throw new VaultError('ERR_SHUTDOWN', 'the volume was closed while this write waited for room');
  }

  /** Wake writers waiting for room (the sealer released dirty bytes). */
  roomFreed(): void {
    const w = this.roomWaiters;
    this.roomWaiters = [];
    for (const r of w) r();
  }

  /** bytes promised to admitted writers that have not set their blocks yet */
  private reserved = 0;

  /**
   * Wait until `bytes` more fit under the dirty limit (one writer is always admitted when nothing
   * is dirty or promised), and promise them: writers admitted at the same moment must not all see
   * the same free room. The caller releases once its blocks are in the batch (counted there).
   */
  private async admit(bytes: number): Promise<() => void> {
    while (this.state.dirtyBytes + this.reserved > 0 && this.state.dirtyBytes + this.reserved + bytes > this.dirtyLimitBytes) await this.waitForRoom();
    this.reserved += bytes;
    if (this.state.dirtyBytes + this.reserved >= this.dirtyLimitBytes / 2) this.onPressure();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.reserved -= bytes;
      this.roomFreed();
    };
  }

  async write(offset: number, length: number, data: WriteData): Promise<void> {
    const admitted = await this.admit(length);
    // every block the write touches, partial ends included (an overwrite counts again: the batch
    // gives it all back when it is sealed)
    const blocks = Math.floor((offset + length - 1) / BLOCK_BYTES) - Math.floor(offset / BLOCK_BYTES) + 1;
    let release: (() => void) | null = null;
    const spans = splitRange(offset, length, this.state.sizeBytes);
    try {
      // The budget is taken with tryReserve and waited for only while this volume has dirty data
      // to seal: waiting on room that only others (in-flight requests, other volumes) can free
      // could deadlock with the very requests that wait here. With nothing of ours to seal, go on
      // unheld.
      while (this.budget) {
        release = this.budget.tryReserve(blocks * BLOCK_BYTES);
        if (release || this.state.dirtyBytes === 0) break;
        await this.waitForRoom();
      }
      // every span settles before the write does: the payload is nbd/'s again once it returns, and
      // a span still waiting for its chunk's lock must not copy another request's bytes later
      const settled = await Promise.allSettled(spans.map((s) => this.writeSpan(s, data)));
      for (const r of settled) if (r.status === 'rejected') throw r.reason;
    } finally {
      admitted();
      if (release) this.holdUntilStored(spans, release);
    }
  }

  /** The write's budget share stays with its blocks until every chunk's are stored: one hold on
   *  each chunk's newest batch holding blocks of it (a whole chunk may have left the active batch
   *  for its own rewrite already, and chunks are stored apart), given back with the last; at once
   *  if none holds any (stored already, or a failed write). Never on an empty entry, which no
   *  cycle would take. */
  private holdUntilStored(spans: readonly ChunkSpan[], release: () => void): void {
    // the common case first, allocating nothing: one chunk, its blocks in the active batch
    const only = spans.length === 1 ? this.state.active.chunks.get(spans[0].chunkIndex) : undefined;
    if (only && only.blocks.size > 0) {
      only.budgetHolds.push(release);
      return;
    }
    const holders = [];
    for (const { chunkIndex } of spans) {
      for (const batch of this.state.batchesNewestFirst()) {
        const c = batch.chunks.get(chunkIndex);
        if (c && c.blocks.size > 0) {
          holders.push(c);
          break;
        }
      }
    }
    let left = holders.length;
    if (left === 0) return release();
    const one = () => {
      if (--left === 0) release();
    };
    for (const c of holders) c.budgetHolds.push(one);
  }

  async zero(offset: number, length: number, fastZero: boolean): Promise<void> {
    const spans = splitRange(offset, length, this.state.sizeBytes);
    if (fastZero) {
      // zeroing part of a block we would first have to read is not fast: say so up front
      for (const s of spans) {
        const partial = s.chunkOffset % BLOCK_BYTES !== 0 || ((s.chunkOffset + s.length) % BLOCK_BYTES !== 0 && s.chunkOffset + s.length !== s.chunkLength);
        if (partial && !this.knownZero(s.chunkIndex)) throw new VaultError('ERR_NOT_SUPPORTED', 'fast zero is not possible: a partial block would need a read');
      }
    }
    const work: Promise<void>[] = [];
    for (const s of spans) {
      // a chunk that is zero already with nothing pending needs nothing (a full-device TRIM of
      // an empty volume touches nothing)
      if (this.knownZero(s.chunkIndex) && !this.chunkLocks.isLocked(s.chunkIndex)) continue;
      if (s.whole) {
        this.state.active.zeroChunk(s.chunkIndex, Date.now());
        continue;
      }
      const admitted = await this.admit(2 * BLOCK_BYTES); // its partial end blocks
      work.push(this.writeSpan(s, null).finally(admitted));
      if (work.length >= 256) await Promise.all(work.splice(0));
    }
    await Promise.all(work);
  }

  private knownZero(i: number): boolean {
    return this.state.isPlain(i) && this.state.manifest.isZero(i);
  }

  /** Apply one span (`data` holds the whole write; null: zeros) as blocks of the active batch. */
  private async writeSpan(s: ChunkSpan, data: WriteData | null): Promise<void> {
    const i = s.chunkIndex;
    const end = s.chunkOffset + s.length;
    const firstPartial = s.chunkOffset % BLOCK_BYTES !== 0 || (end < s.chunkLength && end - s.chunkOffset < BLOCK_BYTES && end % BLOCK_BYTES !== 0);
    const lastPartial = end % BLOCK_BYTES !== 0 && end !== s.chunkLength;
    if (!firstPartial && !lastPartial && !this.chunkLocks.isLocked(i)) {
      this.setBlocks(s, data); // every block covered: no read, no lock needed
      if (this.state.active.chunks.get(i)?.covered) this.onPressure(); // a whole chunk: seal it now
      return;
    }
    await this.chunkLocks.run(i, async () => {
      // Partial blocks: read their current content first (outside any batch change), then apply
      // the whole span at once, synchronously.
      const bFirst = Math.floor(s.chunkOffset / BLOCK_BYTES);
      const bLast = Math.floor((end - 1) / BLOCK_BYTES);
      const merged = new Map<number, Buffer>();
      try {
        for (const b of new Set([bFirst, bLast])) {
          const bStart = b * BLOCK_BYTES;
          const bEnd = Math.min(bStart + BLOCK_BYTES, s.chunkLength);
          if (s.chunkOffset <= bStart && end >= bEnd) continue; // covered
          merged.set(b, await this.reads.block(i, b));
        }
      } catch (err) {
        for (const blk of merged.values()) this.state.blocks.give(blk);
        throw err;
      }
      this.setBlocks(s, data, merged);
    });
  }

  /** Synchronously set the span's blocks; `merged` holds current content for partial blocks. */
  private setBlocks(s: ChunkSpan, data: WriteData | null, merged?: Map<number, Buffer>): void {
    const i = s.chunkIndex;
    const batch = this.state.active;
    const now = Date.now();
    const end = s.chunkOffset + s.length;
    // Every block is copied into slab memory: the payload is nbd/'s, recycled for the next
    // request once this write returns (nbd/export.ts), and a block kept as a view of it would
    // also keep a whole payload alive for 4 KiB.
    for (let pos = s.chunkOffset; pos < end; ) {
      const b = Math.floor(pos / BLOCK_BYTES);
      const bStart = b * BLOCK_BYTES;
      const segEnd = Math.min(end, bStart + BLOCK_BYTES);
      const base = merged?.get(b);
      if (base) {
        if (data === null) base.fill(0, pos - bStart, segEnd - bStart);
        else copyWriteData(data, s.rangeOffset + pos - s.chunkOffset, base, pos - bStart, segEnd - pos);
        batch.setBlock(i, b, base, now);
      } else if (data === null) batch.setBlock(i, b, null, now);
      else {
        const n = segEnd - pos;
        const blk = this.state.blocks.take();
        copyWriteData(data, s.rangeOffset + pos - s.chunkOffset, blk, 0, n);
        if (n < BLOCK_BYTES) blk.fill(0, n); // the short last block of a volume
        batch.setBlock(i, b, blk, now);
      }
      pos = segEnd;
    }
  }
}
