// Copies that make a codec task's inputs safe to transfer to a worker: each owns an exactly-sized
// ArrayBuffer, so structured clone and transfer never carry (or detach) unrelated memory.
import type { FramesPlace } from './framed-container';
import type { ObjectPlace } from './object-place';
import { copyBytes } from '../util/shared-copy';

/**
 * A copy that owns an exactly-sized ArrayBuffer. Structured clone of a Buffer view would copy its
 * whole backing store (for a small pooled Buffer: 8 KiB of unrelated, possibly secret, bytes).
 */
export function ownCopy(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/** All frames copied into one ArrayBuffer of packedBytes (transferred once), as views of it. */
export function packedCopy(frames: readonly Uint8Array[]): Uint8Array[] {
  return packInto(frames, new Uint8Array(packedBytes(frames)));
}

/** Each frame starts at a multiple of this: copies from aligned sources into shared staging go a
 *  word at a time without a bounce, and so do a worker's copies out of it (util/shared-copy.ts). */
const PACK_ALIGN = 8;

/** The bytes packInto needs for `frames` (each padded to PACK_ALIGN). */
export function packedBytes(frames: readonly Uint8Array[]): number {
  return frames.reduce((n, f) => n + alignUp(f.length), 0);
}

/** All frames copied into `backing` (at least packedBytes), each at an aligned offset, as views. */
export function packInto(frames: readonly Uint8Array[], backing: Uint8Array): Uint8Array[] {
  let at = 0;
  return frames.map((f) => {
    copyBytes(backing, at, f);
    const view = backing.subarray(at, at + f.length);
    at += alignUp(f.length);
    return view;
  });
}

function alignUp(n: number): number {
  return Math.ceil(n / PACK_ALIGN) * PACK_ALIGN;
}

export function framesPlaceCopy(place: FramesPlace): FramesPlace {
  return { index: place.index, generation: place.generation, vaultId: Buffer.from(ownCopy(place.vaultId).buffer), volumeId: Buffer.from(ownCopy(place.volumeId).buffer) };
}

export function placeCopy(place: ObjectPlace): ObjectPlace {
  return { ...place, vaultId: Buffer.from(ownCopy(place.vaultId).buffer), volumeId: Buffer.from(ownCopy(place.volumeId).buffer) };
}
