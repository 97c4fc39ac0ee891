// Copies into or out of shared memory at memcpy speed. V8's own copy (TypedArray#set) where
// either side is a SharedArrayBuffer goes with relaxed atomics: a word at a time where source and
// target are equally aligned (mod 8), else a byte at a time (2.8 against 17.6 GiB/s here). Bytes
// on their way from a client sit at any offset (28-byte request headers, a write's own offset),
// so their copies into shared chunk buffers would go a byte at a time. Node's Buffer#copy of a *range* of
// its source is a plain memmove (its native copy; only a copy of the whole source is handed to
// TypedArray#set), so copyBytes copies all but the last byte as a range, then that byte. No one
// else touches the shared bytes meanwhile (the codec's protocol), which is all memmove needs.

/** below this the native call costs more than it saves */
const NATIVE_ABOVE = 512;

/** target.set(source, at) at memmove speed where one side or both are shared. */
export function copyBytes(target: Uint8Array, at: number, source: Uint8Array): void {
  // set()'s own check, made first: a copy that does not fit writes nothing (Buffer#copy would
  // copy what fits)
  if (!(at >= 0 && at + source.length <= target.length)) throw new RangeError(`copyBytes: ${source.length} bytes at ${at} do not fit in ${target.length}`);
  const n = source.length;
  if (n < NATIVE_ABOVE || !(target.buffer instanceof SharedArrayBuffer || source.buffer instanceof SharedArrayBuffer)) {
    target.set(source, at);
    return;
  }
  const from = Buffer.isBuffer(source) ? source : Buffer.from(source.buffer, source.byteOffset, n);
  const last = from[n - 1]; // read first: the two may overlap
  from.copy(target, at, 0, n - 1);
  target[at + n - 1] = last;
}
