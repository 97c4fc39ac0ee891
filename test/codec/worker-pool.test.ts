// The worker-pool Codec: same bytes as the inline one, typed errors across the thread boundary,
// caller buffers untouched, and the event loop keeps ticking while 32 chunks are sealed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createCodec, createInlineCodec } from '../../src/codec';
import { CHUNK_BYTES, mixedBytes, seededBytes, testKey, testPlace } from './codec-fixtures';

const key = testKey();

test('pool round trip; inline codec opens pool output and vice versa; zero chunk → null', async () => {
  const pool = createCodec({ workers: 2 });
  const inline = createInlineCodec();
  try {
    const plaintext = mixedBytes(CHUNK_BYTES, 1);
    const place = testPlace();
    const sealed = (await pool.seal(key, plaintext, place))!;
    assert.ok(Buffer.isBuffer(sealed));
    assert.deepEqual(await pool.open(key, sealed, place), plaintext);
    assert.deepEqual(await inline.open(key, sealed, place), plaintext);
    assert.deepEqual(await pool.open(key, (await inline.seal(key, plaintext, place))!, place), plaintext);
    assert.equal(await pool.seal(key, Buffer.alloc(CHUNK_BYTES), place), null);
    const small = seededBytes(100, 2); // runs inline inside the pool codec
    assert.deepEqual(await pool.open(key, (await pool.seal(key, small, place))!, place), small);
  } finally {
    await pool.close();
    await inline.close();
  }
});

test('pool keeps the caller\'s buffers (a subarray of a larger one included) intact', async () => {
  const pool = createCodec({ workers: 1 });
  try {
    const backing = mixedBytes(CHUNK_BYTES + 1000, 3);
    const plaintext = backing.subarray(500, 500 + CHUNK_BYTES);
    const before = Buffer.from(backing);
    const sealed = (await pool.seal(key, plaintext, testPlace()))!;
    assert.deepEqual(backing, before);
    assert.equal(plaintext.length, CHUNK_BYTES, 'not detached');
    const sealedBefore = Buffer.from(sealed);
    await pool.open(key, sealed, testPlace());
    assert.deepEqual(sealed, sealedBefore);
  } finally {
    await pool.close();
  }
});

test('errors from workers keep their code', async () => {
  const pool = createCodec({ workers: 1 });
  try {
    const sealed = (await pool.seal(key, mixedBytes(CHUNK_BYTES, 4), testPlace()))!;
    await assert.rejects(pool.open(key, sealed, testPlace({ index: 43 })), { code: 'ERR_AUTH_FAILED' });
    await assert.rejects(pool.open(testKey(9), sealed, testPlace()), { code: 'ERR_AUTH_FAILED' });
    const bad = Buffer.from(sealed);
    bad[0] ^= 1;
    await assert.rejects(pool.open(key, bad, testPlace()), { code: 'ERR_CORRUPT' });
  } finally {
    await pool.close();
  }
});

test('bad options fail at construction', () => {
  assert.throws(() => createCodec({ workers: 0 }), { code: 'ERR_INVALID_ARGUMENT' });
  assert.throws(() => createCodec({ zstdLevel: 1.5 }), { code: 'ERR_INVALID_ARGUMENT' });
});

test('event loop stays responsive while 32 chunks are sealed and opened in the pool', async (t) => {
  const pool = createCodec();
  try {
    const chunks = Array.from({ length: 32 }, (_, i) => mixedBytes(CHUNK_BYTES, 100 + i));
    await pool.seal(key, chunks[0], testPlace()); // warm the workers
    const started = performance.now();
    let last = started;
    let maxGapMs = 0;
    let ticks = 0;
    const ticker = setInterval(() => {
      const now = performance.now();
      maxGapMs = Math.max(maxGapMs, now - last);
      last = now;
      ticks++;
    }, 5);
    const sealed = await Promise.all(chunks.map((c, i) => pool.seal(key, c, testPlace({ index: i }))));
    const opened = await Promise.all(sealed.map((s, i) => pool.open(key, s!, testPlace({ index: i }))));
    // The gap up to now counts too: a loop blocked until the end never ticks at all.
    const elapsedMs = performance.now() - started;
    maxGapMs = Math.max(maxGapMs, performance.now() - last);
    clearInterval(ticker);
    opened.forEach((o, i) => assert.ok(o.equals(chunks[i])));
    t.diagnostic(`${ticks} ticks in ${elapsedMs.toFixed(0)} ms, longest gap ${maxGapMs.toFixed(1)} ms`);
    assert.ok(ticks >= 10, `the ticker fired ${ticks} times: the event loop was blocked`);
    // Sealing inline blocks the loop for the whole run (one gap = all of it); the pool's
    // main-thread share is copies and a zero check. The bound is relative to the run's length
    // because on a shared, loaded machine the whole run (and every gap) stretches alike.
    // (0.6: under a 4-5x load the longest gap reached 26 % of the run; inline sealing is ~100 %)
    const bound = Math.max(100, elapsedMs * 0.6);
    assert.ok(maxGapMs < bound, `event loop stalled for ${maxGapMs.toFixed(1)} ms of ${elapsedMs.toFixed(0)} ms`);
  } finally {
    await pool.close();
  }
});
