// The memory chunk fetches hold while they run, for every volume sharing one memory budget. A
// whole-chunk fetch holds the stored object (read into lent memory) and the chunk decoded out of
// it, 8 MiB in all, until the chunk lands in the read cache or a reply (which the budget counts);
// a frame's fetch holds twice its frame. Bounded per volume only (16 whole fetches, 32 frames),
// 8 readers of 4 volumes at --memory-limit 256M held 64 whole fetches: 268 MiB of lent memory and
// as much decoded, outside the budget (peak RSS 1.2 GiB; BENCHMARKS.md, stop 41).
//
// A fetch takes its bytes from room the budget has free (tryReserveFree: a connection waiting for
// memory goes first, and no cache is asked to evict: a fetch that evicted 8 MiB of the read cache
// to land 4 MiB in it threw out the readahead a stream was about to read, and a second export ran
// at 0.6-0.7x), else from a small floor of its own (FLOOR_BYTES, outside the budget), else it
// waits, first come first served. The floor keeps reads moving when the budget is full of cached
// frames, or of the requests that wait on these very fetches: they could never get room from it.
// So fetches add at most FLOOR_BYTES to the limit.
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
  private floorUsed = 0;
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

  /** bytes fetches hold of the floor now (tests, metrics) */
  get floorHeld(): number {
    return this.floorUsed;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** Hold `bytes` now (from the budget, else the floor), or null: for readahead, which never waits. */
  tryHold(bytes: number): (() => void) | null {
    if (!this.budget) return () => {};
    if (this.waiters.length > 0) return null;
    return this.take(bytes);
  }

  /** Runs `work` holding `bytes` (waiting for them first, in order); `held`: already held. */
  async run<T>(bytes: number, work: () => Promise<T>, held?: () => void): Promise<T> {
    const release = held ?? this.tryHold(bytes) ?? (await new Promise<() => void>((grant) => this.waiters.push({ bytes, grant })));
    try {
      return await work();
    } finally {
      release();
    }
  }

  private take(bytes: number): (() => void) | null {
    const fromBudget = this.budget!.tryReserveFree(bytes);
    if (fromBudget) return this.releasing(fromBudget);
    // (a fetch larger than the floor still runs alone on it: progress before the bound)
    if (this.floorUsed + bytes > this.floorBytes && this.floorUsed > 0) return null;
    this.floorUsed += bytes;
    return this.releasing(() => (this.floorUsed -= bytes));
  }

  /** Every release wakes waiters: one waits only while fetches hold the floor, so one will come. */
  private releasing(free: () => void): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      free();
      while (this.waiters.length > 0) {
        const release = this.take(this.waiters[0].bytes);
        if (!release) return;
        this.waiters.shift()!.grant(release);
      }
    };
  }
}
