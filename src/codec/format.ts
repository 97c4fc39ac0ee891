// Every constant of the sealed-object format, in one place. docs/FORMAT.md ("Sealed object") is
// the prose version of this file; a change here changes stored bytes and MUST bump FORMAT_VERSION,
// update docs/FORMAT.md and regenerate test/codec/vectors/ in the same commit.
import type { ObjectKind } from './object-place';

/** "NBVO": nbd-vault object. */
export const OBJECT_MAGIC = Buffer.from('NBVO', 'latin1');
export const FORMAT_VERSION = 1;
/** Version byte of a sealed frame (kinds chunk-frame, journal-frame): its AD carries the frame number. */
export const FRAME_FORMAT_VERSION = 2;

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
  'chunk-frame': 7,
  'journal-frame': 8,
};

/** Kinds sealed as frames (version 2, frame number in the AD). */
export const FRAME_KINDS: ReadonlySet<ObjectKind> = new Set<ObjectKind>(['chunk-frame', 'journal-frame']);

/** IDs in an ObjectPlace. */
export const ID_BYTES = 16;
/** Associated data: header ‖ vaultId ‖ volumeId ‖ kind (u8) ‖ index (u64) ‖ generation (u64). */
export const AD_BYTES = HEADER_BYTES + ID_BYTES + ID_BYTES + 1 + 8 + 8;
/** Associated data of a sealed frame: the v1 AD, then the frame number (u32). */
export const FRAME_AD_BYTES = AD_BYTES + 4;

/** Largest object we seal or open: bounds allocation from a (possibly hostile) header. */
export const MAX_PLAINTEXT_BYTES = 64 * 1024 * 1024;

export const DEFAULT_ZSTD_LEVEL = 3;

// --- Format 2: framed containers (docs/FORMAT.md, "Format version 2") ----------------------

/** Logical bytes per frame: a 4 MiB chunk is 32 frames, each sealed on its own. */
export const FRAME_BYTES = 128 * 1024;
/** "NBVC": a framed chunk object; "NBVJ": a write journal. */
export const CHUNK_CONTAINER_MAGIC = Buffer.from('NBVC', 'latin1');
export const JOURNAL_CONTAINER_MAGIC = Buffer.from('NBVJ', 'latin1');
export const CONTAINER_VERSION = 2;
// Container header: magic (4) ‖ version u8 ‖ reserved (3, 0) ‖ logical length u32 ‖ frame count
// u32 ‖ sealed length u32 per frame; then the sealed frames back to back.
export const CONTAINER_OFFSET_VERSION = 4;
export const CONTAINER_OFFSET_RESERVED = 5;
export const CONTAINER_OFFSET_LOGICAL_LENGTH = 8;
export const CONTAINER_OFFSET_FRAME_COUNT = 12;
export const FRAMED_HEADER_FIXED_BYTES = 16;
/** Frames of a chunk container: a chunk is at most 4 MiB. */
export const MAX_CHUNK_FRAMES = 32;
/** Frames of a journal container, index included. */
export const MAX_JOURNAL_FRAMES = 4096;
/** The longest header a chunk container can have: a reader's first ranged read. */
export const FRAMED_HEADER_MAX_CHUNK = FRAMED_HEADER_FIXED_BYTES + 4 * MAX_CHUNK_FRAMES;
/** Bounds of one sealed frame's length: an empty frame, or FRAME_BYTES stored raw (sealing
 *  compresses only when that is strictly smaller). The +64 is slack, never written. */
export const MIN_SEALED_FRAME_BYTES = SEAL_OVERHEAD_BYTES;
export const MAX_SEALED_FRAME_BYTES = FRAME_BYTES + SEAL_OVERHEAD_BYTES + 64;
/** The largest chunk container: its longest header, every frame at its longest. */
export const MAX_CHUNK_CONTAINER_BYTES = FRAMED_HEADER_MAX_CHUNK + MAX_CHUNK_FRAMES * MAX_SEALED_FRAME_BYTES;
