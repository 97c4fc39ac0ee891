// SlruPolicy: size-weighted segmented LRU, the eviction order of the disk cache.
//
// Two segments, each an LRU (a Map in use order). A new entry enters `probation`; a hit there
// promotes it to `protected` (it has been used twice: frequency); a hit in `protected` refreshes
// it (recency). `protected` holds at most `protectedShare` of the budget: its least recently used
// entries fall back to the head of probation. Victims come from the cold end of probation first,
// then of protected. So a one-pass scan (a cache warm, a sequential export, a backup) cycles
// through probation and cannot flush the working set the VM keeps re-reading, which plain LRU
// would. (2Q/SLRU as in the literature; sizes are bytes, not counts.)
//
// Pure bookkeeping: it knows ids and sizes, never files. Not thread-safe; one event loop.

export class SlruPolicy<K> {
  private readonly probation = new Map<K, number>();
  private readonly protectedSeg = new Map<K, number>();
  private probationBytes = 0;
  private protectedBytes = 0;

  constructor(private readonly protectedLimit: (total: number) => number = (total) => Math.floor(total * 0.8)) {}

  get bytes(): number {
    return this.probationBytes + this.protectedBytes;
  }

  get size(): number {
    return this.probation.size + this.protectedSeg.size;
  }

  has(id: K): boolean {
    return this.probation.has(id) || this.protectedSeg.has(id);
  }

  /** Adds a new entry (cold: probation), or counts a hit if it is already there. */
  insert(id: K, bytes: number, budget: number): void {
    if (this.has(id)) {
      this.touch(id, budget);
      return;
    }
    this.probation.set(id, bytes);
    this.probationBytes += bytes;
  }

  /** A hit: probation → protected (MRU), protected → MRU. Unknown ids are ignored. */
  touch(id: K, budget: number): void {
    const p = this.probation.get(id);
    if (p !== undefined) {
      this.probation.delete(id);
      this.probationBytes -= p;
      this.protectedSeg.set(id, p);
      this.protectedBytes += p;
      this.rebalance(budget);
      return;
    }
    const q = this.protectedSeg.get(id);
    if (q !== undefined) {
      this.protectedSeg.delete(id);
      this.protectedSeg.set(id, q);
    }
  }

  remove(id: K): boolean {
    const p = this.probation.get(id);
    if (p !== undefined) {
      this.probation.delete(id);
      this.probationBytes -= p;
      return true;
    }
    const q = this.protectedSeg.get(id);
    if (q !== undefined) {
      this.protectedSeg.delete(id);
      this.protectedBytes -= q;
      return true;
    }
    return false;
  }

  /** The entry to evict next (not removed), or undefined when empty. `spare` is never chosen. */
  victim(spare?: K): K | undefined {
    for (const seg of [this.probation, this.protectedSeg]) {
      for (const id of seg.keys()) if (id !== spare) return id;
    }
    return undefined;
  }

  /** Ids from coldest to hottest (tests, diagnostics). */
  order(): K[] {
    return [...this.probation.keys(), ...this.protectedSeg.keys()];
  }

  /** Demotes protected's LRU entries to probation's MRU end until protected fits its share. */
  private rebalance(budget: number): void {
    const limit = this.protectedLimit(budget);
    while (this.protectedBytes > limit && this.protectedSeg.size > 1) {
      const [id, bytes] = this.protectedSeg.entries().next().value as [K, number];
      this.protectedSeg.delete(id);
      this.protectedBytes -= bytes;
      this.probation.set(id, bytes);
      this.probationBytes += bytes;
    }
  }
}
