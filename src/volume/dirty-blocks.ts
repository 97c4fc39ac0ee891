// Dirty data at block granularity: what clients wrote and no stored object holds yet, as 4 KiB
// blocks per chunk (a random 4 KiB write costs 4 KiB here, and no read of the chunk).
// Synchronous state, no I/O. Not here: sealing (sealer.ts), admission and the memory budget
// (write-path.ts), what lies below (read-path.ts).
//
// A chunk's dirty state is a set of blocks over either the stored chunk (`zeroBase` false: the
// blocks not written show what the store holds) or over zeros (`zeroBase` true: the chunk was
// wholly trimmed or is being wholly rewritten; nothing below shows through). A chunk is
// `covered` when nothing below shows through: it can be sealed as a whole new chunk object
// without reading anything.
import type { BlockSlabs } from './block-slabs';
import { BLOCK_BYTES } from './journal-record';

export class ChunkBlocks {
  /** block index → its 4 KiB of content, or null: the block is zero */
  readonly blocks = new Map<number, Buffer | null>();
  zeroBase = false;
  /** ms of the last write (idle chunks are written back first) */
  lastWriteMs = 0;
  /** shares of the process memory budget its writes hold until it is sealed */
  readonly budgetHolds: Array<() => void> = [];

  constructor(readonly blockCount: number) {}

  get covered(): boolean {
    return this.zeroBase || this.blocks.size === this.blockCount;
  }

  /** The process budget its writes held goes back (sealed, cut off, or given up). */
  giveBudgetBack(): void {
    for (const r of this.budgetHolds.splice(0)) r();
  }

  /** bytes of memory held (what the dirty budget counts) */
  get bytes(): number {
    let n = 0;
    for (const b of this.blocks.values()) if (b !== null) n += BLOCK_BYTES;
    return n;
  }
}

/**
 * One generation of dirty data. The engine writes into the active batch; a flush freezes it
 * (nothing changes it afterwards) and seals it while a new active batch takes the writes that
 * follow. Readers look at the active batch, then the frozen ones newest first, then the store.
 */
export class DirtyBatch {
  readonly chunks = new Map<number, ChunkBlocks>();
  /** bytes of block data held */
  bytes = 0;
  frozen = false;
  /** frozen for one whole chunk rewritten on its own (Sealer.rewriteWhole), not for a cycle */
  rewriting = false;
  constructor(
    private readonly blockCountOf: (chunkIndex: number) => number,
    /** where block memory comes from and goes back to once no batch holds it */
    private readonly slabs: BlockSlabs,
  ) {}

  chunk(chunkIndex: number): ChunkBlocks {
    let c = this.chunks.get(chunkIndex);
    if (!c) {
      c = new ChunkBlocks(this.blockCountOf(chunkIndex));
      this.chunks.set(chunkIndex, c);
    }
    return c;
  }

  /** Set one block (content is kept, not copied: the caller hands over a buffer of its own). */
  setBlock(chunkIndex: number, block: number, content: Buffer | null, nowMs: number): void {
    this.assertOpen();
    const c = this.chunk(chunkIndex);
    const old = c.blocks.get(block);
    if (old) {
      this.bytes -= BLOCK_BYTES;
      if (old !== content) this.slabs.give(old); // replaced: an open batch's block has no reader
    }
    if (content !== null) this.bytes += BLOCK_BYTES;
    c.blocks.set(block, content);
    c.lastWriteMs = nowMs;
  }

  /** The whole chunk reads as zeros from now on (writes after this land on top). */
  zeroChunk(chunkIndex: number, nowMs: number): void {
    this.assertOpen();
    const c = this.chunk(chunkIndex);
    this.bytes -= c.bytes;
    this.dropBlocks(c);
    c.zeroBase = true;
    c.lastWriteMs = nowMs;
  }

  /** Move the chunks `pick` chooses into a new batch (the active batch keeps taking writes). */
  split(pick: (c: ChunkBlocks) => boolean): DirtyBatch {
    const out = new DirtyBatch(this.blockCountOf, this.slabs);
    for (const [i, c] of this.chunks) {
      if (!pick(c)) continue;
      const bytes = c.bytes;
      this.chunks.delete(i);
      this.bytes -= bytes;
      out.chunks.set(i, c);
      out.bytes += bytes;
    }
    return out;
  }

  /** The batch is sealed (its blocks were copied into what was stored) or gone: give its blocks
   *  back to the slabs and its share of the process budget back. */
  release(): void {
    // budget first: the slabs that empty may then keep their memory in the room it frees (under
    // a full budget, a read cache's steady state, there is no other room for them)
    for (const c of this.chunks.values()) {
      c.giveBudgetBack();
      this.dropBlocks(c);
    }
    this.bytes = 0;
  }

  /** Drop chunks at or past `chunkCount` (a shrink). */
  dropFrom(chunkCount: number): void {
    for (const [i, c] of this.chunks) {
      if (i >= chunkCount) {
        this.bytes -= c.bytes;
        c.giveBudgetBack();
        this.dropBlocks(c);
        this.chunks.delete(i);
      }
    }
  }

  /** The chunk's blocks leave it, their memory back to the slabs. */
  private dropBlocks(c: ChunkBlocks): void {
    for (const b of c.blocks.values()) if (b !== null) this.slabs.give(b);
    c.blocks.clear();
  }

  private assertOpen(): void {
    if (this.frozen) throw new Error('bug: write into a frozen dirty batch');
  }
}
