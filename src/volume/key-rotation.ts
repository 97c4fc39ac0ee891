// Master key rotation, the store half (docs/FORMAT.md, "Rotating the master key"): every
// volume's metadata object gets its volume key rewrapped by the new master key, then the vault's
// key check is resealed with it. Nothing else changes: chunks, pages, roots and snapshots are
// sealed with volume-key subkeys, which stay the same. Every step is idempotent: a metadata object
// already wrapped by the new key is skipped, so an interrupted rotation is finished by running it
// again. Rewrites use If-Match where the store has it, so a concurrent change is re-read, not lost.
import { VaultError, isVaultError } from '../errors';
import type { Codec } from '../codec/codec';
import { masterKeyId, unwrapVolumeKey, wrapVolumeKey, wrappingKeyId } from '../keys';
import type { SecretKey } from '../keys/secret-key';
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';
import { VAULT_KEY, metaKey } from './object-keys';
import { keyCheckPlace, metaPlace, parseMetaDocument } from './volume-metadata';
import { volumeIdCandidates } from './volume-references';
import { KEY_CHECK_TEXT } from './vault';

export interface RotationResult {
  /** metadata objects rewrapped by this run */
  readonly rewrapped: number;
  /** already wrapped by the new key (an earlier, interrupted run) */
  readonly already: number;
  readonly keyCheckUpdated: boolean;
}

export interface RotationTarget {
  readonly store: ObjectStore;
  readonly codec: Codec;
  readonly vaultId: string;
  readonly logger: Logger;
}

const MAX_PASSES = 5;

/**
 * Rewrap every volume key from `from` to `to`, listing again until a pass finds nothing left on
 * `from` (a volume created meanwhile by a process that held only the old key is caught too).
 */
export async function rewrapVolumeKeys(t: RotationTarget, from: SecretKey, to: SecretKey, onProgress?: (done: number, total: number) => void): Promise<{ rewrapped: number; already: number }> {
  const fromId = masterKeyId(from).toString('hex');
  const toId = masterKeyId(to).toString('hex');
  let rewrapped = 0;
  let already = 0;
  for (let pass = 1; pass <= MAX_PASSES; pass++) {
    // (candidates: one of a deleted volume has no metadata left, and reads as deleted meanwhile)
    const ids = await volumeIdCandidates(t.store);
    let changed = 0;
    let raced = 0;
    let done = 0;
    for (const id of ids) {
      const outcome = await rewrapOne(t, id, from, fromId, to, toId);
      if (outcome === 'rewrapped') changed++;
      else if (outcome === 'raced') raced++;
      else if (outcome === 'already' && pass === 1) already++;
      onProgress?.(++done, ids.length);
    }
    rewrapped += changed;
    t.logger.info({ pass, volumes: ids.length, rewrapped: changed, raced }, 'key rotation pass');
    if (changed === 0 && raced === 0) return { rewrapped, already };
  }
  throw new VaultError('ERR_IO', `volume metadata kept changing during ${MAX_PASSES} passes of the key rotation; run it again`);
}

async function rewrapOne(t: RotationTarget, id: string, from: SecretKey, fromId: string, to: SecretKey, toId: string): Promise<'rewrapped' | 'already' | 'raced' | 'gone'> {
  let got;
  try {
    got = await t.store.get(metaKey(id));
  } catch (err) {
    if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) return 'gone'; // deleted meanwhile, or a deleted volume's leftovers
    throw err;
  }
  const doc = parseMetaDocument(got.body);
  if (!doc) {
    throw new VaultError('ERR_CORRUPT', `metadata of volume ${id} is malformed; the rotation stops here (run it again once it is repaired or deleted)`);
  }
  const wrapped = Buffer.from(doc.wrappedKey, 'base64');
  const keyId = wrappingKeyId(wrapped);
  if (keyId === toId) return 'already';
  if (keyId !== fromId) {
    throw new VaultError('ERR_WRONG_KEY', `volume ${id} is wrapped by master key ${keyId}, which is neither the old key ${fromId} nor the new key ${toId}`);
  }
  const place = metaPlace(Buffer.from(t.vaultId, 'hex'), id);
  const volumeKey = unwrapVolumeKey(from, wrapped, place);
  try {
    doc.wrappedKey = wrapVolumeKey(to, volumeKey, place).toString('base64');
  } finally {
    volumeKey.wipe();
  }
  try {
    await t.store.put(metaKey(id), Buffer.from(JSON.stringify(doc)), t.store.props.conditionalPut ? { ifMatch: got.etag } : undefined);
  } catch (err) {
    if (isVaultError(err, 'ERR_STORE_PRECONDITION')) return 'raced';
    throw err;
  }
  return 'rewrapped';
}

/** Reseal the vault's key check with `to` (after every volume is rewrapped): from then on, `from` no longer opens the vault. */
export async function rewriteKeyCheck(t: RotationTarget, from: SecretKey, to: SecretKey): Promise<boolean> {
  const { body, etag } = await t.store.get(VAULT_KEY);
  const doc = JSON.parse(body.toString('utf8'));
  const place = keyCheckPlace(Buffer.from(t.vaultId, 'hex'));
  const opens = async (key: SecretKey) => {
    try {
      return (await t.codec.open(key, Buffer.from(String(doc.keyCheck), 'base64'), place)).equals(KEY_CHECK_TEXT);
    } catch {
      return false;
    }
  };
  if (await opens(to)) return false;
  if (!(await opens(from))) throw new VaultError('ERR_WRONG_KEY', 'the vault key check opens with neither the old nor the new master key');
  doc.keyCheck = (await t.codec.seal(to, KEY_CHECK_TEXT, place))!.toString('base64');
  await t.store.put(VAULT_KEY, Buffer.from(JSON.stringify(doc, null, 2) + '\n'), t.store.props.conditionalPut ? { ifMatch: etag } : undefined);
  return true;
}
