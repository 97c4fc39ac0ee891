// Connection admission: strangers must not be able to lock authenticated clients out.
//
// Connections still negotiating (greeting, options, TLS handshake) hold "handshake slots",
// counted in total and per source address; connections in transmission hold "established
// slots" (maxEstablished). A new connection is refused only when every established slot is
// taken. When the handshake slots of its address (or all handshake slots) are taken, the OLDEST
// negotiating connection of that address (or of the address holding the most) is dropped to make
// room: a real client negotiates in milliseconds, so it always gets through a crowd of idle
// sockets, which only ever evict each other (and time out after the short handshake timeout).
import type { Logger } from '../util/log';
import { RateLimitedLog } from './rate-limited-log';

export interface AdmissionLimits {
  readonly maxEstablished: number;
  readonly maxHandshakes: number;
  readonly maxHandshakesPerAddress: number;
}

/** What admission needs of a connection. */
export interface Admitted {
  readonly remote: string;
  /** drop it now (it loses its handshake slot to a newer connection) */
  evict(why: string): void;
}

export class Admission<C extends Admitted> {
  /** per address, in arrival order (a Set iterates in insertion order: oldest first) */
  private readonly handshaking = new Map<string, Set<C>>();
  private handshakeCount = 0;
  private readonly established = new Set<C>();
  readonly log: RateLimitedLog;

  constructor(
    private readonly limits: AdmissionLimits,
    logger: Logger,
  ) {
    for (const [k, v] of Object.entries(limits)) if (!(Number.isSafeInteger(v) && v > 0)) throw new Error(`admission: ${k} must be a positive integer`);
    this.log = new RateLimitedLog(logger);
  }

  get establishedCount(): number {
    return this.established.size;
  }

  get handshakingCount(): number {
    return this.handshakeCount;
  }

  /** A new connection, before it is started: false means refuse it (no established slot). */
  admit(conn: C): boolean {
    if (this.established.size >= this.limits.maxEstablished) {
      this.log.warn({ remote: conn.remote, maxConnections: this.limits.maxEstablished }, 'connection limit reached: client refused');
      return false;
    }
    const mine = this.handshaking.get(conn.remote);
    if (mine && mine.size >= this.limits.maxHandshakesPerAddress) this.evictOldest(mine, 'too many handshakes from one address');
    else if (this.handshakeCount >= this.limits.maxHandshakes) this.evictOldest(this.busiestAddress(), 'too many handshakes in progress');
    let set = this.handshaking.get(conn.remote);
    if (!set) this.handshaking.set(conn.remote, (set = new Set()));
    set.add(conn);
    this.handshakeCount++;
    return true;
  }

  /** The connection finished negotiating: false means no established slot is free. */
  establish(conn: C): boolean {
    this.leaveHandshake(conn);
    if (this.established.size >= this.limits.maxEstablished) {
      this.log.warn({ remote: conn.remote, maxConnections: this.limits.maxEstablished }, 'connection limit reached: client refused');
      return false;
    }
    this.established.add(conn);
    return true;
  }

  /** The connection ended, in whatever state. */
  leave(conn: C): void {
    this.leaveHandshake(conn);
    this.established.delete(conn);
  }

  private leaveHandshake(conn: C): void {
    const set = this.handshaking.get(conn.remote);
    if (!set || !set.delete(conn)) return;
    this.handshakeCount--;
    if (set.size === 0) this.handshaking.delete(conn.remote);
  }

  private busiestAddress(): Set<C> {
    let best: Set<C> | undefined;
    for (const set of this.handshaking.values()) if (!best || set.size > best.size) best = set;
    return best!;
  }

  private evictOldest(set: Set<C>, why: string): void {
    const oldest = set.values().next().value as C;
    this.leaveHandshake(oldest);
    this.log.warn({ remote: oldest.remote, why }, 'negotiating connection dropped to make room');
    oldest.evict(why);
  }
}
