// Short writes: write(2) may write less than asked without an error (a filesystem filling up).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeAll, writevAll } from '../../src/util/write-all';

/** A file handle whose writes write at most `cap` bytes each, as a filling filesystem's may. */
function capped(fh: FileHandle, cap: number): FileHandle {
  return {
    write: (buf: Uint8Array, off: number, len: number, pos: number) => fh.write(buf, off, Math.min(len, cap), pos),
    writev: async (bufs: Uint8Array[], pos: number) => {
      const all = Buffer.concat(bufs);
      return fh.write(all, 0, Math.min(all.length, cap), pos).then(({ bytesWritten }) => ({ bytesWritten, buffers: bufs }));
    },
  } as unknown as FileHandle;
}

test('writevAll and writeAll go on after short writes until every byte is at its place', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nbdv-write-all-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const parts = [randomBytes(7), randomBytes(32), randomBytes(100_000)];
  for (const cap of [1, 5, 7, 20, 39, 4096, 1 << 20]) {
    const file = join(dir, `f${cap}`);
    const fh = await open(file, 'w+');
    await writevAll(capped(fh, cap), parts, 3); // 3 bytes of hole first
    await writeAll(capped(fh, cap), Buffer.from('tail'), 3 + 100_039);
    await fh.close();
    assert.ok(readFileSync(file).equals(Buffer.concat([Buffer.alloc(3), ...parts, Buffer.from('tail')])), `writes capped at ${cap} bytes`);
  }
});

test('a write that writes nothing fails instead of looping or passing', async () => {
  const none = { write: async () => ({ bytesWritten: 0 }), writev: async () => ({ bytesWritten: 0 }) } as unknown as FileHandle;
  await assert.rejects(writevAll(none, [Buffer.alloc(10)], 0), /short write: 0 of 10 bytes/);
});
