// The journal overlay: for every block that a journal of the live root holds, where its newest
// content is (journal, data frame, offset) or that it is zero. Synchronous state, no I/O.
// Applying the root's journals in order to an empty overlay IS crash recovery: the root names
// its journals, so nothing has to be listed. Not here: reading the frames (read-path.ts),
// choosing what to compact (compactor.ts), the root (commit.ts).
import { VaultError } from '../errors';
import type { JournalExtent } from './journal-record';
import type { JournalRef } from './root-record';
import { BLOCK_BYTES } from './journal-record';

/** A journal of the live state, and how many overlay entries still point into it. */
export interface JournalHandle {
  readonly ref: JournalRef;
  liveBlocks: number;
  /** it voids earlier journals' extents of some chunks: it must outlive every older journal */
  hasResets: boolean;
}

/** Where a block's newest content is: a data frame of a journal, or (frame 0, the index frame,
 *  which holds no data) zeros that journal wrote. */
export interface BlockLocation {
  readonly journal: JournalHandle;
  readonly frame: number;
  readonly frameOffset: number;
}

export function isZeroBlock(loc: BlockLocation): boolean {
  return loc.frame === 0;
}

export class JournalOverlay {
  private readonly chunks = new Map<number, Map<number, BlockLocation>>();
  /** the live root's journals, oldest first */
  journals: JournalHandle[] = [];
  /** overlay entries in total (a bound on memory: ~100 bytes each) */
  entries = 0;

  /** Append a journal and apply its extents in order (later extents win). `chunkBlocks(i)` gives
   *  chunk i's block count, or 0 when i is past the end of the volume. */
  apply(ref: JournalRef, extents: readonly JournalExtent[], chunkBlocks: (chunkIndex: number) => number): JournalHandle {
    const journal: JournalHandle = { ref, liveBlocks: 0, hasResets: false };
    for (const e of extents) {
      const count = chunkBlocks(e.chunkIndex);
      if (e.reset) {
        journal.hasResets = true;
        this.dropChunk(e.chunkIndex);
        continue;
      }
      if (count === 0 || e.blockCount < 1 || e.firstBlock + e.blockCount > count) {
        throw new VaultError('ERR_CORRUPT', `journal ${ref.id}: extent of chunk ${e.chunkIndex} blocks ${e.firstBlock}+${e.blockCount} is outside the volume`);
      }
      for (let k = 0; k < e.blockCount; k++) {
        const loc: BlockLocation = e.zero ? { journal, frame: 0, frameOffset: 0 } : { journal, frame: e.frame, frameOffset: e.frameOffset + k * BLOCK_BYTES };
        this.set(e.chunkIndex, e.firstBlock + k, loc);
      }
    }
    this.journals.push(journal);
    return journal;
  }

  get(chunkIndex: number, block: number): BlockLocation | undefined {
    return this.chunks.get(chunkIndex)?.get(block);
  }

  hasChunk(chunkIndex: number): boolean {
    return this.chunks.has(chunkIndex);
  }

  chunk(chunkIndex: number): ReadonlyMap<number, BlockLocation> | undefined {
    return this.chunks.get(chunkIndex);
  }

  chunkIndexes(): IterableIterator<number> {
    return this.chunks.keys();
  }

  /** The chunk's content is now wholly in its manifest entry (a rewrite or a compaction). */
  dropChunk(chunkIndex: number): void {
    const m = this.chunks.get(chunkIndex);
    if (!m) return;
    for (const loc of m.values()) this.release(loc);
    this.entries -= m.size;
    this.chunks.delete(chunkIndex);
  }

  /**
   * Remove the journals a replay no longer needs, and return them. A journal no block points into
   * is not needed — each of its extents is overridden by a later extent or a later reset — unless
   * it holds resets and an older journal is still kept: its resets void that journal's extents of
   * chunks whose manifest entry holds newer data.
   */
  removeDeadJournals(): JournalHandle[] {
    const gone: JournalHandle[] = [];
    let olderKept = false;
    this.journals = this.journals.filter((j) => {
      if (j.liveBlocks <= 0 && (!j.hasResets || !olderKept)) {
        gone.push(j);
        return false;
      }
      olderKept = true;
      return true;
    });
    return gone;
  }

  /** Chunks at or past `chunkCount` are gone (a shrink). */
  dropFrom(chunkCount: number): void {
    for (const i of [...this.chunks.keys()]) if (i >= chunkCount) this.dropChunk(i);
  }

  private set(chunkIndex: number, block: number, loc: BlockLocation): void {
    let m = this.chunks.get(chunkIndex);
    if (!m) {
      m = new Map();
      this.chunks.set(chunkIndex, m);
    }
    const old = m.get(block);
    if (old) this.release(old);
    else this.entries++;
    loc.journal.liveBlocks++;
    m.set(block, loc);
  }

  private release(loc: BlockLocation): void {
    loc.journal.liveBlocks--;
  }
}
