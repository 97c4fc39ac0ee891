// A vault's lifecycle operations: clone a snapshot into a new volume, delete a snapshot (and the
// objects only it named), delete a volume (crypto-erase, then its objects), and find the clones
// of a volume. Each is safe beside a running server and against the others: a deleter marks
// first and then looks for clones, a clone writes its root first and then looks for marks, so
// one of them always sees the other (docs/FORMAT.md, "Write ordering").
import { randomBytes } from 'node:crypto';
import { VaultError } from '../errors';
import { generateVolumeKey } from '../keys';
import type { SecretKey } from '../keys/secret-key';
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';
import { leaseKey, metaKey, rootKey, snapshotKey, volumeDeletingKey, volumePrefix } from './object-keys';
import { ROOT_FORMAT, type RootRecord } from './root-record';
import type { SnapshotRecord } from './snapshot-record';
import type { Vault, VolumeMeta } from './vault';
import type { VolumeLease } from './volume-lease';
import type { VolumeObjects } from './volume-objects';
import { liveReaders, type SnapshotReader } from './snapshot-readers';
import type { SessionState, WriterSession } from './writer-session';
import { checkVolumeName, liveRootKeys, referencedKeys, snapshotAsRoot, splitExportName } from './volume-references';

/** What of a vault's private parts the lifecycle operations use. */
export interface VaultParts {
  readonly logger: Logger;
  readMeta(volumeId: string): Promise<VolumeMeta & { key: SecretKey }>;
  encodeMeta(id: string, key: SecretKey, info: { name: string; createdAt: string }): Promise<Buffer>;
  volumeObjects(meta: VolumeMeta, key: SecretKey): VolumeObjects;
  findSnapshot(objects: VolumeObjects, volumeName: string, snapName: string): Promise<SnapshotRecord>;
  acquireLease(found: VolumeMeta, purpose: string): Promise<VolumeLease>;
  /** is the session named by a snapshot's reader mark alive (snapshot-readers.ts) */
  observeReader(sessionId: string): Promise<SessionState>;
  /** this process's writer session: a deletion mark names it (a reader tells a delete under
   *  way from one that was cut off) */
  session(): Promise<WriterSession>;
  recordSeq(volumeId: string, seq: number): Promise<void>;
}

export class VaultLifecycle {
  private readonly store: ObjectStore;

  constructor(
    private readonly vault: Vault,
    private readonly parts: VaultParts,
  ) {
    this.store = vault.store;
  }

  /** The live readers of a snapshot (exports of it open in some server): what keeps a delete
   *  out. Writes nothing (the marks of stopped readers stay for the delete to remove). */
  async readersOf(volumeName: string, snapshotId: string): Promise<SnapshotReader[]> {
    const { objects } = await this.vault.loadVolume(volumeName);
    return liveReaders(objects, snapshotId, (s) => this.parts.observeReader(s), this.parts.logger, false);
  }

  /** Names of the volumes cloned from `volumeId` (from any snapshot, or from `snapshotId`). */
  async clonesOf(volumeId: string, snapshotId?: string): Promise<string[]> {
    const names: string[] = [];
    for (const v of await this.vault.listVolumes({ strict: true })) {
      if (v.id === volumeId) continue;
      let root: RootRecord;
      try {
        ({ root } = await this.loadRootOnly(v));
      } catch (err) {
        // Deleted meanwhile (no meta), or still being created (no root yet: a clone checks for
        // deletion marks after writing its root, so it withdraws by itself): not a clone now.
        const [meta, rootObj] = await Promise.all([this.store.head(metaKey(v.id)), this.store.head(rootKey(v.id))]);
        if (meta === null || rootObj === null) continue;
        throw err;
      }
      if (root.origin?.volumeId === volumeId && (snapshotId === undefined || root.origin.snapshotId === snapshotId)) names.push(v.name);
    }
    return names;
  }

  private async loadRootOnly(v: VolumeMeta): Promise<{ root: RootRecord }> {
    const { key, ...meta } = await this.parts.readMeta(v.id);
    return this.parts.volumeObjects(meta, key).readRoot();
  }

  /**
   * `clone VOL@SNAP NEW`: a writable volume that shares the snapshot's chunks, O(pages): its root
   * names the snapshot's pages with epoch 0 ("the origin's"); nothing is copied. The clone reads
   * shared chunks with the origin's keys and never deletes them; the snapshot cannot be deleted
   * while the clone exists. A snapshot of a clone cannot be cloned again (one level of origin).
   */
  async cloneVolume(source: string, newName: string): Promise<VolumeMeta> {
    const [volumeName, snapName] = splitExportName(source);
    if (snapName === null) throw new VaultError('ERR_INVALID_ARGUMENT', `clone takes a snapshot, VOL@SNAP (got "${source}"): snapshot the volume first`);
    checkVolumeName(newName);
    const { meta: originMeta, objects, root: originRoot } = await this.vault.loadVolume(volumeName);
    const snap = await this.parts.findSnapshot(objects, volumeName, snapName);
    // (cloning the origin's snapshot instead would drop what the clone wrote: a copy keeps it)
    if (originRoot.origin) throw new VaultError('ERR_NOT_SUPPORTED', `"${volumeName}" is itself a clone, and a snapshot of a clone cannot be cloned (one level of origin); copy it instead: \`nbd-vault volume create ${newName} --size ${snap.size}\`, \`nbd-vault export ${source} FILE\`, \`nbd-vault import FILE ${newName}\``);
    await this.assertClonable(objects, snap, source);
    if ((await this.vault.listVolumes()).some((v) => v.name === newName)) throw new VaultError('ERR_EXISTS', `a volume named "${newName}" exists already`);
    const id = randomBytes(16).toString('hex');
    const key = generateVolumeKey();
    const createdAt = new Date().toISOString();
    const create = this.store.props.conditionalPut ? { ifNoneMatch: '*' as const } : undefined;
    const cloneObjects = this.parts.volumeObjects({ id, name: newName, createdAt }, key);
    const root: RootRecord = {
      v: ROOT_FORMAT,
      volumeId: id,
      seq: 1,
      size: snap.size,
      chunkSize: snap.chunkSize,
      pageEntries: snap.pageEntries,
      epoch: 1,
      pages: snap.pages.map((p) => (p ? { id: p.id, epoch: 0 } : null)),
      updatedAt: createdAt,
      origin: { volumeId: originMeta.id, snapshotId: snap.id },
    };
    // The root, then the metadata (the clone exists from its metadata on: one killed in between
    // leaves an unreferenced root for gc, not a volume without a root every listing fails on).
    await cloneObjects.writeRoot(root, null);
    await this.store.put(metaKey(id), await this.parts.encodeMeta(id, key, { name: newName, createdAt }), create);
    // The clone exists now and names the snapshot's objects. A deletion of the snapshot (or of
    // the origin) that began before this point may not have seen it: look again, and if one
    // did begin, withdraw the clone. Either the deleter sees the clone or the clone sees the
    // deletion mark (each writes before it reads).
    try {
      await this.assertClonable(objects, snap, source);
      // (a create or clone of this name racing ours: see VolumeMetadata.nameTakenBesides)
      if (await this.vault.nameTakenBesides(newName, id)) throw new VaultError('ERR_EXISTS', `a volume named "${newName}" was created elsewhere at the same moment; this clone was withdrawn (try again, or pick another name)`);
    } catch (err) {
      await this.eraseVolume(newName, { id, name: newName, createdAt });
      throw err;
    }
    await this.parts.recordSeq(id, 1);
    this.parts.logger.info({ volume: newName, origin: source }, 'volume cloned');
    return { id, name: newName, createdAt };
  }

  /** A snapshot may be cloned while it, and its volume, exist and are not being deleted. The
   *  marks are read first, what they guard after: a deleter removes its mark only once the
   *  snapshot record (or the volume's meta) is gone, so a mark read too late to see the mark is
   *  followed by a read that sees the deletion. Read together, the existence check could come
   *  before the deletion and the mark check after the mark's removal, and both pass. */
  private async assertClonable(objects: VolumeObjects, snap: SnapshotRecord, source: string): Promise<void> {
    const [volumeName, snapName] = splitExportName(source);
    const [volumeDeleting, snapDeleting] = await Promise.all([
      objects.deletionMarkAdvice(null, `nbd-vault volume delete ${volumeName}`),
      objects.deletionMarkAdvice(snap.id, `nbd-vault snapshot delete ${volumeName} ${snapName}`),
    ]);
    const [volumeGone, snapGone] = await Promise.all([
      this.store.head(metaKey(objects.volumeId)).then((h) => h === null),
      objects.snapshotExists(snap.id).then((e) => !e),
    ]);
    // A mark outlives a deletion that was killed: say how to finish it (marks never expire: a
    // deletion under way cannot be told from a dead one here)
    if (volumeGone) throw new VaultError('ERR_NOT_FOUND', `cannot clone ${source}: its volume was deleted`);
    if (volumeDeleting !== null) throw new VaultError('ERR_NOT_FOUND', `cannot clone ${source}: its volume is being deleted (${volumeDeleting})`);
    if (snapGone) throw new VaultError('ERR_NOT_FOUND', `cannot clone ${source}: the snapshot was deleted`);
    if (snapDeleting !== null) throw new VaultError('ERR_NOT_FOUND', `cannot clone ${source}: the snapshot is being deleted (${snapDeleting})`);
  }

  /**
   * Delete a snapshot record, then the objects that only it named: those in neither the live
   * root nor any other snapshot. Safe beside a running server: a server never re-references an
   * old object, and never deletes an object of an older epoch itself.
   */
  /** `id`: which one of two snapshots that share the name (a replica synced before sync refused
   *  a name taken again in the source). */
  async deleteSnapshot(volumeName: string, snapName: string, id?: string): Promise<{ freedObjects: number }> {
    const { objects, root, snapshots: snaps } = await this.vault.loadVolume(volumeName);
    const doomed = snaps.find((s) => s.name === snapName && (id === undefined || s.id === id));
    if (!doomed) throw new VaultError('ERR_NOT_FOUND', `volume "${volumeName}" has no snapshot named "${snapName}"`);
    if (doomed.keep) throw new VaultError('ERR_EXISTS', `snapshot ${volumeName}@${snapName} has the keep flag: clear it first (snapshot keep --clear)`);
    // Mark first, then look for clones and readers: a clone made, or a reader come, from here on
    // sees the mark and withdraws. (Every way out takes back only a mark that is still ours.)
    const session = await this.parts.session();
    const mark = await objects.markDeleting(doomed.id, session.id);
    const refuse = async (err: unknown): Promise<never> => {
      await objects.unmarkDeleting(doomed.id, mark);
      throw err;
    };
    const clones = await this.clonesOf(objects.volumeId, doomed.id).catch(refuse);
    if (clones.length > 0) await refuse(new VaultError('ERR_EXISTS', `snapshot ${volumeName}@${snapName} has clones (${clones.join(', ')}): delete them first`));
    // (a restore reading it would get EIO half way)
    const readers = await liveReaders(objects, doomed.id, (s) => this.parts.observeReader(s), this.parts.logger).catch(refuse);
    if (readers.length > 0) await refuse(beingRead(`${volumeName}@${snapName}`, readers));
    const keep = new Set<string>();
    try {
      for (const key of await liveRootKeys(objects, root)) keep.add(key);
      for (const r of snaps.filter((s) => s !== doomed).map(snapshotAsRoot)) {
        for (const key of await referencedKeys(objects, r)) keep.add(key);
      }
    } catch (err) {
      await refuse(err);
    }
    // Only this volume's own objects: a clone's snapshot also names its origin's chunks.
    const own = volumePrefix(objects.volumeId);
    const candidates = (await referencedKeys(objects, snapshotAsRoot(doomed)).catch(refuse)).filter((k) => k.startsWith(own) && !keep.has(k));
    const record = await this.store.get(snapshotKey(objects.volumeId, doomed.id)).catch(refuse);
    await objects.deleteSnapshotRecord(doomed.id).catch(async (err) => {
      // (a record delete that failed may have landed: then the mark stays, and a rerun finishes)
      if (await objects.snapshotExists(doomed.id).catch(() => false)) await refuse(err);
      throw err;
    });
    // A reader that found our session dead (a store outage ended it) read past our mark: only
    // if it is still alive now that the record is gone did no reader pass (the holder's deadline
    // comes before any observer's verdict); else the record goes back and the delete stops.
    await this.stillOurs(session, `snapshot ${volumeName}@${snapName}`, () => this.store.put(snapshotKey(objects.volumeId, doomed.id), record.body), () => objects.unmarkDeleting(doomed.id, mark));
    for (let k = 0; k < candidates.length; k += 1000) await this.store.deleteMany(candidates.slice(k, k + 1000));
    // (whoever's it is now: the record is gone, so no clone or reader can pass it any more)
    await objects.unmarkDeleting(doomed.id);
    this.parts.logger.info({ volume: volumeName, snapshot: snapName, freedObjects: candidates.length }, 'snapshot deleted');
    return { freedObjects: candidates.length };
  }

  /** Crypto-erase the volume (its sealed key goes first), then delete all of its objects. */
  /** `id`: which one of two volumes that share the name (created at once on two machines). */
  async deleteVolume(name: string, onProgress?: (done: number, total: number) => void, id?: string): Promise<number> {
    const meta = id === undefined ? await this.vault.findVolume(name) : (await this.vault.listVolumes()).find((v) => v.name === name && v.id === id);
    if (!meta) throw new VaultError('ERR_NOT_FOUND', `no volume named "${name}" has id ${id}`);
    // Nobody may be writing it: hold its lease throughout (released, i.e. deleted, last).
    const lease = await this.parts.acquireLease(meta, 'nbd-vault volume delete');
    try {
      // Mark, then look for clones (see cloneVolume): a clone made after the look withdraws.
      const { key, ...m } = await this.parts.readMeta(meta.id);
      const objects = this.parts.volumeObjects(m, key);
      const session = await this.parts.session();
      const mark = await objects.markDeleting(null, session.id);
      const refuse = async (err: unknown): Promise<never> => {
        await objects.unmarkDeleting(null, mark);
        throw err;
      };
      const clones = await this.clonesOf(meta.id).catch(refuse);
      if (clones.length > 0) await refuse(new VaultError('ERR_EXISTS', `volume "${name}" has clones that share its chunks (${clones.join(', ')}): delete them first`));
      // ...and for readers of its snapshots (a reader looks for the volume's mark too)
      for (const snap of await objects.listSnapshots().catch(refuse)) {
        const readers = await liveReaders(objects, snap.id, (s) => this.parts.observeReader(s), this.parts.logger).catch(refuse);
        if (readers.length > 0) await refuse(beingRead(`${name}@${snap.name}`, readers));
      }
      return await this.eraseVolume(name, meta, onProgress, session);
    } finally {
      await lease.release();
    }
  }

  /** After the delete that decides (a snapshot's record, a volume's metadata): throws, putting
   *  it back, when the writer session our deletion mark names has ended meanwhile. */
  private async stillOurs(session: WriterSession, what: string, putBack: () => Promise<unknown>, unmark: () => Promise<void>): Promise<void> {
    if (session.alive) return;
    await putBack();
    await unmark();
    throw new VaultError('ERR_LEASE', `the delete of ${what} lost its writer session (the store failed for longer than the lease ttl), so a reader may have opened it meanwhile: it is left as it was; run the delete again`);
  }

  private async eraseVolume(name: string, meta: VolumeMeta, onProgress?: (done: number, total: number) => void, session?: WriterSession): Promise<number> {
    const metaBytes = session ? (await this.store.get(metaKey(meta.id))).body : null;
    await this.store.delete(metaKey(meta.id));
    if (session && metaBytes) await this.stillOurs(session, `volume "${name}"`, () => this.store.put(metaKey(meta.id), metaBytes), () => Promise.resolve());
    this.parts.logger.info({ volume: name, volumeId: meta.id }, 'volume key erased; deleting objects');
    const keys: string[] = [];
    for await (const info of this.store.list(volumePrefix(meta.id))) if (info.key !== leaseKey(meta.id)) keys.push(info.key);
    // The root, then the deletion mark last: a half-deleted volume without its meta is only
    // garbage either way, and while its root is left the mark tells gc it is no volume being
    // created (whose root gc leaves alone for a while).
    const rank = (k: string) => (k === volumeDeletingKey(meta.id) ? 2 : k === rootKey(meta.id) ? 1 : 0);
    keys.sort((a, b) => rank(a) - rank(b));
    let done = 0;
    for (let k = 0; k < keys.length; k += 1000) {
      const batch = keys.slice(k, k + 1000);
      await this.store.deleteMany(batch);
      done += batch.length;
      onProgress?.(done, keys.length);
    }
    return keys.length;
  }
}

function beingRead(snapshot: string, readers: readonly SnapshotReader[]): VaultError {
  return new VaultError('ERR_EXISTS', `snapshot ${snapshot} is being read by ${readers.map((r) => r.describe).join(', ')}: delete it once the reader is done (a server's snapshot export ends with its last client)`);
}
