// The metadata contexts a volume or snapshot export offers besides base:allocation:
//
//   qemu:dirty-bitmap:S          for every snapshot S of the same volume older than this export
//                                (all of them on the live volume): the chunks changed since S.
//   qemu:dirty-bitmap:VOL@S      on a clone and its snapshots: changed since the origin snapshot.
//   qemu:allocation-depth        0 zero, 1 own chunk, 2 shared with a clone's origin.
//
// A reference snapshot's manifest is loaded once (pages only, no chunk) and kept: snapshots are
// immutable, so after the first query BLOCK_STATUS is pure memory work over manifests.
import { VaultError } from '../errors';
import type { ContextExtent } from '../block-io';
import type { Manifest } from './manifest';
import { ROOT_FORMAT, type RootRecord } from './root-record';
import type { SnapshotRecord } from './snapshot-record';
import type { VolumeObjects } from './volume-objects';
import { allocationDepthState, chunkRuns, dirtyState, type ChunkState, type PendingChunks } from './changed-blocks';

export const DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';
export const ALLOCATION_DEPTH = 'qemu:allocation-depth';
/** extents per answer, as base:allocation */
const MAX_RUNS = 1024;

/** What the contexts need to see of the engine serving the export. */
export interface ContextSubject {
  readonly objects: VolumeObjects;
  /** the clone's origin (also for a snapshot of a clone) */
  readonly origin: RootRecord['origin'];
  readonly manifest: Manifest;
  size(): number;
  /** this export's epoch: snapshots with a smaller epoch are older than it */
  epoch(): number;
  /** chunks in the write-back cache (empty for snapshot exports) */
  pending(): PendingChunks;
  /** loads the manifest a root names (VolumeEngine.loadManifest) */
  loadManifest(objects: VolumeObjects, root: RootRecord): Promise<Manifest>;
}

interface Reference {
  readonly record: SnapshotRecord;
  readonly objects: VolumeObjects;
}

export class VolumeContexts {
  /** context name → the reference snapshot's manifest (loaded on first use) */
  private readonly manifests = new Map<string, Promise<Manifest>>();
  private originRef: Promise<Reference | null> | null = null;

  constructor(private readonly subject: ContextSubject) {}

  async list(): Promise<string[]> {
    const refs = await this.references();
    return [ALLOCATION_DEPTH, ...[...refs.keys()]];
  }

  async status(name: string, offset: number, length: number): Promise<ContextExtent[]> {
    const s = this.subject;
    let state: ChunkState;
    if (name === ALLOCATION_DEPTH) state = allocationDepthState(s.manifest, s.objects.origin !== null, s.pending());
    else state = dirtyState(await this.referenceManifest(name), s.manifest, s.pending());
    // From here on nothing awaits: the manifest and the write cache are read at one instant.
    return chunkRuns(state, offset, length, s.size(), MAX_RUNS);
  }

  /** A snapshot of this volume named `name` was just created: a cached one of that name is stale. */
  forget(snapshotName: string): void {
    this.manifests.delete(DIRTY_BITMAP_PREFIX + snapshotName);
  }

  /** Context name → reference snapshot, for every snapshot older than this export. */
  private async references(): Promise<Map<string, Reference>> {
    const s = this.subject;
    const out = new Map<string, Reference>();
    const origin = await this.origin();
    if (origin) out.set(`${DIRTY_BITMAP_PREFIX}${origin.objects.volumeName}@${origin.record.name}`, origin);
    const own = (await s.objects.listSnapshots()).filter((r) => r.epoch < s.epoch()).sort((a, b) => a.epoch - b.epoch);
    for (const record of own) out.set(DIRTY_BITMAP_PREFIX + record.name, { record, objects: s.objects });
    return out;
  }

  private origin(): Promise<Reference | null> {
    const { origin } = this.subject;
    const objects = this.subject.objects.origin;
    if (!origin || !objects) return Promise.resolve(null);
    if (!this.originRef) {
      // Cannot change: the origin snapshot cannot be deleted while the clone exists.
      this.originRef = objects.readSnapshot(origin.snapshotId).then((record) => ({ record, objects }));
      this.originRef.catch(() => (this.originRef = null));
    }
    return this.originRef;
  }

  private async referenceManifest(name: string): Promise<Manifest> {
    const cached = this.manifests.get(name);
    if (cached) return cached;
    const ref = name.startsWith(DIRTY_BITMAP_PREFIX) ? (await this.references()).get(name) : undefined;
    if (!ref) throw new VaultError('ERR_NOT_FOUND', `no metadata context "${name}" on this export`);
    const again = this.manifests.get(name); // another query loaded it meanwhile
    if (again) return again;
    const r = ref.record;
    const root: RootRecord = { v: ROOT_FORMAT, volumeId: r.volumeId, seq: r.rootSeq, size: r.size, chunkSize: r.chunkSize, pageEntries: r.pageEntries, epoch: r.epoch, pages: r.pages, updatedAt: r.createdAt };
    const manifest = this.subject.loadManifest(ref.objects, root);
    this.manifests.set(name, manifest);
    manifest.catch(() => {
      if (this.manifests.get(name) === manifest) this.manifests.delete(name);
    });
    return manifest;
  }
}
