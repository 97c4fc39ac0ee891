// Is a buffer all zeros? Compares slices against one static zero buffer (memcmp speed, early exit
// on the first non-zero slice), so a 4 MiB data chunk costs microseconds on the calling thread.
const ZERO_SLICE = Buffer.alloc(64 * 1024);

export function isAllZero(buf: Uint8Array): boolean {
  for (let offset = 0; offset < buf.length; offset += ZERO_SLICE.length) {
    const end = Math.min(offset + ZERO_SLICE.length, buf.length);
    if (Buffer.compare(buf.subarray(offset, end), ZERO_SLICE.subarray(0, end - offset)) !== 0) return false;
  }
  return true;
}
