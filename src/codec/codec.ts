// The Codec contract used by volume/: chunk bytes <-> sealed object bytes.
// seal() compresses (zstd) then encrypts (XChaCha20-Poly1305) with associated data from `place`.
// open() verifies before it decompresses; any failure throws VaultError ERR_AUTH_FAILED
// (tampered, moved, replayed, wrong key) or ERR_CORRUPT (not one of our objects at all),
// never returns wrong bytes. Heavy work runs in a worker pool (see codec/worker-pool.ts).
import type { SecretKey } from '../keys/secret-key';
import type { FrameKind, FramesPlace } from './framed-container';
import type { ObjectPlace } from './object-place';

export interface Codec {
  /** Returns null when `plaintext` is all zeros and place.kind === 'chunk' (store nothing). */
  seal(key: SecretKey, plaintext: Buffer, place: ObjectPlace): Promise<Buffer | null>;
  open(key: SecretKey, sealed: Buffer, place: ObjectPlace): Promise<Buffer>;
  /**
   * Format 2: seals frame f of `frames` as a sealed frame (version 2, kind, frame number f in the
   * AD; each compressed on its own) and returns the whole framed container (framed-container.ts).
   * One worker task per container. Always seals, zero frames too: callers skip all-zero chunks.
   * `into` (shared memory, as withContainerMemory lends): the container is written there when it
   * fits and returned as a view of that very buffer; else into fresh memory. A seal that fails
   * may leave `into` partly written.
   */
  sealFrames(key: SecretKey, kind: FrameKind, frames: Buffer[], place: FramesPlace, logicalLength: number, into?: Buffer): Promise<Buffer>;
  /**
   * Opens one sealed frame at `place` (kind chunk-frame or journal-frame, frame set). Its
   * plaintext must be `expectedLength` bytes, or with null at most FRAME_BYTES (journal frames).
   * `into` (shared memory of exactly `expectedLength` bytes): decoded there and returned (that
   * very object), or the call throws (what it held is then garbage).
   */
  openFrame(key: SecretKey, sealedFrame: Buffer, place: ObjectPlace, expectedLength: number | null, into?: Buffer): Promise<Buffer>;
  /** A whole v2 chunk container → the chunk (`chunkLength` bytes), every frame opened at its
   *  place, in one worker task. `what` names the object in errors. `into` (shared memory of
   *  `chunkLength` bytes): decoded there and returned (that very object), every byte written, or the call throws
   *  (what it held is then garbage: its content is not the chunk's). */
  openChunkContainer(key: SecretKey, container: Buffer, place: FramesPlace, chunkLength: number, what: string, into?: Buffer): Promise<Buffer>;
  /**
   * Lends memory (CONTAINER_MEMORY_BYTES) for a chunk container while `use` runs: to read a stored
   * one into (openChunkContainer reads it where it is: a worker reads shared memory; any other
   * container is copied for it), or to seal one into (sealFrames `into`). Nothing `use` returns
   * may be a view of the memory.
   */
  withContainerMemory<T>(use: (memory: Buffer) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}
