// LRU cache of decoded, clean frames (key: object id and frame number), bounded in bytes: lru-cache with maxSize and a byte
// sizeCalculation (a chunk bigger than the limit is simply not kept). Buffers in it are never
// modified: a writer copies before changing one (see volume-engine.ts). Counts hits and misses
// of get() for metrics.
import { LRUCache } from 'lru-cache';

export class ReadCache {
  /** null when the limit is 0: caching is off (lru-cache wants a positive maxSize) */
  private readonly lru: LRUCache<string, Buffer> | null;
  hits = 0;
  misses = 0;

  constructor(readonly limitBytes: number) {
    this.lru = limitBytes > 0 ? new LRUCache<string, Buffer>({ maxSize: limitBytes, sizeCalculation: (buf) => Math.max(1, buf.length) }) : null;
  }

  get(key: string): Buffer | undefined {
    const buf = this.lru?.get(key);
    if (buf) this.hits++;
    else this.misses++;
    return buf;
  }

  has(key: string): boolean {
    return this.lru?.has(key) ?? false;
  }

  set(key: string, buf: Buffer): void {
    if (!this.lru) return;
    this.lru.delete(key);
    if (buf.length <= this.limitBytes) this.lru.set(key, buf);
  }

  delete(key: string): void {
    this.lru?.delete(key);
  }

  get sizeBytes(): number {
    return this.lru?.calculatedSize ?? 0;
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
