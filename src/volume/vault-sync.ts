// `nbd-vault sync`: copy a vault's snapshots to a second store as the sealed objects they are.
//
// - Objects are copied byte for byte, never opened: chunks are not decrypted. The master key is
//   needed only to read what a snapshot names (its record and manifest pages) and to seal the
//   replica's roots; the replica keeps the source's vault id, so the same keys open it.
// - Only snapshots are copied: they are immutable and their objects live until the snapshot is
//   deleted, so a sync is safe while servers write the source (a live root's objects come and go).
// - Order, so the replica is a consistent vault at every moment: the public `vault` object first;
//   per snapshot, every object it names, then the volume's replica root, then its record; and for
//   a volume new to the replica its metadata last (a volume is visible only from its `meta` on,
//   and by then its root and everything the root and its records name are there).
// - The replica root of a volume names the pages of its newest copied snapshot (epoch one above
//   it, so a writer never deletes a snapshot's objects); a clone's keeps its origin, whose named
//   snapshot is copied first. Serving the replica serves that state as VOL and every snapshot.
// - Incremental and resumable: what the destination lists is not copied again; a put is atomic
//   (fs: temporary file + rename, S3: whole object), so an interrupted run leaves whole objects.
// - Memory: at most `concurrency` objects (≤ 4 MiB + 52 bytes each) in flight.
import { VaultError, describeError, isVaultError } from '../errors';
import { baseStoreName } from '../store/compose';
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';
import { VAULT_KEY, leaseKey, metaKey, rootKey, snapshotKey, volumeDeletingKey, volumePrefix } from './object-keys';
import type { RootRecord } from './root-record';
import type { SnapshotRecord } from './snapshot-record';
import { type Vault, type VolumeMeta } from './vault';
import { TEMPORARY_EXPORT_SNAPSHOT } from './snapshot-record';
import { listVolumeIds, snapshotObjects } from './volume-references';
import { isMissingObject } from './framed-reads';
import { wrappingKeyId } from '../keys';
import { ReplicaSnapshots, isSyncedRoot, replicaRootOf, sameState, type SyncJob as Job } from './replica-snapshots';

export interface SyncOptions {
  /** volume names to copy (default: every volume); their clones' origins come along */
  readonly volumes?: readonly string[];
  /** delete from the replica the snapshots the source no longer has */
  readonly prune?: boolean;
  /** objects copied at once */
  readonly concurrency?: number;
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface SyncedSnapshot {
  readonly export: string;
  readonly id: string;
  /** copied: new in the replica; updated: its record changed (keep flag); present: there
   *  already; vanished: deleted from the source during the sync (not copied); held: newer than
   *  what a writer on the replica made of its volume, or a server holds it there (not copied:
   *  it would read as a rollback); the run fails (exit 1);
   *  name-taken: the replica has another snapshot of this name (deleted and taken again in the
   *  source), kept there (no --prune, or its keep flag): not copied, the run fails (exit 1);
   *  damaged: an object it names does not open in the source (or is missing there): not copied
   *  (what it shares with other snapshots is, once it opens), the run goes on and fails (exit 1) */
  readonly status: 'copied' | 'updated' | 'present' | 'vanished' | 'held' | 'name-taken' | 'damaged';
  /** held, name-taken, damaged: why, and what to do */
  readonly reason?: string;
}

export interface SyncResult {
  /** objects written to the replica (chunks, pages, records, metadata) */
  readonly copied: number;
  readonly bytes: number;
  /** objects a copied snapshot names that the replica had already */
  readonly skipped: number;
  readonly snapshots: SyncedSnapshot[];
  /** `VOL@SNAP` deleted from the replica (--prune) */
  readonly pruned: string[];
  /** selected volumes with no snapshot: nothing consistent to copy (snapshot them first) */
  readonly withoutSnapshots: string[];
  /** source volumes not copied: the replica has another volume of that name (the source's was
   *  deleted and made again); the run fails (exit 1) until that one is deleted or renamed there */
  readonly nameTaken: Array<{ volume: string; sourceId: string; replicaId: string; origin?: string }>;
}

/** An object a snapshot names, and a read of its stored bytes that opens them first. */
type SourceObject = { readonly key: string; readonly read: () => Promise<Buffer> };
/** A snapshot whose manifest (a page) does not open in the source. */
type Damaged = { readonly damage: Error };

/** Damage in the source (an object that does not open, or is missing): not a failure here. */
function isSourceDamage(err: unknown): boolean {
  return isVaultError(err, 'ERR_AUTH_FAILED') || isVaultError(err, 'ERR_CORRUPT') || isMissingObject(err);
}

export class VaultSync {
  private readonly concurrency: number;
  /** keys the destination holds (listed once per volume, then kept up to date) */
  private readonly present = new Set<string>();
  /** ids of the snapshots this run copied (or found) in the replica: a clone's origin must be one */
  private readonly copiedSnapshots = new Set<string>();
  private readonly sizes = new Map<string, number>();
  private copied = 0;
  private bytes = 0;
  private skipped = 0;
  private doneBytes = 0;
  private totalBytes = 0;
  private readonly replicaSnapshots: ReplicaSnapshots;

  constructor(
    private readonly source: Vault,
    private readonly dest: ObjectStore,
    /** opens the replica as a vault (same keys; a private state directory): --prune needs it */
    openReplica: () => Promise<Vault>,
    private readonly opts: SyncOptions,
    private readonly logger: Logger,
  ) {
    this.concurrency = Math.max(1, opts.concurrency ?? 16);
    this.replicaSnapshots = new ReplicaSnapshots(source.store, dest, openReplica, opts.prune === true, logger);
  }

  /** the replica's store as the user named it (not its retry/metrics wrappers) */
  private get destName(): string {
    return baseStoreName(this.dest);
  }

  async run(): Promise<SyncResult> {
    await this.copyVaultObject();
    // First too: the replica opens with the source's key from here on, so its volumes' names can
    // be read for the check below (a rotation finished since the last run made it fail, and the
    // run copied without it). The end of the run follows a rotation that finished meanwhile.
    await this.followKeyRotation();
    const planned = await this.planJobs();
    const { bare } = planned;
    const withoutSnapshots = bare.map((j) => j.meta.name);
    const { jobs, nameTaken } = await this.withoutNameClashes(planned.jobs);
    // What the destination holds, and how big each source object is (for progress and bytes).
    for (const job of jobs) {
      for await (const info of this.dest.list(volumePrefix(job.meta.id))) this.present.add(info.key);
      for await (const info of this.source.store.list(volumePrefix(job.meta.id))) this.sizes.set(info.key, info.size);
    }
    const plans: Array<{ job: Job; snap: SnapshotRecord; objects: SourceObject[] | Damaged }> = [];
    const plannedKeys = new Set<string>();
    for (const job of jobs) {
      for (const snap of job.snapshots) {
        const objects = await this.namedObjects(job, snap);
        if (objects === null) continue; // deleted meanwhile
        for (const { key: k } of Array.isArray(objects) ? objects : []) {
          if (this.present.has(k) || plannedKeys.has(k)) continue;
          plannedKeys.add(k);
          this.totalBytes += this.sizes.get(k) ?? 0;
        }
        plans.push({ job, snap, objects });
      }
    }
    this.opts.onProgress?.(0, this.totalBytes);
    const snapshots: SyncedSnapshot[] = [];
    for (const job of jobs) {
      const isNew = !this.present.has(metaKey(job.meta.id));
      const results: SyncedSnapshot[] = [];
      for (const p of plans.filter((x) => x.job === job)) results.push(await this.copySnapshot(job, p.snap, p.objects));
      snapshots.push(...results);
      // A new volume becomes visible only once a snapshot and its root are there.
      if (!isNew || results.some((r) => r.status !== 'vanished' && r.status !== 'held' && r.status !== 'damaged')) await this.copyMeta(job);
    }
    await this.followKeyRotation();
    if (this.opts.prune) await this.replicaSnapshots.pruneVolumes([...jobs.filter((j) => j.full), ...bare]);
    const { pruned } = this.replicaSnapshots;
    this.logger.info({ to: this.destName, copied: this.copied, bytes: this.bytes, skipped: this.skipped, snapshots: snapshots.length, pruned: pruned.length }, 'sync finished');
    return { copied: this.copied, bytes: this.bytes, skipped: this.skipped, snapshots, pruned, withoutSnapshots, nameTaken };
  }

  /**
   * Jobs whose volume the replica does not hold under its name with another id. Copying one
   * would make two volumes of one name there, which nothing can open by name, and prune fails on.
   * (A clone's origin is kept whatever its name: the clone's snapshots need its objects.)
   */
  private async withoutNameClashes(jobs: Job[]): Promise<{ jobs: Job[]; nameTaken: SyncResult['nameTaken'] }> {
    const nameTaken: SyncResult['nameTaken'] = [];
    const fresh = new Set<Job>();
    for (const job of jobs) if (!(await this.dest.head(metaKey(job.meta.id)))) fresh.add(job);
    if (fresh.size === 0) return { jobs, nameTaken };
    let theirs: VolumeMeta[];
    try {
      theirs = await (await this.replicaSnapshots.replica()).listVolumes();
    } catch (err) {
      // copying a new volume unchecked could put a second volume of its name there
      throw new VaultError(isVaultError(err) ? err.code : 'ERR_IO', `cannot list the replica's volumes to check that none has the name of a volume new to it, so no snapshot was copied: ${describeError(err)}`, { cause: err });
    }
    const clashing = new Map<string, string>(); // source volume id → the replica's volume of its name
    for (const job of fresh) {
      const other = theirs.find((v) => v.name === job.meta.name && v.id !== job.meta.id);
      if (other) clashing.set(job.meta.id, other.id);
    }
    const kept = jobs.filter((job) => {
      const replicaId = clashing.get(job.meta.id);
      if (replicaId !== undefined) {
        nameTaken.push({ volume: job.meta.name, sourceId: job.meta.id, replicaId });
        this.logger.error({ volume: job.meta.name, sourceId: job.meta.id, replicaId }, 'not copied: the replica has another volume of this name (deleted and made again in the source?); delete that one there, then sync again');
        return false;
      }
      // a clone of an origin that cannot be copied would name objects the replica lacks
      const origin = job.root.origin && clashing.has(job.root.origin.volumeId) ? jobs.find((j) => j.meta.id === job.root.origin!.volumeId) : undefined;
      if (origin) {
        nameTaken.push({ volume: job.meta.name, sourceId: job.meta.id, replicaId: clashing.get(origin.meta.id)!, origin: origin.meta.name });
        this.logger.error({ volume: job.meta.name, origin: origin.meta.name }, 'not copied: its origin volume cannot be copied (its name is taken in the replica)');
        return false;
      }
      return true;
    });
    return { jobs: kept, nameTaken };
  }

  /** The public vault object, first; a destination holding another vault is refused. */
  private async copyVaultObject(): Promise<void> {
    const { body } = await this.source.store.get(VAULT_KEY);
    const existing = await this.getOrNull(this.dest, VAULT_KEY);
    if (existing) {
      let id: unknown;
      try {
        id = JSON.parse(existing.toString('utf8'))?.vaultId;
      } catch {
        id = undefined;
      }
      if (id !== this.source.vaultId) throw new VaultError('ERR_EXISTS', `${this.destName} holds another vault (${String(id)}); a replica must start empty or hold vault ${this.source.vaultId}`);
      return;
    }
    // Not a vault, yet not empty: a mistyped path or bucket, or a replica whose `vault` object
    // is gone. Writing a vault into it would mix our objects with whatever it holds.
    for await (const info of this.dest.list('')) {
      throw new VaultError('ERR_EXISTS', `${this.destName} is not empty (it holds "${info.key}", and no \`vault\` object): a replica must start empty or hold vault ${this.source.vaultId} (a replica that lost its \`vault\` object: rebuild it there with \`nbd-vault init --recover\`)`);
    }
    await this.dest.put(VAULT_KEY, body, this.dest.props.conditionalPut ? { ifNoneMatch: '*' } : undefined);
    this.count(body.length);
  }

  /**
   * After a master key rotation in the source (FORMAT.md "Rotating the master key"), the same
   * steps in the replica: every `meta` it shares with the source rewrapped (all of them, not only
   * this run's volumes: the new key must open each), then the vault object's key check. Before,
   * the replica kept the old key check over rewrapped metas, and neither key opened it.
   */
  private async followKeyRotation(): Promise<void> {
    const { body } = await this.source.store.get(VAULT_KEY);
    const theirs = await this.dest.get(VAULT_KEY);
    if (theirs.body.equals(body)) return;
    const sourceIds = new Set(await listVolumeIds(this.source.store));
    const sourceKeyIds = new Set<string>();
    const strays: string[] = [];
    for (const id of await listVolumeIds(this.dest)) {
      if (sourceIds.has(id)) {
        const meta = (await this.source.store.get(metaKey(id))).body;
        sourceKeyIds.add(metaKeyId(meta));
        const mine = await this.getOrNull(this.dest, metaKey(id));
        if (mine !== null && !mine.equals(meta)) {
          await this.dest.put(metaKey(id), meta);
          this.count(meta.length);
        }
      } else strays.push(id);
    }
    await this.dest.put(VAULT_KEY, body, theirs.etag && this.dest.props.conditionalPut ? { ifMatch: theirs.etag } : undefined);
    this.count(body.length);
    // Volumes only the replica has (deleted in the source) cannot be rewrapped here: a sync opens
    // no volume key. They open only where the old master key is loaded beside the new one.
    const stale = [];
    for (const id of strays) {
      const meta = await this.getOrNull(this.dest, metaKey(id));
      if (meta !== null && !sourceKeyIds.has(metaKeyId(meta))) stale.push(id);
    }
    if (stale.length > 0) {
      this.logger.warn({ to: this.destName, volumeIds: stale }, 'the replica now takes the source\'s master key; volumes only the replica has stay wrapped by an older key (delete them from the replica, or open it with that key beside the new one)');
    }
    this.logger.info({ to: this.destName }, 'replica follows the source\'s master key rotation');
  }

  /** jobs: volumes with snapshots to copy, origins first; bare: those with none (--prune still
   *  mirrors their deletions) */
  private async planJobs(): Promise<{ jobs: Job[]; bare: Job[] }> {
    const all = await this.source.listVolumes({ strict: true });
    const wanted = this.opts.volumes && this.opts.volumes.length > 0 ? this.opts.volumes : all.map((v) => v.name);
    const jobs: Job[] = [];
    const bare: Job[] = [];
    const origins = new Map<string, Set<string>>(); // origin volume id → snapshot ids clones need
    for (const name of wanted) {
      const found = all.find((v) => v.name === name);
      if (!found) throw new VaultError('ERR_NOT_FOUND', `no volume named "${name}" in the source vault`);
      const { meta, objects, root } = await this.source.loadVolume(name, found);
      // (the temporary snapshot an export reads a served volume through is no backup, and its
      // keep flag would pin it on the replica for good)
      const snapshots = (await objects.listSnapshots()).filter((s) => !TEMPORARY_EXPORT_SNAPSHOT.test(s.name));
      if (snapshots.length === 0) {
        bare.push({ meta, objects, root, snapshots, full: true });
        continue;
      }
      if (root.origin) {
        const ids = origins.get(root.origin.volumeId) ?? new Set<string>();
        ids.add(root.origin.snapshotId);
        origins.set(root.origin.volumeId, ids);
      }
      jobs.push({ meta, objects, root, snapshots, full: true });
    }
    // Origins first: a clone's snapshots name their chunks, and its root names their snapshot.
    const originJobs: Job[] = [];
    for (const [id, snapIds] of origins) {
      const full = jobs.find((j) => j.meta.id === id);
      if (full) {
        jobs.splice(jobs.indexOf(full), 1);
        originJobs.push(full);
        continue;
      }
      const found = all.find((v) => v.id === id);
      if (!found) throw new VaultError('ERR_IO', `the origin volume ${id} of a clone is missing from the source`);
      const { meta, objects, root } = await this.source.loadVolume(found.name, found);
      const snapshots = (await objects.listSnapshots()).filter((s) => snapIds.has(s.id));
      originJobs.push({ meta, objects, root, snapshots, full: false });
    }
    return { jobs: [...originJobs, ...jobs], bare };
  }

  /** Everything a snapshot names (its pages and chunks, a clone's origin ones too); null if the
   *  snapshot was deleted from the source meanwhile. */
  private async namedObjects(job: Job, snap: SnapshotRecord): Promise<SourceObject[] | Damaged | null> {
    try {
      return await snapshotObjects(job.objects, snap);
    } catch (err) {
      if (!(await this.sourceHas(job, snap))) return null;
      if (isSourceDamage(err)) return { damage: err as Error }; // a page: this snapshot only
      throw err;
    }
  }

  /** The snapshot is still in the source: its record, its volume's metadata and no deletion mark
   *  (a volume delete removes the metadata first and the records after the objects). */
  private async sourceHas(job: Job, snap: SnapshotRecord): Promise<boolean> {
    const [record, meta, deleting] = await Promise.all([
      this.source.store.head(snapshotKey(job.meta.id, snap.id)),
      this.source.store.head(metaKey(job.meta.id)),
      this.source.store.head(volumeDeletingKey(job.meta.id)),
    ]);
    return record !== null && meta !== null && deleting === null;
  }

  private damaged(name: string, snap: SnapshotRecord, err: Error): SyncedSnapshot {
    const reason = `damaged in the source, so not copied (\`nbd-vault verify ${name}\` names the damage; repair it from a backup, or delete the snapshot): ${err.message}`;
    this.logger.error({ snapshot: name, err: describeError(err) }, 'snapshot not copied: damaged in the source');
    return { export: name, id: snap.id, status: 'damaged', reason };
  }

  private async copySnapshot(job: Job, snap: SnapshotRecord, objects: SourceObject[] | Damaged): Promise<SyncedSnapshot> {
    const name = `${job.meta.name}@${snap.name}`;
    const recordKey = snapshotKey(job.meta.id, snap.id);
    if (!Array.isArray(objects)) return this.damaged(name, snap, objects.damage);
    // A clone's snapshots name its origin's chunks, and the clone its origin: not copied while
    // the origin's snapshot is not in the replica (it was damaged, say), or the replica would show
    // a clone that opens on no origin.
    const origin = job.root.origin;
    if (origin && !this.present.has(snapshotKey(origin.volumeId, origin.snapshotId)) && !this.copiedSnapshots.has(origin.snapshotId)) {
      const reason = 'its origin snapshot is not in the replica (not copied: see above), and a clone opens only with it: sync again once the origin is copied';
      this.logger.error({ snapshot: name }, `snapshot not copied: ${reason}`);
      return { export: name, id: snap.id, status: 'held', reason };
    }
    // Another snapshot of this name in the replica (the name was taken again in the source): two
    // of one name there would leave VOL@NAME reading the old one. --prune replaces it, once the
    // new record is written (below); otherwise it stays and this one waits.
    const namesake = this.present.has(recordKey) ? undefined : await this.replicaSnapshots.namesake(job, snap);
    if (namesake) {
      const kept = await this.replicaSnapshots.whyNamesakeStays(job, namesake);
      if (kept !== null) {
        this.logger.error({ snapshot: name, replicaId: namesake.id }, `snapshot not copied: ${kept}`);
        return { export: name, id: snap.id, status: 'name-taken', reason: kept };
      }
    }
    const todo = objects.filter((o) => !this.present.has(o.key));
    this.skipped += objects.length - todo.length;
    try {
      await this.copyAll(todo);
    } catch (err) {
      // An object gone from the source: fine if its snapshot (or volume) was deleted meanwhile.
      if ((isVaultError(err, 'ERR_STORE_NOT_FOUND') || isMissingObject(err)) && !(await this.sourceHas(job, snap))) return { export: name, id: snap.id, status: 'vanished' };
      // damage in the source (not a failure here, nor of the replica): this snapshot is not
      // copied, the others are
      if (isSourceDamage(err)) return this.damaged(name, snap, err as Error);
      throw err;
    }
    const record = await this.getOrNull(this.source.store, recordKey);
    if (record === null) return { export: name, id: snap.id, status: 'vanished' };
    let status: SyncedSnapshot['status'] = 'copied';
    if (this.present.has(recordKey)) {
      // Records change only to set or clear the keep flag: copy it again when it differs, except
      // to clear a keep flag the replica's record has (set there, or copied before): a flag on
      // the off-site copy must protect it from what happens to the source.
      const theirs = await this.getOrNull(this.dest, recordKey);
      if (theirs !== null && theirs.equals(record)) status = 'present';
      else if (!snap.keep && (await this.replicaKeeps(job, snap.id))) status = 'present';
      else status = 'updated';
    }
    // The root first: a record newer than the replica's root would read as a rollback there
    // (an interrupted run made the replica volume unreadable until the next one). A root left
    // alone (written on the replica) keeps out the records newer than it, for the same reason.
    const held = await this.updateReplicaRoot(job, snap);
    if (held !== null && status === 'copied') {
      this.logger.warn({ snapshot: name }, `snapshot not copied: ${held}`);
      return { export: name, id: snap.id, status: 'held', reason: held };
    }
    if (status !== 'present') {
      await this.dest.put(recordKey, record);
      this.present.add(recordKey);
      this.count(record.length);
    }
    // The old one of this name goes after the new record is there: a snapshot delete keeps what
    // the other records name, so the objects the two share stay (the replica's root may name
    // neither). Cut off in between, the two stand side by side until the next --prune.
    if (namesake) {
      const pruned = await this.replicaSnapshots.prune(job, namesake);
      await this.relistPresent(job.meta.id); // (what the delete freed is no longer there)
      if (!pruned) return { export: name, id: snap.id, status: 'name-taken', reason: 'copied, but the replica\'s older snapshot of this name could not be deleted (see the log): sync --prune again' };
    }
    if (status !== 'present') this.logger.info({ snapshot: name, status }, 'snapshot synced');
    this.copiedSnapshots.add(snap.id);
    return { export: name, id: snap.id, status };
  }

  /** What the destination holds of volume `id`, listed again (after objects were deleted there). */
  private async relistPresent(id: string): Promise<void> {
    const prefix = volumePrefix(id);
    for (const key of [...this.present]) if (key.startsWith(prefix)) this.present.delete(key);
    for await (const info of this.dest.list(prefix)) this.present.add(info.key);
  }

  /** The replica's record of snapshot `id` has the keep flag. */
  private async replicaKeeps(job: Job, id: string): Promise<boolean> {
    const objects = job.objects.onStore(this.dest);
    return (await objects.readSnapshot(id)).keep === true;
  }

  /** Copy objects source → destination, `concurrency` at a time, bytes untouched (each opened
   *  at its place first: SourceObject.read). */
  private async copyAll(objects: SourceObject[]): Promise<void> {
    let next = 0;
    let failed: unknown = null;
    const worker = async () => {
      while (next < objects.length && failed === null) {
        const { key, read } = objects[next++];
        try {
          const body = await read();
          await this.dest.put(key, body, { data: true });
          this.present.add(key);
          this.count(body.length);
          this.doneBytes += body.length;
          this.opts.onProgress?.(this.doneBytes, Math.max(this.totalBytes, this.doneBytes));
        } catch (err) {
          failed ??= err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, objects.length) }, worker));
    if (failed !== null) throw failed;
  }

  /**
   * The replica's root names the newest copied snapshot's pages. Left alone when it names a newer
   * one already, when a writer committed there since sync set it, or when a server holds the
   * replica volume's lease. Null when the root covers the snapshot afterwards (its epoch is above
   * the snapshot's), so its record may be copied; else why not.
   */
  private async updateReplicaRoot(job: Job, snap: SnapshotRecord): Promise<string | null> {
    const objects = job.objects.onStore(this.dest);
    let current: { root: RootRecord; etag: string } | null = null;
    if (this.present.has(rootKey(job.meta.id)) || (await this.dest.head(rootKey(job.meta.id)))) current = await objects.readRoot();
    if (current && current.root.epoch > snap.epoch + 1) return null;
    // the seq of the source's root the snapshot was taken from, which holds this very state:
    // never ahead of the source's root
    const wanted = replicaRootOf(job, snap, Math.max((current?.root.seq ?? 0) + 1, snap.rootSeq));
    if (current && sameState(current.root, wanted)) return null;
    if (current && !(await isSyncedRoot(job, current.root, () => objects.listSnapshots()))) {
      // A writer committed on the replica volume, or the destination is the source itself under
      // another name (a symlink, another endpoint).
      this.logger.warn({ volume: job.meta.name, seq: current.root.seq, snapshot: snap.name }, 'the replica volume was written since sync last set its root: its root is left alone');
      if (current.root.epoch > snap.epoch) return null;
      return "it is newer than the replica volume's own writes: clone what you need on the replica, delete the volume there, then sync again";
    }
    if (await this.dest.head(leaseKey(job.meta.id))) {
      this.logger.warn({ volume: job.meta.name }, 'a server holds the replica volume\'s lease: its root is left alone');
      if (current !== null && current.root.epoch > snap.epoch) return null;
      return 'a server holds the replica volume (it serves it, or was killed less than a lease term ago): sync again once it has stopped';
    }
    await objects.writeRoot(wanted, current?.etag ?? null);
    this.present.add(rootKey(job.meta.id));
    return null;
  }

  /** The volume's metadata, verbatim (again if the source's was rewrapped by a key rotation). */
  private async copyMeta(job: Job): Promise<void> {
    const { body } = await this.source.store.get(metaKey(job.meta.id));
    if (this.present.has(metaKey(job.meta.id))) {
      const theirs = await this.getOrNull(this.dest, metaKey(job.meta.id));
      if (theirs !== null && theirs.equals(body)) return;
    }
    await this.dest.put(metaKey(job.meta.id), body);
    this.present.add(metaKey(job.meta.id));
    this.count(body.length);
  }

  private count(n: number): void {
    this.copied++;
    this.bytes += n;
  }

  private async getOrNull(store: ObjectStore, key: string): Promise<Buffer | null> {
    try {
      return (await store.get(key)).body;
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) return null;
      throw err;
    }
  }
}

/** The id of the master key that wraps a `meta` object's volume key; '' if unreadable. */
function metaKeyId(meta: Buffer): string {
  try {
    return wrappingKeyId(Buffer.from(String(JSON.parse(meta.toString('utf8'))?.wrappedKey), 'base64'));
  } catch {
    return '';
  }
}
