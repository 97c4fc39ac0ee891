// A writer session: one heartbeat object per writing process (`sessions/<session id>`), renewed
// every 5 s with If-Match on its own etag, whatever the number of volumes the process writes.
// Volume leases name the session that holds them (volume-lease.ts); a volume's lease is live
// exactly as long as its session's heartbeat keeps changing.
//
// Nobody's clock is compared with anybody else's, and the store's time is never used:
// - The holder measures its own validity: it may write until `start of its last successful
//   renewal + ttl - margin`, on the monotonic clock (performance.now); the wall clock can only
//   shorten that (a forward jump ends it early), never lengthen it (a backward jump is ignored).
// - An observer (a contender for a volume) watches the heartbeat's etag on its own monotonic
//   clock: unchanged for a whole ttl → the session is dead. The holder's deadline is `margin`
//   earlier than any observer can decide, so the holder always stops first.
// - A session that missed its deadline is dead for good, even if a late renewal then succeeds
//   (someone may have taken its volumes meanwhile): its leases are lost, and the process opens
//   a new session for new leases.
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { VaultError, describeError, isVaultError } from '../errors';
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';

export const SESSIONS_PREFIX = 'sessions/';
export const sessionKey = (sessionId: string) => `${SESSIONS_PREFIX}${sessionId}`;

/** an observer declares a session dead after its heartbeat stood still this long */
export const SESSION_TTL_MS = 10_000;
/** one renewal request per process this often */
export const SESSION_RENEW_MS = 5_000;
/** the holder stops writing this long before an observer could declare it dead: covers
 *  clock-rate differences between machines (ppm in practice) and timer lateness */
const MARGIN_FRACTION = 0.1;

export interface SessionTiming {
  readonly ttlMs?: number;
  readonly renewMs?: number;
}

export interface Clock {
  /** monotonic milliseconds */
  monotonic(): number;
  /** wall-clock milliseconds (only ever used to shorten a lease) */
  wall(): number;
}

export const systemClock: Clock = { monotonic: () => performance.now(), wall: () => Date.now() };

/** The public heartbeat record (not sealed: it holds nothing but timings and a counter). */
export interface SessionRecord {
  readonly v: 1;
  readonly ttlMs: number;
  readonly renewMs: number;
  readonly beat: number;
  /** when the holder wrote this record (its wall clock: for gc's horizon only, never for safety) */
  readonly writtenAt?: number;
  /** start of the oldest upload of any of the session's volumes that no durable root names yet
   *  (null: none): gc keeps everything from there on (see writerHorizon in volume-lease.ts) */
  readonly pendingSince?: number | null;
}

export function parseSessionRecord(body: Buffer): SessionRecord | null {
  try {
    const r = JSON.parse(body.toString('utf8'));
    if (r?.v === 1 && Number.isSafeInteger(r.ttlMs) && Number.isSafeInteger(r.beat)) return r as SessionRecord;
  } catch {
    /* unreadable: treated with the default ttl */
  }
  return null;
}

export class WriterSession {
  readonly id = randomBytes(16).toString('hex');
  readonly ttlMs: number;
  readonly renewMs: number;
  private etag = '';
  private beat = 0;
  /** deadlines of the current validity, on both clocks */
  private monoDeadline = 0;
  private wallDeadline = 0;
  private deadError: VaultError | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly lostListeners = new Set<(err: VaultError) => void>();

  private constructor(
    private readonly store: ObjectStore,
    private readonly logger: Logger,
    timing: SessionTiming,
    private readonly clock: Clock,
  ) {
    this.ttlMs = timing.ttlMs ?? SESSION_TTL_MS;
    this.renewMs = timing.renewMs ?? SESSION_RENEW_MS;
  }

  /** Create the heartbeat (If-None-Match) and start renewing it. */
  static async start(store: ObjectStore, logger: Logger, timing: SessionTiming = {}, clock: Clock = systemClock): Promise<WriterSession> {
    const s = new WriterSession(store, logger, timing, clock);
    const m0 = clock.monotonic();
    const w0 = clock.wall();
    s.etag = (await store.put(sessionKey(s.id), s.body(), { ifNoneMatch: '*' })).etag;
    s.extend(m0, w0);
    s.schedule();
    logger.debug({ session: s.id, ttlMs: s.ttlMs, renewMs: s.renewMs }, 'writer session started');
    return s;
  }

  private body(): Buffer {
    let pendingSince: number | null = null;
    for (const source of this.pendingSources) {
      const t = source();
      if (t !== null && (pendingSince === null || t < pendingSince)) pendingSince = t;
    }
    const r: SessionRecord = { v: 1, ttlMs: this.ttlMs, renewMs: this.renewMs, beat: this.beat++, writtenAt: this.clock.wall(), pendingSince };
    return Buffer.from(JSON.stringify(r));
  }

  private readonly pendingSources = new Set<() => number | null>();

  /** An engine's oldest unreferenced upload, published with every heartbeat (for gc). */
  addPendingSource(source: () => number | null): () => void {
    this.pendingSources.add(source);
    return () => this.pendingSources.delete(source);
  }

  private get marginMs(): number {
    return Math.max(1, Math.min(1000, Math.round(this.ttlMs * MARGIN_FRACTION)) );
  }

  private extend(monoStart: number, wallStart: number): void {
    this.monoDeadline = monoStart + this.ttlMs - this.marginMs;
    this.wallDeadline = wallStart + this.ttlMs - this.marginMs;
  }

  private expired(): boolean {
    return this.clock.monotonic() >= this.monoDeadline || this.clock.wall() >= this.wallDeadline;
  }

  /** Throws ERR_LEASE once the session is dead (a renewal was refused, or the deadline passed). */
  check(): void {
    if (!this.deadError && !this.stopped && this.expired()) {
      this.die(`no heartbeat could be written for ${Math.round(this.clock.monotonic() - (this.monoDeadline - this.ttlMs + this.marginMs))} ms`);
    }
    if (this.deadError) throw this.deadError;
  }

  get alive(): boolean {
    try {
      this.check();
      return !this.stopped;
    } catch {
      return false;
    }
  }

  onLost(fn: (err: VaultError) => void): () => void {
    this.lostListeners.add(fn);
    return () => this.lostListeners.delete(fn);
  }

  private die(why: string): void {
    if (this.deadError) return;
    this.deadError = new VaultError('ERR_LEASE', `this server's writer session ended (${why}): its volume leases are lost; refusing to write`);
    this.logger.error({ session: this.id, why }, 'writer session lost: writes under its leases are refused from now on');
    this.clearTimer();
    for (const fn of this.lostListeners) {
      try {
        fn(this.deadError);
      } catch (err) {
        this.logger.error({ err: describeError(err) }, 'session-lost listener failed');
      }
    }
  }

  private schedule(): void {
    if (this.stopped || this.deadError) return;
    this.timer = setTimeout(() => void this.renew(), this.renewMs);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** One renewal (tests call it directly). A stop waits for it: a put landing after the stop's
   *  delete would leave the heartbeat behind, one failing after it would report a clean stop as
   *  a lost session. */
  renew(): Promise<void> {
    if (this.stopped || this.deadError) return Promise.resolve();
    this.renewing ??= this.renewNow().finally(() => (this.renewing = null));
    return this.renewing;
  }

  private renewing: Promise<void> | null = null;

  private async renewNow(): Promise<void> {
    this.clearTimer();
    const m0 = this.clock.monotonic();
    const w0 = this.clock.wall();
    try {
      const { etag } = await this.store.put(sessionKey(this.id), this.body(), { ifMatch: this.etag });
      this.etag = etag;
      // Landed before our deadline: no observer can have declared us dead (theirs is later).
      if (this.expired()) this.die('a renewal succeeded only after the deadline');
      else this.extend(m0, w0);
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_PRECONDITION') || isVaultError(err, 'ERR_STORE_NOT_FOUND')) {
        this.die('its heartbeat object was changed or removed by someone else');
      } else {
        this.logger.warn({ session: this.id, err: describeError(err) }, 'heartbeat renewal failed; will retry');
        if (this.expired()) this.die('renewals kept failing');
      }
    }
    this.schedule();
  }

  /** Stop renewing and delete the heartbeat (after every lease of the session is released). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimer();
    await this.renewing;
    if (this.deadError) return;
    try {
      const cur = await this.store.head(sessionKey(this.id));
      if (cur && cur.etag === this.etag) await this.store.delete(sessionKey(this.id));
    } catch (err) {
      this.logger.warn({ session: this.id, err: describeError(err) }, 'heartbeat not deleted; observers will find it stale');
    }
  }
}

export type SessionState = 'gone' | 'live' | 'dead';

export interface ObserveOptions {
  readonly maxWaitMs?: number;
  readonly clock?: Clock;
  readonly pollMs?: number;
  readonly signal?: AbortSignal;
  /** told, once the heartbeat was first seen, when (on `clock`'s monotonic time) the watch
   *  answers at the latest, give or take a poll (a server extends a waiting client's handshake) */
  readonly onWatching?: (verdictDueMono: number) => void;
}

/**
 * Watch another session's heartbeat on our own monotonic clock: 'live' as soon as it changes,
 * 'dead' once it stood still for the session's ttl (from our first look), 'gone' if it does not
 * exist. `maxWaitMs` 0 answers at once: 'live' for a heartbeat that exists (conservative), as
 * does an aborted `signal` (the watcher stops).
 */
export async function observeSession(store: ObjectStore, sessionId: string, opts: ObserveOptions = {}): Promise<SessionState> {
  const clock = opts.clock ?? systemClock;
  const first = await headOrNull(store, sessionId, true);
  if (!first) return 'gone';
  const ttl = Math.min(Math.max(first.record?.ttlMs ?? SESSION_TTL_MS, 1), 600_000);
  const t0 = clock.monotonic();
  opts.onWatching?.(t0 + Math.min(ttl, opts.maxWaitMs ?? Infinity));
  const maxWait = opts.maxWaitMs ?? Infinity;
  const poll = opts.pollMs ?? Math.min(1000, Math.max(10, ttl / 10));
  for (;;) {
    const elapsed = clock.monotonic() - t0;
    if (elapsed >= maxWait || opts.signal?.aborted) return 'live';
    await sleep(Math.min(poll, Math.max(1, ttl - elapsed)), undefined, { signal: opts.signal }).catch(() => {}); // (aborted: below)
    if (opts.signal?.aborted) return 'live'; // the watcher stops: nobody takes anything over
    const cur = await headOrNull(store, sessionId, false);
    if (!cur) return 'gone';
    if (cur.etag !== first.etag) return 'live';
    if (clock.monotonic() - t0 >= ttl) return 'dead';
  }
}

async function headOrNull(store: ObjectStore, sessionId: string, withBody: boolean): Promise<{ etag: string; record: SessionRecord | null } | null> {
  if (!withBody) {
    const info = await store.head(sessionKey(sessionId));
    return info ? { etag: info.etag, record: null } : null;
  }
  try {
    const obj = await store.get(sessionKey(sessionId));
    return { etag: obj.etag, record: parseSessionRecord(obj.body) };
  } catch (err) {
    if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) return null;
    throw err;
  }
}
