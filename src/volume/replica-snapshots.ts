// What sync knows of a replica volume's snapshots: which replica root is one sync wrote, which
// replica snapshot has a name the source took again, and what --prune may delete.
// The rules (FORMAT.md "Replicas"): a replica snapshot with the keep flag, or with clones there,
// is never pruned; two snapshots of one name are never left side by side (VOL@NAME would read
// the old one).
import { describeError } from '../errors';
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';
import { metaKey, snapshotKey } from './object-keys';
import { ROOT_FORMAT, journalsOf, type RootRecord } from './root-record';
import type { SnapshotRecord } from './snapshot-record';
import type { Vault, VolumeMeta } from './vault';
import type { VolumeObjects } from './volume-objects';

/** One source volume a sync copies. */
export interface SyncJob {
  readonly meta: VolumeMeta;
  readonly objects: VolumeObjects;
  readonly root: RootRecord;
  readonly snapshots: SnapshotRecord[];
  /** every snapshot of the volume (false: only those a selected clone is made from) */
  readonly full: boolean;
}

export class ReplicaSnapshots {
  /** `VOL@SNAP` deleted from the replica this run */
  readonly pruned: string[] = [];
  private opened: Promise<Vault> | undefined;
  /** per volume id: the replica's snapshots (read once, when a new record is to be copied) */
  private readonly listed = new Map<string, SnapshotRecord[]>();

  constructor(
    private readonly source: ObjectStore,
    private readonly dest: ObjectStore,
    /** opens the replica as a vault (same keys; a private state directory) */
    private readonly openReplica: () => Promise<Vault>,
    private readonly pruneAllowed: boolean,
    private readonly logger: Logger,
  ) {}

  /** The replica opened as a vault, once per run. */
  replica(): Promise<Vault> {
    this.opened ??= this.openReplica();
    return this.opened;
  }

  /** The replica's snapshot of `snap`'s name with another id, if any (the volume is there). */
  async namesake(job: SyncJob, snap: SnapshotRecord): Promise<SnapshotRecord | undefined> {
    let theirs = this.listed.get(job.meta.id);
    if (!theirs) {
      theirs = await job.objects.onStore(this.dest).listSnapshots();
      this.listed.set(job.meta.id, theirs);
    }
    return theirs.find((s) => s.name === snap.name && s.id !== snap.id);
  }

  /** --prune may delete the replica's `s`: the source no longer has it, and the replica's
   *  record has no keep flag (set there, or copied: a flag on the off-site copy protects it). */
  async mayPrune(job: SyncJob, s: SnapshotRecord): Promise<boolean> {
    if (!this.pruneAllowed || job.snapshots.some((x) => x.id === s.id)) return false;
    if (await this.source.head(snapshotKey(job.meta.id, s.id))) return false; // (an origin job lists only some)
    if (s.keep) {
      this.logger.warn({ snapshot: `${job.meta.name}@${s.name}` }, 'replica snapshot kept: it has the keep flag there (clear it on the replica to let prune remove it)');
      return false;
    }
    return true;
  }

  /** Why the replica's snapshot `s`, of a name the source took again, cannot be replaced (null:
   *  --prune may delete it). */
  async whyNamesakeStays(job: SyncJob, s: SnapshotRecord): Promise<string | null> {
    const taken = 'the replica has another snapshot of this name (deleted and taken again in the source)';
    if (!this.pruneAllowed) return `${taken}: sync --prune replaces it`;
    if (s.keep) return `${taken}, with the keep flag there: clear it on the replica (snapshot keep ${job.meta.name}@${s.name} --clear, with --store the replica and a state directory of its own), then sync --prune again`;
    if (!(await this.mayPrune(job, s))) return `${taken}, which the source has too`;
    const clones = await (await this.replica()).clonesOf(job.meta.id, s.id);
    if (clones.length > 0) return `${taken}, which clones on the replica are made from (${clones.join(', ')}): delete them there, then sync --prune again`;
    return null;
  }

  /** Delete the replica's snapshot `s` (by id: a replica may hold two of one name from before). */
  async prune(job: SyncJob, s: SnapshotRecord): Promise<boolean> {
    this.listed.delete(job.meta.id);
    try {
      await (await this.replica()).deleteSnapshot(job.meta.name, s.name, s.id);
      this.pruned.push(`${job.meta.name}@${s.name}`);
      return true;
    } catch (err) {
      this.logger.warn({ snapshot: `${job.meta.name}@${s.name}`, err: describeError(err) }, 'replica snapshot kept');
      return false;
    }
  }

  /** --prune at the end of a run: the replica's snapshots of these volumes (synced, or with no
   *  snapshot left at the source) that the source no longer has. */
  async pruneVolumes(jobs: SyncJob[]): Promise<void> {
    for (const job of jobs) {
      if (!(await this.dest.head(metaKey(job.meta.id)))) continue;
      const objects = job.objects.onStore(this.dest);
      const root = (await objects.readRoot()).root;
      for (const s of await objects.listSnapshots()) {
        if (!(await this.mayPrune(job, s))) continue;
        if (root.syncedFrom === undefined && sameState(root, replicaRootOf(job, s, root.seq))) {
          // (an unmarked root, from a sync before roots were marked: without this record, nothing
          // would tell it from a writer's, and every newer snapshot would be held back)
          this.logger.info({ snapshot: `${job.meta.name}@${s.name}` }, 'replica snapshot kept until a newer one is synced: the replica volume holds its state');
          continue;
        }
        await this.prune(job, s);
      }
    }
  }
}

/** The replica root sync writes for `snap`: its pages, one epoch above it. */
export function replicaRootOf(job: SyncJob, snap: SnapshotRecord, seq: number): RootRecord {
  return {
    v: ROOT_FORMAT,
    volumeId: job.meta.id,
    seq,
    size: snap.size,
    chunkSize: snap.chunkSize,
    pageEntries: snap.pageEntries,
    epoch: snap.epoch + 1,
    pages: snap.pages,
    updatedAt: snap.createdAt,
    ...(job.root.origin ? { origin: job.root.origin } : {}),
    syncedFrom: snap.id,
  };
}

/** `root` is a replica root as sync wrote it (no writer committed since): marked, or, for one
 *  written before roots were marked, holding the state of a snapshot the replica has (listed
 *  only then). */
export async function isSyncedRoot(job: SyncJob, root: RootRecord, replicaSnapshots: () => Promise<readonly SnapshotRecord[]>): Promise<boolean> {
  if (journalsOf(root).length > 0) return false;
  if (root.syncedFrom !== undefined) return true;
  return (await replicaSnapshots()).some((s) => sameState(root, replicaRootOf(job, s, root.seq)));
}

export function sameState(a: RootRecord, b: RootRecord): boolean {
  return (
    a.size === b.size &&
    a.epoch === b.epoch &&
    JSON.stringify(a.pages) === JSON.stringify(b.pages) &&
    JSON.stringify(a.origin ?? null) === JSON.stringify(b.origin ?? null) &&
    journalsOf(a).length === 0 && // a replica root with journals (a writer there) is not a snapshot's state
    journalsOf(b).length === 0
  );
}
