// Reader marks: a process that serves or copies a snapshot says so in the store, so that a
// `snapshot delete` (by hand, by `snapshot prune`, by a server's schedule, by `sync --prune` on a
// replica) refuses while it reads instead of deleting the objects under it (its client got EIO,
// "missing from the store", in the middle of a restore). The same handshake as clones
// (docs/FORMAT.md, "Write ordering"): the reader writes its mark and then looks for the
// snapshot's deletion mark and record; the deleter writes its deletion mark and then looks for
// readers. One of the two always sees the other.
//
// A mark names the reader's writer session (its heartbeat, writer-session.ts): a mark whose
// session stopped (a reader killed) is stale, found so by watching the heartbeat as a takeover
// does, and deleted by the deleter.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { VaultError, describeError, isVaultError } from '../errors';
import type { Logger } from '../util/log';
import type { VolumeObjects } from './volume-objects';
import type { SessionState, WriterSession } from './writer-session';

/** A live reader, as a refused deleter names it. */
export interface SnapshotReader {
  readonly session: string;
  /** "nbd-vault serve (pid 123 on host, since …)" */
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

/**
 * Mark snapshot `snapshotId` as read by `session`, then make sure no deletion has begun. Returns
 * what removes the mark again (on close). A store that refuses the mark (read-only credentials
 * on a replica) does not stop the reader: it reads unmarked, with a warning.
 */
export async function markReader(objects: VolumeObjects, snapshotId: string, exportName: string, session: WriterSession | null, purpose: string, logger: Logger): Promise<() => Promise<void>> {
  if (session === null) return async () => {};
  const record: ReaderRecord = { v: 1, session: session.id, purpose, host: hostname(), pid: process.pid, since: new Date().toISOString() };
  const mark = `${session.id}-${randomBytes(8).toString('hex')}`;
  try {
    await objects.putReaderMark(snapshotId, mark, record);
  } catch (err) {
    logger.warn({ snapshot: exportName, err: describeError(err) }, 'snapshot read without a reader mark (the store refused it): a snapshot delete elsewhere will not see this reader');
    return async () => {};
  }
  const remove = () => objects.deleteReaderMark(snapshotId, mark).catch((err) => logger.warn({ snapshot: exportName, err: describeError(err) }, 'reader mark not removed; the next delete of the snapshot finds it stale'));
  // Written first, read after: a deleter that marked before these reads is seen here; one that
  // marks after them sees our mark.
  let deleting: boolean;
  try {
    deleting = (await objects.isMarkedDeleting(snapshotId)) || !(await objects.snapshotExists(snapshotId));
  } catch (err) {
    await remove();
    throw err;
  }
  if (deleting) {
    await remove();
    throw new VaultError('ERR_NOT_FOUND', `snapshot ${exportName} is being deleted`);
  }
  return async () => void (await remove());
}

/**
 * The readers of snapshot `snapshotId` still alive. Marks of sessions that stopped are deleted on
 * the way; a session still beating counts (`observe` may wait up to its ttl to tell).
 */
export async function liveReaders(objects: VolumeObjects, snapshotId: string, observe: (sessionId: string) => Promise<SessionState>, logger: Logger): Promise<SnapshotReader[]> {
  const live: SnapshotReader[] = [];
  const states = new Map<string, SessionState>(); // (a session with several marks is watched once)
  for (const mark of await objects.listReaderMarks(snapshotId)) {
    const session = mark.slice(0, 32);
    const state = states.get(session) ?? (await observe(session));
    states.set(session, state);
    if (state === 'live') {
      const r = (await objects.readReaderMark(snapshotId, mark)) as Partial<ReaderRecord> | null;
      const describe = r?.v === 1 && r.session === session ? `${r.purpose} (pid ${r.pid} on ${r.host}, since ${r.since})` : `a reader (session ${session.slice(0, 8)}…)`;
      if (!live.some((l) => l.describe === describe)) live.push({ session, describe });
      continue;
    }
    logger.info({ snapshotId, session, state }, 'removing the reader mark of a reader that stopped');
    await objects.deleteReaderMark(snapshotId, mark).catch((err) => {
      if (!isVaultError(err, 'ERR_STORE_NOT_FOUND')) throw err;
    });
  }
  return live;
}
