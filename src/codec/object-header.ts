// Reads and writes the fixed 36-byte header at the front of every sealed object
// (layout: format.ts, docs/FORMAT.md). Parsing checks only what can be checked before
// authentication (size, magic, version); every other field is trusted only after the AEAD verifies.
import { VaultError } from '../errors';
import {
  FORMAT_VERSION,
  FRAME_FORMAT_VERSION,
  FRAME_KINDS,
  KIND_CODES,
  NONCE_BYTES,
  OBJECT_MAGIC,
  OFFSET_FLAGS,
  OFFSET_KIND,
  OFFSET_MAGIC,
  OFFSET_NONCE,
  OFFSET_PLAINTEXT_LENGTH,
  OFFSET_RESERVED,
  OFFSET_VERSION,
  SEAL_OVERHEAD_BYTES,
} from './format';
import type { ObjectKind } from './object-place';

export interface ObjectHeader {
  kindCode: number;
  flags: number;
  reserved: number;
  plaintextLength: number;
  nonce: Buffer;
}

export function writeHeader(out: Buffer, kind: ObjectKind, flags: number, plaintextLength: number, nonce: Uint8Array): void {
  OBJECT_MAGIC.copy(out, OFFSET_MAGIC);
  out.writeUInt8(versionOfKind(kind), OFFSET_VERSION);
  out.writeUInt8(KIND_CODES[kind], OFFSET_KIND);
  out.writeUInt8(flags, OFFSET_FLAGS);
  out.writeUInt8(0, OFFSET_RESERVED);
  out.writeUInt32LE(plaintextLength, OFFSET_PLAINTEXT_LENGTH);
  out.set(nonce, OFFSET_NONCE);
}

/** Frames are sealed as version 2 (frame number in the AD), every other kind as version 1. */
export function versionOfKind(kind: ObjectKind): number {
  return FRAME_KINDS.has(kind) ? FRAME_FORMAT_VERSION : FORMAT_VERSION;
}

/** Throws ERR_CORRUPT for anything that is not a sealed object of `version` (1: whole object,
 *  2: sealed frame): a v1 object never opens as a frame, nor a frame as a v1 object. */
export function parseHeader(sealed: Buffer, what: string, version: number = FORMAT_VERSION): ObjectHeader {
  if (sealed.length < SEAL_OVERHEAD_BYTES) {
    throw new VaultError('ERR_CORRUPT', `${what}: truncated object (${sealed.length} bytes, at least ${SEAL_OVERHEAD_BYTES} expected)`);
  }
  if (!sealed.subarray(OFFSET_MAGIC, OFFSET_MAGIC + OBJECT_MAGIC.length).equals(OBJECT_MAGIC)) {
    throw new VaultError('ERR_CORRUPT', `${what}: not an nbd-vault object (bad magic)`);
  }
  const stored = sealed.readUInt8(OFFSET_VERSION);
  if (stored !== version) {
    const expected = version === FORMAT_VERSION ? 'a whole sealed object (version 1)' : 'a sealed frame (version 2)';
    const known = stored === FORMAT_VERSION || stored === FRAME_FORMAT_VERSION;
    throw new VaultError('ERR_CORRUPT', known ? `${what}: object format version ${stored} where ${expected} belongs` : `${what}: unsupported object format version ${stored} (this build reads 1 and 2)`);
  }
  return {
    kindCode: sealed.readUInt8(OFFSET_KIND),
    flags: sealed.readUInt8(OFFSET_FLAGS),
    reserved: sealed.readUInt8(OFFSET_RESERVED),
    plaintextLength: sealed.readUInt32LE(OFFSET_PLAINTEXT_LENGTH),
    nonce: sealed.subarray(OFFSET_NONCE, OFFSET_NONCE + NONCE_BYTES),
  };
}

export function kindName(code: number): string {
  const entry = Object.entries(KIND_CODES).find(([, c]) => c === code);
  return entry ? entry[0] : `unknown kind ${code}`;
}
