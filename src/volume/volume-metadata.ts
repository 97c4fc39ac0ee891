// The metadata object of each volume, `volumes/<id>/meta` (docs/FORMAT.md): the volume's random
// key wrapped by the master key, and its name and creation time sealed with the volume's own
// `meta` subkey, both bound to the object's place. Reading every one of them is how volumes are
// found by name; deleting one is the volume's crypto-erase. Not here: the volume's other objects
// (volume-objects.ts), key rotation's rewrap of the wrapped key (key-rotation.ts).
import { VaultError, describeError, isVaultError } from '../errors';
import type { Codec } from '../codec/codec';
import type { ObjectPlace } from '../codec/object-place';
import { deriveSubkey, unwrapVolumeKey, wrapVolumeKey, wrappingKeyId, type MasterKeyRing } from '../keys';
import type { SecretKey } from '../keys/secret-key';
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';
import { metaKey } from './object-keys';
import { volumeIdCandidates } from './volume-references';

export interface VolumeMeta {
  readonly id: string;
  readonly name: string;
  readonly createdAt: string;
}

/** The public JSON of a metadata object: what key rotation rewrites without opening the rest. */
export interface MetaDocument {
  v: 1;
  /** in clear (it is public): what `init --recover` needs if the `vault` object is lost */
  vaultId?: string;
  wrappedKey: string;
  info: string;
}

/** Where a volume's metadata is bound: its wrapped key and its sealed info. */
export function metaPlace(vaultId: Buffer, volumeId: string): ObjectPlace {
  return { vaultId, volumeId: Buffer.from(volumeId, 'hex'), kind: 'volume', index: 0, generation: 0 };
}

/** Where the vault object's key check is bound (volume id zero, index 1). */
export function keyCheckPlace(vaultId: Buffer): ObjectPlace {
  return { vaultId, volumeId: Buffer.alloc(16), kind: 'volume', index: 1, generation: 0 };
}

/** The metadata object's JSON, or null when it is not one. */
export function parseMetaDocument(body: Buffer): MetaDocument | null {
  let doc: any;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  return doc?.v === 1 && typeof doc.wrappedKey === 'string' && typeof doc.info === 'string' ? doc : null;
}

export class VolumeMetadata {
  constructor(
    private readonly store: ObjectStore,
    private readonly codec: Codec,
    private readonly vaultId: string,
    private readonly master: SecretKey,
    private readonly keyRing: MasterKeyRing | undefined,
    private readonly logger: Logger,
  ) {}

  private place(volumeId: string): ObjectPlace {
    return metaPlace(Buffer.from(this.vaultId, 'hex'), volumeId);
  }

  /** The volume's name, creation time and key (the caller wipes the key). */
  async read(volumeId: string): Promise<VolumeMeta & { key: SecretKey }> {
    const { body } = await this.store.get(metaKey(volumeId));
    const doc = parseMetaDocument(body);
    if (!doc) throw new VaultError('ERR_CORRUPT', `metadata of volume ${volumeId} is malformed`);
    const place = this.place(volumeId);
    const wrapped = Buffer.from(doc.wrappedKey, 'base64');
    const key = unwrapVolumeKey((await this.keyRing?.findOrReload(wrappingKeyId(wrapped))) ?? this.master, wrapped, place);
    let info: any;
    try {
      const meta = deriveSubkey(key, 'meta');
      info = JSON.parse((await this.codec.open(meta, Buffer.from(doc.info, 'base64'), place)).toString('utf8'));
      meta.wipe();
    } catch (err) {
      throw new VaultError(isVaultError(err) ? err.code : 'ERR_CORRUPT', `metadata of volume ${volumeId} cannot be opened: ${(err as Error).message}`, { cause: err });
    }
    if (typeof info?.name !== 'string') throw new VaultError('ERR_CORRUPT', `metadata of volume ${volumeId} is malformed`);
    return { id: volumeId, name: info.name, createdAt: String(info.createdAt), key };
  }

  /** The sealed metadata object of a volume: its key wrapped by the master key (the newest of a
   *  rotation), and its name sealed with the volume's own meta subkey. */
  async encode(id: string, key: SecretKey, info: { name: string; createdAt: string }): Promise<Buffer> {
    const place = this.place(id);
    const meta = deriveSubkey(key, 'meta');
    const sealedInfo = await this.codec.seal(meta, Buffer.from(JSON.stringify(info)), place);
    meta.wipe();
    const doc: MetaDocument = { v: 1, vaultId: this.vaultId, wrappedKey: wrapVolumeKey(this.keyRing?.current ?? this.master, key, place).toString('base64'), info: sealedInfo!.toString('base64') };
    return Buffer.from(JSON.stringify(doc));
  }

  /**
   * Every volume whose metadata opens, by name. A damaged or unreadable metadata object is
   * logged and skipped (one must not hide every other volume) — unless `strict`, for callers
   * that would otherwise take a skipped volume for a deleted one (gc, and the clone checks before
   * deleting anything): they fail instead. `unreadable`: gets those volumes instead of the log.
   */
  async list(opts: { strict?: boolean; unreadable?: Array<{ id: string; error: string }> } = {}): Promise<VolumeMeta[]> {
    // (candidates: a leftover whose metadata is gone reads as NOT_FOUND below, and is no volume)
    const ids = await volumeIdCandidates(this.store);
    const results = await Promise.allSettled(ids.map((id) => this.read(id)));
    const metas: VolumeMeta[] = [];
    results.forEach((r, k) => {
      if (r.status === 'fulfilled') {
        r.value.key.wipe();
        metas.push({ id: r.value.id, name: r.value.name, createdAt: r.value.createdAt });
      } else if (isVaultError(r.reason, 'ERR_STORE_NOT_FOUND')) {
        // deleted since the listing (or a clone withdrawn): gone, not unreadable
      } else if (opts.strict) {
        throw new VaultError(isVaultError(r.reason) ? r.reason.code : 'ERR_IO', `the metadata of volume ${ids[k]} cannot be read, so nothing can be deleted safely: ${describeError(r.reason)}`, { cause: r.reason });
      } else if (opts.unreadable) opts.unreadable.push({ id: ids[k], error: describeError(r.reason) });
      else this.logger.error({ volumeId: ids[k], err: describeError(r.reason) }, 'volume metadata cannot be read; volume skipped');
    });
    return metas.sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * After a create or clone put its metadata: whether another volume has that name now (a
   * create of it racing ours, elsewhere). The caller then withdraws its own. Each side writes
   * its metadata before it lists, so of two racing creates at least one sees the other: both
   * may withdraw, never both stay.
   */
  async nameTakenBesides(name: string, id: string): Promise<boolean> {
    return (await this.list()).some((v) => v.name === name && v.id !== id);
  }

  /** The volume called `name`. Two volumes of one name (two creates racing) are refused by name:
   *  acting on either could be the wrong one. */
  async find(name: string): Promise<VolumeMeta> {
    const found = (await this.list()).filter((v) => v.name === name);
    if (found.length === 0) throw new VaultError('ERR_NOT_FOUND', `no volume named "${name}"`);
    if (found.length > 1) throw new VaultError('ERR_EXISTS', `${found.length} volumes are named "${name}" (ids ${found.map((v) => v.id).join(', ')}); created at once on two machines? delete the unwanted one with "volume delete ${name} --id ID"`);
    return found[0];
  }
}
