// Bounds how many chunk fetches (store GET + decode) run at once. Without it, reads spread over
// many chunks start one fetch per chunk: a thousand pipelined reads of a thousand chunks would
// hold a thousand sealed and decoded 4 MiB chunks at once. Waiters start in FIFO order; a slot
// is handed straight to the next waiter, so the count never exceeds the limit.

export class FetchLimiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly limit: number) {
    if (!(limit >= 1)) throw new RangeError(`FetchLimiter: limit ${limit} < 1`);
  }

  /** A fetch started now would run at once (readahead only starts then: it never queues). */
  get hasFreeSlot(): boolean {
    return this.active < this.limit;
  }

  get inFlight(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.active < this.limit) this.active++;
    else await new Promise<void>((r) => this.waiting.push(r)); // the slot is handed over to us
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}
