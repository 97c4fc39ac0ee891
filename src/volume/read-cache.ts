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
 * The bytes a read reply carries from a chunk buffer. A cached or fetched chunk never changes:
 * the reply shares it (a slice, no copy; nbd/ counts the whole shared buffer against the
 * connection's budget while the reply waits to be sent). A dirty chunk's buffer is written in
 * place by later writes, so the reply gets its own copy of just its bytes: the chunk itself is
 * never copied per request. (Buffer.prototype.copy: a plain memcpy, also from shared memory.)
 */
export function replySlice(chunk: Buffer, offset: number, length: number, mutable: boolean): Buffer {
  const slice = chunk.subarray(offset, offset + length);
  if (!mutable) return slice;
  const own = Buffer.allocUnsafe(length);
  slice.copy(own);
  return own;
}
