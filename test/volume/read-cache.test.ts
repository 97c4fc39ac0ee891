// The read cache (lru-cache underneath): bounded in bytes, least recently used out first, a chunk
// bigger than the limit never kept, hits and misses counted.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReadCache } from '../../src/volume/read-cache';

test('byte-bounded LRU with hit and miss counts', () => {
  const c = new ReadCache(100);
  c.set('f1', Buffer.alloc(40, 1));
  c.set('f2', Buffer.alloc(40, 2));
  assert.equal(c.sizeBytes, 80);
  assert.equal(c.get('f1')?.[0], 1); // 1 is now the most recent
  c.set('f3', Buffer.alloc(40, 3)); // 120 > 100: the least recent (2) goes
  assert.equal(c.has('f2'), false);
  assert.equal(c.has('f1'), true);
  assert.equal(c.has('f3'), true);
  assert.equal(c.sizeBytes, 80);
  assert.equal(c.get('f2'), undefined);
  assert.deepEqual([c.hits, c.misses], [1, 1]);
  c.set('f1', Buffer.alloc(60, 9)); // replacing re-counts its size
  assert.equal(c.sizeBytes, 100);
  c.set('f4', Buffer.alloc(101)); // bigger than the limit: not kept, nothing else evicted
  assert.equal(c.has('f4'), false);
  assert.equal(c.sizeBytes, 100);
  c.delete('f1');
  assert.equal(c.sizeBytes, 40);
});

test('a zero limit caches nothing', () => {
  const c = new ReadCache(0);
  c.set('f1', Buffer.alloc(10));
  assert.equal(c.get('f1'), undefined);
  assert.equal(c.sizeBytes, 0);
  assert.equal(c.misses, 1);
});
