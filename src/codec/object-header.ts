// Reads and writes the fixed 36-byte header at the front of every sealed object
// (layout: format.ts, docs/FORMAT.md). Parsing checks only what can be checked before
// authentication (size, magic, version); every other field is trusted only after the AEAD verifies.
import { VaultError } from '../errors';
import {
  FORMAT_VERSION,
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
  out.writeUInt8(FORMAT_VERSION, OFFSET_VERSION);
  out.writeUInt8(KIND_CODES[kind], OFFSET_KIND);
  out.writeUInt8(flags, OFFSET_FLAGS);
  out.writeUInt8(0, OFFSET_RESERVED);
  out.writeUInt32LE(plaintextLength, OFFSET_PLAINTEXT_LENGTH);
  out.set(nonce, OFFSET_NONCE);
}

/** Throws ERR_CORRUPT for anything that is not a version-1 nbd-vault object. */
export function parseHeader(sealed: Buffer, what: string): ObjectHeader {
  if (sealed.length < SEAL_OVERHEAD_BYTES) {
    throw new VaultError('ERR_CORRUPT', `${what}: truncated object (${sealed.length} bytes, at least ${SEAL_OVERHEAD_BYTES} expected)`);
  }
  if (!sealed.subarray(OFFSET_MAGIC, OFFSET_MAGIC + OBJECT_MAGIC.length).equals(OBJECT_MAGIC)) {
    throw new VaultError('ERR_CORRUPT', `${what}: not an nbd-vault object (bad magic)`);
  }
  const version = sealed.readUInt8(OFFSET_VERSION);
  if (version !== FORMAT_VERSION) {
    throw new VaultError('ERR_CORRUPT', `${what}: unsupported object format version ${version} (this build reads ${FORMAT_VERSION})`);
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
