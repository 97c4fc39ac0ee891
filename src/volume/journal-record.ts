// The index of a write journal (format 2): frame 0 of a journal container says which 4 KiB blocks
// of which chunks its data frames hold, or which it zeroes. Pure and strict: decode rejects
// anything the encoder would not write, naming the object (docs/FORMAT.md, "Journal index").
// Layout: u32 extent count ‖ u32 reserved (0) ‖ 24 bytes per extent: chunk index u64 (< 2^48) ‖
// first block u16 ‖ block count u16 ‖ flags u8 (bit 0: zero; bit 1: reset) ‖ 3 reserved bytes (0) ‖
// data frame u32 ‖ byte offset within that frame u32.
import { FRAME_BYTES, MAX_JOURNAL_FRAMES } from '../codec';
import { BugError, VaultError } from '../errors';

export const BLOCK_BYTES = 4096;
export const BLOCKS_PER_CHUNK = 1024;
export const JOURNAL_INDEX_HEADER_BYTES = 8;
export const JOURNAL_EXTENT_BYTES = 24;
/** The index is one frame: at most this many extents per journal. */
export const MAX_JOURNAL_EXTENTS = Math.floor((FRAME_BYTES - JOURNAL_INDEX_HEADER_BYTES) / JOURNAL_EXTENT_BYTES);
export const EXTENT_FLAG_ZERO = 0x01;
/** every earlier journal extent of this chunk is void: its manifest entry in the same root holds it */
export const EXTENT_FLAG_RESET = 0x02;
const MAX_CHUNK_INDEX = 2 ** 48;

export interface JournalExtent {
  readonly chunkIndex: number;
  /** first 4 KiB block within the chunk, 0..1023 */
  readonly firstBlock: number;
  readonly blockCount: number;
  /** the blocks read as zeros; no data stored (frame and frameOffset are 0) */
  readonly zero: boolean;
  /** a reset: block 0, count 0, frame 0, offset 0, no other flag (see EXTENT_FLAG_RESET) */
  readonly reset?: boolean;
  /** data frame holding the blocks (≥ 1; 0 for zero extents) */
  readonly frame: number;
  /** byte offset of the first block within that frame (a multiple of BLOCK_BYTES) */
  readonly frameOffset: number;
}

/** Why an extent is invalid, or null. Frame limits: `frameCount` of the container when known. */
function extentProblem(e: JournalExtent, frameCount: number): string | null {
  if (!Number.isSafeInteger(e.chunkIndex) || e.chunkIndex < 0 || e.chunkIndex >= MAX_CHUNK_INDEX) return `chunk index ${e.chunkIndex}`;
  if (e.reset) return e.firstBlock === 0 && e.blockCount === 0 && !e.zero && e.frame === 0 && e.frameOffset === 0 ? null : 'a reset extent names blocks';
  if (!Number.isInteger(e.firstBlock) || e.firstBlock < 0 || e.firstBlock >= BLOCKS_PER_CHUNK) return `first block ${e.firstBlock}`;
  if (!Number.isInteger(e.blockCount) || e.blockCount < 1 || e.firstBlock + e.blockCount > BLOCKS_PER_CHUNK) return `blocks ${e.firstBlock}+${e.blockCount} beyond a chunk`;
  if (e.zero) return e.frame === 0 && e.frameOffset === 0 ? null : 'a zero extent names data';
  if (!Number.isInteger(e.frame) || e.frame < 1 || e.frame >= frameCount) return `data frame ${e.frame} (journal has ${frameCount} frames)`;
  if (!Number.isInteger(e.frameOffset) || e.frameOffset < 0 || e.frameOffset % BLOCK_BYTES !== 0) return `frame offset ${e.frameOffset}`;
  if (e.frameOffset + e.blockCount * BLOCK_BYTES > FRAME_BYTES) return `blocks at ${e.frameOffset}+${e.blockCount * BLOCK_BYTES} span past their frame`;
  return null;
}

export function encodeJournalIndex(extents: readonly JournalExtent[]): Buffer {
  if (extents.length > MAX_JOURNAL_EXTENTS) throw new BugError(`a journal holds at most ${MAX_JOURNAL_EXTENTS} extents, not ${extents.length}`);
  const out = Buffer.alloc(JOURNAL_INDEX_HEADER_BYTES + JOURNAL_EXTENT_BYTES * extents.length);
  out.writeUInt32LE(extents.length, 0);
  extents.forEach((e, k) => {
    const problem = extentProblem(e, MAX_JOURNAL_FRAMES);
    if (problem) throw new BugError(`journal extent ${k}: ${problem}`);
    const at = JOURNAL_INDEX_HEADER_BYTES + JOURNAL_EXTENT_BYTES * k;
    out.writeUIntLE(e.chunkIndex, at, 6); // bytes 6..7 of the u64 stay 0
    out.writeUInt16LE(e.firstBlock, at + 8);
    out.writeUInt16LE(e.blockCount, at + 10);
    out.writeUInt8((e.zero ? EXTENT_FLAG_ZERO : 0) | (e.reset ? EXTENT_FLAG_RESET : 0), at + 12);
    out.writeUInt32LE(e.frame, at + 16);
    out.writeUInt32LE(e.frameOffset, at + 20);
  });
  return out;
}

/**
 * Decodes a journal index (authenticated plaintext of frame 0). With `frameCount` (the journal
 * container's), every data frame named must exist. Throws ERR_CORRUPT naming `what`.
 */
export function decodeJournalIndex(buf: Buffer, what: string, frameCount: number = MAX_JOURNAL_FRAMES): JournalExtent[] {
  const corrupt = (why: string) => new VaultError('ERR_CORRUPT', `${what}: journal index ${why}`);
  if (buf.length < JOURNAL_INDEX_HEADER_BYTES) throw corrupt(`is ${buf.length} bytes`);
  const count = buf.readUInt32LE(0);
  if (buf.readUInt32LE(4) !== 0) throw corrupt('has non-zero reserved bytes');
  if (count > MAX_JOURNAL_EXTENTS || buf.length !== JOURNAL_INDEX_HEADER_BYTES + JOURNAL_EXTENT_BYTES * count) {
    throw corrupt(`says ${count} extents in ${buf.length} bytes`);
  }
  const extents: JournalExtent[] = new Array(count);
  for (let k = 0; k < count; k++) {
    const at = JOURNAL_INDEX_HEADER_BYTES + JOURNAL_EXTENT_BYTES * k;
    if (buf.readUInt16LE(at + 6) !== 0) throw corrupt(`extent ${k}: chunk index beyond 2^48`);
    const flags = buf.readUInt8(at + 12);
    if ((flags & ~(EXTENT_FLAG_ZERO | EXTENT_FLAG_RESET)) !== 0) throw corrupt(`extent ${k}: unknown flags 0x${flags.toString(16)}`);
    if (buf.readUIntLE(at + 13, 3) !== 0) throw corrupt(`extent ${k}: non-zero reserved bytes`);
    const e: JournalExtent = {
      chunkIndex: buf.readUIntLE(at, 6),
      firstBlock: buf.readUInt16LE(at + 8),
      blockCount: buf.readUInt16LE(at + 10),
      zero: (flags & EXTENT_FLAG_ZERO) !== 0,
      ...((flags & EXTENT_FLAG_RESET) !== 0 ? { reset: true } : {}),
      frame: buf.readUInt32LE(at + 16),
      frameOffset: buf.readUInt32LE(at + 20),
    };
    const problem = extentProblem(e, frameCount);
    if (problem) throw corrupt(`extent ${k}: ${problem}`);
    extents[k] = e;
  }
  return extents;
}

/** The fewest bytes data frame `frame` must hold for the extents that name it (0: none do). */
export function journalFrameBytesNeeded(extents: readonly JournalExtent[], frame: number): number {
  let need = 0;
  for (const e of extents) if (!e.zero && e.frame === frame) need = Math.max(need, e.frameOffset + e.blockCount * BLOCK_BYTES);
  return need;
}
