// The mutable state of one open volume that the engine's processes share: the committed-or-
// pending manifest, the journal overlay, the dirty batches, epoch/seq/size, and what the next
// durable root lets the writer delete. Plain data, no I/O: read-path.ts reads it, write-path.ts
// adds dirty blocks, sealer.ts (flush cycles, compaction) applies edits to it synchronously, and
// commit.ts captures it synchronously — so a commit always sees a consistent state.
import { BlockSlabs, SLAB_BYTES } from './block-slabs';
import { chunkCount, chunkLength } from './chunk-math';
import { DirtyBatch } from './dirty-blocks';
import { BLOCK_BYTES } from './journal-record';
import { JournalOverlay } from './journal-overlay';
import type { Manifest } from './manifest';
import type { RootRecord } from './root-record';
import type { MemoryBudget } from '../util/memory-budget';

export class VolumeState {
  readonly overlay = new JournalOverlay();
  /** memory of the dirty blocks writes copy */
  readonly blocks: BlockSlabs;
  /** where writes go now */
  active: DirtyBatch;
  /** batches being sealed (or whose sealing failed and will be retried), oldest first */
  frozen: DirtyBatch[] = [];
  epoch: number;
  seq: number;
  sizeBytes: number;
  etag: string | null;
  /** objects (chunks, pages, journals) no longer referenced once the next root is durable */
  pendingDeletes: string[] = [];
  manifestChangedSinceCommit = false;
  /** written data stored (chunk objects, journals) that no durable root names yet: unlike a
   *  compaction's edits, lost if the root never comes (the lease went, say) */
  writesSinceCommit = false;
  /** Uploads no durable root names yet, by token → start time: what gc must not take. A token is
   *  `done` once its edit is in the state; a commit that captured it retires it when durable. */
  readonly unreferenced = new Map<number, { startMs: number; done: boolean }>();
  private uploadToken = 0;

  constructor(
    readonly manifest: Manifest,
    root: RootRecord,
    etag: string | null,
    /** the process memory budget: empty slabs kept for the next writes hold their bytes of it */
    budget?: MemoryBudget,
    /** the volume's dirty limit: it keeps as many bytes of empty slabs at most */
    dirtyLimitBytes?: number,
  ) {
    this.blocks = new BlockSlabs(budget, dirtyLimitBytes === undefined ? undefined : Math.ceil(dirtyLimitBytes / SLAB_BYTES));
    this.epoch = root.epoch;
    this.seq = root.seq;
    this.sizeBytes = root.size;
    this.etag = etag;
    this.active = this.newBatch();
  }

  newBatch(): DirtyBatch {
    return new DirtyBatch((i) => this.blockCount(i), this.blocks);
  }

  get chunkCount(): number {
    return chunkCount(this.sizeBytes);
  }

  chunkLength(i: number): number {
    return chunkLength(this.sizeBytes, i);
  }

  /** blocks of chunk i (0 past the end of the volume) */
  blockCount(i: number): number {
    if (i < 0 || i >= this.chunkCount) return 0;
    return Math.ceil(this.chunkLength(i) / BLOCK_BYTES);
  }

  /** dirty batches newest first: the order a reader looks in */
  batchesNewestFirst(): DirtyBatch[] {
    const out = [this.active];
    for (let k = this.frozen.length - 1; k >= 0; k--) out.push(this.frozen[k]);
    return out;
  }

  get dirtyBytes(): number {
    let n = this.active.bytes;
    for (const b of this.frozen) n += b.bytes;
    return n;
  }

  /** some batch holds dirty state for chunk i */
  isDirty(i: number): boolean {
    if (this.active.chunks.has(i)) return true;
    for (const b of this.frozen) if (b.chunks.has(i)) return true;
    return false;
  }

  /** nothing pending anywhere: the chunk is exactly its manifest entry */
  isPlain(i: number): boolean {
    return !this.isDirty(i) && !this.overlay.hasChunk(i);
  }

  startUpload(nowMs: number): number {
    const token = ++this.uploadToken;
    this.unreferenced.set(token, { startMs: nowMs, done: false });
    return token;
  }

  /** These uploads' edit is in the state now: the next root that captures it names them. */
  uploadsApplied(tokens: readonly number[]): void {
    for (const t of tokens) {
      const u = this.unreferenced.get(t);
      if (u) u.done = true;
    }
  }

  oldestUnreferencedMs(): number | null {
    let oldest: number | null = null;
    for (const { startMs } of this.unreferenced.values()) if (oldest === null || startMs < oldest) oldest = startMs;
    return oldest;
  }
}

