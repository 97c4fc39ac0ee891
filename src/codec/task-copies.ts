// Copies that make a codec task's inputs safe to transfer to a worker: each owns an exactly-sized
// ArrayBuffer, so structured clone and transfer never carry (or detach) unrelated memory.
import type { FramesPlace } from './framed-container';
import type { ObjectPlace } from './object-place';

/**
 * A copy that owns an exactly-sized ArrayBuffer. Structured clone of a Buffer view would copy its
 * whole backing store (for a small pooled Buffer: 8 KiB of unrelated, possibly secret, bytes).
 */
export function ownCopy(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/** All frames copied into one exactly-sized ArrayBuffer (transferred once), as views of it. */
export function packedCopy(frames: readonly Uint8Array[], total: number): Uint8Array[] {
  return packInto(frames, new Uint8Array(total));
}

/** All frames copied back to back into `backing` (at least their total size), as views of it. */
export function packInto(frames: readonly Uint8Array[], backing: Uint8Array): Uint8Array[] {
  let at = 0;
  return frames.map((f) => {
    backing.set(f, at);
    const view = backing.subarray(at, at + f.length);
    at += f.length;
    return view;
  });
}

export function framesPlaceCopy(place: FramesPlace): FramesPlace {
  return { index: place.index, generation: place.generation, vaultId: Buffer.from(ownCopy(place.vaultId).buffer), volumeId: Buffer.from(ownCopy(place.volumeId).buffer) };
}

export function placeCopy(place: ObjectPlace): ObjectPlace {
  return { ...place, vaultId: Buffer.from(ownCopy(place.vaultId).buffer), volumeId: Buffer.from(ownCopy(place.volumeId).buffer) };
}
