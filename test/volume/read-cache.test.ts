// The read cache (lru-cache underneath): bounded in bytes, least recently used out first, a chunk
// bigger than the limit never kept, hits and misses counted.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReadCache } from '../../src/volume/read-cache';
import { MemoryBudget } from '../../src/util/memory-budget';

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

test('the stream area: chunks a stream read go once it has passed, the rest of the cache untouched; read again by a stream, kept', () => {
  const c = new ReadCache(100, undefined, 50);
  c.set('hot', Buffer.alloc(40, 7));
  for (let k = 0; k < 6; k++) c.setStreamed(`s${k}/*`, Buffer.alloc(20, k)); // 120 bytes through a 50-byte area
  assert.equal(c.get('hot')?.[0], 7, 'the working set survives the stream');
  assert.deepEqual([0, 1, 2, 3].map((k) => c.has(`s${k}/*`)), [false, false, false, false], 'what the stream passed is gone');
  assert.ok(c.isStreamed('s5/*') && c.get('s5/*')?.[0] === 5, 'the stream window is still there');
  assert.equal(c.sizeBytes, 40 + 40);
  c.setStreamed('s0/*', Buffer.alloc(20, 10)); // a second pass over s0: kept like any entry
  assert.equal(c.isStreamed('s0/*'), false);
  assert.equal(c.get('s0/*')?.[0], 10);
  c.set('s5/*', c.get('s5/*')!); // a random read of a streamed chunk keeps it: out of the area, into the cache
  assert.equal(c.isStreamed('s5/*'), false);
  assert.ok(c.has('s5/*'));
  // only what a read used counts as passed: readahead a stream never reached, or memory the
  // budget took back, does not make the next stream's chunk a keeper
  const d = new ReadCache(100, undefined, 40);
  d.setStreamed('ahead/*', Buffer.alloc(20), false);
  d.setStreamed('read/*', Buffer.alloc(20));
  d.setStreamed('n1/*', Buffer.alloc(20));
  d.setStreamed('n2/*', Buffer.alloc(20)); // both dropped
  d.setStreamed('ahead/*', Buffer.alloc(20));
  d.setStreamed('read/*', Buffer.alloc(20));
  assert.equal(d.isStreamed('ahead/*'), true, 'readahead nobody read: first use, in the area again');
  assert.equal(d.isStreamed('read/*'), false, 'read, dropped, read again: kept');
  const off = new ReadCache(0);
  off.setStreamed('x/*', Buffer.alloc(10));
  assert.equal(off.has('x/*'), false, 'a zero limit caches nothing, streams included');
});

test('the stream area holds its bytes of the memory budget, and gives them back first when asked', () => {
  const budget = new MemoryBudget(1000);
  const c = new ReadCache(500, budget, 200);
  c.set('frame', Buffer.alloc(100));
  c.setStreamed('chunk/*', Buffer.alloc(150));
  assert.equal(budget.usedBytes, 250);
  c.set('chunk/*', c.get('chunk/*')!); // moved into the cache: held once, not twice
  assert.equal(budget.usedBytes, 250);
  c.setStreamed('chunk2/*', Buffer.alloc(150));
  assert.equal(budget.usedBytes, 400);
  const release = budget.tryReserve(650); // 50 bytes more than is free: the stream area gives first
  assert.ok(release);
  assert.equal(c.has('chunk2/*'), false, 'the streamed chunk went');
  assert.ok(c.has('frame') && c.has('chunk/*'), 'the cache proper stayed');
  release();
  c.close();
  assert.equal(budget.usedBytes, 0);
  c.set('late', Buffer.alloc(100)); // a fetch that lands after the engine closed
  c.setStreamed('late/*', Buffer.alloc(100));
  assert.equal(budget.usedBytes, 0, 'a closed cache takes no budget');
  assert.equal(c.has('late') || c.has('late/*'), false, 'and keeps nothing');
});
