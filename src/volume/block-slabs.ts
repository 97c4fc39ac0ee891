// Memory for a volume's dirty 4 KiB blocks, carved from 128 KiB slabs and reused. One malloc per
// small write made the allocator, not the data, the largest part of a busy server's memory: with
// eight volumes taking 4 KiB random writes, 400–500 MiB of the main malloc heap was freed blocks
// the allocator kept (they outlive young-generation collection, are freed in random order by the
// old-generation collector, and glibc returns a heap's free middle only to malloc_trim), and as
// much again were dead blocks waiting for that collector (BENCHMARKS.md). Slabs hold the blocks of
// whole batches, which are given back together when sealed, so a slab empties as its batch goes.
//
// A block goes back to the pool only when nothing can read it any more: the batch that held it
// was sealed (the sealer copied it into a chunk or a journal frame), a newer write replaced it in
// the active batch, or a zero or shrink dropped it. Reads copy out of dirty blocks, never lend
// them. give() ignores a buffer the pool did not hand out and a block already free, so a mistake
// cannot hand one slot to two owners.
// Per volume, like decode-buffers.ts: even a mistake here could not show one volume's data to
// another.
import { FRAME_BYTES } from '../codec';
import { IdleTimer } from '../util/idle-timer';
import { BLOCK_BYTES } from './journal-record';
import { holdKept, type MemoryBudget } from '../util/memory-budget';

/** A decoded frame's size: memory the read cache gives up when dirty data grows (the budget makes
 *  it evict) is a free heap chunk of exactly a slab's size, so the slab takes that memory instead
 *  of growing the heap (1 MiB slabs did not fit the 128 KiB holes: no gain once the cache was full). */
export const SLAB_BYTES = FRAME_BYTES;
const SLOTS = SLAB_BYTES / BLOCK_BYTES;
/** empty slabs a volume keeps for its next writes, by default (64 MiB, the default dirty limit:
 *  a volume passes its own, see VolumeState). Every write's bytes are copied into blocks
 *  (write-path.ts), so a stream fills and empties up to its dirty limit of slabs over and over:
 *  with 8 kept, an import of the corpus allocated most of its 1 GiB afresh (22 full collections
 *  instead of 7–10: V8 counts such memory and marks every ~30 MB of it); with 128 (16 MiB), a 1M
 *  sequential write over a volume that compaction was folding, its sealing behind, allocated
 *  6,900 slabs (BENCHMARKS.md, stop 43). A new slab mostly takes a hole a cached frame left, the
 *  same size. */
export const MAX_EMPTY_SLABS = 512;
/** ...and all volumes of the process together (128 MiB; beyond it, emptied slabs go to the
 *  collector). A kept slab also holds its bytes of the memory budget, from free room only (it
 *  never pushes cached frames out); none free: it goes. */
export const MAX_EMPTY_SLABS_PROCESS = 1024;
/** empty slabs kept by every BlockSlabs of the process (each lets its own go when idle) */
let emptyInProcess = 0;
/** bytes of empty slabs every volume of the process keeps for its next writes (metrics) */
export function keptSlabBytesInProcess(): number {
  return emptyInProcess * SLAB_BYTES;
}
/** empty slabs are let go when no write has taken a block for this long */
const IDLE_MS = 5_000;

class Slab {
  readonly buf = Buffer.allocUnsafeSlow(SLAB_BYTES);
  /** 1 where the slot is free */
  readonly isFree = new Uint8Array(SLOTS).fill(1);
  /** free slot numbers, a stack */
  readonly free: number[] = Array.from({ length: SLOTS }, (_, k) => SLOTS - 1 - k);
  /** kept empty: its hold on the memory budget (a no-op without one) */
  kept: (() => void) | null = null;
}

export class BlockSlabs {
  private readonly slabs = new Map<ArrayBufferLike, Slab>();
  /** slabs with a free slot, taken from in insertion order */
  private readonly partial = new Set<Slab>();
  private empty = 0;
  private readonly idle = new IdleTimer(IDLE_MS, () => this.evictKept());

  /** takes this pool off the budget's list of what gives memory back */
  private readonly unregister: () => void;

  constructor(
    private readonly budget?: MemoryBudget,
    /** empty slabs kept at most (the volume's dirty limit's worth) */
    private readonly maxEmpty = MAX_EMPTY_SLABS,
  ) {
    // kept slabs give way to anyone who needs the room (a writer, a request, a cache filling)
    this.unregister = budget?.registerCache({ evict: (bytes) => this.evictKept(bytes) }) ?? (() => {});
  }

  /** A 4 KiB block of slab memory, its content whatever it held before. */
  take(): Buffer {
    this.idle.touch();
    let slab: Slab | undefined = this.partial.values().next().value;
    if (!slab) {
      slab = new Slab();
      this.slabs.set(slab.buf.buffer, slab);
      this.partial.add(slab);
    } else if (slab.free.length === SLOTS) this.unkeep(slab);
    const k = slab.free.pop()!;
    slab.isFree[k] = 0;
    if (slab.free.length === 0) this.partial.delete(slab);
    return slab.buf.subarray(k * BLOCK_BYTES, (k + 1) * BLOCK_BYTES);
  }

  /** Give a block back (nothing may read it afterwards). Not ours, or already free: nothing. */
  give(blk: Buffer): void {
    const slab = this.slabs.get(blk.buffer);
    if (!slab || blk.length !== BLOCK_BYTES || blk.byteOffset % BLOCK_BYTES !== 0) return;
    const k = blk.byteOffset / BLOCK_BYTES;
    if (slab.isFree[k] === 1) return;
    slab.isFree[k] = 1;
    slab.free.push(k);
    if (slab.free.length === 1) this.partial.add(slab);
    if (slab.free.length === SLOTS) {
      const hold = this.empty < this.maxEmpty && emptyInProcess < MAX_EMPTY_SLABS_PROCESS ? holdKept(this.budget, SLAB_BYTES) : null;
      if (hold) {
        slab.kept = hold;
        this.empty++;
        emptyInProcess++;
      } else this.drop(slab);
    }
  }

  /** bytes of slab memory held, blocks in use and free (for tests and metrics) */
  get heldBytes(): number {
    return this.slabs.size * SLAB_BYTES;
  }

  /** blocks handed out and not given back */
  get blocksInUse(): number {
    let n = 0;
    for (const s of this.slabs.values()) n += SLOTS - s.free.length;
    return n;
  }

  /** Let every empty slab go now, for good (the volume closes). */
  dropKept(): void {
    this.idle.cancel();
    this.evictKept();
    this.unregister();
  }

  /** bytes of empty slabs kept for the next writes (each holds its bytes of the budget) */
  get keptBytes(): number {
    return this.empty * SLAB_BYTES;
  }

  /** Let empty slabs (every one is kept) go until `bytes` are freed, all of them by default (idle,
   *  close); returns the bytes freed. What the budget calls when it needs room. */
  private evictKept(bytes = Infinity): number {
    let freed = 0;
    for (const s of this.slabs.values()) {
      if (freed >= bytes) break;
      if (s.free.length !== SLOTS) continue;
      this.drop(s);
      this.unkeep(s);
      freed += SLAB_BYTES;
    }
    return freed;
  }

  private unkeep(s: Slab): void {
    s.kept?.();
    s.kept = null;
    this.empty--;
    emptyInProcess--;
  }

  private drop(s: Slab): void {
    this.slabs.delete(s.buf.buffer);
    this.partial.delete(s);
  }
}
