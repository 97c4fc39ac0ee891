// One connection's share of the process memory budget (serve --memory-limit): what its requests
// in flight, its unsent replies and the WRITE payload it is reading hold is covered by
// reservations of the shared MemoryBudget, on top of the connection's own in-flight limit. The connection asks
// cover(bytes) before it parses another request: when the budget cannot cover that now, one
// reservation waits in the budget's FIFO queue (the connection stops reading meanwhile) and
// onGranted() tells the connection to go on. trim(bytes) gives back what is held beyond `bytes`,
// so an idle connection holds nothing. Without a budget every cover() succeeds.
import type { MemoryBudget } from '../util/memory-budget';

/** Reservations are taken in steps of at least this (one per burst of small requests, not one
 *  per request). */
export const BUDGET_STEP_BYTES = 256 * 1024;

export class BudgetShare {
  /** newest last; trimmed from the end */
  private readonly grants: Array<{ bytes: number; release: () => void }> = [];
  private held = 0;
  private waiting = false;
  private closed = false;

  constructor(
    private readonly budget: MemoryBudget | undefined,
    private readonly onGranted: () => void,
  ) {}

  get heldBytes(): number {
    return this.held;
  }

  /** A reservation is waiting in the budget's queue. */
  get isWaiting(): boolean {
    return this.waiting;
  }

  /** True if `bytes` are covered now (taking more of the budget when it has room); false when a
   *  reservation is waiting (onGranted() follows once it is granted). */
  cover(bytes: number): boolean {
    if (!this.budget || bytes <= this.held) return true;
    if (this.waiting || this.closed) return false;
    const want = Math.ceil((bytes - this.held) / BUDGET_STEP_BYTES) * BUDGET_STEP_BYTES;
    const now = this.budget.tryReserve(want);
    if (now) {
      this.add(want, now);
      return true;
    }
    this.waiting = true;
    void this.budget.reserve(want).then((release) => {
      this.waiting = false;
      if (this.closed) release();
      else {
        this.add(want, release);
        this.onGranted();
      }
    });
    return false;
  }

  /** Gives back reservations while what is left still covers `bytes`. */
  trim(bytes: number): void {
    while (this.grants.length > 0 && this.held - this.grants[this.grants.length - 1].bytes >= bytes) {
      const g = this.grants.pop()!;
      this.held -= g.bytes;
      g.release();
    }
  }

  /** The connection is gone: give everything back, and a grant still waiting once it comes. */
  close(): void {
    this.closed = true;
    this.trim(0);
  }

  private add(bytes: number, release: () => void): void {
    this.grants.push({ bytes, release });
    this.held += bytes;
  }
}
