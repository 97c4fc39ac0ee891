// Keys derived with libsodium crypto_kdf (BLAKE2b): subkeys of a volume key, and the master key's
// volume-wrapping key and public id. Derivation is one-way: a subkey reveals nothing of its parent.
import sodium from 'sodium-native';
import { BugError } from '../errors';
import {
  KEY_ID_BYTES,
  MASTER_KDF_CONTEXT,
  MASTER_SUBKEY_KEY_ID,
  MASTER_SUBKEY_VOLUME_WRAP,
  VOLUME_KDF_CONTEXT,
  VOLUME_SUBKEY_IDS,
  type SubkeyPurpose,
} from './key-format';
import { SecretKey, SECRET_KEY_BYTES } from './secret-key';

function derive(parent: SecretKey, id: number, context: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  sodium.crypto_kdf_derive_from_key(out, id, context, parent.bytes);
  return out;
}

/** A per-purpose subkey of a volume key: 'data' seals chunks, 'manifest' pages/roots, 'meta' the rest. */
export function deriveSubkey(volumeKey: SecretKey, purpose: SubkeyPurpose): SecretKey {
  const id = VOLUME_SUBKEY_IDS[purpose];
  if (id === undefined) throw new BugError(`unknown subkey purpose ${String(purpose)}`);
  const bytes = derive(volumeKey, id, VOLUME_KDF_CONTEXT, SECRET_KEY_BYTES);
  try {
    return new SecretKey(bytes, `${volumeKey.label}/${purpose}`);
  } finally {
    bytes.fill(0);
  }
}

/** The key that wraps volume keys (never the master key itself, so it has exactly one use). */
export function volumeWrapKey(master: SecretKey): SecretKey {
  const bytes = derive(master, MASTER_SUBKEY_VOLUME_WRAP, MASTER_KDF_CONTEXT, SECRET_KEY_BYTES);
  try {
    return new SecretKey(bytes, 'volume-wrap');
  } finally {
    bytes.fill(0);
  }
}

/** A public 8-byte id of a master key (hex in the key file, raw in wrapped volume keys). */
export function masterKeyId(master: SecretKey): Buffer {
  return derive(master, MASTER_SUBKEY_KEY_ID, MASTER_KDF_CONTEXT, 16).subarray(0, KEY_ID_BYTES);
}
