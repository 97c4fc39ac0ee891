// Every constant of the sealed-object format, in one place. docs/FORMAT.md ("Sealed object") is
// the prose version of this file; a change here changes stored bytes and MUST bump FORMAT_VERSION,
// update docs/FORMAT.md and regenerate test/codec/vectors/ in the same commit.
import type { ObjectKind } from './object-place';

/** "NBVO": nbd-vault object. */
export const OBJECT_MAGIC = Buffer.from('NBVO', 'latin1');
export const FORMAT_VERSION = 1;

// Header field offsets and sizes (all integers little-endian).
export const OFFSET_MAGIC = 0; // 4 bytes
export const OFFSET_VERSION = 4; // 1 byte
export const OFFSET_KIND = 5; // 1 byte, KIND_CODES
export const OFFSET_FLAGS = 6; // 1 byte, FLAG_*
export const OFFSET_RESERVED = 7; // 1 byte, 0
export const OFFSET_PLAINTEXT_LENGTH = 8; // 4 bytes, u32: length of the opened object
export const OFFSET_NONCE = 12; // 24 bytes
export const NONCE_BYTES = 24;
export const HEADER_BYTES = 36;
/** Poly1305 tag after the ciphertext. */
export const TAG_BYTES = 16;
export const SEAL_OVERHEAD_BYTES = HEADER_BYTES + TAG_BYTES;

/** The payload is a single zstd frame (otherwise it is the raw plaintext). */
export const FLAG_COMPRESSED = 0x01;
export const KNOWN_FLAGS = FLAG_COMPRESSED;

/** Stored kind codes. Never renumber: they are in every object header. */
export const KIND_CODES: Readonly<Record<ObjectKind, number>> = {
  chunk: 1,
  page: 2,
  root: 3,
  snapshot: 4,
  volume: 5,
  lease: 6,
};

/** IDs in an ObjectPlace. */
export const ID_BYTES = 16;
/** Associated data: header ‖ vaultId ‖ volumeId ‖ kind (u8) ‖ index (u64) ‖ generation (u64). */
export const AD_BYTES = HEADER_BYTES + ID_BYTES + ID_BYTES + 1 + 8 + 8;

/** Largest object we seal or open: bounds allocation from a (possibly hostile) header. */
export const MAX_PLAINTEXT_BYTES = 64 * 1024 * 1024;

export const DEFAULT_ZSTD_LEVEL = 3;
