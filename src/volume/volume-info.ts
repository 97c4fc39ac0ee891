// What a volume holds, as reports read it (`volume info`, `volume list`, `verify`, `diff`): its
// manifest (live root or snapshot) with the chunks its write journals touch, and the figures
// people see. Read-only; a server may be committing beside it.
import { VaultError } from '../errors';
import { CHUNK_SIZE, chunkLength } from './chunk-math';
import type { Manifest } from './manifest';
import { journalsOf, type RootRecord } from './root-record';
import type { Vault, VolumeMeta } from './vault';
import { VolumeEngine } from './volume-engine';
import type { VolumeObjects } from './volume-objects';
import { LIVE_READ_ATTEMPTS, snapshotAsRoot, splitExportName } from './volume-references';

export interface LoadedManifest {
  readonly manifest: Manifest;
  readonly root: RootRecord;
  readonly objects: VolumeObjects;
  /** chunks a live root's write journals hold blocks of (snapshots never name journals) */
  readonly journalChunks: Set<number>;
  /** the snapshot's id, when `spec` named one */
  readonly snapshotId?: string;
}

/**
 * The manifest of a volume (live root) or of one of its snapshots: `name` or `name@snap`.
 * A server beside us may commit while we read a live root's pages and journals, and then
 * deletes what its new root replaced: a read that fails under a root that has since moved is
 * done again from the new root (a few times), never reported as damage.
 */
export async function loadManifestOf(vault: Vault, spec: string, found?: VolumeMeta): Promise<LoadedManifest> {
  const [volumeName, snapName] = splitExportName(spec);
  for (let attempt = 1; ; attempt++) {
    const { objects, root, snapshots } = await vault.loadVolume(volumeName, found);
    let r = root;
    let snapshotId: string | undefined;
    if (snapName !== null) {
      const snap = snapshots.find((s) => s.name === snapName);
      if (!snap) throw new VaultError('ERR_NOT_FOUND', `volume "${volumeName}" has no snapshot named "${snapName}"`);
      r = { ...snapshotAsRoot(snap), origin: root.origin }; // a clone's snapshot shares its origin
      snapshotId = snap.id;
    }
    try {
      const journalChunks = new Set<number>();
      for (const ref of journalsOf(r)) for (const e of await objects.readJournalIndex(ref)) journalChunks.add(e.chunkIndex);
      return { manifest: await VolumeEngine.loadManifest(objects, r), root: r, objects, journalChunks, snapshotId };
    } catch (err) {
      if (snapName !== null || attempt === LIVE_READ_ATTEMPTS || (await vault.rootSeqOf(volumeName)) === root.seq) throw err;
    }
  }
}

export type VolumeInfo = Awaited<ReturnType<typeof volumeInfo>>;

/** What a volume holds. Chunks that only its write journals hold blocks of count as allocated,
 *  and the journals' bytes as stored: recent writes not yet folded into chunk objects. */
export async function volumeInfo(vault: Vault, name: string, found?: VolumeMeta) {
  const meta = found ?? (await vault.findVolume(name));
  const { manifest, root, objects, journalChunks } = await loadManifestOf(vault, meta.name, meta);
  const usage = manifest.usage();
  // (one read of the deletion mark: whether it is there, and what to do about it)
  const deletingAdvice = await objects.deletionMarkAdvice(null, `nbd-vault volume delete ${meta.name}`);
  let allocatedChunks = usage.allocatedChunks;
  for (const i of journalChunks) if (i < manifest.chunkCount && manifest.isZero(i)) allocatedChunks++;
  const journals = journalsOf(root);
  const journalBytes = journals.reduce((n, j) => n + j.storedSize, 0);
  // the last chunk of a size that is no multiple of 4 MiB (a shrink) holds only its part
  const last = manifest.chunkCount - 1;
  const tail = last >= 0 && (!manifest.isZero(last) || journalChunks.has(last)) ? CHUNK_SIZE - chunkLength(root.size, last) : 0;
  return {
    name: meta.name,
    id: meta.id,
    createdAt: meta.createdAt,
    size: root.size,
    allocated: allocatedChunks * CHUNK_SIZE - tail,
    storedBytes: usage.storedBytes + journalBytes,
    chunks: manifest.chunkCount,
    allocatedChunks,
    journals: { count: journals.length, storedBytes: journalBytes },
    snapshots: (await objects.listSnapshots()).length,
    /** a `volume delete` has begun (runs now, or was cut off): writers are refused; what to do */
    deleting: deletingAdvice !== null,
    deletingAdvice,
    origin: root.origin ? await vault.describeOrigin(root.origin) : null,
    rootSeq: root.seq,
    epoch: root.epoch,
    updatedAt: root.updatedAt,
  };
}
