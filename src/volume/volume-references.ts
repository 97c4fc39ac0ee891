// What roots and snapshots reference, and the names around them: `VOL@SNAP` export names, a
// snapshot read as a root, every object key a root names (gc, snapshot delete, sync, cache warm),
// and the volume ids a store holds.
import { VaultError } from '../errors';
import { isMissingObject } from './framed-reads';
import { childSegments, type ObjectStore } from '../store/object-store';
import { VOLUMES_PREFIX, metaKey } from './object-keys';
import { chunkLength } from './chunk-math';
import { ROOT_FORMAT, journalsOf, type RootRecord } from './root-record';
import type { SnapshotRecord } from './snapshot-record';
import { VolumeEngine } from './volume-engine';
import type { VolumeObjects } from './volume-objects';

const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkVolumeName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !VOLUME_NAME.test(name)) {
    throw new VaultError('ERR_INVALID_ARGUMENT', `invalid volume name "${name}": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

/** How many roots a reader of a live volume follows while a server commits beside it. */
export const LIVE_READ_ATTEMPTS = 5;

/** `vol` → [vol, null]; `vol@snap` → [vol, snap]. */
export function splitExportName(spec: string): [string, string | null] {
  const at = spec.indexOf('@');
  if (at < 0) return [spec, null];
  return [spec.slice(0, at), spec.slice(at + 1)];
}

export function snapshotAsRoot(s: SnapshotRecord): RootRecord {
  return {
    v: ROOT_FORMAT,
    volumeId: s.volumeId,
    seq: s.rootSeq,
    size: s.size,
    chunkSize: s.chunkSize,
    pageEntries: s.pageEntries,
    epoch: s.epoch,
    pages: s.pages,
    updatedAt: s.createdAt,
  };
}

/** Every object key a root (or snapshot) names: its pages, their non-zero chunks, and (a live
 *  root only: snapshots never name one) its write journals. */
export async function referencedKeys(objects: VolumeObjects, root: RootRecord): Promise<string[]> {
  const manifest = await VolumeEngine.loadManifest(objects, root);
  const keys: string[] = journalsOf(root).map((j) => objects.journalKeyOf(j));
  for (const p of root.pages) if (p) keys.push(objects.pageKeyOf(p));
  for (let i = 0; i < manifest.chunkCount; i++) {
    const e = manifest.get(i);
    if (e.id !== null) keys.push(objects.chunkKeyOf(e));
  }
  return keys;
}

/** The objects a snapshot names (referencedKeys of it), each with a read of its stored bytes
 *  that opens them at their place first: what `sync` copies, so that an object damaged in the
 *  source fails the copy instead of reaching the replica as good. */
export async function snapshotObjects(objects: VolumeObjects, snap: SnapshotRecord): Promise<Array<{ key: string; read: () => Promise<Buffer> }>> {
  const root = snapshotAsRoot(snap);
  const manifest = await VolumeEngine.loadManifest(objects, root);
  const out: Array<{ key: string; read: () => Promise<Buffer> }> = [];
  root.pages.forEach((p, index) => {
    if (p) out.push({ key: objects.pageKeyOf(p), read: () => objects.storedPage(index, p) });
  });
  for (let i = 0; i < manifest.chunkCount; i++) {
    const e = manifest.get(i);
    if (e.id !== null) out.push({ key: objects.chunkKeyOf(e), read: () => objects.storedChunk(i, e, chunkLength(root.size, i)) });
  }
  return out;
}

/** Ids of the volumes in a store (those with a metadata object). */
export async function listVolumeIds(store: ObjectStore): Promise<string[]> {
  const candidates = await volumeIdCandidates(store);
  const exists = await Promise.all(candidates.map(async (id) => (await store.head(metaKey(id))) !== null));
  return candidates.filter((_, k) => exists[k]);
}

/** The ids of `volumes/` with objects under them, from a listing with a delimiter: every volume,
 *  and the leftovers of deleted ones (their metadata is gone). Listing every object instead made
 *  each export's open cost time linear in the whole store (0.45 ms per object: an `nbdinfo
 *  --list` of a 4,600-object store failed). */
export async function volumeIdCandidates(store: ObjectStore): Promise<string[]> {
  return (await childSegments(store, VOLUMES_PREFIX)).filter((seg) => /^[0-9a-f]{32}$/.test(seg));
}

/** The vault ids that volumes' metadata names in clear (for `init --recover`). */
export async function vaultIdsOfVolumes(store: ObjectStore, volumeIds?: string[]): Promise<string[]> {
  const found = new Set<string>();
  for (const id of volumeIds ?? (await listVolumeIds(store))) {
    try {
      const doc = JSON.parse((await store.get(metaKey(id))).body.toString('utf8'));
      if (typeof doc?.vaultId === 'string' && /^[0-9a-f]{32}$/.test(doc.vaultId)) found.add(doc.vaultId);
    } catch {
      // unreadable metadata names nothing
    }
  }
  return [...found];
}

/**
 * The keys the live root names. A running writer may replace (and delete) pages of the root read
 * a moment ago: a page gone missing means a newer root exists, so read that one instead. Any
 * newer root serves (what a snapshot names and one root no longer does, no later root names).
 */
export async function liveRootKeys(objects: VolumeObjects, first: RootRecord): Promise<string[]> {
  let root = first;
  for (let attempt = 1; ; attempt++) {
    try {
      return await referencedKeys(objects, root);
    } catch (err) {
      if (attempt >= LIVE_READ_ATTEMPTS || !isMissingObject(err)) throw err;
      const fresh = (await objects.readRoot()).root;
      if (fresh.seq === root.seq) throw err; // the same root names a missing object: real damage
      root = fresh;
    }
  }
}
