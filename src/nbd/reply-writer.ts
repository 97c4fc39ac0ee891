// Output of one connection: each message is written whole, batched per tick, and a client that
// stops reading is noticed. Used on the accepted socket, then on the TLS socket after STARTTLS.
//
// Corks until the end of the current tick (process.nextTick), so replies finished together leave
// in one writev; uncorking on setImmediate instead batched more but halved sequential read
// throughput (measured with nbdcopy). Output for a closed socket is dropped.
import type { Socket } from 'node:net';

/** drop a client whose socket has not drained our replies for this long */
const WRITE_STALL_MS = 60_000;
/** ...or for this long while other connections wait for room in the memory budget it holds: a
 *  dozen clients that sent reads and read no reply froze every other client for a minute */
export const CONTENDED_STALL_MS = 15_000;

export class ReplyWriter {
  /** the socket corked until the end of this tick */
  private corkedSocket: Socket | null = null;
  private stallTimer: NodeJS.Timeout | null = null;

  constructor(
    private socket: Socket,
    /** called once the client has not read its replies for WRITE_STALL_MS (CONTENDED_STALL_MS
     *  while `contended()`) */
    private readonly onStall: () => void,
    private readonly contended: () => boolean = () => false,
  ) {}

  /** `onWritten`: called once the socket has handed the last buffer to the kernel, or with the
   *  error that ended the writing. */
  write(bufs: readonly Buffer[], onWritten?: (err?: Error | null) => void): void {
    const s = this.socket;
    if (s.destroyed || s.writableEnded) return;
    if (this.corkedSocket !== s) {
      this.corkedSocket = s;
      s.cork();
      process.nextTick(() => {
        if (this.corkedSocket === s) this.corkedSocket = null;
        s.uncork();
      });
    }
    const last = bufs.length - 1;
    bufs.forEach((b, i) => (i === last && onWritten ? s.write(b, onWritten) : s.write(b)));
    // A client that stops reading its replies is dropped once nothing has drained for a while:
    // its unread replies and the requests parked behind them are memory held on its behalf.
    if (s.writableNeedDrain && !this.stallTimer) {
      const since = Date.now();
      const check = () => {
        const stalled = Date.now() - since;
        if (stalled >= WRITE_STALL_MS || this.contended()) return this.onStall();
        this.stallTimer = setTimeout(check, Math.min(CONTENDED_STALL_MS, WRITE_STALL_MS - stalled)).unref();
      };
      this.stallTimer = setTimeout(check, CONTENDED_STALL_MS).unref();
      s.once('drain', () => this.stopStallTimer());
    }
  }

  /** Sends `last` at once, not at the end of the tick (STARTTLS: the ACK must be on its way in
   *  plaintext before the socket is wrapped). */
  writeNow(last: Buffer): void {
    const s = this.socket;
    if (this.corkedSocket === s) {
      this.corkedSocket = null;
      s.uncork();
    }
    s.write(last);
  }

  /** From now on, write to `next` (the TLS socket wrapping the accepted one). */
  switchTo(next: Socket): void {
    this.socket = next;
  }

  stopStallTimer(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
  }
}
