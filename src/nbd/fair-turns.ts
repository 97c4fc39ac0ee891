// Fairness between connections: one event-loop turn starts at most REQUESTS_PER_TURN requests (or
// REQUEST_BYTES_PER_TURN bytes of them) per connection, then the connection goes on in a later
// turn (setImmediate), so a flood on one never holds up accepts, handshakes or other clients.

/** Requests started per connection in one event-loop turn before it yields to the others. */
const REQUESTS_PER_TURN = 64;
/** READ/WRITE bytes started per connection in one turn (their copies are the CPU they cost). */
const REQUEST_BYTES_PER_TURN = 256 * 1024;

export class FairTurns {
  private requests = 0;
  private bytes = 0;
  private next: NodeJS.Immediate | null = null;

  /** A request of `bytes` payload started in this turn. */
  count(bytes: number): void {
    this.requests++;
    this.bytes += bytes;
  }

  get usedUp(): boolean {
    return this.requests >= REQUESTS_PER_TURN || this.bytes >= REQUEST_BYTES_PER_TURN;
  }

  /** A later turn is scheduled (the connection waits for it). */
  get waiting(): boolean {
    return this.next !== null;
  }

  /** Go on in a later turn, after other connections and I/O, with a fresh share (once). */
  yield(goOn: () => void): void {
    if (this.next) return;
    this.next = setImmediate(() => {
      this.next = null;
      this.requests = 0;
      this.bytes = 0;
      goOn();
    });
  }

  cancel(): void {
    if (this.next) clearImmediate(this.next);
    this.next = null;
  }
}
