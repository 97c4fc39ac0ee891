// Input buffer for the handshake phase, where the protocol is read as a sequence of awaited
// fields ("4 bytes of client flags", "16 bytes of option header", "N bytes of payload").
// Guarantees: read(n) resolves with exactly n bytes in arrival order; skip(n) discards n bytes as
// they arrive without holding them; at most one waiter at a time; once failed, every read
// rejects. Above `highWaterBytes` buffered it asks the owner to pause the socket.

export class ByteQueue {
  private chunks: Buffer[] = [];
  private total = 0;
  private waiter: { need: number; wake: () => void; fail: (err: Error) => void } | null = null;
  private failure: Error | null = null;
  private paused = false;

  constructor(
    private readonly highWaterBytes: number,
    private readonly pause: () => void,
    private readonly resume: () => void,
  ) {}

  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    if (this.failure || chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
    if (this.total > this.highWaterBytes && !this.paused) {
      this.paused = true;
      this.pause();
    }
    if (this.waiter && this.total >= this.waiter.need) {
      const w = this.waiter;
      this.waiter = null;
      w.wake();
    }
  }

  /** Rejects the current and every later read (socket closed, timeout, shutdown). */
  fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.chunks = [];
    this.total = 0;
    const w = this.waiter;
    this.waiter = null;
    w?.fail(err);
  }

  async read(n: number): Promise<Buffer> {
    await this.waitFor(n);
    return this.take(n);
  }

  /** Discards n bytes, never buffering more than what one socket chunk brings. */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      await this.waitFor(1);
      const k = Math.min(left, this.total);
      this.take(k);
      left -= k;
    }
  }

  /** Hands every buffered byte to the next reader (the transmission request parser). */
  takeAll(): Buffer[] {
    const out = this.chunks;
    this.chunks = [];
    this.total = 0;
    this.unpauseIfLow();
    return out;
  }

  private waitFor(n: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.total >= n) return Promise.resolve();
    if (this.waiter) return Promise.reject(new Error('ByteQueue: concurrent read'));
    this.unpauseIfLow(); // we need more than we hold: make sure the socket flows
    return new Promise((wake, fail) => {
      this.waiter = { need: n, wake, fail };
    });
  }

  private take(n: number): Buffer {
    let out: Buffer;
    const first = this.chunks[0];
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0];
        const k = Math.min(c.length, n - at);
        c.copy(out, at, 0, k);
        at += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.total -= n;
    this.unpauseIfLow();
    return out;
  }

  private unpauseIfLow(): void {
    if (this.paused && this.total <= this.highWaterBytes) {
      this.paused = false;
      this.resume();
    }
  }
}
