// copyIntoShared: the bytes land where a plain copy puts them, whatever the alignment of source
// and target, on either side of the staging threshold and of the scratch buffer's size.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyIntoShared } from '../../src/util/shared-copy';

test('copies into shared memory at every alignment and length, touching nothing else', () => {
  const src = randomBytes(700 * 1024);
  for (const len of [0, 1, 255, 256, 4096, 256 * 1024, 256 * 1024 + 3, 600 * 1024]) {
    for (const srcOff of [0, 3, 4, 28]) {
      for (const at of [0, 1, 4, 8]) {
        const target = Buffer.from(new SharedArrayBuffer(len + 32)).fill(0xa5);
        const view = target.subarray(5);
        copyIntoShared(view, at, src.subarray(srcOff, srcOff + len));
        const expected = Buffer.alloc(len + 32, 0xa5);
        src.copy(expected, 5 + at, srcOff, srcOff + len);
        assert.ok(target.equals(expected), `len ${len}, source offset ${srcOff}, at ${at}`);
      }
    }
  }
});
