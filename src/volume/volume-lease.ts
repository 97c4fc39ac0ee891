// The writer's lease on a volume: `volumes/<id>/lease`, so that two servers (or a server and a
// CLI command) never write one volume at once. The lease names the holder's writer session
// (writer-session.ts): it is written once when taken and never renewed — the session's single
// heartbeat keeps every lease of a process alive, at one request per 5 s whatever the number
// of volumes. Taken with a create-only put (If-None-Match: *), released by deleting it.
//
// - A lease whose session is dead (heartbeat unchanged for its ttl, watched on our monotonic
//   clock) or gone is taken over: first a create-only `takeover/<stale etag>` token (exactly one
//   contender creates it, on every store including fs), then the lease with If-Match. A token
//   whose maker died before the lease put is passed by a next-generation token (claimTakeover).
// - A lease held by this same instance (same state directory on this machine) whose process is
//   gone (a restart after a crash) or is this very process is taken over at once.
// - Sealed like every other object (kind 'lease', the volume's meta subkey): the store does not
//   learn host names or pids. The root's own If-Match stays the last line of defence: a holder
//   that lost its lease without knowing it cannot commit.
// - Once its session is dead, or a commit found the root changed, the lease is lost for good:
//   the engine refuses every write (ERR_LEASE) and its owner reopens the volume afresh.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { VaultError, describeError, isVaultError } from '../errors';
import type { Codec } from '../codec/codec';
import type { ObjectPlace } from '../codec/object-place';
import type { SecretKey } from '../keys/secret-key';
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';
import { observeSession, parseSessionRecord, sessionKey, type SessionState, type WriterSession } from './writer-session';

export const LEASE_FORMAT = 2;

/** What a lease object says (v1: written by older versions, renewed per volume with an expiry). */
export interface LeaseRecord {
  readonly v: 1 | 2;
  readonly instance: string;
  /** v2: the holder's writer session (its heartbeat is `sessions/<session>`) */
  readonly session?: string;
  readonly host: string;
  readonly pid: number;
  readonly purpose: string;
  /** v1 only: wall-clock expiry */
  readonly expiresAt?: number;
}

/** What reading a lease needs (also for gc and other readers). */
export interface LeaseReadContext {
  readonly store: ObjectStore;
  readonly codec: Codec;
  /** the volume's meta subkey */
  readonly key: SecretKey;
  readonly place: ObjectPlace;
  /** `volumes/<id>/lease` */
  readonly objectKey: string;
}

export interface LeaseContext extends LeaseReadContext {
  readonly volumeName: string;
  /** this server's (or CLI's) instance id: random, kept in its state directory */
  readonly instance: string;
  /** this process's writer session: its heartbeat keeps the lease alive */
  readonly session: WriterSession;
  /** the process's live session, a new one if this one ended (to resume a lease, see resume()) */
  readonly currentSession?: () => Promise<WriterSession>;
  /** watch a holder's session (may answer from a watch started earlier: see Vault.watchLeaseHolders) */
  readonly observe?: (sessionId: string) => Promise<SessionState>;
  /** takeover tokens this writer made, by key: an attempt that failed after its token (the store
   *  filled up before the lease was written, a put that landed after the retry layer gave up)
   *  finds its own token on the next attempt instead of losing to it for good */
  readonly ownTokens?: Map<string, Buffer>;
  readonly logger: Logger;
}

export interface AcquireOptions {
  /** watch a foreign holder's heartbeat for up to its ttl to tell a dead holder from a live one
   *  (default true); false: refuse at once unless the holder is certainly gone */
  readonly waitForDeadHolder?: boolean;
}

/** The lease object now in the store: null when none; record null when it cannot be opened. */
export async function readVolumeLease(ctx: LeaseReadContext): Promise<{ etag: string; record: LeaseRecord | null } | null> {
  let obj;
  try {
    obj = await ctx.store.get(ctx.objectKey);
  } catch (err) {
    if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) return null;
    throw err;
  }
  try {
    const r = JSON.parse((await ctx.codec.open(ctx.key, obj.body, ctx.place)).toString('utf8')) as LeaseRecord;
    const ok = (r?.v === 1 && typeof r.expiresAt === 'number') || (r?.v === 2 && typeof r.session === 'string' && /^[0-9a-f]{32}$/.test(r.session));
    return { etag: obj.etag, record: ok ? r : null };
  } catch {
    return { etag: obj.etag, record: null };
  }
}

/**
 * Is the writer named by this lease record alive? 'gone'/'dead' may be taken over.
 * With `waitMs` 0 the answer is immediate and conservative: a v2 holder whose heartbeat exists
 * counts as 'live' (gc uses this: never delete under a possible writer). With a wait of the
 * session's ttl, a dead holder is told apart from a live one.
 */
export async function leaseHolderState(store: ObjectStore, record: LeaseRecord, waitMs = 0): Promise<SessionState> {
  if (record.v === 1) return record.expiresAt! > Date.now() ? 'live' : 'dead';
  return observeSession(store, record.session!, { maxWaitMs: waitMs });
}

/**
 * What gc must keep of a volume whose lease it read: every object modified at or after the
 * returned time (ms since the epoch, the holder's clock; the caller adds its grace for skew).
 * -Infinity keeps everything (unreadable records); null: no writer can still commit.
 * Format 2: the horizon is published by the holder's session heartbeat (one for all its
 * volumes: the oldest pending upload of any of them), so it costs no request per volume.
 */
export async function writerHorizon(store: ObjectStore, lease: { record: LeaseRecord | null } | null, nowMs: number, graceMs: number): Promise<number | null> {
  if (lease === null) return null;
  const r = lease.record;
  if (r === null) return -Infinity;
  if (r.v === 1) {
    const v1 = r as LeaseRecord & { writtenAt?: number; pendingSince?: number | null };
    if (r.expiresAt! + graceMs < nowMs) return null;
    return typeof v1.writtenAt === 'number' ? Math.min(v1.writtenAt, v1.pendingSince ?? v1.writtenAt) : -Infinity;
  }
  let obj;
  try {
    obj = await store.get(sessionKey(r.session!));
  } catch (err) {
    if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) return null; // the holder released everything and stopped
    throw err;
  }
  const beat = parseSessionRecord(obj.body);
  if (!beat || typeof beat.writtenAt !== 'number') return -Infinity;
  return Math.min(beat.writtenAt, beat.pendingSince ?? beat.writtenAt);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A takeover token's body: unique to its writer, so that a create-only put whose reply was lost
 *  and which the retry layer reads back finds its own bytes, never a rival's token taken for its
 *  own (with one body for all, two contenders could both win). `session` names its maker's writer
 *  session: a token whose maker died before it wrote the lease can be passed (claimTakeover). */
const takeoverToken = (session: string) => Buffer.from(JSON.stringify({ v: 1, by: randomBytes(16).toString('hex'), session }));

/** Create the takeover token `key`, or find it ours already (LeaseContext.ownTokens): true when
 *  this writer holds it; otherwise the rival token's maker session (null: none named, a token of
 *  an older version or unreadable). */
async function takeTakeoverToken(store: ObjectStore, key: string, session: string, ownTokens = new Map<string, Buffer>()): Promise<true | { rival: string | null }> {
  let body = ownTokens.get(key);
  // Ours only under the session that made it: once that session ended, a contender may have seen
  // it dead and passed the token; a later session of ours must pass it too, never reuse it.
  if (!body || tokenSession(body) !== session) ownTokens.set(key, (body = takeoverToken(session))); // before the put: one that lands unanswered is still ours
  try {
    await store.put(key, body, { ifNoneMatch: '*' });
    return true;
  } catch (err) {
    if (!isVaultError(err, 'ERR_STORE_PRECONDITION')) throw err;
    const found = (await store.get(key)).body;
    if (found.equals(body)) return true;
    ownTokens.delete(key); // a rival's
    return { rival: tokenSession(found) };
  }
}

function tokenSession(body: Buffer): string | null {
  try {
    const t = JSON.parse(body.toString('utf8')) as { session?: unknown };
    return typeof t.session === 'string' && /^[0-9a-f]{32}$/.test(t.session) ? t.session : null;
  } catch {
    return null;
  }
}

/** Between a takeover token and the lease put: a session that died or stopped (its heartbeat
 *  deleted: others see it gone and pass its token) must not write the lease. */
function assertLive(session: WriterSession): void {
  session.check();
  if (!session.alive) throw new VaultError('ERR_SHUTDOWN', 'the writer session stopped before the lease could be written');
}

/** how many dead makers' tokens one lease version may pass before a claim gives up */
const MAX_TOKEN_GENERATIONS = 16;

/**
 * Claim the right to replace lease version `etag` (a takeover, or a holder resuming its own):
 * create its takeover token; exactly one contender can. A token whose maker's session died
 * before the lease changed (a crash between its token and its lease put) blocked that version
 * for good; it is now passed: the next generation's token (`…/takeover/<etag>.<n>`) is claimed
 * the same create-only way, so two contenders passing it still cannot both win. False: another
 * writer holds the claim and is alive, or the lease changed meanwhile.
 */
async function claimTakeover(ctx: LeaseContext, etag: string, session: string, waitForDeadMaker = true): Promise<boolean> {
  for (let gen = 0; gen < MAX_TOKEN_GENERATIONS; gen++) {
    const got = await takeTakeoverToken(ctx.store, takeoverKey(ctx.objectKey, etag, gen), session, ctx.ownTokens);
    if (got === true) return true;
    if (got.rival === null) return false; // its maker cannot be watched: it may be alive
    // (refusing at once, AcquireOptions.waitForDeadHolder false: only a maker certainly gone is passed)
    const state = !waitForDeadMaker
      ? await observeSession(ctx.store, got.rival, { maxWaitMs: 0 })
      : ctx.observe
        ? await ctx.observe(got.rival)
        : await observeSession(ctx.store, got.rival);
    if (state === 'live') return false;
    if ((await readVolumeLease(ctx))?.etag !== etag) return false; // its maker did write the lease
    ctx.logger.warn({ volume: ctx.volumeName, generation: gen, maker: got.rival, makerState: state }, 'passing a takeover token whose maker stopped before it wrote the lease');
  }
  return false;
}

/** This very process wrote the lease record (same state directory, host and pid). */
function writtenByThisProcess(r: LeaseRecord | null, instance: string): boolean {
  return r !== null && r.instance === instance && r.host === hostname() && r.pid === process.pid;
}

/** Generation 0 is `takeover/<etag>`, later ones `takeover/<etag>.<n>` ('.' is never in the
 *  sanitized etag, so no two (etag, generation) pairs share a key). */
export const takeoverKey = (leaseObjectKey: string, staleEtag: string, generation = 0) =>
  `${leaseObjectKey.replace(/lease$/, '')}takeover/${staleEtag.replace(/[^0-9A-Za-z_-]/g, '_')}${generation > 0 ? `.${generation}` : ''}`;

function describeHolder(r: LeaseRecord | null): string {
  return r ? `${r.purpose} (pid ${r.pid} on ${r.host})` : 'an unreadable lease';
}

export class VolumeLease {
  private lostError: VaultError | null = null;
  /** lost only because our session ended (not because someone else wrote): resume() may help */
  private lostWithSession = false;
  private released = false;
  private session: WriterSession;
  private readonly listeners = new Set<(err: VaultError) => void>();
  private unsubscribe: () => void;

  private constructor(
    private readonly ctx: LeaseContext,
    private etag: string,
  ) {
    this.session = ctx.session;
    this.unsubscribe = this.subscribe();
  }

  private subscribe(): () => void {
    return this.session.onLost((err) => {
      this.markLost(err);
      this.lostWithSession = true;
    });
  }

  /**
   * After our session ended (a heartbeat came too late: a stalled machine, a slow store), take
   * the lease back under the process's new session — only if nobody took it meanwhile: the
   * lease object is still the one we wrote, replaced with If-Match on it (a contender's takeover
   * uses the same If-Match, so exactly one of us wins). Unflushed writes then survive.
   */
  resume(): Promise<boolean> {
    this.resuming ??= this.resumeNow().finally(() => (this.resuming = null));
    return this.resuming;
  }

  private resuming: Promise<boolean> | null = null;
  /** the lease object is no longer the one we wrote: another writer has the volume now */
  private takenOver = false;

  /** Lost for good: another writer has the volume (our unflushed writes can never be committed).
   *  Otherwise a lost lease may still be resumed (resume()) once the store answers again. */
  get lostForGood(): boolean {
    return this.lostError !== null && (!this.lostWithSession || this.takenOver || this.released);
  }

  /** check(), but a lease lost only with our session is first resumed if it can be. */
  async ensure(): Promise<void> {
    if (this.lostError || !this.session.alive) {
      this.lost; // marks it lost if the session just ended
      if (this.lostWithSession) await this.resume();
    }
    this.check();
  }

  private async resumeNow(): Promise<boolean> {
    if (!this.lostError || !this.lostWithSession || this.released || !this.ctx.currentSession) return false;
    try {
      const session = await this.ctx.currentSession();
      const current = await readVolumeLease(this.ctx);
      // A lease this very process wrote since (an earlier attempt's put that landed, its reply
      // lost) is ours: go on from it.
      if (current && current.etag !== this.etag && writtenByThisProcess(current.record, this.ctx.instance)) this.etag = current.etag;
      if (!current || current.etag !== this.etag) {
        this.takenOver = true;
        return false;
      }
      // The same token a contender taking this lease version over must create: one of us wins
      // (on the fs store too, whose If-Match is atomic within one process only).
      if (!(await claimTakeover(this.ctx, this.etag, session.id))) {
        this.takenOver = true;
        return false;
      }
      assertLive(session); // a session that ended while we claimed must not write the lease
      const purpose = current.record?.purpose ?? 'nbd-vault';
      const record: LeaseRecord = { v: LEASE_FORMAT, instance: this.ctx.instance, session: session.id, host: hostname(), pid: process.pid, purpose };
      const sealed = (await this.ctx.codec.seal(this.ctx.key, Buffer.from(JSON.stringify(record)), this.ctx.place))!;
      this.etag = (await this.ctx.store.put(this.ctx.objectKey, sealed, { ifMatch: this.etag })).etag;
      this.session = session;
      this.unsubscribe = this.subscribe();
      if (this.pendingSource) this.reportPending(this.pendingSource);
      this.lostError = null;
      this.lostWithSession = false;
      this.ctx.logger.warn({ volume: this.ctx.volumeName, session: session.id }, 'volume lease resumed under a new writer session (nobody had taken it)');
      return true;
    } catch (err) {
      // A token or lease that changed under us: another writer is taking the volume over.
      if (isVaultError(err, 'ERR_STORE_PRECONDITION')) this.takenOver = true;
      this.ctx.logger.warn({ volume: this.ctx.volumeName, err: describeError(err) }, 'volume lease could not be resumed');
      return false;
    }
  }

  static async acquire(ctx: LeaseContext, purpose: string, opts: AcquireOptions = {}): Promise<VolumeLease> {
    ctx.session.check();
    const record: LeaseRecord = { v: LEASE_FORMAT, instance: ctx.instance, session: ctx.session.id, host: hostname(), pid: process.pid, purpose };
    const body = async () => (await ctx.codec.seal(ctx.key, Buffer.from(JSON.stringify(record)), ctx.place))!;
    try {
      const { etag } = await ctx.store.put(ctx.objectKey, await body(), { ifNoneMatch: '*' });
      return new VolumeLease(ctx, etag);
    } catch (err) {
      if (!isVaultError(err, 'ERR_STORE_PRECONDITION')) throw err;
    }
    const current = await readVolumeLease(ctx);
    if (current === null) return VolumeLease.acquire(ctx, purpose, opts); // released meanwhile
    const r0 = current.record;
    // "Mine": this state directory on this host, and the process that took it is gone (a restart
    // after a crash) or is this very process. A live CLI command sharing the directory is not.
    const mine = r0 !== null && r0.instance === ctx.instance && r0.host === hostname() && (r0.pid === process.pid || !processAlive(r0.pid));
    let state: SessionState | 'mine' | 'unreadable' = 'mine';
    if (r0 === null) state = 'unreadable';
    else if (!mine) {
      if (opts.waitForDeadHolder !== false && r0.v === 2) {
        ctx.logger.info({ volume: ctx.volumeName, holder: describeHolder(r0) }, 'volume lease held elsewhere: watching its heartbeat');
      }
      state =
        r0.v === 2 && ctx.observe && opts.waitForDeadHolder !== false
          ? await ctx.observe(r0.session!)
          : await leaseHolderState(ctx.store, r0, opts.waitForDeadHolder === false ? 0 : Infinity);
    }
    if (state === 'live') {
      throw new VaultError('ERR_LEASE', `volume "${ctx.volumeName}" is being written by ${describeHolder(r0)}, which is alive; stop it first`);
    }
    ctx.logger.warn({ volume: ctx.volumeName, previous: describeHolder(r0), holderState: state }, 'taking over the volume lease');
    // Exactly one contender per stale lease version gets past this create-only put.
    if (!(await claimTakeover(ctx, current.etag, ctx.session.id, opts.waitForDeadHolder !== false))) throw await VolumeLease.lostRace(ctx, current.etag);
    assertLive(ctx.session); // a writer whose session ended while it claimed must not write (its token is passed)
    try {
      const { etag } = await ctx.store.put(ctx.objectKey, await body(), { ifMatch: current.etag });
      return new VolumeLease(ctx, etag);
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_PRECONDITION')) throw await VolumeLease.lostRace(ctx, current.etag);
      throw err;
    }
  }

  /** The error for a contender that lost a takeover race: it names who holds the lease now. */
  private static async lostRace(ctx: LeaseContext, staleEtag: string): Promise<VaultError> {
    // The winner writes the lease right after its token: give it a moment to show.
    let now = await readVolumeLease(ctx).catch(() => null);
    for (let i = 0; i < 50 && now?.etag === staleEtag; i++) {
      await new Promise((r) => setTimeout(r, 100));
      now = await readVolumeLease(ctx).catch(() => null);
    }
    const holder = now ? describeHolder(now.record) : 'nobody (released meanwhile)';
    ctx.logger.warn({ volume: ctx.volumeName, holder }, 'another writer took the volume lease first');
    return new VaultError('ERR_LEASE', `volume "${ctx.volumeName}": another writer took the lease first; it is held by ${holder}`);
  }

  private pendingSource: (() => number | null) | null = null;
  private unpublish: () => void = () => {};

  /** The engine tells the lease what gc must keep (its oldest upload no durable root names yet);
   *  the session's heartbeat publishes it (see writerHorizon). */
  reportPending(source: () => number | null): void {
    this.pendingSource = source;
    this.unpublish();
    this.unpublish = this.session.addPendingSource(source);
  }

  /** Throws ERR_LEASE once the lease is lost (its session ended, or the root was changed by
   *  someone else) or released. Called before every write and commit. */
  check(): void {
    if (this.lostError) throw this.lostError;
    if (this.released) throw new VaultError('ERR_LEASE', `volume "${this.ctx.volumeName}": its lease was given back when the volume closed`);
    try {
      this.session.check();
    } catch (err) {
      this.markLost(err as VaultError);
      this.lostWithSession = true;
      throw err;
    }
  }

  get lost(): boolean {
    if (this.lostError) return true;
    if (!this.session.alive && !this.released) {
      this.markLost(new VaultError('ERR_LEASE', `volume "${this.ctx.volumeName}": the writer session ended`));
      this.lostWithSession = true;
    }
    return this.lostError !== null;
  }

  /** Called once, when the lease is lost. */
  onLost(fn: (err: VaultError) => void): void {
    this.listeners.add(fn);
  }

  /** The lease is no longer ours (e.g. the root's If-Match failed): refuse every later write. */
  markLost(err: VaultError): void {
    if (this.lostError || this.released) return;
    this.lostError = isVaultError(err, 'ERR_LEASE') ? err : new VaultError('ERR_LEASE', `volume "${this.ctx.volumeName}": lease lost: ${describeError(err)}`);
    this.ctx.logger.error({ volume: this.ctx.volumeName, err: describeError(err) }, 'volume lease lost: writes are refused from now on');
    this.unsubscribe();
    for (const fn of this.listeners) fn(this.lostError);
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.unsubscribe();
    this.unpublish();
    if (this.lostError) return;
    try {
      // Only our own lease: if someone took it over, it is theirs to release.
      const current = await this.ctx.store.head(this.ctx.objectKey);
      if (current && current.etag === this.etag) await this.ctx.store.delete(this.ctx.objectKey);
    } catch (err) {
      this.ctx.logger.warn({ volume: this.ctx.volumeName, err: describeError(err) }, 'volume lease not released; it ends with this process\'s heartbeat');
    }
  }
}
