// Who writes in this vault, as one process sees it: its own writer session (one heartbeat for all
// the leases it holds, started on first use and restarted if it ended), watches of the other
// writers' sessions named by the leases it meets (docs/RECONNECT.md), and the volumes' leases it
// acquires with them. The lease itself is volume-lease.ts.
import { setMaxListeners } from 'node:events';
import type { Codec } from '../codec/codec';
import type { ObjectPlace } from '../codec/object-place';
import { deriveSubkey } from '../keys';
import type { SecretKey } from '../keys/secret-key';
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';
import { leaseKey } from './object-keys';
import { VolumeLease, readVolumeLease, writerHorizon, type AcquireOptions } from './volume-lease';
import { WriterSession, observeSession, systemClock, type SessionState, type SessionTiming } from './writer-session';

/** What of a vault the leases need: where they live and how a volume's metadata is read. */
export interface LeaseParts {
  readonly store: ObjectStore;
  readonly codec: Codec;
  readonly vaultIdBytes: Buffer;
  readonly logger: Logger;
  readonly timing?: SessionTiming;
  /** a foreign lease holder: watch its heartbeat to tell dead from alive (default), or refuse at once */
  readonly waitForDeadHolder?: boolean;
  readMeta(volumeId: string): Promise<{ id: string; name: string; key: SecretKey }>;
  instanceId(): Promise<string>;
}

export class VaultWriters {
  private session: Promise<WriterSession> | null = null;
  /** Watches of other writers' sessions: 'dead' and 'gone' are final (a session never revives),
   *  so they are kept; 'live' is dropped once answered (it may have died since). */
  private readonly watches = new Map<string, Promise<SessionState>>();
  /** when each watch answers at the latest (performance.now), once its heartbeat was first seen */
  private readonly verdictDue = new Map<string, number>();
  /** the session each open is waiting on, by export name (a volume's lease acquisition: the
   *  volume's name; a snapshot reader meeting a deletion mark: VOL@SNAP) */
  private readonly waitingOn = new Map<string, string>();
  /** takeover tokens this writer made (VolumeLease: a retry finds its own) */
  private readonly ownTokens = new Map<string, Buffer>();
  /** the vault closes: watches end at once ('live': nothing is taken over) */
  private readonly stopping = new AbortController();
  private readonly store: ObjectStore;

  constructor(private readonly parts: LeaseParts) {
    this.store = parts.store;
    setMaxListeners(0, this.stopping.signal); // one listener per watched writer: no leak warning at 11
  }

  /** Volume `volumeId`'s lease for a writer, held until released (waits out a dead holder). */
  async acquireLease(volumeId: string, purpose: string, opts: AcquireOptions = { waitForDeadHolder: this.parts.waitForDeadHolder }): Promise<VolumeLease> {
    const { meta, lease } = await this.leaseAccess(volumeId);
    try {
      return await VolumeLease.acquire(
        {
          ...lease, // a lease acquired keeps its key
          volumeName: meta.name,
          instance: await this.parts.instanceId(),
          session: await this.current(),
          currentSession: () => this.current(),
          observe: (sessionId) => this.observeFor(meta.name, sessionId),
          ownTokens: this.ownTokens,
          logger: this.parts.logger,
        },
        purpose,
        opts,
      );
    } catch (err) {
      lease.key.wipe(); // no lease: nobody else has the key
      throw err;
    }
  }

  /**
   * Start watching the heartbeat of every other writer that holds a lease on one of `volumeIds`
   * (a server at startup): if one died, its volumes can be taken over as soon as a client asks, a
   * ttl after this call rather than a ttl after the client's request. Nothing is taken here.
   */
  async watchLeaseHolders(volumeIds: readonly string[]): Promise<number> {
    let n = 0;
    for (const id of volumeIds) {
      if (this.stopping.signal.aborted) break; // the vault closes
      const { lease: access } = await this.leaseAccess(id);
      try {
        const lease = await readVolumeLease(access);
        const session = lease?.record?.v === 2 ? lease.record.session : undefined;
        if (session && !this.watches.has(session)) {
          n++;
          this.observe(session).catch(() => {}); // (answered to the acquirer; here only started)
        }
      } finally {
        access.key.wipe();
      }
    }
    return n;
  }

  /** What gc must keep of a volume: from when its live writer's oldest unreferenced upload began
   *  (writerHorizon), or null when no live writer holds its lease. */
  async liveWriterHorizon(volumeId: string, nowMs: number, graceMs: number): Promise<number | null> {
    const { lease: access } = await this.leaseAccess(volumeId);
    try {
      return await writerHorizon(this.store, await readVolumeLease(access), nowMs, graceMs);
    } finally {
      access.key.wipe();
    }
  }

  /** What reads and writes volume `id`'s lease: its object, place and key (the caller wipes it). */
  private async leaseAccess(id: string) {
    const { key, ...meta } = await this.parts.readMeta(id);
    const metaSubkey = deriveSubkey(key, 'meta');
    key.wipe();
    const place: ObjectPlace = { vaultId: this.parts.vaultIdBytes, volumeId: Buffer.from(meta.id, 'hex'), kind: 'lease', index: 0, generation: 0 };
    return { meta, lease: { store: this.store, codec: this.parts.codec, key: metaSubkey, place, objectKey: leaseKey(meta.id) } };
  }

  /** The live writer session, a new one if the last has ended (its leases are lost). */
  async current(): Promise<WriterSession> {
    const current = this.session ? await this.session.catch(() => null) : null;
    if (current?.alive) return current;
    const p = WriterSession.start(this.store, this.parts.logger, this.parts.timing);
    this.session = p;
    p.catch(() => {
      if (this.session === p) this.session = null;
    });
    return p;
  }

  /** The state of another writer's session, watched once however many leases name it. */
  observe(sessionId: string): Promise<SessionState> {
    let w = this.watches.get(sessionId);
    if (!w) {
      const watch = observeSession(this.store, sessionId, { signal: this.stopping.signal, onWatching: (due) => this.verdictDue.set(sessionId, due) });
      w = watch;
      this.watches.set(sessionId, watch);
      void watch.then(() => this.verdictDue.delete(sessionId), () => this.verdictDue.delete(sessionId));
    }
    return w.then(
      (state) => {
        if (state === 'live' && this.watches.get(sessionId) === w) this.watches.delete(sessionId);
        return state;
      },
      (err) => {
        if (this.watches.get(sessionId) === w) this.watches.delete(sessionId);
        throw err;
      },
    );
  }

  /** The state of a snapshot reader's session: this process's own live session is 'live' at
   *  once (a server's schedule pruning a snapshot its clients read), others are watched. */
  async observeReader(sessionId: string): Promise<SessionState> {
    return (await this.isOwnLiveSession(sessionId)) ? 'live' : this.observe(sessionId);
  }

  private async isOwnLiveSession(sessionId: string): Promise<boolean> {
    const own = this.session ? await this.session.catch(() => null) : null;
    return own?.alive === true && own.id === sessionId;
  }

  /** The state of the deleter named by a deletion mark that a reader of `exportName` (VOL@SNAP)
   *  meets (own session: live), remembered as what that open waits on (leaseWaitLeftMs). */
  async observeDeleter(exportName: string, sessionId: string): Promise<SessionState> {
    return (await this.isOwnLiveSession(sessionId)) ? 'live' : this.observeFor(exportName, sessionId);
  }

  /** observe(), remembered as what volume `volumeName`'s acquisition waits on (leaseWaitLeftMs) */
  private async observeFor(volumeName: string, sessionId: string): Promise<SessionState> {
    this.waitingOn.set(volumeName, sessionId);
    try {
      return await this.observe(sessionId);
    } finally {
      if (this.waitingOn.get(volumeName) === sessionId) this.waitingOn.delete(volumeName);
    }
  }

  /** How long the acquisition of volume `volumeName`'s lease still waits, at most, for another
   *  writer's heartbeat to stand still (a takeover after a server stopped), or undefined when it
   *  waits on no heartbeat it has seen. */
  leaseWaitLeftMs(volumeName: string): number | undefined {
    const session = this.waitingOn.get(volumeName);
    const due = session === undefined ? undefined : this.verdictDue.get(session);
    return due === undefined ? undefined : Math.max(0, due - systemClock.monotonic());
  }

  /** End the watches of other writers, stop our session's heartbeat and delete it (after every
   *  engine has been closed). */
  async stop(): Promise<void> {
    this.stopping.abort();
    await Promise.allSettled([...this.watches.values()]);
    const s = this.session;
    this.session = null;
    await (await s?.catch(() => null))?.stop();
  }
}
