// The read cache (lru-cache underneath): bounded in bytes, least recently used out first, a chunk
// bigger than the limit never kept, hits and misses counted.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReadCache } from '../../src/volume/read-cache';

test('byte-bounded LRU with hit and miss counts', () => {
  const c = new ReadCache(100);
  c.set(1, Buffer.alloc(40, 1));
  c.set(2, Buffer.alloc(40, 2));
  assert.equal(c.sizeBytes, 80);
  assert.equal(c.get(1)?.[0], 1); // 1 is now the most recent
  c.set(3, Buffer.alloc(40, 3)); // 120 > 100: the least recent (2) goes
  assert.equal(c.has(2), false);
  assert.equal(c.has(1), true);
  assert.equal(c.has(3), true);
  assert.equal(c.sizeBytes, 80);
  assert.equal(c.get(2), undefined);
  assert.deepEqual([c.hits, c.misses], [1, 1]);
  c.set(1, Buffer.alloc(60, 9)); // replacing re-counts its size
  assert.equal(c.sizeBytes, 100);
  c.set(4, Buffer.alloc(101)); // bigger than the limit: not kept, nothing else evicted
  assert.equal(c.has(4), false);
  assert.equal(c.sizeBytes, 100);
  c.delete(1);
  assert.equal(c.sizeBytes, 40);
});

test('a zero limit caches nothing', () => {
  const c = new ReadCache(0);
  c.set(1, Buffer.alloc(10));
  assert.equal(c.get(1), undefined);
  assert.equal(c.sizeBytes, 0);
  assert.equal(c.misses, 1);
});
