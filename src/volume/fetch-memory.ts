// The memory chunk fetches hold while they run, for every volume sharing one memory budget. A
// whole-chunk fetch holds the stored object (read into lent memory) and the chunk decoded out of
// it until the chunk lands in the read cache or a reply, which the budget counts; a frame's fetch
// likewise holds a sealed and a decoded frame. fetchBytes counts twice the decoded bytes: the fs
// store and the disk cache read into the lent memory, while S3 and version-1 chunks copy once more.
// Bounded per volume only (16 whole fetches, 32 frames), 8 readers of 4 volumes at
// --memory-limit 256M held 64 whole fetches outside the budget, and the server peaked at 1.2 GiB
// (BENCHMARKS.md, stop 41).
//
// A fetch takes room the budget has free (tryReserveFree: a connection waiting for memory goes
// first, and no cache is asked to evict: a fetch that evicted 8 MiB of the read cache to land
// 4 MiB in it threw out the readahead a stream was about to read, and a second export ran at
// 0.6-0.7x), else a floor of its own (FLOOR_BYTES, outside the budget), else it waits, first come
// first served. The floor keeps reads moving when the budget is full of cached frames, or of the
// requests that wait on these very fetches, which could never get room from it. Readahead takes
// the floor only while nobody waits for the budget: what it fetches then could not be kept.
// Compaction's reads do not come here: the sealing share covers them (sealer.ts).
import type { MemoryBudget } from '../util/memory-budget';
import { CHUNK_SIZE } from './chunk-math';

/** four whole-chunk fetches (two per core of a small machine, or a few GETs in flight on S3), or
 *  128 frames, always */
export const FLOOR_BYTES = 4 * 2 * CHUNK_SIZE;

/** What a fetch of `decodedBytes` (a whole chunk, or a frame) holds while it runs. */
export function fetchBytes(decodedBytes: number): number {
  return 2 * decodedBytes;
}

const shared = new WeakMap<MemoryBudget, FetchMemory>();

export class FetchMemory {
  private floorBytesHeld = 0;
  private readonly waiters: Array<{ bytes: number; grant: (release: () => void) => void }> = [];

  constructor(
    /** none: fetches are bounded per volume only (a command's own engine) */
    private readonly budget: MemoryBudget | undefined,
    readonly floorBytes = FLOOR_BYTES,
  ) {}

  /** The one FetchMemory of every read path sharing `budget`. */
  static of(budget: MemoryBudget | undefined): FetchMemory {
    if (!budget) return new FetchMemory(undefined);
    let m = shared.get(budget);
    if (!m) shared.set(budget, (m = new FetchMemory(budget)));
    return m;
  }

  /** bytes fetches hold of the floor now (metrics, tests) */
  get floorHeld(): number {
    return this.floorBytesHeld;
  }

  /** fetches waiting for memory now (metrics, tests) */
  get waiting(): number {
    return this.waiters.length;
  }

  /** Hold `bytes` now (from the budget, else the floor), or null; never waits. */
  tryHold(bytes: number): (() => void) | null {
    if (!this.budget) return () => {};
    if (this.waiters.length > 0) return null;
    return this.take(this.budget, bytes);
  }

  /** For readahead: like tryHold, but null while anyone waits for the budget (the read cache
   *  could not keep what it fetched: it would only take the floor from the reads that need it). */
  tryHoldAhead(bytes: number): (() => void) | null {
    if (this.budget && this.budget.stats().waiting > 0) return null;
    return this.tryHold(bytes);
  }

  /** Runs `work` holding `bytes` (waiting for them first, in order); `held`: already held;
   *  `abort`: stops the wait (its volume closes), rejecting with the signal's reason. */
  async run<T>(bytes: number, work: () => Promise<T>, held?: () => void, abort?: AbortSignal): Promise<T> {
    const release = held ?? this.tryHold(bytes) ?? (await this.wait(bytes, abort));
    try {
      return await work();
    } finally {
      release();
    }
  }

  private wait(bytes: number, abort?: AbortSignal): Promise<() => void> {
    return new Promise((grant, fail) => {
      if (abort?.aborted) return fail(abort.reason);
      const onAbort = () => {
        const at = this.waiters.indexOf(waiter);
        if (at < 0) return;
        this.waiters.splice(at, 1);
        fail(abort!.reason);
        this.wake(); // (it may have been first in line)
      };
      const waiter = {
        bytes,
        grant: (release: () => void) => {
          abort?.removeEventListener('abort', onAbort);
          grant(release);
        },
      };
      abort?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private take(budget: MemoryBudget, bytes: number): (() => void) | null {
    const fromBudget = budget.tryReserveFree(bytes);
    if (fromBudget) return this.releasing(fromBudget);
    // (a fetch larger than the floor still runs alone on it: progress before the bound)
    if (this.floorBytesHeld + bytes > this.floorBytes && this.floorBytesHeld > 0) return null;
    this.floorBytesHeld += bytes;
    return this.releasing(() => (this.floorBytesHeld -= bytes));
  }

  /** Every release wakes waiters: one waits only while fetches hold the floor, so one will come. */
  private releasing(free: () => void): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      free();
      this.wake();
    };
  }

  /** Grants waiters in order while the first one fits. */
  private wake(): void {
    while (this.waiters.length > 0) {
      const release = this.take(this.budget!, this.waiters[0].bytes);
      if (!release) return;
      this.waiters.shift()!.grant(release);
    }
  }
}
