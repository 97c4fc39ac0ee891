// Per-volume keys: 32 random bytes each, stored only wrapped by the master key (in the volume's
// metadata object). The wrap is XChaCha20-Poly1305 under a KDF subkey of the master key, with
// associated data binding the vault id and volume id: a wrapped key copied into another volume's
// metadata fails to unwrap. Layout: key-format.ts, docs/FORMAT.md ("Wrapped volume key").
import sodium from 'sodium-native';
import { BugError, VaultError } from '../errors';
import { masterKeyId, volumeWrapKey } from './key-derivation';
import {
  AEAD_NONCE_BYTES,
  KEY_ID_BYTES,
  WRAPPED_KEY_BYTES,
  WRAPPED_KEY_HEADER_BYTES,
  WRAPPED_KEY_MAGIC,
  WRAPPED_KEY_OFFSET_KEY_ID,
  WRAPPED_KEY_OFFSET_NONCE,
  WRAPPED_KEY_OFFSET_VERSION,
  WRAPPED_KEY_VERSION,
} from './key-format';
import { SecretKey, SECRET_KEY_BYTES } from './secret-key';

/** Which volume a wrapped key belongs to (an ObjectPlace fits). */
export interface VolumeKeyPlace {
  readonly vaultId: Buffer;
  readonly volumeId: Buffer;
}

const ID_BYTES = 16;

export function generateVolumeKey(): SecretKey {
  const bytes = Buffer.alloc(SECRET_KEY_BYTES);
  sodium.randombytes_buf(bytes);
  try {
    return new SecretKey(bytes, 'volume');
  } finally {
    bytes.fill(0);
  }
}

export function wrapVolumeKey(master: SecretKey, volumeKey: SecretKey, place: VolumeKeyPlace): Buffer {
  const out = Buffer.alloc(WRAPPED_KEY_BYTES);
  WRAPPED_KEY_MAGIC.copy(out, 0);
  out.writeUInt8(WRAPPED_KEY_VERSION, WRAPPED_KEY_OFFSET_VERSION);
  masterKeyId(master).copy(out, WRAPPED_KEY_OFFSET_KEY_ID);
  const nonce = out.subarray(WRAPPED_KEY_OFFSET_NONCE, WRAPPED_KEY_OFFSET_NONCE + AEAD_NONCE_BYTES);
  sodium.randombytes_buf(nonce);
  const wrapKey = volumeWrapKey(master);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
      out.subarray(WRAPPED_KEY_HEADER_BYTES),
      volumeKey.bytes,
      associatedData(out, place),
      null,
      nonce,
      wrapKey.bytes,
    );
  } finally {
    wrapKey.wipe();
  }
  return out;
}

/** The id of the master key that wrapped `wrapped` (public bytes of the wrapped key, in hex). */
export function wrappingKeyId(wrapped: Buffer): string {
  return wrapped.subarray(WRAPPED_KEY_OFFSET_KEY_ID, WRAPPED_KEY_OFFSET_KEY_ID + KEY_ID_BYTES).toString('hex');
}

/**
 * Throws ERR_CORRUPT (not a wrapped key), ERR_WRONG_KEY (wrapped by another master key) or
 * ERR_AUTH_FAILED (tampered, or belongs to another volume or vault).
 */
export function unwrapVolumeKey(master: SecretKey, wrapped: Buffer, place: VolumeKeyPlace): SecretKey {
  const volume = Buffer.from(place.volumeId).toString('hex').slice(0, 8);
  if (wrapped.length !== WRAPPED_KEY_BYTES || !wrapped.subarray(0, WRAPPED_KEY_MAGIC.length).equals(WRAPPED_KEY_MAGIC)) {
    throw new VaultError('ERR_CORRUPT', `wrapped key of volume ${volume}…: not a wrapped volume key`);
  }
  const version = wrapped.readUInt8(WRAPPED_KEY_OFFSET_VERSION);
  if (version !== WRAPPED_KEY_VERSION) {
    throw new VaultError('ERR_CORRUPT', `wrapped key of volume ${volume}…: unsupported version ${version}`);
  }
  const storedKeyId = wrappingKeyId(wrapped);
  const ourKeyId = masterKeyId(master).toString('hex');
  if (storedKeyId !== ourKeyId) {
    throw new VaultError(
      'ERR_WRONG_KEY',
      `volume ${volume}… is wrapped by master key ${storedKeyId}, but the loaded master key is ${ourKeyId}`,
    );
  }
  const nonce = wrapped.subarray(WRAPPED_KEY_OFFSET_NONCE, WRAPPED_KEY_OFFSET_NONCE + AEAD_NONCE_BYTES);
  const bytes = Buffer.alloc(SECRET_KEY_BYTES);
  const wrapKey = volumeWrapKey(master);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(bytes, null, wrapped.subarray(WRAPPED_KEY_HEADER_BYTES), associatedData(wrapped, place), nonce, wrapKey.bytes);
    return new SecretKey(bytes, 'volume');
  } catch (cause) {
    throw new VaultError('ERR_AUTH_FAILED', `wrapped key of volume ${volume}… fails authentication (tampered, or taken from another volume)`, { cause });
  } finally {
    bytes.fill(0);
    wrapKey.wipe();
  }
}

/** AD = wrapped-key header (magic, version, reserved, key id, nonce) ‖ vault id ‖ volume id. */
function associatedData(header: Buffer, place: VolumeKeyPlace): Buffer {
  if (place.vaultId?.length !== ID_BYTES || place.volumeId?.length !== ID_BYTES) {
    throw new BugError(`vaultId and volumeId must be ${ID_BYTES} bytes`);
  }
  return Buffer.concat([header.subarray(0, WRAPPED_KEY_HEADER_BYTES), place.vaultId, place.volumeId]);
}
