// The AEAD associated data of a sealed object: its header as stored, then the place it belongs
// to. Built from the place the *reader expects*, so an object moved to another vault, volume,
// kind, index or generation fails authentication. Layout: format.ts (AD_BYTES), docs/FORMAT.md.
import { BugError } from '../errors';
import { AD_BYTES, FRAME_AD_BYTES, FRAME_KINDS, HEADER_BYTES, ID_BYTES, KIND_CODES } from './format';
import type { ObjectPlace } from './object-place';

const TWO_POW_32 = 2 ** 32;

export function assertValidPlace(place: ObjectPlace): void {
  if (place.vaultId?.length !== ID_BYTES) throw new BugError(`place.vaultId must be ${ID_BYTES} bytes`);
  if (place.volumeId?.length !== ID_BYTES) throw new BugError(`place.volumeId must be ${ID_BYTES} bytes`);
  if (KIND_CODES[place.kind] === undefined) throw new BugError(`unknown object kind ${String(place.kind)}`);
  for (const field of ['index', 'generation'] as const) {
    const n = place[field];
    if (!Number.isSafeInteger(n) || n < 0) throw new BugError(`place.${field} must be a safe non-negative integer`);
  }
  if (FRAME_KINDS.has(place.kind)) {
    const f = place.frame;
    if (!Number.isInteger(f) || f! < 0 || f! > 0xffffffff) throw new BugError(`place.frame must be a u32 for kind ${place.kind}`);
  } else if (place.frame !== undefined) {
    throw new BugError(`place.frame is only for frame kinds, not ${place.kind}`);
  }
}

function writeU64LE(buf: Buffer, value: number, offset: number): void {
  buf.writeUInt32LE(value % TWO_POW_32, offset);
  buf.writeUInt32LE(Math.floor(value / TWO_POW_32), offset + 4);
}

/** The v1 AD (85 bytes); for a frame kind, followed by the frame number u32 (89 bytes). */
export function buildAssociatedData(header: Uint8Array, place: ObjectPlace): Buffer {
  const framed = FRAME_KINDS.has(place.kind);
  const ad = Buffer.allocUnsafe(framed ? FRAME_AD_BYTES : AD_BYTES);
  ad.set(header.subarray(0, HEADER_BYTES), 0);
  let at = HEADER_BYTES;
  ad.set(place.vaultId, at);
  at += ID_BYTES;
  ad.set(place.volumeId, at);
  at += ID_BYTES;
  ad.writeUInt8(KIND_CODES[place.kind], at);
  at += 1;
  writeU64LE(ad, place.index, at);
  writeU64LE(ad, place.generation, at + 8);
  if (framed) ad.writeUInt32LE(place.frame!, at + 16);
  return ad;
}

/** For error messages: which object, never any key material. */
export function describePlace(place: ObjectPlace): string {
  const volume = Buffer.from(place.volumeId).toString('hex').slice(0, 8);
  const frame = place.frame === undefined ? '' : ` frame ${place.frame}`;
  return `${place.kind} ${place.index} gen ${place.generation}${frame} of volume ${volume}…`;
}
