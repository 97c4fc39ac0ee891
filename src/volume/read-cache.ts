// LRU cache of decoded, clean chunks, bounded in bytes: lru-cache with maxSize and a byte
// sizeCalculation (a chunk bigger than the limit is simply not kept). Buffers in it are never
// modified: a writer copies before changing one (see volume-engine.ts). Counts hits and misses
// of get() for metrics.
import { LRUCache } from 'lru-cache';

export class ReadCache {
  /** null when the limit is 0: caching is off (lru-cache wants a positive maxSize) */
  private readonly lru: LRUCache<number, Buffer> | null;
  hits = 0;
  misses = 0;

  constructor(readonly limitBytes: number) {
    this.lru = limitBytes > 0 ? new LRUCache<number, Buffer>({ maxSize: limitBytes, sizeCalculation: (buf) => Math.max(1, buf.length) }) : null;
  }

  get(chunkIndex: number): Buffer | undefined {
    const buf = this.lru?.get(chunkIndex);
    if (buf) this.hits++;
    else this.misses++;
    return buf;
  }

  has(chunkIndex: number): boolean {
    return this.lru?.has(chunkIndex) ?? false;
  }

  set(chunkIndex: number, buf: Buffer): void {
    if (!this.lru) return;
    this.lru.delete(chunkIndex);
    if (buf.length <= this.limitBytes) this.lru.set(chunkIndex, buf);
  }

  delete(chunkIndex: number): void {
    this.lru?.delete(chunkIndex);
  }

  get sizeBytes(): number {
    return this.lru?.calculatedSize ?? 0;
  }
}
