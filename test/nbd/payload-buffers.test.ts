// Recycled WRITE payload memory (payload-buffers.ts). What must hold: one owner at a time (a
// payload given back twice, or memory the pool never lent, is never lent again); a payload is a
// view of exactly the length asked; free memory kept stays under KEPT_BYTES and goes after an idle
// spell; payloads above MAX_CLASS_BYTES are never kept.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { KEPT_BYTES, MAX_CLASS_BYTES, PayloadBuffers } from '../../src/nbd/payload-buffers';
import { MemoryBudget } from '../../src/util/memory-budget';

test('payload buffers: one owner at a time, reused by size class', () => {
  const pool = new PayloadBuffers();
  const a = pool.take(5000);
  assert.equal(a.length, 5000);
  pool.give(a);
  pool.give(a); // twice: kept once
  pool.give(Buffer.alloc(8192)); // never lent
  pool.give(null);
  assert.equal(pool.kept, 8192);
  const b = pool.take(6000); // same class (8 KiB): a's memory
  const c = pool.take(7000); // nothing kept any more: new memory
  assert.equal(b.buffer, a.buffer);
  assert.notEqual(c.buffer, a.buffer, 'a payload given back twice is lent once');
  assert.equal(pool.kept, 0);
  pool.give(b.subarray(1)); // not the payload as lent
  assert.equal(pool.kept, 0);
  const d = pool.take(100_000); // another class
  assert.notEqual(d.buffer, b.buffer);
  assert.equal(d.length, 100_000);
});

test('payload buffers: a full pool makes room for the class given back now', () => {
  const pool = new PayloadBuffers();
  // a random-write phase fills the pool with 4 KiB buffers
  const small = Array.from({ length: KEPT_BYTES / 4096 + 10 }, () => pool.take(4096));
  for (const p of small) pool.give(p);
  assert.equal(pool.kept, KEPT_BYTES);
  // then a stream of 1 MiB writes: its buffers are kept, the 4 KiB ones make room
  const big = Array.from({ length: 4 }, () => pool.take(1 << 20));
  for (const p of big) pool.give(p);
  const again = Array.from({ length: 4 }, () => pool.take(1 << 20));
  assert.deepEqual(new Set(again.map((b) => b.buffer)), new Set(big.map((b) => b.buffer)), 'the 1 MiB buffers were kept and are reused');
  assert.ok(pool.kept <= KEPT_BYTES - 4 * (1 << 20) + 4096, `4 KiB buffers gave way (${pool.kept} bytes kept)`);
});

test('payload buffers: what is kept stays bounded, big payloads are not kept, idle ones go', () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  try {
    const pool = new PayloadBuffers();
    const big = pool.take(MAX_CLASS_BYTES + 1);
    pool.give(big);
    assert.equal(pool.kept, 0, 'a payload above the largest class is never kept');
    const many = Array.from({ length: (2 * KEPT_BYTES) / MAX_CLASS_BYTES }, () => pool.take(MAX_CLASS_BYTES));
    for (const p of many) pool.give(p);
    assert.equal(pool.kept, KEPT_BYTES);
    mock.timers.tick(6_000);
    assert.equal(pool.kept, 0, 'an idle pool lets its memory go');
  } finally {
    mock.timers.reset();
  }
});

test('payload buffers: kept memory holds its bytes of the memory budget, from free room only', () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  try {
    const budget = new MemoryBudget(1 << 20);
    const pool = new PayloadBuffers(budget);
    const a = pool.take(256 * 1024);
    const b = pool.take(256 * 1024);
    assert.equal(budget.usedBytes, 0, 'a payload in a request is its connection’s to count');
    pool.give(a);
    assert.equal(budget.usedBytes, 256 * 1024, 'kept: held');
    const others = budget.tryReserve(768 * 1024)!; // the rest of the budget goes to others
    pool.give(b);
    assert.equal(pool.kept, 256 * 1024, 'no free room: not kept');
    assert.equal(budget.usedBytes, 1 << 20);
    others();
    assert.equal(pool.take(200_000).buffer, a.buffer, 'taken again');
    assert.equal(budget.usedBytes, 0, 'taken: its hold goes');
    pool.give(pool.take(4096));
    assert.equal(budget.usedBytes, 4096);
    const all = budget.tryReserve(1 << 20);
    assert.ok(all, 'kept buffers give way to whoever needs the whole budget');
    assert.equal(pool.kept, 0);
    all();
    pool.give(pool.take(4096));
    mock.timers.tick(6_000);
    assert.equal(budget.usedBytes, 0, 'idle: let go, hold and all');
  } finally {
    mock.timers.reset();
  }
});

test('payload buffers: a closed pool lets its memory go and keeps nothing given back later', () => {
  const budget = new MemoryBudget(1 << 20);
  const pool = new PayloadBuffers(budget);
  const late = pool.take(4096); // a request still running when the server stops
  pool.give(pool.take(8192));
  assert.equal(budget.usedBytes, 8192);
  pool.close();
  assert.equal(budget.usedBytes, 0);
  pool.give(late);
  assert.equal(pool.kept, 0);
  assert.equal(budget.usedBytes, 0);
});
