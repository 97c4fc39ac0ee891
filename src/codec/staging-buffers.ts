// Shared memory kept for the next task: no allocation per task (each fresh buffer cost page faults
// on first touch and V8 external memory toward its next full GC, and garbage buffers waiting for
// that GC raised the peak RSS). A task takes a buffer and gives it back once done with it, so no
// more buffers are ever made than tasks were in flight at once.
// - A worker's staging (inputs copied for it): at most one per task in flight in the pool.
// - Container memory (Codec.withContainerMemory): one per chunk object being read or sealed and
//   stored; the callers bound those (fetches, uploads, the memory budget). At most
//   CONTAINERS_KEPT are kept free (a burst of fetches left 64 of them, 268 MiB, outside the
//   budget), and none after IDLE_RELEASE_MS in which none was taken or given back.
import { allocatedUnweighed } from '../util/collector-nudge';
import { IdleTimer } from '../util/idle-timer';
import { MAX_CHUNK_CONTAINER_BYTES } from './format';

/** The largest stored chunk container, with room to spare for a store's own framing around it
 *  (the fs store reads its object header into the same memory). */
export const CONTAINER_MEMORY_BYTES = MAX_CHUNK_CONTAINER_BYTES + 64 * 1024;

/** Free buffers are let go after this long unused (an idle server holds none). */
export const IDLE_RELEASE_MS = 5_000;

/** Free containers kept at most: the reads the fetch floor lets run at once (4, fetch-memory.ts)
 *  and as many seals or compaction steps. */
export const CONTAINERS_KEPT = 8;

/** The memory Codec.withContainerMemory lends. */
export function containerMemory(): StagingBuffers {
  return new StagingBuffers(CONTAINER_MEMORY_BYTES, IDLE_RELEASE_MS, CONTAINERS_KEPT);
}

export class StagingBuffers {
  private readonly free: Buffer[] = [];
  private readonly idle: IdleTimer;

  /** `idleReleaseMs`: free buffers are dropped after this long unused (default: kept);
   *  `maxFree`: more free buffers than this are dropped at once */
  constructor(
    readonly bytes: number,
    idleReleaseMs = Infinity,
    private readonly maxFree = Infinity,
  ) {
    this.idle = new IdleTimer(idleReleaseMs, () => (this.free.length = 0));
  }

  /** Buffers kept for the next take (tests, stats). */
  get freeCount(): number {
    return this.free.length;
  }

  take(): Buffer {
    this.idle.touch();
    const kept = this.free.pop();
    if (kept) return kept;
    allocatedUnweighed(this.bytes); // (one dropped later, past maxFree or idle, the collector would not see)
    return Buffer.from(new SharedArrayBuffer(this.bytes));
  }

  give(buf: Buffer): void {
    if (this.free.length < this.maxFree) this.free.push(buf);
    this.idle.touch();
  }

  /** Lends a buffer for as long as `use` runs. */
  async lend<T>(use: (buf: Buffer) => Promise<T>): Promise<T> {
    const buf = this.take();
    try {
      return await use(buf);
    } finally {
      this.give(buf);
    }
  }
}
