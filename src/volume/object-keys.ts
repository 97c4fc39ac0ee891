// Names of objects in a store. Names reveal nothing but random ids: never a volume name,
// snapshot name or chunk offset (docs/FORMAT.md, "Object layout in the store").

export const VAULT_KEY = 'vault';
export const VOLUMES_PREFIX = 'volumes/';

export const volumePrefix = (volumeIdHex: string) => `${VOLUMES_PREFIX}${volumeIdHex}/`;
export const metaKey = (volumeIdHex: string) => `${volumePrefix(volumeIdHex)}meta`;
export const rootKey = (volumeIdHex: string) => `${volumePrefix(volumeIdHex)}root`;
export const leaseKey = (volumeIdHex: string) => `${volumePrefix(volumeIdHex)}lease`;
export const pagePrefix = (volumeIdHex: string) => `${volumePrefix(volumeIdHex)}pages/`;
export const pageKey = (volumeIdHex: string, pageIdHex: string) => `${pagePrefix(volumeIdHex)}${pageIdHex}`;
export const chunkPrefix = (volumeIdHex: string) => `${volumePrefix(volumeIdHex)}chunks/`;
export const chunkKey = (volumeIdHex: string, objectIdHex: string) => `${chunkPrefix(volumeIdHex)}${objectIdHex}`;
/** format 2 write journals (never named by a snapshot) */
export const journalPrefix = (volumeIdHex: string) => `${volumePrefix(volumeIdHex)}journals/`;
export const journalKey = (volumeIdHex: string, journalIdHex: string) => `${journalPrefix(volumeIdHex)}${journalIdHex}`;
export const snapshotPrefix = (volumeIdHex: string) => `${volumePrefix(volumeIdHex)}snapshots/`;
export const snapshotKey = (volumeIdHex: string, snapshotIdHex: string) => `${snapshotPrefix(volumeIdHex)}${snapshotIdHex}`;
/** deletion marks: a snapshot or a volume whose deletion has begun (no new clone may name it) */
export const snapshotDeletingKey = (volumeIdHex: string, snapshotIdHex: string) => `${snapshotKey(volumeIdHex, snapshotIdHex)}.deleting`;
/** reader marks: a live process reads this snapshot (a delete refuses); id `<session id>-<random>` */
export const snapshotReaderPrefix = (volumeIdHex: string, snapshotIdHex: string) => `${snapshotKey(volumeIdHex, snapshotIdHex)}.reader.`;
export const snapshotReaderKey = (volumeIdHex: string, snapshotIdHex: string, markId: string) => `${snapshotReaderPrefix(volumeIdHex, snapshotIdHex)}${markId}`;
export const volumeDeletingKey = (volumeIdHex: string) => `${volumePrefix(volumeIdHex)}deleting`;

/** A key of a volume's data (chunks, pages, journals, snapshot records and marks), as opposed to
 *  its metadata, root, lease or deletion mark: what a volume without metadata still holds when
 *  its metadata was lost rather than erased (gc's orphans). */
export function isVolumeDataKey(volumeIdHex: string, key: string): boolean {
  return [chunkPrefix(volumeIdHex), pagePrefix(volumeIdHex), journalPrefix(volumeIdHex), snapshotPrefix(volumeIdHex)].some((p) => key.startsWith(p));
}

/** The volume id of a key under volumes/, or null. */
export function volumeIdOfKey(key: string): string | null {
  const m = /^volumes\/([0-9a-f]{32})\//.exec(key);
  return m ? m[1] : null;
}

/** Objects that never change once written (chunks, manifest pages, journals: every id is fresh),
 *  so a local copy of their bytes can never be stale: what the disk cache may hold. Roots,
 *  metadata, leases, sessions, snapshot records and `vault` change in place: never cached. */
export function isImmutableObjectKey(key: string): boolean {
  return /^volumes\/[0-9a-f]{32}\/(?:chunks|pages|journals)\/[0-9a-f]+$/.test(key);
}
