// Reader marks: a process that serves or copies a snapshot says so in the store, so that a
// `snapshot delete` (by hand, by `snapshot prune`, by a server's schedule, by `sync --prune` on a
// replica) or a `volume delete` refuses while it reads instead of deleting the objects under it
// (its client got EIO, "missing from the store", in the middle of a restore). The same handshake
// as clones (docs/FORMAT.md, "Write ordering", rule 5): the reader writes its mark and then looks
// for the snapshot's and the volume's deletion marks and the snapshot's record; the deleter writes
// its deletion mark and then looks for readers. One of the two always sees the other.
//
// A mark names the reader's writer session (its heartbeat, writer-session.ts): a mark whose
// session stopped (a reader killed) is stale, found so by watching the heartbeat as a takeover
// does, and deleted by the deleter. A reader whose session ends while it reads (renewals failed
// through a store outage) marks the snapshot again under a new one as soon as it can.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { VaultError, describeError, isVaultError } from '../errors';
import type { Logger } from '../util/log';
import type { VolumeObjects } from './volume-objects';
import type { SessionState, WriterSession } from './writer-session';

/** A live reader, as a refused deleter names it. */
export interface SnapshotReader {
  readonly session: string;
  /** "nbd-vault (serve) (pid 123 on host, since …)" */
  readonly describe: string;
}

interface ReaderRecord {
  readonly v: 1;
  readonly session: string;
  readonly purpose: string;
  readonly host: string;
  readonly pid: number;
  readonly since: string;
}

/** One open reader's mark (an engine of VOL@SNAP). */
interface OpenMark {
  readonly objects: VolumeObjects;
  readonly snapshotId: string;
  readonly exportName: string;
  readonly record: Omit<ReaderRecord, 'session'>;
  /** the mark's id now (`<session id>-<random>`); null while it has none (being renewed) */
  markId: string | null;
  closed: boolean;
  /** stops listening for the loss of the mark's session */
  unlisten?: () => void;
}

/** how soon a mark whose session ended is tried again while the store fails */
const REMARK_RETRY_MS = 1000;

/** The reader marks of one process (one per Vault). */
export class ReaderMarks {
  /** every session an open mark has named: this process's readers, whatever became of them */
  private readonly sessions = new Map<string, number>();
  /** marks whose removal failed: tried again on the next removal and at close */
  private readonly leftovers: Array<{ objects: VolumeObjects; snapshotId: string; markId: string }> = [];

  constructor(
    /** this process's live writer session (a new one when the last ended) */
    private readonly session: () => Promise<WriterSession>,
    /** is the deleter that wrote a deletion mark (its writer session) alive; for which export */
    private readonly observeDeleter: (exportName: string, sessionId: string) => Promise<SessionState>,
    private readonly purpose: string,
    private readonly logger: Logger,
  ) {}

  /** A session named by a mark of a reader still open here: alive as far as deleters go. */
  ownsSession(sessionId: string): boolean {
    return (this.sessions.get(sessionId) ?? 0) > 0;
  }

  /**
   * Mark snapshot `snapshotId` as read, then make sure no deletion has begun. Returns what removes
   * the mark again (on close). A store that refuses the mark for lack of rights (read-only
   * credentials on a replica) does not stop the reader: it reads unmarked, with a warning.
   */
  async mark(objects: VolumeObjects, snapshotId: string, exportName: string): Promise<() => Promise<void>> {
    const m: OpenMark = { objects, snapshotId, exportName, record: { v: 1, purpose: this.purpose, host: hostname(), pid: process.pid, since: new Date().toISOString() }, markId: null, closed: false };
    let session: WriterSession;
    try {
      session = await this.session();
    } catch (err) {
      if (!isVaultError(err, 'ERR_STORE_DENIED')) throw err;
      this.logger.warn({ snapshot: exportName, err: describeError(err) }, 'snapshot read without a reader mark (the store refuses writes): a snapshot delete elsewhere will not see this reader');
      return async () => {};
    }
    try {
      await this.put(m, session);
    } catch (err) {
      if (!isVaultError(err, 'ERR_STORE_DENIED')) throw err;
      this.logger.warn({ snapshot: exportName, err: describeError(err) }, 'snapshot read without a reader mark (the store refuses writes): a snapshot delete elsewhere will not see this reader');
      return async () => {};
    }
    return () => this.close(m);
  }

  /** Write `m`'s mark under `session` and look for a deletion; on any failure no mark is left. */
  private async put(m: OpenMark, session: WriterSession): Promise<void> {
    const markId = `${session.id}-${randomBytes(8).toString('hex')}`;
    this.sessions.set(session.id, (this.sessions.get(session.id) ?? 0) + 1);
    let deleting: boolean;
    try {
      await m.objects.putReaderMark(m.snapshotId, markId, { ...m.record, session: session.id });
      // Written first, read after: a deleter that marked before these reads is seen here; one
      // that marks after them sees our mark.
      deleting = (await this.deleteUnderWay(m, m.snapshotId)) || (await this.deleteUnderWay(m, null)) || !(await m.objects.snapshotExists(m.snapshotId)) || !(await m.objects.metaExists());
    } catch (err) {
      await this.remove(m.objects, m.snapshotId, markId); // (a put that failed may have landed)
      this.release(session.id);
      throw err;
    }
    if (deleting) {
      await this.remove(m.objects, m.snapshotId, markId);
      this.release(session.id);
      throw new VaultError('ERR_EXISTS', `snapshot ${m.exportName} is being deleted (a delete of it runs now; one that is refused lets go within seconds, so a client may retry)`);
    }
    const previous = m.markId;
    m.markId = markId;
    m.unlisten?.();
    m.unlisten = session.onLost(() => void this.remark(m, markId));
    if (previous !== null) await this.remove(m.objects, m.snapshotId, previous);
  }

  /** A deletion mark of the snapshot (or, with null, of its volume) whose deleter is alive. A
   *  mark whose deleter stopped (a delete cut off) does not keep the snapshot from being read:
   *  a rerun of the delete marks again and then finds this reader. A mark without a session
   *  (an older build's) counts as cut off too: such a build never looks for readers anyway. */
  private async deleteUnderWay(m: OpenMark, snapshotId: string | null): Promise<boolean> {
    const mark = await m.objects.deletionMarkOf(snapshotId);
    if (mark === null) return false;
    if (mark.unreadable) return true; // (a mark that cannot be opened: nothing says its delete stopped)
    const state = mark.session === null ? 'gone' : await this.observeDeleter(m.exportName, mark.session);
    if (state === 'live') return true;
    this.logger.warn({ snapshot: m.exportName, of: snapshotId === null ? 'volume' : 'snapshot' }, 'a delete of this was cut off (its mark stays until the delete is run again): read all the same');
    return false;
  }

  /** `m`'s session ended (renewals failed): mark it again under a new one, as soon as the store
   *  lets us. Deleters see the old mark's session as dead one ttl after its last renewal. */
  private async remark(m: OpenMark, lostMark: string): Promise<void> {
    for (let attempt = 1; !m.closed && m.markId === lostMark; attempt++) {
      try {
        await this.put(m, await this.session());
        this.release(lostMark.slice(0, 32));
        this.logger.info({ snapshot: m.exportName }, 'reader mark renewed under a new writer session');
        return;
      } catch (err) {
        if (isVaultError(err, 'ERR_EXISTS')) {
          this.logger.error({ snapshot: m.exportName }, 'the snapshot was deleted while this reader could not renew its mark (a store outage): its reads fail from here on');
          return;
        }
        if (attempt === 1) this.logger.warn({ snapshot: m.exportName, err: describeError(err) }, 'reader mark not renewed yet; trying again');
        await new Promise((r) => setTimeout(r, REMARK_RETRY_MS).unref());
      }
    }
  }

  private async close(m: OpenMark): Promise<void> {
    if (m.closed) return;
    m.closed = true;
    m.unlisten?.();
    if (m.markId !== null) {
      await this.remove(m.objects, m.snapshotId, m.markId);
      this.release(m.markId.slice(0, 32));
    }
    await this.retryLeftovers();
  }

  private release(sessionId: string): void {
    const n = (this.sessions.get(sessionId) ?? 0) - 1;
    if (n > 0) this.sessions.set(sessionId, n);
    else this.sessions.delete(sessionId);
  }

  private async remove(objects: VolumeObjects, snapshotId: string, markId: string): Promise<void> {
    try {
      await objects.deleteReaderMark(snapshotId, markId);
    } catch (err) {
      this.logger.warn({ snapshotId, err: describeError(err) }, 'reader mark not removed yet; tried again later (a delete of the snapshot finds it stale once this process has stopped)');
      this.leftovers.push({ objects, snapshotId, markId });
    }
  }

  /** The marks whose removal failed, tried again (at every close, and when the vault closes). */
  async retryLeftovers(): Promise<void> {
    for (const l of this.leftovers.splice(0)) await this.remove(l.objects, l.snapshotId, l.markId);
  }
}

/**
 * The readers of snapshot `snapshotId` still alive. Marks of sessions that stopped are deleted on
 * the way, unless `tidy` is false (a dry run writes nothing); a session still beating counts
 * (`observe` may wait up to its ttl to tell; sessions are watched at once, each once).
 */
export async function liveReaders(objects: VolumeObjects, snapshotId: string, observe: (sessionId: string) => Promise<SessionState>, logger: Logger, tidy = true): Promise<SnapshotReader[]> {
  const marks = await objects.listReaderMarks(snapshotId);
  if (marks.length === 0) return [];
  const sessions = [...new Set(marks.map((m) => m.slice(0, 32)))];
  logger.info({ snapshotId, readers: sessions.length }, 'the snapshot has reader marks: watching their writers\' heartbeats to tell a live reader from a stopped one (up to their lease ttl)');
  const states = new Map(await Promise.all(sessions.map(async (s) => [s, await observe(s)] as const)));
  const live: SnapshotReader[] = [];
  for (const mark of marks) {
    const session = mark.slice(0, 32);
    if (states.get(session) === 'live') {
      const r = (await objects.readReaderMark(snapshotId, mark)) as Partial<ReaderRecord> | null;
      const describe = r?.v === 1 && r.session === session ? `${r.purpose} (pid ${r.pid} on ${r.host}, since ${r.since})` : `a reader (session ${session.slice(0, 8)}…)`;
      if (!live.some((l) => l.describe === describe)) live.push({ session, describe });
      continue;
    }
    if (!tidy) continue;
    logger.info({ snapshotId, session, state: states.get(session) }, 'removing the reader mark of a reader that stopped');
    await objects.deleteReaderMark(snapshotId, mark);
  }
  return live;
}
