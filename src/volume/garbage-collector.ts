// gc: remove objects that no root and no snapshot names. Safe beside running writers, whatever
// their commits take: before reading anything else it reads each volume's lease and the heartbeat
// of the writer session it names, where a live writer publishes the start of its oldest upload
// that no durable root names yet (writerHorizon, volume-lease.ts), and keeps every object of that
// volume from there on. The grace period on
// top absorbs clock skew between writers, the store and this machine.
// Objects of a volume whose metadata is gone are garbage too when the volume carries a deletion
// mark (a crypto-erased, half-deleted volume), holds nothing but a root (a create or clone
// killed before its metadata), or has no root (objects nothing can name) — unless the metadata
// appeared while gc ran (a volume created meanwhile). A volume with a root and data but neither
// metadata nor mark lost its metadata (a store that lost or withholds one object), or is a
// replica's volume whose first sync was cut off before its metadata (copied last): its objects
// are what restoring the metadata (or the next sync) needs, so they are kept and reported,
// unless the caller says `orphans` (a delete of an older build, cut off).
import type { Logger } from '../util/log';
import { VOLUMES_PREFIX, isVolumeDataKey, leaseKey, metaKey, rootKey, snapshotKey, snapshotPrefix, volumeDeletingKey, volumeIdOfKey } from './object-keys';
import type { Vault } from './vault';
import { liveRootKeys, referencedKeys, snapshotAsRoot } from './volume-references';

/** a snapshot's reader mark (snapshot-readers.ts), under `snapshots/`: the snapshot's id */
const READER_MARK = /^([0-9a-f]{32})\.reader\.[0-9a-f]{32}-[0-9a-f]{16}$/;

/** how long the root of a volume without metadata is kept whatever the grace (a create or clone
 *  writes its metadata moments after its root) */
export const NEW_VOLUME_ROOT_MS = 10 * 60_000;

export interface GcOptions {
  readonly dryRun: boolean;
  readonly graceMs: number;
  readonly now?: number;
  readonly onProgress?: (done: number, total: number) => void;
  /** also take the data of volumes with neither metadata nor deletion mark (see above) */
  readonly orphans?: boolean;
}

export interface GcResult {
  readonly scannedObjects: number;
  readonly garbageObjects: number;
  readonly garbageBytes: number;
  /** unreferenced, but younger than the grace period */
  readonly tooYoung: number;
  /** unreferenced, but a live writer may still name them (volumes with a held lease) */
  readonly heldByWriters: number;
  /** volumes whose writer holds a lease, by name */
  readonly writingVolumes: string[];
  /** objects of volumes created while gc ran */
  readonly newVolumeObjects: number;
  /** objects kept of volumes with data but neither metadata nor deletion mark (orphans not asked for) */
  readonly orphanObjects: number;
  /** those volumes' ids */
  readonly orphanVolumes: string[];
  readonly deleted: number;
  readonly keys: string[];
}

export async function collectGarbage(vault: Vault, opts: GcOptions, logger: Logger): Promise<GcResult> {
  const now = opts.now ?? Date.now();
  // Strict: a volume whose metadata cannot be read right now must not look like an erased one.
  const volumes = await vault.listVolumes({ strict: true });
  const live = new Set(volumes.map((v) => v.id));
  const keep = new Set<string>();
  /** per volume: objects modified at or after this are kept (a live writer's uploads) */
  const keepFrom = new Map<string, number>();
  const writingVolumes: string[] = [];
  /** listed, but their metadata gone by the time they were read */
  const vanished = new Set<string>();
  for (const v of volumes) {
    try {
      // The lease first: every upload its writer starts later is newer than what it says.
      const horizon = await vault.liveWriterHorizon(v, now, opts.graceMs);
      if (horizon !== null) {
        keepFrom.set(v.id, horizon - opts.graceMs);
        writingVolumes.push(v.name);
      }
      const { objects, root, snapshots } = await vault.loadVolume(v.name, v);
      for (const k of await liveRootKeys(objects, root)) keep.add(k);
      for (const s of snapshots) {
        for (const k of await referencedKeys(objects, snapshotAsRoot(s))) keep.add(k);
      }
    } catch (err) {
      // deleted while gc ran: its objects are garbage like any erased volume's
      if ((await vault.store.head(metaKey(v.id))) !== null) throw err;
      keepFrom.delete(v.id);
      vanished.add(v.id);
    }
  }
  const candidates: Array<{ key: string; size: number; volumeId: string; newRoot: boolean }> = [];
  /** volumes with a deletion mark (volume delete under way, or interrupted) */
  const marked = new Set<string>();
  /** reader marks (snapshot-readers.ts) older than the grace: garbage once their snapshot is gone */
  const strayMarks: Array<{ key: string; size: number; volumeId: string; snapshotId: string }> = [];
  let scanned = 0;
  let tooYoung = 0;
  let heldByWriters = 0;
  /** volumes holding data (chunks, pages, journals, snapshots), and those with a root */
  const holdsData = new Set<string>();
  const rooted = new Set<string>();
  for await (const info of vault.store.list(VOLUMES_PREFIX)) {
    scanned++;
    const id = volumeIdOfKey(info.key);
    if (id === null) continue;
    if (info.key === volumeDeletingKey(id)) marked.add(id);
    if (isVolumeDataKey(id, info.key)) holdsData.add(id);
    if (info.key === rootKey(id)) rooted.add(id);
    if (live.has(id)) {
      // a volume's own records are never garbage while the volume exists
      if (info.key.startsWith(snapshotPrefix(id))) {
        // a reader mark left behind (a reader killed after a delete looked for it) once its
        // snapshot is gone: looked at below
        const mark = READER_MARK.exec(info.key.slice(snapshotPrefix(id).length));
        if (mark && now - info.lastModified.getTime() >= opts.graceMs) strayMarks.push({ key: info.key, size: info.size, volumeId: id, snapshotId: mark[1] });
        continue;
      }
      if (info.key === metaKey(id) || info.key === rootKey(id) || info.key === leaseKey(id) || info.key === volumeDeletingKey(id)) continue;
      if (keep.has(info.key)) continue;
      if (info.lastModified.getTime() >= (keepFrom.get(id) ?? Infinity)) {
        heldByWriters++;
        continue;
      }
    }
    // (the root of a volume being created or cloned comes moments before its metadata: never
    // taken before NEW_VOLUME_ROOT_MS, whatever the grace, or a gc --grace 0 racing a create
    // could leave a volume without its root)
    if (now - info.lastModified.getTime() < opts.graceMs) {
      tooYoung++;
      continue;
    }
    const newRoot = !live.has(id) && info.key === rootKey(id) && now - info.lastModified.getTime() < NEW_VOLUME_ROOT_MS;
    candidates.push({ key: info.key, size: info.size, volumeId: id, newRoot });
  }
  for (const m of strayMarks) if ((await vault.store.head(snapshotKey(m.volumeId, m.snapshotId))) === null) candidates.push({ key: m.key, size: m.size, volumeId: m.volumeId, newRoot: false });
  // (a volume being deleted, its deletion mark there, has no create under way)
  for (let i = candidates.length - 1; i >= 0; i--) {
    if (candidates[i].newRoot && !marked.has(candidates[i].volumeId)) {
      candidates.splice(i, 1);
      tooYoung++;
    }
  }
  // A volume created after the listing above: its metadata is seen here (its root was kept above).
  const unknown = [...new Set(candidates.filter((c) => !live.has(c.volumeId) || vanished.has(c.volumeId)).map((c) => c.volumeId))];
  const created = new Set<string>();
  for (const id of unknown) if (await vault.store.head(metaKey(id))) created.add(id);
  // ...and, among those still without metadata, a volume with data and no deletion mark lost its
  // metadata: kept (re-read here: a volume deleted while gc ran was marked first)
  const orphans = new Set<string>();
  for (const id of unknown) {
    if (created.has(id) || opts.orphans || !holdsData.has(id) || !rooted.has(id) || marked.has(id)) continue;
    if ((await vault.store.head(volumeDeletingKey(id))) === null) orphans.add(id);
  }
  const garbage = candidates.filter((c) => !created.has(c.volumeId) && !orphans.has(c.volumeId));
  const orphanObjects = candidates.filter((c) => orphans.has(c.volumeId)).length;
  const newVolumeObjects = candidates.length - garbage.length - orphanObjects;
  if (orphans.size > 0) logger.warn({ volumeIds: [...orphans], objects: orphanObjects }, 'kept the objects of volumes that have data but neither metadata nor a deletion mark: their metadata was lost (restore it from a backup or replica), or, in a replica, a sync was cut off before it copied it (sync again); gc --orphans takes them');
  const bytes = garbage.reduce((n, c) => n + c.size, 0);
  const keys = garbage.map((c) => c.key);
  let deleted = 0;
  if (!opts.dryRun) {
    for (let k = 0; k < keys.length; k += 1000) {
      const batch = keys.slice(k, k + 1000);
      await vault.store.deleteMany(batch);
      deleted += batch.length;
      opts.onProgress?.(deleted, keys.length);
    }
  }
  logger.info({ scanned, garbage: keys.length, bytes, tooYoung, heldByWriters, writingVolumes, newVolumeObjects, orphanObjects, deleted, dryRun: opts.dryRun }, 'gc finished');
  return { scannedObjects: scanned, garbageObjects: keys.length, garbageBytes: bytes, tooYoung, heldByWriters, writingVolumes, newVolumeObjects, orphanObjects, orphanVolumes: [...orphans], deleted, keys };
}
