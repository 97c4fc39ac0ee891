// The read cache: decoded, clean frames (key: object id and frame number, or `id/*` for a whole
// chunk), bounded in bytes, least recently used out first (lru-cache with maxSize; an entry bigger
// than the limit is simply not kept). With a process memory budget, every entry also holds its
// bytes of the budget (taken with tryReserve: a cache never makes anyone wait) and the budget may
// ask it to evict. Buffers in it are never modified. Counts hits and misses of get() for metrics.
//
// What a stream reads (an export, a backup, a guest reading a big file: whole chunks, readahead,
// frames) goes to a small area of its own and is dropped once the stream has passed: read once,
// it would otherwise evict a running guest's working set (a 1 GiB export replaced 768 MiB of it),
// and the memory of dropped chunks is reused at once instead of new memory touched for each (a
// cold export 1.3-1.5x faster, see BENCHMARKS.md). A hit by a read of no stream's keeps an entry,
// and so does a second stream pass while the area remembers dropping it after a read used it (as
// the page cache's use-once lists, 2Q, PostgreSQL's ring buffers for sequential scans do).
import { LRUCache } from 'lru-cache';
import type { MemoryBudget } from '../util/memory-budget';

/** the stream area's size: a readahead window and the chunks streams are reading, several streams */
export const STREAM_AREA_BYTES = 96 * 2 ** 20;
/** dropped stream chunks remembered (keys only): a second pass within these is kept */
const PASSED_KEYS = 4096;

export class ReadCache {
  /** null when the limit is 0: caching is off (lru-cache wants a positive maxSize) */
  private readonly lru: LRUCache<string, Buffer> | null;
  /** what streams read, until they have passed */
  private readonly streamed: LRUCache<string, Buffer> | null;
  /** keys the stream area dropped lately, after a read had used them */
  private readonly passed = new LRUCache<string, true>({ max: PASSED_KEYS });
  /** keys in the stream area a read has used (readahead a stream never reached is not "passed") */
  private readonly used = new Set<string>();
  /** the budget is taking memory back: what goes is not a stream passing */
  private reclaiming = false;
  private readonly held = new Map<string, () => void>();
  hits = 0;
  misses = 0;

  /** told of every buffer the cache lets go (decode-buffers.ts reuses streams' chunks and frames) */
  onDrop: ((key: string, buf: Buffer) => void) | null = null;

  constructor(
    readonly limitBytes: number,
    readonly budget?: MemoryBudget,
    readonly streamAreaBytes = Math.min(STREAM_AREA_BYTES, limitBytes),
  ) {
    const lru = (maxSize: number, onEvict?: (key: string) => void) =>
      new LRUCache<string, Buffer>({
        maxSize,
        sizeCalculation: (buf) => Math.max(1, buf.length),
        dispose: (buf, key, reason) => {
          this.releaseHold(key);
          if (reason === 'evict') onEvict?.(key);
          this.onDrop?.(key, buf);
        },
      });
    this.lru = limitBytes > 0 ? lru(limitBytes) : null;
    this.streamed =
      this.lru && streamAreaBytes > 0
        ? lru(streamAreaBytes, (key) => {
            if (this.used.delete(key) && !this.reclaiming) this.passed.set(key, true);
          })
        : null;
    if (this.lru && budget) this.unregister = budget.registerCache({ evict: (bytes) => this.evict(bytes) });
  }

  /** stops the budget from asking this cache (the engine closed) */
  private unregister: (() => void) | null = null;
  /** the engine closed: a fetch that lands later keeps nothing (nor any of the budget) */
  private closed = false;

  /** `count` false: a probe that does not count as a hit or a miss. */
  get(key: string, count = true): Buffer | undefined {
    let buf = this.lru?.get(key);
    if (!buf && (buf = this.streamed?.get(key))) this.used.add(key);
    if (count) {
      if (buf) this.hits++;
      else this.misses++;
    }
    return buf;
  }

  has(key: string): boolean {
    return (this.lru?.has(key) ?? false) || (this.streamed?.has(key) ?? false);
  }

  /** The cache holds this very buffer (or a view of its memory) under `key`. */
  holds(key: string, buf: Buffer): boolean {
    return this.lru?.peek(key)?.buffer === buf.buffer || this.streamed?.peek(key)?.buffer === buf.buffer;
  }

  /** The entry is in the stream area: it goes once the stream has passed. */
  isStreamed(key: string): boolean {
    return this.streamed?.has(key) ?? false;
  }

  set(key: string, buf: Buffer): void {
    this.put(this.lru, this.limitBytes, key, buf);
  }

  /** A chunk a stream read whole (`used` false: readahead fetched it, no read has used it yet):
   *  kept in the stream area, or like any entry when a stream read it before (the area remembers
   *  dropping it). */
  setStreamed(key: string, buf: Buffer, used = true): void {
    if (this.passed.has(key) || !this.streamed) {
      this.passed.delete(key);
      this.set(key, buf);
    } else {
      this.put(this.streamed, this.streamAreaBytes, key, buf);
      if (used && this.streamed.has(key)) this.used.add(key);
    }
  }

  /** A read used the entry (one that readahead fetched, say): dropped, it counts as passed. */
  noteUse(key: string): void {
    if (this.streamed?.has(key)) this.used.add(key);
  }

  private put(into: LRUCache<string, Buffer> | null, limit: number, key: string, buf: Buffer): void {
    if (!into || this.closed) return;
    this.delete(key); // in neither place twice, and its old hold released before a new one is taken
    if (buf.length > limit) return;
    if (this.budget) {
      const release = this.budget.tryReserve(buf.length);
      if (!release) return; // the process is at its memory limit: serve without caching
      this.held.set(key, release);
    }
    into.set(key, buf);
  }

  delete(key: string): void {
    this.lru?.delete(key);
    this.streamed?.delete(key);
    this.used.delete(key);
  }

  /** Drop every entry, leave the budget, and keep nothing from now on (the engine closed). */
  close(): void {
    this.closed = true;
    this.lru?.clear();
    this.streamed?.clear();
    this.passed.clear();
    this.used.clear();
    this.unregister?.();
    this.unregister = null;
  }

  get sizeBytes(): number {
    return (this.lru?.calculatedSize ?? 0) + (this.streamed?.calculatedSize ?? 0);
  }

  /** The budget needs memory: chunks streams have read go first, then the least recent frames. */
  private evict(bytes: number): number {
    let freed = 0;
    this.reclaiming = true;
    try {
      for (const lru of [this.streamed, this.lru]) {
        while (freed < bytes && lru && lru.size > 0) {
          const before = lru.calculatedSize;
          lru.pop();
          freed += before - lru.calculatedSize;
        }
      }
    } finally {
      this.reclaiming = false;
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
