// The writer's lease on a volume: `volumes/<id>/lease`, so that two servers (or a server and a
// CLI command) never write one volume at once — the shape DESIGN.md gives for several servers on
// one bucket. Taken with a create-only put (If-None-Match: *), renewed with If-Match on the etag
// we last wrote, released by deleting it. The root's own If-Match stays the last line of defence.
//
// - A lease that has expired (its holder stopped renewing) may be taken over, with If-Match on
//   the stale etag, so exactly one contender wins.
// - A lease held by this same instance (same state directory on this machine: a crashed earlier
//   run) is taken over at once — the admin socket already guarantees one server per state dir.
// - Sealed like every other object (kind 'lease', the volume's meta subkey): the store does not
//   learn host names or pids.
// - If a renewal fails because someone else holds the lease now, the lease is lost: the engine
//   refuses further writes (ERR_LEASE) instead of forking the volume.
import { hostname } from 'node:os';
import { VaultError, describeError, isVaultError } from '../errors';
import type { Codec } from '../codec/codec';
import type { ObjectPlace } from '../codec/object-place';
import type { SecretKey } from '../keys/secret-key';
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';

export const LEASE_TTL_MS = 60_000;
export const LEASE_RENEW_MS = 20_000;
/** a writer stops this long before its lease could expire, so it never writes without one */
const EXPIRY_MARGIN_MS = 5_000;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface LeaseRecord {
  readonly v: 1;
  readonly instance: string;
  readonly host: string;
  readonly pid: number;
  readonly purpose: string;
  readonly expiresAt: number;
  /** when the holder wrote this record (its clock) */
  readonly writtenAt?: number;
  /** start of the holder's oldest upload that no durable root names yet (null: none): gc keeps
   *  everything of the volume from there on, however long the holder's commits take */
  readonly pendingSince?: number | null;
}

export interface LeaseContext {
  readonly store: ObjectStore;
  readonly codec: Codec;
  readonly key: SecretKey;
  readonly place: ObjectPlace;
  readonly objectKey: string;
  readonly volumeName: string;
  /** this server's (or CLI's) instance id: random, kept in its state directory */
  readonly instance: string;
  readonly logger: Logger;
  readonly now?: () => number;
}

export class VolumeLease {
  private etag: string;
  private timer: NodeJS.Timeout | null = null;
  private lostError: VaultError | null = null;
  private released = false;

  private constructor(
    private readonly ctx: LeaseContext,
    etag: string,
    private readonly purpose: string,
    private readonly ttlMs: number,
  ) {
    this.etag = etag;
    this.renewedAt = (ctx.now ?? Date.now)();
  }

  static async acquire(ctx: LeaseContext, purpose: string, opts: { ttlMs?: number; renewMs?: number } = {}): Promise<VolumeLease> {
    const ttlMs = opts.ttlMs ?? LEASE_TTL_MS;
    const now = ctx.now ?? Date.now;
    const record = (): LeaseRecord => ({ v: 1, instance: ctx.instance, host: hostname(), pid: process.pid, purpose, expiresAt: now() + ttlMs, writtenAt: now(), pendingSince: null });
    const body = async () => (await ctx.codec.seal(ctx.key, Buffer.from(JSON.stringify(record())), ctx.place))!;
    let etag: string;
    try {
      etag = (await ctx.store.put(ctx.objectKey, await body(), { ifNoneMatch: '*' })).etag;
    } catch (err) {
      if (!isVaultError(err, 'ERR_STORE_PRECONDITION')) throw err;
      const current = await VolumeLease.read(ctx);
      if (current === null) return VolumeLease.acquire(ctx, purpose, opts); // released meanwhile
      // "Mine": this state directory on this host, and the process that took it is gone (a
      // restart after a crash) or is this very process. A live CLI command sharing the state
      // directory is someone else.
      const r0 = current.record;
      const mine = r0 !== null && r0.instance === ctx.instance && r0.host === hostname() && (r0.pid === process.pid || !processAlive(r0.pid));
      const expired = !current.record || current.record.expiresAt < now();
      if (!mine && !expired) {
        const r = current.record!;
        throw new VaultError(
          'ERR_LEASE',
          `volume "${ctx.volumeName}" is being written by ${r.purpose} (pid ${r.pid} on ${r.host}) until at least ${new Date(r.expiresAt).toISOString()}; stop it first`,
        );
      }
      ctx.logger.warn({ volume: ctx.volumeName, previous: current.record ? { host: current.record.host, pid: current.record.pid, expired } : 'unreadable' }, 'taking over the volume lease');
      try {
        etag = (await ctx.store.put(ctx.objectKey, await body(), { ifMatch: current.etag })).etag;
      } catch (err2) {
        if (isVaultError(err2, 'ERR_STORE_PRECONDITION')) throw new VaultError('ERR_LEASE', `volume "${ctx.volumeName}": another writer took the lease first`);
        throw err2;
      }
    }
    const lease = new VolumeLease(ctx, etag, purpose, ttlMs);
    lease.timer = setInterval(() => void lease.renew(), opts.renewMs ?? LEASE_RENEW_MS);
    lease.timer.unref();
    return lease;
  }

  /** The lease record now in the store (null: none; record null: unreadable). */
  static async read(ctx: Pick<LeaseContext, 'store' | 'codec' | 'key' | 'place' | 'objectKey'>): Promise<{ etag: string; record: LeaseRecord | null } | null> {
    let obj;
    try {
      obj = await ctx.store.get(ctx.objectKey);
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) return null;
      throw err;
    }
    try {
      const record = JSON.parse((await ctx.codec.open(ctx.key, obj.body, ctx.place)).toString('utf8')) as LeaseRecord;
      return { etag: obj.etag, record: record?.v === 1 ? record : null };
    } catch {
      return { etag: obj.etag, record: null };
    }
  }

  /** Throws ERR_LEASE once the lease has been lost — taken by another writer, or expired
   *  because renewals kept failing (another writer may take it from then on). */
  check(): void {
    if (this.lostError) throw this.lostError;
    const now = (this.ctx.now ?? Date.now)();
    if (now > this.renewedAt + this.ttlMs - Math.min(EXPIRY_MARGIN_MS, this.ttlMs / 4)) {
      throw new VaultError('ERR_LEASE', `volume "${this.ctx.volumeName}": the writer's lease could not be renewed for ${Math.round((now - this.renewedAt) / 1000)} s; refusing to write until it is`);
    }
  }

  /** The engine tells the lease what gc must keep (see LeaseRecord.pendingSince), published with
   *  every renewal. Uploads that start after a renewal are newer than its `writtenAt`. */
  reportPending(source: () => number | null): void {
    this.pendingSource = source;
  }

  private pendingSource: () => number | null = () => null;

  get lost(): boolean {
    return this.lostError !== null;
  }

  /** when the last put of the lease succeeded */
  private renewedAt: number;

  async renew(): Promise<void> {
    // One renewal at a time: a slow one (store retries) overlapping the next would race it with
    // If-Match on the same etag, and the loser would take the lease for lost.
    if (this.released || this.lostError || this.renewing) return;
    this.renewing = true;
    try {
      await this.renewNow();
    } finally {
      this.renewing = false;
    }
  }

  private renewing = false;

  private async renewNow(): Promise<void> {
    const now = (this.ctx.now ?? Date.now)();
    const record: LeaseRecord = {
      v: 1,
      instance: this.ctx.instance,
      host: hostname(),
      pid: process.pid,
      purpose: this.purpose,
      expiresAt: now + this.ttlMs,
      writtenAt: now,
      pendingSince: this.pendingSource(),
    };
    try {
      const sealed = (await this.ctx.codec.seal(this.ctx.key, Buffer.from(JSON.stringify(record)), this.ctx.place))!;
      this.etag = (await this.ctx.store.put(this.ctx.objectKey, sealed, { ifMatch: this.etag })).etag;
      this.renewedAt = now;
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_PRECONDITION') || isVaultError(err, 'ERR_STORE_NOT_FOUND')) {
        this.lostError = new VaultError('ERR_LEASE', `volume "${this.ctx.volumeName}": the writer's lease was taken by someone else; refusing to write`);
        this.ctx.logger.error({ volume: this.ctx.volumeName }, 'volume lease lost: writes are refused from now on');
        this.stopTimer();
      } else {
        // A transient failure: the lease is still ours until it expires; the next renewal retries.
        this.ctx.logger.warn({ volume: this.ctx.volumeName, err: describeError(err) }, 'volume lease renewal failed; will retry');
      }
    }
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.stopTimer();
    if (this.lostError) return;
    try {
      // Only our own lease: if someone took it over, it is theirs to release.
      const current = await this.ctx.store.head(this.ctx.objectKey);
      if (current && current.etag === this.etag) await this.ctx.store.delete(this.ctx.objectKey);
    } catch (err) {
      this.ctx.logger.warn({ volume: this.ctx.volumeName, err: describeError(err) }, 'volume lease not released; it expires by itself');
    }
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

/**
 * What gc must keep of a volume whose lease it read: every object modified at or after the
 * returned time (ms since the epoch, the holder's clock; the caller adds its grace for skew).
 * -Infinity keeps everything (an unreadable or old-format record); null: no live writer.
 */
export function liveWriterHorizon(lease: { record: LeaseRecord | null } | null, nowMs: number, graceMs: number): number | null {
  if (lease === null) return null;
  const r = lease.record;
  if (r === null || typeof r.writtenAt !== 'number') return -Infinity;
  if (r.expiresAt + graceMs < nowMs) return null; // expired: its holder can no longer commit
  return Math.min(r.writtenAt, r.pendingSince ?? r.writtenAt);
}
