// One growable scratch buffer per thread, for the intermediate (compressed) bytes of seal/open,
// so a 4 MiB chunk does not allocate 4 MiB of garbage per call. Not re-entrant: the caller uses
// the returned view and is done with it before its next call (seal/open are synchronous).
let scratch = Buffer.alloc(0);

export function scratchBuffer(length: number): Buffer {
  if (scratch.length < length) scratch = Buffer.allocUnsafeSlow(length);
  return scratch.subarray(0, length);
}

/** A second per-thread scratch buffer, for the output that sealed frames are laid out in before
 *  the one exactly-sized copy (the first one holds each frame's compressed bytes meanwhile). */
let frameScratch = Buffer.alloc(0);

export function frameScratchBuffer(length: number): Buffer {
  if (frameScratch.length < length) frameScratch = Buffer.allocUnsafeSlow(length);
  return frameScratch.subarray(0, length);
}
