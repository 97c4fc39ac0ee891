// Offset → chunk arithmetic. A volume is a sequence of CHUNK_SIZE chunks; the last may be short.
import { VaultError } from '../errors';

export const CHUNK_SIZE = 4 * 1024 * 1024;

/** The largest volume: 256 TiB (64 Mi chunks; a manifest this size opens in ~2 s). Sizes up to
 *  2^53 were accepted, and a volume of petabytes then could not be opened or even listed. */
export const MAX_VOLUME_SIZE = 256 * 2 ** 40;

export function checkVolumeSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0) throw new VaultError('ERR_INVALID_ARGUMENT', 'volume size must be a positive number of bytes');
  if (size > MAX_VOLUME_SIZE) throw new VaultError('ERR_INVALID_ARGUMENT', `volume size ${size} is over the largest a volume may have, 256 TiB`);
}

/** One piece of a byte range that falls inside a single chunk. */
export interface ChunkSpan {
  readonly chunkIndex: number;
  /** offset inside the chunk */
  readonly chunkOffset: number;
  readonly length: number;
  /** offset of this piece inside the caller's range */
  readonly rangeOffset: number;
  /** length of this chunk (CHUNK_SIZE except for a short last chunk) */
  readonly chunkLength: number;
  /** the piece covers its whole chunk */
  readonly whole: boolean;
}

export function chunkCount(volumeSize: number, chunkSize = CHUNK_SIZE): number {
  return Math.ceil(volumeSize / chunkSize);
}

export function chunkLength(volumeSize: number, chunkIndex: number, chunkSize = CHUNK_SIZE): number {
  return Math.min(chunkSize, volumeSize - chunkIndex * chunkSize);
}

/** Split [offset, offset+length) into per-chunk spans. Assumes the range lies inside the volume. */
export function splitRange(offset: number, length: number, volumeSize: number, chunkSize = CHUNK_SIZE): ChunkSpan[] {
  const spans: ChunkSpan[] = [];
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const chunkIndex = Math.floor(pos / chunkSize);
    const chunkStart = chunkIndex * chunkSize;
    const len = chunkLength(volumeSize, chunkIndex, chunkSize);
    const chunkOffset = pos - chunkStart;
    const n = Math.min(end - pos, len - chunkOffset);
    spans.push({ chunkIndex, chunkOffset, length: n, rangeOffset: pos - offset, chunkLength: len, whole: chunkOffset === 0 && n === len });
    pos += n;
  }
  return spans;
}
