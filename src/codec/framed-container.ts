// Format 2's framed container: the object bytes of a v2 chunk (NBVC) and of a write journal
// (NBVJ). A small unauthenticated header says where each sealed frame lies; every frame
// authenticates its own place, number, kind and length, so the header can only misdirect a reader
// into an authentication failure, never into wrong bytes or zeros (docs/FORMAT.md, "Format
// version 2"). parseFramedHeader is pure, strict and bounded: it allocates nothing from a length
// it has not bounded first.
import { BugError, VaultError } from '../errors';
import {
  CHUNK_CONTAINER_MAGIC,
  CONTAINER_OFFSET_FRAME_COUNT,
  CONTAINER_OFFSET_LOGICAL_LENGTH,
  CONTAINER_OFFSET_RESERVED,
  CONTAINER_OFFSET_VERSION,
  CONTAINER_VERSION,
  FRAME_BYTES,
  FRAMED_HEADER_FIXED_BYTES,
  JOURNAL_CONTAINER_MAGIC,
  MAX_CHUNK_FRAMES,
  MAX_JOURNAL_FRAMES,
  MAX_SEALED_FRAME_BYTES,
  MIN_SEALED_FRAME_BYTES,
  OBJECT_MAGIC,
  SEAL_OVERHEAD_BYTES,
} from './format';
import type { ObjectPlace } from './object-place';
import { openObject } from './open-object';
import { asBuffer, sealObjectInto, sealUncompressedInto, sealedBound } from './seal-object';
import { POOR_DATA_ZSTD_LEVEL, nextFrameLevel, worthCompressing } from './frame-compression';
import { frameScratchBuffer } from './scratch-buffer';

export type ContainerMagic = 'chunk' | 'journal';
export type FrameKind = 'chunk-frame' | 'journal-frame';

/** Where frames go: the container's place; each frame adds its kind and number. */
export interface FramesPlace {
  readonly vaultId: Buffer;
  readonly volumeId: Buffer;
  readonly index: number;
  readonly generation: number;
}

export interface FramedHeader {
  readonly logicalLength: number;
  readonly frameCount: number;
  /** byte offset of each sealed frame within the object */
  readonly frameOffsets: number[];
  readonly frameLengths: number[];
  readonly headerBytes: number;
}

/**
 * The prefix handed to parseFramedHeader is too short to hold the header: fetch `needBytes` from
 * the object's start and parse again. An ERR_CORRUPT (a caller that cannot fetch more has a
 * truncated object).
 */
export class FramedHeaderIncomplete extends VaultError {
  constructor(
    readonly needBytes: number,
    what: string,
    have: number,
  ) {
    super('ERR_CORRUPT', `${what}: the container header needs ${needBytes} bytes, have ${have}`);
    this.name = 'FramedHeaderIncomplete';
  }
}

/** What the first 4 bytes of a stored object say it is: v1 sealed object, v2 chunk, journal. */
export function objectFormatOf(bytes: Buffer): 'v1' | 'chunk' | 'journal' | null {
  if (bytes.length < 4) return null;
  const head = bytes.subarray(0, 4);
  if (head.equals(OBJECT_MAGIC)) return 'v1';
  if (head.equals(CHUNK_CONTAINER_MAGIC)) return 'chunk';
  if (head.equals(JOURNAL_CONTAINER_MAGIC)) return 'journal';
  return null;
}

/**
 * Parses a container header from `bytes` (the object or a prefix of it). Throws ERR_CORRUPT naming
 * `what` for anything out of bounds; FramedHeaderIncomplete (also ERR_CORRUPT) when `bytes` is a
 * too-short prefix of an object that may be longer. With `objectSize`, the header plus the frame
 * lengths must add up to exactly that size.
 */
export function parseFramedHeader(bytes: Buffer, magic: ContainerMagic, what: string, objectSize?: number): FramedHeader {
  const corrupt = (why: string) => new VaultError('ERR_CORRUPT', `${what}: ${why}`);
  const need = (n: number) =>
    objectSize !== undefined && objectSize < n ? corrupt(`truncated container (${objectSize} bytes, the header needs ${n})`) : new FramedHeaderIncomplete(n, what, bytes.length);
  if (bytes.length < 4) throw need(FRAMED_HEADER_FIXED_BYTES);
  const found = objectFormatOf(bytes);
  if (found !== magic) {
    if (found === 'v1') throw corrupt(`a version-1 sealed object where a ${magic} container belongs`);
    if (found !== null) throw corrupt(`a ${found} container where a ${magic} container belongs`);
    throw corrupt('not an nbd-vault container (bad magic)');
  }
  if (bytes.length < FRAMED_HEADER_FIXED_BYTES) throw need(FRAMED_HEADER_FIXED_BYTES);
  const version = bytes.readUInt8(CONTAINER_OFFSET_VERSION);
  if (version !== CONTAINER_VERSION) throw corrupt(`unsupported container version ${version}`);
  if (bytes.readUIntLE(CONTAINER_OFFSET_RESERVED, 3) !== 0) throw corrupt('reserved container header bytes are not zero');
  const logicalLength = bytes.readUInt32LE(CONTAINER_OFFSET_LOGICAL_LENGTH);
  const frameCount = bytes.readUInt32LE(CONTAINER_OFFSET_FRAME_COUNT);
  if (magic === 'chunk') {
    if (logicalLength < 1 || logicalLength > MAX_CHUNK_FRAMES * FRAME_BYTES) throw corrupt(`chunk length ${logicalLength} out of range`);
    if (frameCount !== Math.ceil(logicalLength / FRAME_BYTES)) throw corrupt(`${frameCount} frames for a chunk of ${logicalLength} bytes`);
  } else {
    if (frameCount < 1 || frameCount > MAX_JOURNAL_FRAMES) throw corrupt(`journal frame count ${frameCount} out of range (1..${MAX_JOURNAL_FRAMES})`);
    if (logicalLength > frameCount * FRAME_BYTES) throw corrupt(`journal length ${logicalLength} exceeds ${frameCount} frames`);
  }
  const headerBytes = FRAMED_HEADER_FIXED_BYTES + 4 * frameCount;
  if (bytes.length < headerBytes) throw need(headerBytes);
  const frameOffsets: number[] = new Array(frameCount);
  const frameLengths: number[] = new Array(frameCount);
  let at = headerBytes;
  for (let f = 0; f < frameCount; f++) {
    const length = bytes.readUInt32LE(FRAMED_HEADER_FIXED_BYTES + 4 * f);
    if (length < MIN_SEALED_FRAME_BYTES || length > MAX_SEALED_FRAME_BYTES) {
      throw corrupt(`frame ${f} has a sealed length of ${length} bytes (${MIN_SEALED_FRAME_BYTES}..${MAX_SEALED_FRAME_BYTES})`);
    }
    frameOffsets[f] = at;
    frameLengths[f] = length;
    at += length;
  }
  if (objectSize !== undefined && at !== objectSize) throw corrupt(`header and frames add up to ${at} bytes, the object has ${objectSize}`);
  return { logicalLength, frameCount, frameOffsets, frameLengths, headerBytes };
}

/** The logical length of frame `f` of a chunk of `chunkLength` bytes. */
export function chunkFrameLength(chunkLength: number, f: number): number {
  return Math.min(FRAME_BYTES, chunkLength - f * FRAME_BYTES);
}

function checkFrames(kind: FrameKind, frames: readonly Uint8Array[], logicalLength: number): void {
  const total = frames.reduce((n, fr) => n + fr.length, 0);
  if (total !== logicalLength) throw new BugError(`frames hold ${total} bytes, logical length is ${logicalLength}`);
  if (kind === 'chunk-frame') {
    if (logicalLength < 1 || frames.length !== Math.ceil(logicalLength / FRAME_BYTES) || frames.length > MAX_CHUNK_FRAMES) {
      throw new BugError(`${frames.length} frames for a chunk of ${logicalLength} bytes`);
    }
    frames.forEach((fr, f) => {
      if (fr.length !== chunkFrameLength(logicalLength, f)) throw new BugError(`chunk frame ${f} is ${fr.length} bytes, expected ${chunkFrameLength(logicalLength, f)}`);
    });
  } else {
    if (frames.length < 1 || frames.length > MAX_JOURNAL_FRAMES) throw new BugError(`a journal has 1..${MAX_JOURNAL_FRAMES} frames, not ${frames.length}`);
    frames.forEach((fr, f) => {
      if (fr.length > FRAME_BYTES) throw new BugError(`journal frame ${f} is ${fr.length} bytes (max ${FRAME_BYTES})`);
    });
  }
}

/**
 * Seals every frame (frame f with frame number f in its AD, each compressed on its own) and lays
 * them out as one container. Synchronous: a worker runs it for a whole chunk in one task.
 * `nonces` is a test hook for known-answer vectors only. `into`: the container is written there
 * when it fits (a view of it is returned), else into fresh memory of its own.
 */
export function sealFramesSync(
  keyBytes: Uint8Array,
  kind: FrameKind,
  frames: readonly Uint8Array[],
  place: FramesPlace,
  logicalLength: number,
  zstdLevel: number,
  nonces?: readonly Uint8Array[],
  into?: Uint8Array,
): Buffer {
  checkFrames(kind, frames, logicalLength);
  // Frames are sealed one after the other laid out as the container: straight into `into` when
  // the largest container fits there, else into a per-thread scratch copied once into the
  // exactly-sized result (one allocation per container, not per frame).
  const headerBytes = FRAMED_HEADER_FIXED_BYTES + 4 * frames.length;
  const bound = headerBytes + frames.reduce((n, fr) => n + sealedBound(fr.length), 0);
  // (never when a frame is a view of `into`: a frame sealed early would overwrite a later one)
  const direct = into !== undefined && into.length >= bound && frames.every((fr) => fr.buffer !== into.buffer);
  const scratch = direct ? asBuffer(into) : frameScratchBuffer(bound);
  const sealedLengths: number[] = new Array(frames.length);
  let total = headerBytes;
  let level = zstdLevel;
  for (let f = 0; f < frames.length; f++) {
    const framePlace: ObjectPlace = { vaultId: place.vaultId, volumeId: place.volumeId, kind, index: place.index, generation: place.generation, frame: f };
    // with no history yet (a container's first frame) or after a frame that compressed poorly,
    // one whose sample does not compress is stored as it is
    const sampled = zstdLevel > POOR_DATA_ZSTD_LEVEL && (f === 0 || level === POOR_DATA_ZSTD_LEVEL);
    sealedLengths[f] =
      sampled && !worthCompressing(frames[f])
        ? sealUncompressedInto(scratch.subarray(total), keyBytes, frames[f], framePlace, nonces?.[f])
        : sealObjectInto(scratch.subarray(total), keyBytes, frames[f], framePlace, level, nonces?.[f]);
    total += sealedLengths[f];
    level = nextFrameLevel(level, zstdLevel, sealedLengths[f] - SEAL_OVERHEAD_BYTES, frames[f].length);
  }
  // Exactly sized and owning its ArrayBuffer (safe to transfer from a worker), or the caller's.
  const out = direct ? scratch.subarray(0, total) : into && total <= into.length ? asBuffer(into).subarray(0, total) : Buffer.allocUnsafeSlow(total);
  (kind === 'chunk-frame' ? CHUNK_CONTAINER_MAGIC : JOURNAL_CONTAINER_MAGIC).copy(out, 0);
  out.writeUInt8(CONTAINER_VERSION, CONTAINER_OFFSET_VERSION);
  out.writeUIntLE(0, CONTAINER_OFFSET_RESERVED, 3);
  out.writeUInt32LE(logicalLength, CONTAINER_OFFSET_LOGICAL_LENGTH);
  out.writeUInt32LE(frames.length, CONTAINER_OFFSET_FRAME_COUNT);
  let at = FRAMED_HEADER_FIXED_BYTES + 4 * frames.length;
  for (let f = 0; f < frames.length; f++) out.writeUInt32LE(sealedLengths[f], FRAMED_HEADER_FIXED_BYTES + 4 * f);
  if (!direct) scratch.copy(out, at, at, total);
  return out;
}

/**
 * Opens one sealed frame at its expected place (kind and frame number set) and checks its length:
 * `expectedLength` bytes exactly, or with null (journal frames, whose lengths the reader learns
 * only from them) at most FRAME_BYTES.
 */
export function openFrameSync(keyBytes: Uint8Array, sealedFrame: Uint8Array, place: ObjectPlace, expectedLength: number | null, into?: Uint8Array): Buffer {
  assertFramePlace(place);
  if (into && into.length !== expectedLength) throw new BugError(`openFrame: a ${into.length}-byte buffer for a frame of ${expectedLength ?? 'unknown length'}`);
  return checkFrameLength(openObject(keyBytes, sealedFrame, place, into && asBuffer(into)), place, expectedLength);
}

/**
 * Opens a whole chunk container in one go (one worker task, not 32): parses its header against
 * the container's size and the chunk length, opens every frame at its place, and returns the
 * chunk. Same checks as parseFramedHeader + openFrameSync for each frame.
 */
export function openChunkContainerSync(keyBytes: Uint8Array, containerBytes: Uint8Array, place: FramesPlace, chunkLength: number, what: string, into?: Uint8Array): Buffer {
  const container = asBuffer(containerBytes);
  const header = parseFramedHeader(container, 'chunk', what, container.length);
  if (header.logicalLength !== chunkLength) throw new VaultError('ERR_CORRUPT', `${what}: holds a chunk of ${header.logicalLength} bytes, expected ${chunkLength}`);
  if (into && into.length !== chunkLength) throw new BugError(`openChunkContainer: a ${into.length}-byte buffer for a ${chunkLength}-byte chunk`);
  // every byte of out is written (frames cover the chunk: parseFramedHeader) or this throws
  const out = into ? asBuffer(into) : Buffer.allocUnsafeSlow(chunkLength);
  for (let f = 0; f < header.frameCount; f++) {
    const sealed = container.subarray(header.frameOffsets[f], header.frameOffsets[f] + header.frameLengths[f]);
    const framePlace: ObjectPlace = { vaultId: place.vaultId, volumeId: place.volumeId, kind: 'chunk-frame', index: place.index, generation: place.generation, frame: f };
    openObject(keyBytes, sealed, framePlace, out.subarray(f * FRAME_BYTES, f * FRAME_BYTES + chunkFrameLength(chunkLength, f)));
  }
  return out;
}

export function assertFramePlace(place: ObjectPlace): void {
  if ((place.kind !== 'chunk-frame' && place.kind !== 'journal-frame') || place.frame === undefined) {
    throw new BugError(`openFrame needs a frame place (kind chunk-frame or journal-frame, frame set), got ${place.kind}`);
  }
}

export function checkFrameLength(plain: Buffer, place: ObjectPlace, expectedLength: number | null): Buffer {
  const ok = expectedLength === null ? plain.length <= FRAME_BYTES : plain.length === expectedLength;
  if (!ok) {
    const expected = expectedLength === null ? `at most ${FRAME_BYTES}` : String(expectedLength);
    throw new VaultError('ERR_CORRUPT', `${place.kind} ${place.frame} has ${plain.length} bytes, expected ${expected}`);
  }
  return plain;
}
