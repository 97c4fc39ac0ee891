// StagingBuffers: one buffer per task in flight, reused; container memory let go when idle.
import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import { CONTAINERS_KEPT, StagingBuffers, containerMemory } from '../../src/codec/staging-buffers';

test('buffers are reused, as many are made as were in flight at once, and an idle pool lets them go', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  try {
    const pool = new StagingBuffers(1024, 5_000);
    const a = pool.take();
    const b = pool.take();
    assert.notEqual(a.buffer, b.buffer);
    assert.ok(a.buffer instanceof SharedArrayBuffer && a.length === 1024);
    pool.give(a);
    pool.give(b);
    assert.equal(pool.freeCount, 2);
    assert.equal(pool.take().buffer, b.buffer, 'the last given back is taken first');
    mock.timers.tick(4_000);
    assert.equal(pool.freeCount, 1, 'used a second ago: kept');
    pool.give(b);
    pool.give(pool.take()); // used at 4 s
    mock.timers.tick(4_000); // 4 s after it: still kept
    assert.equal(pool.freeCount, 2);
    mock.timers.tick(1_500);
    assert.equal(pool.freeCount, 0, 'idle 5 s: let go');
    // lend gives back whatever happens in `use`
    await assert.rejects(pool.lend(async () => { throw new Error('boom'); }), /boom/);
    assert.equal(pool.freeCount, 1);
    const kept = new StagingBuffers(16);
    kept.give(kept.take());
    mock.timers.tick(60_000);
    assert.equal(kept.freeCount, 1, 'without an idle release: kept');
  } finally {
    mock.timers.reset();
  }
});

test('container memory keeps at most CONTAINERS_KEPT free buffers after a burst', () => {
  const pool = containerMemory();
  const burst = Array.from({ length: CONTAINERS_KEPT + 5 }, () => pool.take());
  for (const b of burst) pool.give(b);
  assert.equal(pool.freeCount, CONTAINERS_KEPT, 'the rest is left to the collector');
  assert.equal(pool.take().buffer, burst[CONTAINERS_KEPT - 1].buffer, 'the kept ones are reused');
});
