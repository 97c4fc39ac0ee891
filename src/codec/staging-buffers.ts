// Shared memory kept for the next task: no allocation per task (each fresh buffer cost page faults
// on first touch and V8 external memory toward its next full GC, and garbage buffers waiting for
// that GC raised the peak RSS). A task takes a buffer and gives it back once done with it, so no
// more buffers are ever made than tasks were in flight at once.
// - A worker's staging (inputs copied for it): at most one per task in flight in the pool.
// - Container memory (Codec.withContainerMemory): one per chunk object being read or sealed and
//   stored; the callers bound those (fetches, uploads, the memory budget). Kept while in use,
//   let go after IDLE_RELEASE_MS in which none was taken or given back.
import { IdleTimer } from '../util/idle-timer';
import { MAX_CHUNK_CONTAINER_BYTES } from './format';

/** The largest stored chunk container, with room to spare for a store's own framing around it
 *  (the fs store reads its object header into the same memory). */
export const CONTAINER_MEMORY_BYTES = MAX_CHUNK_CONTAINER_BYTES + 64 * 1024;

/** Free buffers are let go after this long unused (an idle server holds none). */
export const IDLE_RELEASE_MS = 5_000;

/** The memory Codec.withContainerMemory lends. */
export function containerMemory(): StagingBuffers {
  return new StagingBuffers(CONTAINER_MEMORY_BYTES, IDLE_RELEASE_MS);
}

export class StagingBuffers {
  private readonly free: Buffer[] = [];
  private readonly idle: IdleTimer;

  /** `idleReleaseMs`: free buffers are dropped after this long unused (default: kept) */
  constructor(
    readonly bytes: number,
    idleReleaseMs = Infinity,
  ) {
    this.idle = new IdleTimer(idleReleaseMs, () => (this.free.length = 0));
  }

  /** Buffers kept for the next take (tests, stats). */
  get freeCount(): number {
    return this.free.length;
  }

  take(): Buffer {
    this.idle.touch();
    return this.free.pop() ?? Buffer.from(new SharedArrayBuffer(this.bytes));
  }

  give(buf: Buffer): void {
    this.free.push(buf);
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
