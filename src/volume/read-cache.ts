// LRU cache of decoded, clean chunks, bounded in bytes. Buffers in it are never modified:
// a writer copies before changing one (see volume-engine.ts).

export class ReadCache {
  private readonly map = new Map<number, Buffer>();
  private bytes = 0;

  constructor(readonly limitBytes: number) {}

  get(chunkIndex: number): Buffer | undefined {
    const buf = this.map.get(chunkIndex);
    if (buf) {
      // Map keeps insertion order: re-insert to mark as most recently used.
      this.map.delete(chunkIndex);
      this.map.set(chunkIndex, buf);
    }
    return buf;
  }

  has(chunkIndex: number): boolean {
    return this.map.has(chunkIndex);
  }

  set(chunkIndex: number, buf: Buffer): void {
    this.delete(chunkIndex);
    if (buf.length > this.limitBytes) return;
    this.map.set(chunkIndex, buf);
    this.bytes += buf.length;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.limitBytes) break;
      this.map.delete(k);
      this.bytes -= v.length;
    }
  }

  delete(chunkIndex: number): void {
    const old = this.map.get(chunkIndex);
    if (old) {
      this.map.delete(chunkIndex);
      this.bytes -= old.length;
    }
  }

  get sizeBytes(): number {
    return this.bytes;
  }
}

/**
 * The bytes a read reply carries from a chunk buffer. A reply may wait on a socket for a long
 * time (a client that does not read), and a slice keeps its whole chunk alive, even after the
 * cache dropped it: a thousand small replies from a thousand evicted chunks would hold a
 * thousand chunks. So a reply shares the chunk (no copy) only when the chunk never changes
 * (`mutable` false: cached or fetched, never written in place) and the read covers at least
 * half of it; otherwise it gets its own copy of just its bytes (a dirty chunk is written in place
 * by later writes, so it is always copied). Either way a reply holds at most twice its length,
 * and the chunk itself is never copied per request. nbd/ counts the buffers unsent replies hold
 * against the connection's budget, a shared chunk once.
 */
export function replySlice(chunk: Buffer, offset: number, length: number, mutable: boolean): Buffer {
  const slice = chunk.subarray(offset, offset + length);
  if (!mutable && length * 2 >= chunk.length) return slice;
  const own = Buffer.allocUnsafe(length); // Buffer.prototype.copy: a plain memcpy, also from shared memory
  slice.copy(own);
  return own;
}
