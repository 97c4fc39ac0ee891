// The Codec contract used by volume/: chunk bytes <-> sealed object bytes.
// seal() compresses (zstd) then encrypts (XChaCha20-Poly1305) with associated data from `place`.
// open() verifies before it decompresses; any failure throws VaultError ERR_AUTH_FAILED
// (tampered, moved, replayed, wrong key) or ERR_CORRUPT (not one of our objects at all),
// never returns wrong bytes. Heavy work runs in a worker pool (see codec/worker-pool.ts).
import type { SecretKey } from '../keys/secret-key';
import type { ObjectPlace } from './object-place';

export interface Codec {
  /** Returns null when `plaintext` is all zeros and place.kind === 'chunk' (store nothing). */
  seal(key: SecretKey, plaintext: Buffer, place: ObjectPlace): Promise<Buffer | null>;
  open(key: SecretKey, sealed: Buffer, place: ObjectPlace): Promise<Buffer>;
  close(): Promise<void>;
}
