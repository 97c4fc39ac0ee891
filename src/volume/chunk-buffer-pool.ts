// Chunk buffers in shared memory, recycled. A dirty chunk's buffer is handed to a codec worker
// without a copy (shared memory), and once its upload is done and nothing refers to it any more,
// it comes back here instead of becoming garbage: an import then allocates almost nothing, and
// the process does not wait on the garbage collector to give 4 MiB buffers back (peak RSS).
//
// Contract: give() only buffers nothing else refers to. As a safety margin against a reader still
// copying out of it in the current microtask checkpoint, a given buffer becomes reusable only on
// the next macrotask (giveNow() is for buffers no reader can be copying from).

import { allocatedUnweighed } from '../util/collector-nudge';

export class ChunkBufferPool {
  private readonly free: Buffer[] = [];

  constructor(readonly chunkSize: number, readonly maxBuffers: number) {}

  /** A buffer of `length` bytes: zero-filled, a copy of `from`, or with `'overwrite'`, left as
   *  it is because the caller fills every byte. */
  take(length: number, from?: Buffer | 'overwrite'): Buffer {
    const pooled = length === this.chunkSize ? this.free.pop() : undefined;
    if (!pooled) allocatedUnweighed(length);
    const buf = pooled ?? Buffer.from(new SharedArrayBuffer(length));
    if (Buffer.isBuffer(from)) from.copy(buf, 0, 0, length);
    else if (pooled && from !== 'overwrite') buf.fill(0);
    return buf;
  }

  give(buf: Buffer): void {
    if (buf.length !== this.chunkSize || !(buf.buffer instanceof SharedArrayBuffer)) return;
    setImmediate(() => {
      if (this.free.length < this.maxBuffers) this.free.push(buf);
    });
  }

  /** give() for a buffer no reader can be copying from (the sealer's own chunk assemblies):
   *  reusable at once, so a lane that seals chunk after chunk keeps reusing one buffer. */
  giveNow(buf: Buffer): void {
    if (buf.length !== this.chunkSize || !(buf.buffer instanceof SharedArrayBuffer)) return;
    if (this.free.length < this.maxBuffers) this.free.push(buf);
  }

  get size(): number {
    return this.free.length;
  }
}
