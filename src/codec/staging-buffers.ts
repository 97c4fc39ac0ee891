// Shared memory a task's inputs are copied into for a worker, kept for the next task: no allocation
// per task (each fresh buffer cost page faults on first touch and V8 external memory toward its
// next full GC). At most one buffer per task in flight is ever made: a task takes one when it is
// dispatched and gives it back once the worker is done with it (replied, or never got it).
import { FRAMED_HEADER_MAX_CHUNK, MAX_CHUNK_FRAMES, MAX_SEALED_FRAME_BYTES } from './format';

/** The largest stored chunk container, with room to spare for a store's own framing around it
 *  (the fs store reads its object header into the same memory). */
export const CONTAINER_MEMORY_BYTES = FRAMED_HEADER_MAX_CHUNK + MAX_CHUNK_FRAMES * MAX_SEALED_FRAME_BYTES + 64 * 1024;

/** Given-back container memory kept for the next read, per process: reads in flight beyond it
 *  (many streams at once) get fresh memory, left to the collector when given back. */
const CONTAINER_MEMORY_KEPT = 4;

/** The memory Codec.withContainerMemory lends. */
export function containerMemory(): StagingBuffers {
  return new StagingBuffers(CONTAINER_MEMORY_BYTES, CONTAINER_MEMORY_KEPT);
}

export class StagingBuffers {
  private readonly free: Buffer[] = [];

  /** `maxFree`: how many given-back buffers are kept; more go to the collector */
  constructor(
    readonly bytes: number,
    private readonly maxFree = Infinity,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.from(new SharedArrayBuffer(this.bytes));
  }

  give(buf: Buffer): void {
    if (this.free.length < this.maxFree) this.free.push(buf);
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
