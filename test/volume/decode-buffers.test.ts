// A stream's whole chunks are decoded into buffers that dropped chunks left (decode-buffers.ts).
// What must hold: a view a read handed out never changes until it is given back, whatever the
// stream, random reads and writes do meanwhile; buffers are reused once dropped and given back;
// nothing is reused while the read cache still holds it.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { seededRandom } from '../../src/store/seeded-random';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { DecodeBuffers } from '../../src/volume/decode-buffers';
import { MemoryBudget } from '../../src/util/memory-budget';
import type { EngineOptions, VolumeEngine } from '../../src/volume/volume-engine';
import { makeVault } from './vault-fixture';

const MiB = 2 ** 20;
const tick = () => new Promise<void>((r) => setImmediate(r));

/** A volume of `size` random bytes, stored, then opened again with `options` (an empty cache). */
async function storedRandomVolume(t: TestContext, size: number, options: Partial<EngineOptions>): Promise<{ e: VolumeEngine; model: Buffer }> {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('disk', size);
  const model = randomBytes(size);
  const writer = await f.vault.openEngine('disk');
  await writer.write(0, model);
  await writer.flush();
  await writer.close();
  const e = await f.vault.openEngine('disk', options);
  t.after(() => e.close());
  return { e, model };
}

/** A 4 KiB write at a random block of the volume, into the model too: later reads see it, views
 *  held from before keep what they showed. */
async function writeRandomBlock(e: VolumeEngine, model: Buffer, rnd: () => number): Promise<void> {
  const w = Math.floor(rnd() * (model.length / 4096)) * 4096;
  const data = randomBytes(4096);
  await e.write(w, data);
  data.copy(model, w);
}

/** Every chunk of the volume reads back as `model`. */
async function assertReadsBack(e: VolumeEngine, model: Buffer): Promise<void> {
  for (let at = 0; at < model.length; at += CHUNK_SIZE) assert.ok((await e.read(at, CHUNK_SIZE)).equals(model.subarray(at, at + CHUNK_SIZE)), `chunk at ${at}`);
}

test('a buffer is reused only once the cache dropped it and every view lent is back (once each)', async () => {
  const cached = new Set<string>();
  const pool = new DecodeBuffers(1024, (key) => cached.has(key));
  const a = pool.take();
  const v1 = a.subarray(0, 100);
  const v2 = a.subarray(100, 200);
  pool.lend(v1);
  pool.lend(v2);
  pool.dropped(a, 'k');
  await tick();
  assert.equal(pool.freeCount, 0, 'two views out');
  pool.giveBack(v1);
  pool.giveBack(v1); // twice: counts once
  pool.giveBack(Buffer.from(a.buffer, 0, 10)); // never lent: counts nothing
  await tick();
  assert.equal(pool.freeCount, 0, 'one view still out');
  pool.giveBack(v2);
  await tick();
  assert.equal(pool.freeCount, 1);
  assert.equal(pool.take().buffer, a.buffer, 'the same memory again');
  assert.equal(pool.reused, 1);

  // dropped under a key the cache holds it by again (kept for a random read): not reused
  const b = pool.take();
  cached.add('b');
  pool.dropped(b, 'b');
  await tick();
  assert.equal(pool.freeCount, 0);
  cached.delete('b');
  pool.dropped(b, 'b');
  await tick();
  assert.equal(pool.freeCount, 1);

  // a view lent after the drop but before the next macrotask (a read that joined the fetch)
  const c = pool.take(); // b's memory again
  assert.equal(c.buffer, b.buffer);
  pool.dropped(c, 'c');
  const late = c.subarray(0, 10);
  pool.lend(late);
  await tick();
  assert.equal(pool.freeCount, 0, 'c is not free while a view is out');
  pool.giveBack(late);
  await tick();
  assert.equal(pool.freeCount, 1);
  pool.close();
  assert.equal(pool.freeCount, 0);
});

/** A budget of `limit` filled by a cache of `entry`-byte entries the budget may evict. */
function fullBudget(limit: number, entry: number): { budget: MemoryBudget; entries: Array<() => void>; evicted: () => number } {
  const budget = new MemoryBudget(limit);
  const entries: Array<() => void> = [];
  let evicted = 0;
  budget.registerCache({
    evict: (bytes) => {
      let freed = 0;
      while (freed < bytes && entries.length > 0) {
        entries.pop()!();
        evicted++;
        freed += entry;
      }
      return freed;
    },
  });
  for (let k = 0; k < limit / entry; k++) entries.push(budget.tryReserve(entry)!);
  return { budget, entries, evicted: () => evicted };
}

test('free buffers hold memory budget: free room first, then up to 4 MiB of them by evicting cached entries', async () => {
  // room is free: nothing is evicted
  const roomy = new MemoryBudget(4096);
  const p1 = new DecodeBuffers(1024, () => false, roomy);
  const a = p1.take();
  p1.dropped(a, 'a');
  await tick();
  assert.equal(p1.freeCount, 1);
  assert.equal(roomy.usedBytes, 1024, 'a free buffer holds its bytes of the budget');
  p1.take();
  assert.equal(roomy.usedBytes, 0, 'taken: its reservation goes with it');
  p1.close();

  // the budget is full of cache entries (a cache smaller than the working set): a dropped
  // buffer is kept by evicting entries, so the next miss decodes into it, up to 4 MiB of them
  const MiB = 2 ** 20;
  const full = fullBudget(8 * MiB, MiB);
  const p2 = new DecodeBuffers(2 * MiB, () => false, full.budget);
  const bufs = [p2.take(), p2.take(), p2.take()];
  bufs.forEach((b, k) => p2.dropped(b, `k${k}`));
  await tick();
  assert.equal(p2.freeCount, 2, 'two 2 MiB buffers kept, the third left to the collector');
  assert.equal(full.evicted(), 4, 'four 1 MiB entries evicted for them');
  assert.equal(full.budget.usedBytes, 8 * MiB, 'never more than the limit');
  assert.equal(p2.take().buffer, bufs[1].buffer, 'the next decode reuses one');
  assert.equal(full.budget.usedBytes, 6 * MiB);
  p2.close();
  assert.equal(full.budget.usedBytes, 4 * MiB, 'closed: the free buffer let go');
});

test('views a stream got stay intact until given back, while streams, random reads and writes reuse the buffers', async (t) => {
  const size = 48 * MiB; // 12 chunks; a 16 MiB read cache streams through a 16 MiB stream area
  const { e, model } = await storedRandomVolume(t, size, { readCacheBytes: 16 * MiB, readaheadChunks: 2 });

  const rnd = seededRandom(7);
  const step = 256 * 1024;
  const held: Array<{ view: Buffer; expected: Buffer }> = [];
  for (let pass = 0; pass < 4; pass++) {
    for (let at = 0; at < size; at += 8 * step) {
      const offsets = Array.from({ length: 8 }, (_, k) => at + k * step);
      const randomAt = Math.floor(rnd() * (size / 4096)) * 4096;
      const [got, random] = await Promise.all([Promise.all(offsets.map((o) => e.read(o, step))), e.read(randomAt, 4096)]);
      assert.ok(random.equals(model.subarray(randomAt, randomAt + 4096)), `random read at ${randomAt}`);
      got.forEach((b, k) => {
        assert.ok(b.equals(model.subarray(offsets[k], offsets[k] + step)), `pass ${pass}: stream read at ${offsets[k]}`);
        // one reply in 16 is slow: its view must not change until it is given back
        if (rnd() < 1 / 16) held.push({ view: b, expected: Buffer.from(b) });
        else e.readDone(b);
      });
      // a write now and then: later passes read the new bytes, held views keep the old ones
      if (rnd() < 0.2) await writeRandomBlock(e, model, rnd);
    }
    await e.flush();
    for (const h of held) assert.ok(h.view.equals(h.expected), `pass ${pass}: a view not given back changed`);
  }
  for (const h of held) e.readDone(h.view);
  assert.ok(held.length > 0, 'some replies were slow');
  assert.ok(e.stats().decodeBuffersReused >= 8, `buffers reused: ${e.stats().decodeBuffersReused}`);
  await assertReadsBack(e, model);
});

test('random reads through a full read cache decode into evicted frames; a view lent stays intact until given back', async (t) => {
  const size = 16 * MiB; // 128 frames; a 2 MiB read cache holds 16 of them
  const { e, model } = await storedRandomVolume(t, size, { readCacheBytes: 2 * MiB, readaheadChunks: 0 });

  const rnd = seededRandom(11);
  const frame = 128 * 1024;
  const held: Array<{ view: Buffer; expected: Buffer }> = [];
  for (let round = 0; round < 40; round++) {
    // 16 reads at once, none in a row (no stream): half a frame (lent as a view) or 4 KiB (copied)
    const reads = Array.from({ length: 16 }, () => {
      const big = rnd() < 0.5;
      const len = big ? frame / 2 : 4096;
      const at = Math.floor(rnd() * (size / frame)) * frame + (big ? (rnd() < 0.5 ? 0 : frame / 2) : Math.floor(rnd() * (frame / 4096)) * 4096);
      return { at, len };
    });
    const got = await Promise.all(reads.map((r) => e.read(r.at, r.len)));
    got.forEach((b, k) => {
      const { at, len } = reads[k];
      assert.ok(b.equals(model.subarray(at, at + len)), `round ${round}: read at ${at}`);
      if (rnd() < 1 / 8) held.push({ view: b, expected: Buffer.from(b) });
      else e.readDone(b);
    });
    if (rnd() < 0.25) {
      await writeRandomBlock(e, model, rnd);
      if (rnd() < 0.5) await e.flush();
    }
    await tick();
    for (const h of held) assert.ok(h.view.equals(h.expected), `round ${round}: a view not given back changed`);
  }
  for (const h of held) e.readDone(h.view);
  assert.ok(held.length > 0, 'some replies were slow');
  assert.ok(e.stats().decodeBuffersReused >= 100, `frames decoded into reused memory: ${e.stats().decodeBuffersReused}`);
  await assertReadsBack(e, model);
});

test('random reads through a cache the memory budget keeps small decode into evicted frames too', async (t) => {
  // the cache may hold 64 MiB but the process budget only 3 MiB: every miss evicts a frame while
  // the budget is full, and without reuse each would be fresh shared memory the collector ignores
  const size = 16 * MiB;
  const budget = new MemoryBudget(3 * MiB);
  const { e, model } = await storedRandomVolume(t, size, { readCacheBytes: 64 * MiB, readaheadChunks: 0, memoryBudget: budget });
  const rnd = seededRandom(5);
  const frame = 128 * 1024;
  let reads = 0;
  for (let round = 0; round < 40; round++) {
    const spans = Array.from({ length: 8 }, () => Math.floor(rnd() * (size / frame)) * frame + Math.floor(rnd() * (frame / 4096)) * 4096);
    const got = await Promise.all(spans.map((at) => e.read(at, 4096)));
    got.forEach((b, k) => {
      assert.ok(b.equals(model.subarray(spans[k], spans[k] + 4096)), `round ${round}: read at ${spans[k]}`);
      e.readDone(b);
    });
    reads += spans.length;
    await tick();
    assert.ok(budget.usedBytes <= budget.limitBytes, 'within the budget');
  }
  const { decodeBuffersReused } = e.stats();
  assert.ok(decodeBuffersReused >= reads / 2, `most misses decoded into reused memory: ${decodeBuffersReused} of ${reads} reads`);
});
