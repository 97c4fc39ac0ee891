// Output of one connection: each message is written whole, batched per tick, and a client that
// stops reading is noticed. Used on the accepted socket, then on the TLS socket after STARTTLS.
//
// Corks until the end of the current tick (process.nextTick), so replies finished together leave
// in one writev; uncorking on setImmediate instead batched more but halved sequential read
// throughput (measured with nbdcopy). Output for a closed socket is dropped.
import type { Socket } from 'node:net';

/** drop a client that has not taken CONTENDED_MIN_PROGRESS_BYTES of our replies for this long */
const WRITE_STALL_MS = 60_000;
/** ...or for this long while other connections wait for room in the memory budget it holds: a
 *  dozen clients that sent reads and read no reply froze every other client for a minute */
export const CONTENDED_STALL_MS = 15_000;
/** what a client must move in CONTENDED_STALL_MS to count as moving (~0.5 Mbit/s): one that
 *  reads or sends a 32 MiB request slowly is slow, not stalled */
export const CONTENDED_MIN_PROGRESS_BYTES = 2 ** 20;

export class ReplyWriter {
  /** the socket corked until the end of this tick */
  private corkedSocket: Socket | null = null;
  private stallTimer: NodeJS.Timeout | null = null;
  /** bytes given to the socket so far (what it has not sent yet is its writableLength) */
  private given = 0;

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
    bufs.forEach((b, i) => {
      this.given += b.length;
      if (i === last && onWritten) s.write(b, onWritten);
      else s.write(b);
    });
    // A client that stops reading its replies is dropped once it has taken next to nothing for a
    // while: its unread replies and the requests parked behind them are memory held on its behalf.
    if (s.writableNeedDrain && !this.stallTimer) this.watchStall(s);
  }

  private watchStall(s: Socket): void {
    const sent = () => this.given - this.socket.writableLength;
    let mark = sent();
    let idleSince = Date.now();
    const check = () => {
      const now = Date.now();
      if (sent() - mark >= CONTENDED_MIN_PROGRESS_BYTES) idleSince = now; // slow, not stalled
      mark = sent();
      if (now - idleSince >= WRITE_STALL_MS || (now - idleSince >= CONTENDED_STALL_MS && this.contended())) return this.onStall();
      this.stallTimer = setTimeout(check, CONTENDED_STALL_MS).unref();
    };
    this.stallTimer = setTimeout(check, CONTENDED_STALL_MS).unref();
    s.once('drain', () => this.stopStallTimer());
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
