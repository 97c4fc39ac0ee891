// The small sealed records of one volume, under its manifest subkey: the root, snapshot records and
// deletion marks (docs/FORMAT.md, "Manifest, roots, snapshots"). The base of VolumeObjects, which
// adds the data objects (chunks, journals, pages); one place for the volume's ids, keys and
// associated-data places. Every failure is a VaultError naming the volume and the record.
import { VaultError, isVaultError } from '../errors';
import type { Codec } from '../codec/codec';
import type { ObjectPlace, ObjectKind } from '../codec/object-place';
import type { SecretKey } from '../keys/secret-key';
import type { ObjectStore } from '../store/object-store';
import { annotate, missingObject } from './framed-reads';
import { metaKey, rootKey, snapshotDeletingKey, snapshotKey, snapshotPrefix, snapshotReaderKey, snapshotReaderPrefix, volumeDeletingKey } from './object-keys';
import { decodeSnapshot, encodeSnapshot, type SnapshotRecord } from './snapshot-record';
import { generationOfId } from './manifest';
import { decodeRoot, encodeRoot, type RootRecord } from './root-record';

export interface VolumeKeys {
  /** seals chunk objects */
  readonly data: SecretKey;
  /** seals pages, roots and snapshot records */
  readonly manifest: SecretKey;
}

export class VolumeRecords {
  protected readonly vaultIdBytes: Buffer;
  protected readonly volumeIdBytes: Buffer;

  constructor(
    readonly store: ObjectStore,
    readonly codec: Codec,
    protected readonly keys: VolumeKeys,
    readonly vaultId: string,
    readonly volumeId: string,
    /** for messages only */
    readonly volumeName: string,
  ) {
    this.vaultIdBytes = Buffer.from(vaultId, 'hex');
    this.volumeIdBytes = Buffer.from(volumeId, 'hex');
  }

  place(kind: ObjectKind, index: number, generation: number): ObjectPlace {
    return { vaultId: this.vaultIdBytes, volumeId: this.volumeIdBytes, kind, index, generation };
  }

  // --- root -------------------------------------------------------------------------------

  async readRoot(): Promise<{ root: RootRecord; etag: string }> {
    const what = `root of volume "${this.volumeName}"`;
    const { body, etag } = await this.fetch(rootKey(this.volumeId), what);
    let plain: Buffer;
    try {
      plain = await this.codec.open(this.keys.manifest, body, this.place('root', 0, 0));
    } catch (err) {
      throw annotate(err, what);
    }
    return { root: decodeRoot(plain, this.volumeId), etag };
  }

  /** Replace the root. With `ifMatch` (the etag this writer last saw) where the store supports
   *  conditional puts, so a second writer fails loudly instead of forking the volume. */
  async writeRoot(root: RootRecord, previousEtag: string | null): Promise<string> {
    return this.putRoot(await this.sealRoot(root), previousEtag);
  }

  async sealRoot(root: RootRecord): Promise<Buffer> {
    const sealed = await this.codec.seal(this.keys.manifest, encodeRoot(root), this.place('root', 0, 0));
    if (sealed === null) throw new VaultError('ERR_BUG', 'codec returned no object for a root');
    return sealed;
  }

  /** The root object's stored bytes and etag, unopened (null: there is none). */
  async readRootBytes(): Promise<{ body: Buffer; etag: string } | null> {
    try {
      return await this.store.get(rootKey(this.volumeId));
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) return null;
      throw annotate(err, `root of volume "${this.volumeName}"`);
    }
  }

  async putRoot(sealed: Buffer, previousEtag: string | null): Promise<string> {
    const opts = !this.store.props.conditionalPut ? undefined : previousEtag === null ? { ifNoneMatch: '*' as const } : { ifMatch: previousEtag };
    try {
      const { etag } = await this.store.put(rootKey(this.volumeId), sealed, opts);
      return etag;
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_PRECONDITION')) {
        throw new VaultError('ERR_LEASE', `the root of volume "${this.volumeName}" was changed by another writer; refusing to overwrite it`, { cause: err });
      }
      throw err;
    }
  }

  // --- snapshots ---------------------------------------------------------------------------

  async writeSnapshot(record: SnapshotRecord): Promise<void> {
    const sealed = await this.codec.seal(this.keys.manifest, encodeSnapshot(record), this.place('snapshot', 0, generationOfId(record.id)));
    await this.store.put(snapshotKey(this.volumeId, record.id), sealed!, this.store.props.conditionalPut ? { ifNoneMatch: '*' } : undefined);
  }

  async readSnapshot(id: string): Promise<SnapshotRecord> {
    const what = `snapshot ${id} of volume "${this.volumeName}"`;
    const { body } = await this.fetch(snapshotKey(this.volumeId, id), what);
    try {
      return decodeSnapshot(await this.codec.open(this.keys.manifest, body, this.place('snapshot', 0, generationOfId(id))), this.volumeId, id);
    } catch (err) {
      throw annotate(err, what);
    }
  }

  /**
   * Set or clear a snapshot's keep flag: the one change a record ever gets. It is sealed again at
   * the same place (same id) and replaces the old one only if nobody replaced it meanwhile.
   */
  async setSnapshotKeep(id: string, keep: boolean): Promise<SnapshotRecord> {
    const what = `snapshot ${id} of volume "${this.volumeName}"`;
    const { body, etag } = await this.fetch(snapshotKey(this.volumeId, id), what);
    const place = this.place('snapshot', 0, generationOfId(id));
    let record: SnapshotRecord;
    try {
      record = decodeSnapshot(await this.codec.open(this.keys.manifest, body, place), this.volumeId, id);
    } catch (err) {
      throw annotate(err, what);
    }
    if (Boolean(record.keep) === keep) return record;
    const updated: SnapshotRecord = { ...record, keep };
    const sealed = await this.codec.seal(this.keys.manifest, encodeSnapshot(updated), place);
    try {
      await this.store.put(snapshotKey(this.volumeId, id), sealed!, this.store.props.conditionalPut ? { ifMatch: etag } : undefined);
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_PRECONDITION')) throw new VaultError('ERR_LEASE', `${what} was changed or deleted meanwhile; try again`, { cause: err });
      throw err;
    }
    return updated;
  }

  async listSnapshots(): Promise<SnapshotRecord[]> {
    const ids: string[] = [];
    const prefix = snapshotPrefix(this.volumeId);
    for await (const info of this.store.list(prefix)) {
      const id = info.key.slice(prefix.length);
      if (/^[0-9a-f]{32}$/.test(id)) ids.push(id);
    }
    // a record deleted since the listing is gone, not damaged
    const read = await Promise.all(
      ids.map((id) =>
        this.readSnapshot(id).catch(async (err) => {
          if ((await this.store.head(snapshotKey(this.volumeId, id))) === null) return null;
          throw err;
        }),
      ),
    );
    const records = read.filter((r): r is SnapshotRecord => r !== null);
    return records.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
  }

  async deleteSnapshotRecord(id: string): Promise<void> {
    await this.store.delete(snapshotKey(this.volumeId, id));
  }

  // --- deletion marks ----------------------------------------------------------------------
  // A mark says "deletion of this snapshot (or of the whole volume) has begun": a clone made
  // after it would name objects about to go, so cloning checks for marks after writing the
  // clone's root (docs/FORMAT.md, "Deleting and cloning"). Only existence matters; the body is
  // sealed like every object so the store learns nothing from it.

  private deletionMark(snapshotId: string | null): { key: string; place: ObjectPlace } {
    return snapshotId === null
      ? { key: volumeDeletingKey(this.volumeId), place: this.place('snapshot', 2, 0) }
      : { key: snapshotDeletingKey(this.volumeId, snapshotId), place: this.place('snapshot', 1, generationOfId(snapshotId)) };
  }

  /** Mark a snapshot (or, with null, the volume) as being deleted by the writer session
   *  `session` (a reader tells a delete under way from one cut off by it); returns the mark's
   *  etag. */
  async markDeleting(snapshotId: string | null, session?: string): Promise<string> {
    const { key, place } = this.deletionMark(snapshotId);
    const body = JSON.stringify({ v: 1, deleting: snapshotId ?? 'volume', at: new Date().toISOString(), ...(session ? { session } : {}) });
    return (await this.store.put(key, (await this.codec.seal(this.keys.manifest, Buffer.from(body), place))!)).etag;
  }

  /** Remove the deletion mark; with `etag`, only if it is still the one this deleter wrote: a
   *  second deleter that marked since holds it now (a refused delete that removed it let a
   *  clone or reader in under the other one). */
  async unmarkDeleting(snapshotId: string | null, etag?: string): Promise<void> {
    const { key } = this.deletionMark(snapshotId);
    if (etag !== undefined && (await this.store.head(key))?.etag !== etag) return;
    await this.store.delete(key);
  }

  /** The deletion mark: null when there is none; `session` names the deleter's writer session
   *  (null: a mark without one, from an older build); `unreadable`: it cannot be opened. */
  async deletionMarkOf(snapshotId: string | null): Promise<{ session: string | null; unreadable?: true } | null> {
    const { key, place } = this.deletionMark(snapshotId);
    let body: Buffer;
    try {
      body = (await this.store.get(key)).body;
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) return null;
      throw err;
    }
    try {
      const r = JSON.parse((await this.codec.open(this.keys.manifest, body, place)).toString('utf8'));
      return { session: typeof r?.session === 'string' && /^[0-9a-f]{32}$/.test(r.session) ? r.session : null };
    } catch {
      return { session: null, unreadable: true };
    }
  }

  async isMarkedDeleting(snapshotId: string | null): Promise<boolean> {
    return (await this.store.head(this.deletionMark(snapshotId).key)) !== null;
  }

  /** What a refusal for a deletion mark tells the user to do: a mark that does not open was not
   *  written by a delete of ours as it is (damage, or an object put there by another hand), and
   *  finishing "its" delete is not the advice to give then. Null when there is no mark. */
  async deletionMarkAdvice(snapshotId: string | null, finish: string): Promise<string | null> {
    const mark = await this.deletionMarkOf(snapshotId);
    if (mark === null) return null;
    if (!mark.unreadable) return `if no deletion is running, one was interrupted: \`${finish}\` finishes it`;
    return `its deletion mark ${this.deletionMark(snapshotId).key} does not open (damaged, or not written by nbd-vault): if you started no \`${finish}\`, remove that object from the store; \`nbd-vault verify\` reads the data meanwhile`;
  }

  // --- reader marks (snapshot-readers.ts) --------------------------------------------------
  // "Session S reads this snapshot": a snapshot delete refuses while a live session reads it. One
  // mark per reader (an engine), `<session id>-<random>`: two engines of one snapshot in one
  // process (one closing as the next opens) must not remove each other's mark.
  // Sealed like the deletion marks (index 3 of kind `snapshot`, bound to the snapshot's id).

  private readerPlace(snapshotId: string): ObjectPlace {
    return this.place('snapshot', 3, generationOfId(snapshotId));
  }

  async putReaderMark(snapshotId: string, markId: string, record: object): Promise<void> {
    await this.store.put(snapshotReaderKey(this.volumeId, snapshotId, markId), (await this.codec.seal(this.keys.manifest, Buffer.from(JSON.stringify(record)), this.readerPlace(snapshotId)))!);
  }

  /** The mark's record, or null when it is gone or cannot be opened. */
  async readReaderMark(snapshotId: string, markId: string): Promise<unknown> {
    try {
      const { body } = await this.store.get(snapshotReaderKey(this.volumeId, snapshotId, markId));
      return JSON.parse((await this.codec.open(this.keys.manifest, body, this.readerPlace(snapshotId))).toString('utf8'));
    } catch {
      return null;
    }
  }

  async deleteReaderMark(snapshotId: string, markId: string): Promise<void> {
    await this.store.delete(snapshotReaderKey(this.volumeId, snapshotId, markId));
  }

  /** The reader marks snapshot `snapshotId` has: their ids, `<session id>-<random>`. */
  async listReaderMarks(snapshotId: string): Promise<string[]> {
    const prefix = snapshotReaderPrefix(this.volumeId, snapshotId);
    const marks: string[] = [];
    for await (const info of this.store.list(prefix)) {
      const mark = info.key.slice(prefix.length);
      if (/^[0-9a-f]{32}-[0-9a-f]{16}$/.test(mark)) marks.push(mark);
    }
    return marks;
  }

  async metaExists(): Promise<boolean> {
    return (await this.store.head(metaKey(this.volumeId))) !== null;
  }

  async snapshotExists(snapshotId: string): Promise<boolean> {
    return (await this.store.head(snapshotKey(this.volumeId, snapshotId))) !== null;
  }

  protected async fetch(key: string, what: string, into?: Buffer) {
    try {
      return await this.store.get(key, into);
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) {
        throw missingObject(what, key, err);
      }
      throw annotate(err, what);
    }
  }
}
