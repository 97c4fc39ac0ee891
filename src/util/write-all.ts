// Positional file writes that write everything or fail. A write(2) may write less than asked
// without an error, typically when the filesystem fills up: Node's FileHandle.write and writev
// return that count and do not go on. Unchecked, the fs store once stored a truncated chunk object
// on a full disk, and a root committed it.
import type { FileHandle } from 'node:fs/promises';

/** Write all of `buf` at `position`; a write that writes nothing fails. */
export async function writeAll(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten === 0) throw Object.assign(new Error(`short write: ${done} of ${buf.length} bytes written (is the filesystem full?)`), { code: 'EIO' });
    done += bytesWritten;
  }
}

/** Write `bufs` back to back at `position`: one writev, and the rest one write at a time after a
 *  short one (the next write then fails with the cause, ENOSPC say, if nothing fits). */
export async function writevAll(fh: FileHandle, bufs: readonly Uint8Array[], position: number): Promise<void> {
  const { bytesWritten } = await fh.writev(bufs as Uint8Array[], position);
  let at = 0;
  for (const b of bufs) {
    const end = at + b.length;
    if (bytesWritten < end) await writeAll(fh, b.subarray(Math.max(0, bytesWritten - at)), position + Math.max(bytesWritten, at));
    at = end;
  }
}
