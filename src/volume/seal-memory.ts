// Memory for sealing, shared by every volume of a process: the buffers a seal cycle or a
// compaction step holds while it assembles, seals and uploads (a chunk assembled in shared
// memory and its sealed container; a journal's packed frames and their sealed copy; a chunk
// read back for compaction). Without a shared bound each volume holds up to upload-concurrency
// chunks at once, and eight volumes flushing together hold eight times that, outside the budget.
//
// Sealers wait here only for each other, never for writers or caches: what they hold is freed
// by their own uploads, so this cannot deadlock with the dirty data they drain. A unit larger
// than the whole share runs alone (MemoryBudget's rule).
import { MemoryBudget } from '../util/memory-budget';
import { CHUNK_SIZE } from './chunk-math';
import { ChunkBufferPool } from './chunk-buffer-pool';

/** whole-chunk buffers kept for reuse (a fresh 4 MiB buffer costs page faults worth a compression) */
const POOLED_CHUNK_BUFFERS = 8;

export class SealMemory {
  /** recycled whole-chunk buffers in shared memory, handed to codec workers without a copy */
  readonly buffers = new ChunkBufferPool(CHUNK_SIZE, POOLED_CHUNK_BUFFERS);
  private readonly budget: MemoryBudget;

  constructor(readonly bytes: number) {
    this.budget = new MemoryBudget(bytes);
  }

  /** Runs `work` holding `bytes` of the share (waiting, in arrival order, until they fit). */
  async hold<T>(bytes: number, work: () => Promise<T>): Promise<T> {
    const release = await this.budget.reserve(bytes);
    try {
      return await work();
    } finally {
      release();
    }
  }

  stats() {
    return this.budget.stats();
  }
}

/** The share of a process memory limit set aside for sealing: a sixteenth, from 16 to 256 MiB
 *  (64 MiB of the default 1 GiB: eight chunks in flight with their sealed copies). */
export function sealShareOf(memoryLimitBytes: number): number {
  return Math.min(256 * 2 ** 20, Math.max(16 * 2 ** 20, Math.floor(memoryLimitBytes / 16)));
}
