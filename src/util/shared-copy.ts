// Copies into or out of shared memory at memcpy speed. V8 copies where either side is a
// SharedArrayBuffer with relaxed atomics: a word at a time where source and target are equally
// aligned (mod 8), else a byte at a time, 7x slower (1.2 against 8.4 GiB/s on this machine).
// NBD write payloads are views of socket chunks at any offset (28-byte request headers), so their
// copies into shared chunk buffers go through a small bounce buffer placed at the shared side's
// alignment: a plain memcpy on one side of it, an equally aligned relaxed copy on the other.

const ALIGN = 8;
/** below this a byte-wise copy costs less than the second pass */
const BOUNCE_ABOVE = 512;
const BOUNCE_BYTES = 256 * 1024;
let bounce: Uint8Array | null = null;

/** target.set(source, at), a word at a time even where the two are not equally aligned (one
 *  side shared; where both are, V8's own copy). */
export function copyBytes(target: Uint8Array, at: number, source: Uint8Array): void {
  const targetShared = target.buffer instanceof SharedArrayBuffer;
  const sourceShared = source.buffer instanceof SharedArrayBuffer;
  // set()'s own check, made before the first piece: a copy that does not fit writes nothing
  if (!(at >= 0 && at + source.length <= target.length)) throw new RangeError(`copyBytes: ${source.length} bytes at ${at} do not fit in ${target.length}`);
  const targetAlign = (target.byteOffset + at) % ALIGN;
  const sourceAlign = source.byteOffset % ALIGN;
  if (targetShared === sourceShared || source.length < BOUNCE_ABOVE || sourceAlign === targetAlign) {
    target.set(source, at);
    return;
  }
  // the bounce sits at the shared side's alignment, so that side's copy goes a word at a time
  const shift = targetShared ? targetAlign : sourceAlign;
  bounce ??= new Uint8Array(BOUNCE_BYTES);
  const step = BOUNCE_BYTES - ALIGN; // a multiple of ALIGN: the alignment holds from piece to piece
  for (let done = 0; done < source.length; done += step) {
    const n = Math.min(step, source.length - done);
    bounce.set(source.subarray(done, done + n), shift);
    target.set(bounce.subarray(shift, shift + n), at + done);
  }
}
