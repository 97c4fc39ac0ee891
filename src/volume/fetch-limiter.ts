// Bounds how many chunk fetches (store GET + decode) run at once. Without it, reads spread over
// many chunks start one fetch per chunk: a thousand pipelined reads of a thousand chunks would
// hold a thousand sealed and decoded 4 MiB chunks at once. Waiting fetches queue per requester
// (one per NBD connection) and a freed slot goes to the requesters in turn (round robin), so a
// client with a thousand misses queued delays another client's miss by one fetch, not a
// thousand. A slot is handed straight to the next waiter: the count never exceeds the limit.

export class FetchLimiter {
  private active = 0;
  /** waiting fetches per requester; Map order is the round-robin order */
  private readonly queues = new Map<object | null, Array<() => void>>();

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
    let n = 0;
    for (const q of this.queues.values()) n += q.length;
    return n;
  }

  async run<T>(work: () => Promise<T>, requester: object | null = null): Promise<T> {
    if (this.active < this.limit) this.active++;
    else {
      await new Promise<void>((r) => {
        const q = this.queues.get(requester);
        if (q) q.push(r);
        else this.queues.set(requester, [r]);
      }); // the slot is handed over to us
    }
    try {
      return await work();
    } finally {
      this.handOver();
    }
  }

  private handOver(): void {
    for (const [requester, q] of this.queues) {
      const next = q.shift()!;
      this.queues.delete(requester); // to the back of the round
      if (q.length > 0) this.queues.set(requester, q);
      next();
      return;
    }
    this.active--;
  }
}
