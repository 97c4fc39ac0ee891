// How hard a writer compresses each frame of a container. A reader needs none of this: zstd frames
// describe themselves, and the header's compressed flag says whether there is one (FORMAT.md,
// "Compression level"). Pure policy over lengths and one small sample: no keys, no I/O.
import { copyBytes } from '../util/shared-copy';
import { compressBound, compressInto } from './zstd-contexts';

/** zstd's fastest level that still compresses (`--fast=1`). */
export const POOR_DATA_ZSTD_LEVEL = -1;

/**
 * The zstd level of a container's next frame, from how the last one compressed. On data that
 * compresses poorly a higher level buys almost nothing for 2-3x the time (fio's write buffers:
 * 0.917 of their size at level 3 and at -1, 138 against 329 MB/s a core; 128 KiB frames of the
 * bench corpus that save less than 1/3 at level 3 save 90-95 % as much at -1), so:
 * - a frame at the configured level that saved less than 1/5 sends the next frame to
 *   POOR_DATA_ZSTD_LEVEL;
 * - a frame there that saved 1/3 or more sends the next back (the gap keeps data near a bar from
 *   flipping at every frame).
 * Each container starts at the configured level. The choice depends only on the last frame's
 * sealed length, which the container's header shows anyway: it tells the store nothing new.
 */
export function nextFrameLevel(level: number, configured: number, payloadBytes: number, plainBytes: number): number {
  if (configured <= POOR_DATA_ZSTD_LEVEL) return configured;
  const saved = plainBytes - payloadBytes;
  if (level === configured) return saved * 5 < plainBytes ? POOR_DATA_ZSTD_LEVEL : configured;
  return saved * 3 >= plainBytes ? configured : POOR_DATA_ZSTD_LEVEL;
}

/** A sample: this many pieces of PIECE_BYTES, spread evenly from the frame's start to its end. */
const SAMPLE_PIECES = 4;
const PIECE_BYTES = 4096;
const SAMPLE_BYTES = SAMPLE_PIECES * PIECE_BYTES;
let sample: Buffer | null = null;
let sampleOut: Buffer | null = null;

/**
 * Whether a frame with no history (a container's first) or at POOR_DATA_ZSTD_LEVEL is worth
 * compressing at all: a 16 KiB sample of it,
 * compressed at that level, must save 1/8 (ZFS's bar for storing a block compressed). Else the
 * frame is stored uncompressed and costs encryption alone: on fio's write buffers (a frame saves
 * ~7 % at -1, its sample ~6 %) zstd at -1 takes ~2 CPU-s per GiB, twice the XChaCha20-Poly1305
 * after it. The sample costs 1/8 of compressing the frame. The store sees whether a frame is
 * stored compressed (its header, its sealed length): of one stored as it is, it learns that the
 * sample did not compress, instead of the frame's compressed size (FORMAT.md).
 */
export function worthCompressing(frame: Uint8Array): boolean {
  if (frame.length <= SAMPLE_BYTES) return true;
  sample ??= Buffer.allocUnsafeSlow(SAMPLE_BYTES);
  sampleOut ??= Buffer.allocUnsafeSlow(compressBound(SAMPLE_BYTES));
  // a multiple of 8: an aligned frame's pieces copy out of shared memory a word at a time
  // without a bounce (util/shared-copy.ts)
  const stride = Math.floor((frame.length - PIECE_BYTES) / (SAMPLE_PIECES - 1) / 8) * 8;
  for (let p = 0; p < SAMPLE_PIECES; p++) copyBytes(sample, p * PIECE_BYTES, frame.subarray(p * stride, p * stride + PIECE_BYTES));
  const saved = SAMPLE_BYTES - compressInto(sampleOut, sample, POOR_DATA_ZSTD_LEVEL);
  return saved * 8 >= SAMPLE_BYTES;
}
