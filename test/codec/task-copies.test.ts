// Frames packed for a codec task (task-copies.ts): each starts 8-aligned, so V8 copies it into
// shared memory a word at a time (misaligned, it copies a byte at a time), and each view holds
// exactly its frame's bytes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { packedBytes, packedCopy, packInto } from '../../src/codec/task-copies';

test('packed frames start 8-aligned, hold their bytes, and fit in packedBytes', () => {
  const frames = [41_837, 1, 8, 0, 131_073, 7].map((n) => randomBytes(n));
  const backing = new Uint8Array(new SharedArrayBuffer(packedBytes(frames)));
  const views = packInto(frames, backing);
  views.forEach((v, i) => {
    assert.equal(v.byteOffset % 8, 0, `frame ${i} at ${v.byteOffset}`);
    assert.ok(Buffer.from(v.buffer, v.byteOffset, v.length).equals(frames[i]), `frame ${i} bytes`);
  });
  assert.equal(packedBytes(frames), [41_840, 8, 8, 0, 131_080, 8].reduce((a, b) => a + b));
  const own = packedCopy(frames);
  assert.ok(own.every((v, i) => v.buffer === own[0].buffer && Buffer.from(v).equals(frames[i])), 'one ArrayBuffer, every frame');
});
