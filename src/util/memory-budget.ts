// One memory budget for the process (serve --memory-limit): read caches, dirty data, in-flight
// NBD requests and unsent replies of every volume and connection hold bytes of it, so 50 served
// volumes cost one limit, not 50 caches. Full means backpressure, never failure.
//
// Guarantees:
// - usedBytes <= limitBytes, except while one request larger than the whole limit is held alone.
// - reserve() waiters are served strictly in arrival order (FIFO): a later small request never
//   overtakes an earlier large one, so a greedy client cannot starve a big writer.
// - Caches come last: before anyone waits, registered caches are asked to evict the shortfall;
//   tryReserve() (what caches use to grow) refuses while anyone waits; tryReserveFree() takes
//   only free room, never evicting.
// - Every release function is idempotent; releasing wakes waiters synchronously.
// It counts what callers declare: it does not measure the heap.

/** A cache that can give memory back: frees up to about `bytes` (releasing its reservations)
 *  and returns how many bytes it freed. */
export interface EvictableCache {
  evict(bytes: number): number;
}

export interface MemoryBudgetStats {
  readonly limitBytes: number;
  readonly usedBytes: number;
  /** reserve() calls waiting for room, and the bytes they ask for */
  readonly waiting: number;
  readonly waitingBytes: number;
  /** reserve() calls that had to wait, since the start */
  readonly waitsTotal: number;
}

interface Waiter {
  readonly bytes: number;
  readonly grant: (release: () => void) => void;
}

export class MemoryBudget {
  private used = 0;
  private readonly waiters: Waiter[] = [];
  /** index of the first live waiter in `waiters` (a queue without O(n) shifts) */
  private head = 0;
  private waitingBytes = 0;
  private waitsTotal = 0;
  private readonly caches: EvictableCache[] = [];
  /** the cache asked first next time (round robin: no cache pays for all evictions) */
  private nextCache = 0;
  /** inside evict() or grantWaiters(): releases during it must not re-enter */
  private busy = false;

  constructor(readonly limitBytes: number) {
    if (!Number.isSafeInteger(limitBytes) || limitBytes <= 0) throw new RangeError(`memory budget: limit must be a positive whole number of bytes, got ${limitBytes}`);
  }

  get usedBytes(): number {
    return this.used;
  }

  stats(): MemoryBudgetStats {
    return { limitBytes: this.limitBytes, usedBytes: this.used, waiting: this.waiters.length - this.head, waitingBytes: this.waitingBytes, waitsTotal: this.waitsTotal };
  }

  /** Hold `bytes`, waiting (FIFO, never failing) until they fit; caches are asked to evict first.
   *  A request larger than the whole limit is admitted alone (when nothing else is held). */
  reserve(bytes: number): Promise<() => void> {
    checkBytes(bytes);
    if (this.waiters.length === this.head && this.fitsAfterEviction(bytes)) return Promise.resolve(this.hold(bytes));
    this.waitsTotal++;
    this.waitingBytes += bytes;
    return new Promise((grant) => {
      this.waiters.push({ bytes, grant });
    });
  }

  /** Hold `bytes` now if they fit (after asking caches to evict), else null. For caches: it
   *  refuses while reserve() calls wait, and never admits more than the limit. */
  tryReserve(bytes: number): (() => void) | null {
    checkBytes(bytes);
    if (this.waiters.length > this.head || bytes > this.limitBytes) return null;
    return this.fitsAfterEviction(bytes) ? this.hold(bytes) : null;
  }

  /** Hold `bytes` now only from room that is free (no cache is asked to evict), else null: for
   *  memory kept on speculation, which must not push out what caches hold. Like tryReserve, it
   *  refuses while reserve() calls wait and never admits more than the limit. */
  tryReserveFree(bytes: number): (() => void) | null {
    checkBytes(bytes);
    if (this.waiters.length > this.head || this.used + bytes > this.limitBytes) return null;
    return this.hold(bytes);
  }

  /** A cache that can give memory back; returns what unregisters it. */
  registerCache(cache: EvictableCache): () => void {
    this.caches.push(cache);
    return () => {
      const i = this.caches.indexOf(cache);
      if (i < 0) return;
      this.caches.splice(i, 1);
      if (this.nextCache > i) this.nextCache--;
    };
  }

  private fits(bytes: number): boolean {
    return this.used + bytes <= this.limitBytes || this.used === 0;
  }

  private fitsAfterEviction(bytes: number): boolean {
    if (this.fits(bytes)) return true;
    if (this.busy) return false; // a cache reserving from inside evict(): no nested eviction
    this.evict(this.used + bytes - this.limitBytes);
    return this.fits(bytes);
  }

  /** Asks the caches, round robin, to free `bytes` in all. */
  private evict(bytes: number): void {
    const n = this.caches.length;
    if (n === 0) return;
    this.busy = true;
    try {
      const target = this.used - bytes;
      const start = this.nextCache % n;
      for (let k = 0; k < n && this.used > target; k++) {
        const cache = this.caches[(start + k) % n];
        cache.evict(this.used - target);
        this.nextCache = (start + k + 1) % n;
      }
    } finally {
      this.busy = false;
    }
  }

  private hold(bytes: number): () => void {
    this.used += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= bytes;
      if (!this.busy) this.grantWaiters();
    };
  }

  /** Wakes waiters in order while the first one fits (after eviction). */
  private grantWaiters(): void {
    while (this.head < this.waiters.length) {
      const w = this.waiters[this.head];
      if (!this.fitsAfterEviction(w.bytes)) return;
      this.waiters[this.head++] = undefined as unknown as Waiter;
      if (this.head > 1024 && this.head * 2 > this.waiters.length) {
        this.waiters.splice(0, this.head);
        this.head = 0;
      }
      this.waitingBytes -= w.bytes;
      w.grant(this.hold(w.bytes));
    }
  }
}

/** A hold on `bytes` of free room for memory kept for reuse (tryReserveFree), null without any;
 *  without a budget, a hold that holds nothing. The pools of such memory (decode, payload and
 *  dirty-block buffers) keep a buffer only with one. */
export function holdKept(budget: MemoryBudget | undefined, bytes: number): (() => void) | null {
  return budget ? budget.tryReserveFree(bytes) : NO_HOLD;
}

const NO_HOLD = (): void => {};

function checkBytes(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`memory budget: bytes must be a non-negative whole number, got ${bytes}`);
}
