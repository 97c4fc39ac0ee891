// LRU cache of decoded, clean frames (key: object id and frame number), bounded in bytes:
// lru-cache with maxSize and a byte sizeCalculation (a frame bigger than the limit is simply not
// kept). With a process memory budget, every entry also holds its bytes of the budget (taken
// with tryReserve: a cache never makes anyone wait) and the budget may ask it to evict. Buffers in
// it are never modified. Counts hits and misses of get() for metrics.
import { LRUCache } from 'lru-cache';
import type { MemoryBudget } from '../util/memory-budget';

export class ReadCache {
  /** null when the limit is 0: caching is off (lru-cache wants a positive maxSize) */
  private readonly lru: LRUCache<string, Buffer> | null;
  private readonly held = new Map<string, () => void>();
  hits = 0;
  misses = 0;

  constructor(
    readonly limitBytes: number,
    private readonly budget?: MemoryBudget,
  ) {
    this.lru =
      limitBytes > 0
        ? new LRUCache<string, Buffer>({
            maxSize: limitBytes,
            sizeCalculation: (buf) => Math.max(1, buf.length),
            dispose: (_buf, key) => this.releaseHold(key),
          })
        : null;
    if (this.lru && budget) this.unregister = budget.registerCache({ evict: (bytes) => this.evict(bytes) });
  }

  /** stops the budget from asking this cache (the engine closed) */
  private unregister: (() => void) | null = null;

  /** `count` false: a probe that does not count as a hit or a miss. */
  get(key: string, count = true): Buffer | undefined {
    const buf = this.lru?.get(key);
    if (count) {
      if (buf) this.hits++;
      else this.misses++;
    }
    return buf;
  }

  has(key: string): boolean {
    return this.lru?.has(key) ?? false;
  }

  set(key: string, buf: Buffer): void {
    if (!this.lru) return;
    this.lru.delete(key);
    if (buf.length > this.limitBytes) return;
    if (this.budget) {
      const release = this.budget.tryReserve(buf.length);
      if (!release) return; // the process is at its memory limit: serve without caching
      this.held.set(key, release);
    }
    this.lru.set(key, buf);
  }

  delete(key: string): void {
    this.lru?.delete(key);
  }

  /** Drop every entry and leave the budget (the engine closed). */
  clear(): void {
    this.lru?.clear();
    this.unregister?.();
    this.unregister = null;
  }

  get sizeBytes(): number {
    return this.lru?.calculatedSize ?? 0;
  }

  private evict(bytes: number): number {
    let freed = 0;
    while (freed < bytes && this.lru && this.lru.size > 0) {
      const before = this.lru.calculatedSize;
      this.lru.pop();
      freed += before - this.lru.calculatedSize;
    }
    return freed;
  }

  private releaseHold(key: string): void {
    const release = this.held.get(key);
    if (!release) return;
    this.held.delete(key);
    release();
  }
}
