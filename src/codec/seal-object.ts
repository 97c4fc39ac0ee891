// Seal: plaintext → [header ‖ XChaCha20-Poly1305(zstd(plaintext) or plaintext) ‖ tag].
// Pure and synchronous (runs on whichever thread calls it). Guarantees: a fresh random 24-byte
// nonce per object; the stored payload is compressed only if that makes it strictly smaller; the
// output Buffer owns its own exactly-sized ArrayBuffer (safe to transfer between threads).
import sodium from 'sodium-native';
import { BugError } from '../errors';
import type { SecretKey } from '../keys/secret-key';
import { assertValidPlace, buildAssociatedData } from './associated-data';
import { DEFAULT_ZSTD_LEVEL, FLAG_COMPRESSED, HEADER_BYTES, MAX_PLAINTEXT_BYTES, NONCE_BYTES, SEAL_OVERHEAD_BYTES } from './format';
import { writeHeader } from './object-header';
import type { ObjectPlace } from './object-place';
import { scratchBuffer } from './scratch-buffer';
import { isAllZero } from './zero-detect';
import { compressBound, compressInto } from './zstd-contexts';

export interface SealOptions {
  /** zstd level, default 3. */
  zstdLevel?: number;
}

/** Seals `plaintext`, or returns null for an all-zero chunk (the caller records a zero entry). */
export function sealSync(key: SecretKey, plaintext: Buffer, place: ObjectPlace, options: SealOptions = {}): Buffer | null {
  if (place.kind === 'chunk' && isAllZero(plaintext)) return null;
  return sealObject(key.bytes, plaintext, place, options.zstdLevel ?? DEFAULT_ZSTD_LEVEL);
}

/**
 * Always seals (no zero check). `nonce` is a test hook for the known-answer vectors; production
 * code never passes it (a repeated nonce under one key breaks the AEAD).
 */
export function sealObject(keyBytes: Uint8Array, plaintext: Uint8Array, place: ObjectPlace, zstdLevel: number, nonce?: Uint8Array): Buffer {
  const scratch = scratchBuffer(compressBound(plaintext.length));
  const compressedLength = compressInto(scratch, plaintext, zstdLevel);
  const payloadLength = compressedLength < plaintext.length ? compressedLength : plaintext.length;
  const out = Buffer.allocUnsafeSlow(SEAL_OVERHEAD_BYTES + payloadLength);
  sealCompressedInto(out, keyBytes, plaintext, scratch.subarray(0, compressedLength), place, nonce);
  return out;
}

/** The most bytes sealObjectInto writes for a plaintext of this length. */
export function sealedBound(plaintextLength: number): number {
  return SEAL_OVERHEAD_BYTES + plaintextLength;
}

/**
 * Seals into `target` (at least sealedBound(plaintext.length) bytes) and returns the sealed
 * length: no allocation (sealing many frames into one container). Same guarantees as sealObject.
 */
export function sealObjectInto(target: Buffer, keyBytes: Uint8Array, plaintext: Uint8Array, place: ObjectPlace, zstdLevel: number, nonce?: Uint8Array): number {
  const scratch = scratchBuffer(compressBound(plaintext.length));
  const compressedLength = compressInto(scratch, plaintext, zstdLevel);
  return sealCompressedInto(target, keyBytes, plaintext, scratch.subarray(0, compressedLength), place, nonce);
}

/** sealObjectInto without compressing: the payload is the plaintext (flags 0). For data that a
 *  sample showed not worth compressing (framed-container.ts); readers need nothing new. */
export function sealUncompressedInto(target: Buffer, keyBytes: Uint8Array, plaintext: Uint8Array, place: ObjectPlace, nonce?: Uint8Array): number {
  return sealCompressedInto(target, keyBytes, plaintext, null, place, nonce);
}

function sealCompressedInto(target: Buffer, keyBytes: Uint8Array, plaintext: Uint8Array, compressedBytes: Buffer | null, place: ObjectPlace, nonce?: Uint8Array): number {
  assertValidPlace(place);
  if (plaintext.length > MAX_PLAINTEXT_BYTES) throw new BugError(`cannot seal ${plaintext.length} bytes (max ${MAX_PLAINTEXT_BYTES})`);
  const nonceBytes = nonce ?? randomNonce();
  if (nonceBytes.length !== NONCE_BYTES) throw new BugError(`nonce must be ${NONCE_BYTES} bytes`);

  const payload = compressedBytes !== null && compressedBytes.length < plaintext.length ? compressedBytes : plaintext;
  const compressed = payload !== plaintext;
  const sealedLength = SEAL_OVERHEAD_BYTES + payload.length;
  if (target.length < sealedLength) throw new BugError(`seal target of ${target.length} bytes, ${sealedLength} needed`);
  const out = target.subarray(0, sealedLength);
  writeHeader(out, place.kind, compressed ? FLAG_COMPRESSED : 0, plaintext.length, nonceBytes);
  // encrypted from where the payload is straight into place (ciphertext then tag): no copy first,
  // which for an uncompressed frame would be a byte-wise one out of shared memory
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
    out.subarray(HEADER_BYTES),
    asBuffer(payload),
    buildAssociatedData(out, place),
    null,
    asBuffer(nonceBytes),
    asBuffer(keyBytes),
  );
  return sealedLength;
}

function randomNonce(): Buffer {
  const nonce = Buffer.allocUnsafe(NONCE_BYTES);
  sodium.randombytes_buf(nonce);
  return nonce;
}

/** A Buffer view of the same bytes (no copy): worker messages arrive as plain Uint8Arrays. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
