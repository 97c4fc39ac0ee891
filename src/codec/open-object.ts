// Open: the inverse of seal. Order matters: parse what can be parsed unauthenticated (size, magic,
// version) → check the header kind against the expected place → verify the AEAD tag (libsodium
// verifies before it decrypts) → only then trust flags and lengths, decompress, and check the
// decompressed length. Never returns wrong bytes: it throws VaultError ERR_CORRUPT (not one of our
// objects, or inconsistent after authentication) or ERR_AUTH_FAILED (tampered, moved, replayed,
// wrong key).
import sodium from 'sodium-native';
import { VaultError } from '../errors';
import type { SecretKey } from '../keys/secret-key';
import { assertValidPlace, buildAssociatedData, describePlace } from './associated-data';
import { FLAG_COMPRESSED, HEADER_BYTES, KIND_CODES, KNOWN_FLAGS, MAX_PLAINTEXT_BYTES, TAG_BYTES } from './format';
import { kindName, parseHeader, versionOfKind } from './object-header';
import type { ObjectPlace } from './object-place';
import { asBuffer } from './seal-object';
import { scratchBuffer } from './scratch-buffer';
import { decompressInto } from './zstd-contexts';

export function openSync(key: SecretKey, sealed: Buffer, place: ObjectPlace): Buffer {
  return openObject(key.bytes, sealed, place);
}

/**
 * `into` (optional): where the plaintext goes, exactly its expected length — a frame's slot in a
 * whole chunk, so opening a container costs no per-frame buffer and no copy. A plaintext of any
 * other length is ERR_CORRUPT (after authentication, like every length check).
 */
export function openObject(keyBytes: Uint8Array, sealedBytes: Uint8Array, place: ObjectPlace, into?: Buffer): Buffer {
  assertValidPlace(place);
  const sealed = asBuffer(sealedBytes);
  const what = describePlace(place);
  const header = parseHeader(sealed, what, versionOfKind(place.kind));
  if (header.kindCode !== KIND_CODES[place.kind]) {
    throw new VaultError('ERR_AUTH_FAILED', `${what}: the object is a ${kindName(header.kindCode)} (moved or swapped)`);
  }

  const body = sealed.subarray(HEADER_BYTES);
  const payloadLength = body.length - TAG_BYTES;
  const compressed = (header.flags & FLAG_COMPRESSED) !== 0;
  // Raw payloads decrypt straight into the result; compressed ones into scratch, then zstd.
  const rawInto = !compressed && into !== undefined && into.length === payloadLength;
  const payload = compressed || (into !== undefined && !rawInto) ? scratchBuffer(payloadLength) : rawInto ? into! : Buffer.allocUnsafeSlow(payloadLength);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(payload, null, body, buildAssociatedData(sealed, place), header.nonce, asBuffer(keyBytes));
  } catch (cause) {
    throw new VaultError('ERR_AUTH_FAILED', `${what}: authentication failed (tampered, moved, replayed, or wrong key)`, { cause });
  }

  // Authenticated from here on: an inconsistency is a writer bug or a newer format, not tampering.
  if ((header.flags & ~KNOWN_FLAGS) !== 0 || header.reserved !== 0) {
    throw new VaultError('ERR_CORRUPT', `${what}: unknown header flags 0x${header.flags.toString(16)}/${header.reserved}`);
  }
  if (into !== undefined && header.plaintextLength !== into.length) {
    throw new VaultError('ERR_CORRUPT', `${what} has ${header.plaintextLength} bytes, expected ${into.length}`);
  }
  if (!compressed) {
    if (payloadLength !== header.plaintextLength) {
      throw new VaultError('ERR_CORRUPT', `${what}: raw payload is ${payloadLength} bytes, header says ${header.plaintextLength}`);
    }
    return payload;
  }
  if (header.plaintextLength > MAX_PLAINTEXT_BYTES) {
    throw new VaultError('ERR_CORRUPT', `${what}: plaintext length ${header.plaintextLength} exceeds ${MAX_PLAINTEXT_BYTES}`);
  }
  const plaintext = into ?? Buffer.allocUnsafeSlow(header.plaintextLength);
  let decompressedLength: number;
  try {
    decompressedLength = decompressInto(plaintext, payload);
  } catch (cause) {
    throw new VaultError('ERR_CORRUPT', `${what}: zstd payload does not decompress to ${header.plaintextLength} bytes`, { cause });
  }
  if (decompressedLength !== header.plaintextLength) {
    throw new VaultError('ERR_CORRUPT', `${what}: decompressed to ${decompressedLength} bytes, header says ${header.plaintextLength}`);
  }
  return plaintext;
}
