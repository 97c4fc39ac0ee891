import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChunkBufferPool } from '../../src/volume/chunk-buffer-pool';

test('recycled chunk buffers come back zeroed or as a copy, only on a later macrotask, bounded', async () => {
  const pool = new ChunkBufferPool(1024, 2);
  const a = pool.take(1024);
  assert.ok(a.buffer instanceof SharedArrayBuffer && a.every((b) => b === 0));
  a.fill(7);
  pool.give(a);
  assert.equal(pool.size, 0, 'not reusable within the same microtask checkpoint');
  assert.notEqual(pool.take(1024), a);
  await new Promise((r) => setImmediate(r));
  assert.equal(pool.size, 1);
  const b = pool.take(1024);
  assert.equal(b, a, 'the same memory is reused');
  assert.ok(b.every((x) => x === 0), 'and zero-filled');
  pool.give(b);
  await new Promise((r) => setImmediate(r));
  const c = pool.take(1024, Buffer.alloc(1024, 9));
  assert.ok(c.every((x) => x === 9), 'or a copy of the source');
  for (let k = 0; k < 5; k++) pool.give(pool.take(1024));
  pool.give(Buffer.alloc(1024)); // not shared memory: never pooled
  pool.give(pool.take(100)); // a short last chunk: never pooled
  await new Promise((r) => setImmediate(r));
  assert.ok(pool.size <= 2, 'bounded');
});
