// What chunk fetches hold while they run, shared by every volume of one memory budget
// (fetch-memory.ts): from the budget when it has room, else from a small floor of their own, else
// they wait in order. With the budget full of requests, every volume's fetches together hold at
// most the floor, and reads still finish.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { FLOOR_BYTES, FetchMemory } from '../../src/volume/fetch-memory';
import { MemoryBudget } from '../../src/util/memory-budget';
import type { StoredObject } from '../../src/store/object-store';
import { PassThroughStore } from '../helpers/pass-through-store';
import { SettlingStore, eventually, makeVault } from './vault-fixture';

const MiB = 2 ** 20;
const tick = () => new Promise<void>((r) => setImmediate(r));

test('fetches take room the budget has free, then the floor, then wait in order; they never evict a cache', async () => {
  const budget = new MemoryBudget(16 * MiB);
  assert.equal(FetchMemory.of(budget), FetchMemory.of(budget), 'one per budget');
  assert.equal(FetchMemory.of(budget).floorBytes, FLOOR_BYTES);
  const m = new FetchMemory(budget, 16 * MiB);
  // a cache holding half the budget, which a fetch must not push out
  let evicted = 0;
  const cached = budget.tryReserve(8 * MiB)!;
  budget.registerCache({ evict: (n) => ((evicted += n), 0) });
  const a = m.tryHold(8 * MiB)!;
  assert.equal(budget.usedBytes, 16 * MiB, 'from the budget while it has room');
  assert.equal(m.floorHeld, 0);
  const b = m.tryHold(8 * MiB)!;
  const c = m.tryHold(8 * MiB)!;
  assert.equal(m.floorHeld, 16 * MiB, 'then from the floor');
  assert.equal(m.tryHold(1), null, 'a guess (readahead) never waits');
  const order: string[] = [];
  const first = m.run(8 * MiB, async () => void order.push('first'));
  const second = m.run(1 * MiB, async () => void order.push('second'));
  await tick();
  assert.deepEqual(order, [], 'both wait: budget and floor are full');
  assert.equal(m.tryHold(1), null, 'nobody overtakes a waiter');
  b();
  b(); // twice: frees once
  await first; // the floor came back: the first waiter runs, and gives it back to the second
  await second;
  assert.deepEqual(order, ['first', 'second'], 'in order');
  assert.equal(m.floorHeld, 8 * MiB, 'only c holds the floor now');
  a();
  c();
  assert.equal(budget.usedBytes, 8 * MiB, 'the cache alone');
  assert.equal(m.floorHeld, 0);
  assert.equal(evicted, 0, 'no cache was asked to evict');
  cached();
});

test('a waiting fetch is never overtaken, even by one the floor has room for; a failed fetch gives its memory back', async () => {
  const budget = new MemoryBudget(MiB);
  const full = budget.tryReserve(MiB)!;
  const m = new FetchMemory(budget, 16 * MiB);
  const c = m.tryHold(8 * MiB)!;
  const d = m.tryHold(4 * MiB)!; // the floor: 12 of 16 MiB held
  const order: string[] = [];
  let endBig!: () => void;
  const big = m.run(12 * MiB, () => new Promise<void>((r) => (order.push('big'), (endBig = r))));
  await tick();
  assert.equal(m.tryHold(1), null, 'the floor has 4 MiB free, but a fetch waits');
  const small = m.run(MiB, async () => void order.push('small'));
  d(); // 8 MiB free: room for the small one, not for the first in line
  await tick();
  assert.deepEqual(order, [], 'nobody overtakes the first in line');
  c();
  await tick();
  assert.deepEqual(order, ['big', 'small'], 'the first in line, then the next (room for both)');
  endBig();
  await Promise.all([big, small]);
  assert.equal(m.floorHeld, 0);
  await assert.rejects(m.run(MiB, async () => Promise.reject(new Error('boom'))), /boom/);
  assert.equal(m.floorHeld, 0, 'a failed fetch gave its memory back');
  assert.equal(m.waiting, 0);
  full();
});

test('readahead takes the floor only while nobody waits for the budget', async () => {
  const budget = new MemoryBudget(MiB);
  const full = budget.tryReserve(MiB)!;
  const m = new FetchMemory(budget, 16 * MiB);
  const ahead = m.tryHoldAhead(8 * MiB);
  assert.ok(ahead, 'nobody waits: the floor');
  ahead();
  const waiter = budget.reserve(MiB); // a connection waits for room
  assert.equal(m.tryHoldAhead(8 * MiB), null, 'what it fetched could not be kept: no guess');
  assert.ok(m.tryHold(8 * MiB), 'a read that needs it still gets the floor');
  full();
  (await waiter)();
});

test('a fetch larger than the floor runs alone on it; without a budget nothing is held', async () => {
  const budget = new MemoryBudget(MiB);
  budget.tryReserve(MiB); // full
  const m = new FetchMemory(budget, 4 * MiB);
  const big = m.tryHold(16 * MiB);
  assert.ok(big, 'alone on the floor');
  assert.equal(m.tryHold(1), null);
  big();
  assert.equal(m.floorHeld, 0);
  const free = FetchMemory.of(undefined);
  assert.ok(free.tryHold(1e12));
  assert.equal(await free.run(1e12, async () => 7), 7);
});

/** Counts whole-object reads (a whole chunk's fetch) running at once. */
class CountingStore extends PassThroughStore {
  running = 0;
  most = 0;
  override async get(key: string, into?: Buffer): Promise<StoredObject> {
    const whole = key.includes('/chunks/');
    if (whole) this.most = Math.max(this.most, ++this.running);
    try {
      await new Promise((r) => setTimeout(r, 2)); // a store that takes a moment
      return await super.get(key, into);
    } finally {
      if (whole) this.running--;
    }
  }
}

test('with the budget full of requests, two volumes streaming at once hold at most the floor, and every read finishes', { timeout: 60_000 }, async (t) => {
  const store = new CountingStore(new SettlingStore());
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const size = 32 * MiB;
  const models: Buffer[] = [];
  for (const name of ['a', 'b']) {
    await f.vault.createVolume(name, size);
    const w = await f.vault.openEngine(name);
    const model = randomBytes(size);
    await w.write(0, model);
    await w.flush();
    await w.close();
    models.push(model);
  }
  store.most = 0;
  // the requests that wait on these reads hold the whole budget (as an NBD server's do)
  const budget = new MemoryBudget(64 * MiB);
  const requests = budget.tryReserve(64 * MiB)!;
  t.after(requests);
  const engines = await Promise.all(['a', 'b'].map((n) => f.vault.openEngine(n, { memoryBudget: budget, readCacheBytes: 64 * MiB, readaheadChunks: 8 })));
  t.after(() => Promise.all(engines.map((e) => e.close())));
  const step = 256 * 1024;
  await Promise.all(
    engines.map(async (e, v) => {
      // a streaming client: 32 reads in flight, in order
      for (let at = 0; at < size; at += 32 * step) {
        const got = await Promise.all(Array.from({ length: 32 }, (_, k) => e.read(at + k * step, step)));
        got.forEach((b, k) => {
          assert.ok(b.equals(models[v].subarray(at + k * step, at + (k + 1) * step)), `volume ${v} at ${at + k * step}`);
          e.readDone(b);
        });
      }
    }),
  );
  assert.ok(store.most >= 1 && store.most <= FLOOR_BYTES / (2 * CHUNK_SIZE), `whole fetches at once: ${store.most}`);
  assert.equal(FetchMemory.of(budget).floorHeld, 0, 'all given back');
  assert.equal(budget.usedBytes, 64 * MiB, 'the requests alone hold the budget');
});

test('compaction reads outside the gate (the sealing share covers them): it finishes while reads hold the whole floor', { timeout: 60_000 }, async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const budget = new MemoryBudget(64 * MiB);
  const e = await f.vault.openEngine('v', { memoryBudget: budget });
  t.after(() => e.close());
  const model = randomBytes(8 * MiB);
  await e.write(0, model);
  await e.flush();
  const blocks = randomBytes(64 * 1024); // scattered small writes: a journal
  for (let k = 0; k < 16; k++) {
    blocks.copy(model, k * 512 * 1024, k * 4096, (k + 1) * 4096);
    await e.write(k * 512 * 1024, blocks.subarray(k * 4096, (k + 1) * 4096));
  }
  await e.flush();
  assert.ok(e.stats().journals > 0, 'the flush wrote a journal');
  const requests = budget.tryReserve(budget.limitBytes - budget.usedBytes); // the budget full
  const reads = FetchMemory.of(budget).tryHold(FLOOR_BYTES); // and the floor
  assert.ok(requests !== null && reads !== null);
  await e.compact();
  assert.equal(e.stats().journals, 0, 'folded');
  reads();
  requests();
  assert.ok((await e.read(0, 8 * MiB)).equals(model));
});

test('a wait is given up when its volume closes: the close settles while other volumes hold the floor, and the next in line goes on', { timeout: 60_000 }, async (t) => {
  const budget = new MemoryBudget(MiB);
  const full = budget.tryReserve(MiB)!;
  const m = new FetchMemory(budget, 16 * MiB);
  const others = m.tryHold(12 * MiB)!;
  const closing = new AbortController();
  const first = m.run(8 * MiB, async () => 'first', undefined, closing.signal);
  let secondRan = false;
  const second = m.run(2 * MiB, async () => void (secondRan = true));
  await tick();
  assert.equal(m.waiting, 2);
  closing.abort(new Error('closed'));
  await assert.rejects(first, /closed/);
  await second;
  assert.ok(secondRan, 'the next in line fit once the first gave up');
  assert.equal(m.waiting, 0);
  others();
  assert.equal(m.floorHeld, 0);
  full();

  // an engine's close, while another volume's reads hold the whole floor and the budget is full
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const w = await f.vault.openEngine('v');
  await w.write(0, randomBytes(8 * MiB));
  await w.flush();
  await w.close();
  const shared = new MemoryBudget(64 * MiB);
  const e = await f.vault.openEngine('v', { memoryBudget: shared, readaheadChunks: 0 });
  const requests = shared.tryReserve(shared.limitBytes - shared.usedBytes);
  const elsewhere = FetchMemory.of(shared).tryHold(FLOOR_BYTES);
  assert.ok(requests !== null && elsewhere !== null);
  const read = e.read(0, 4096);
  read.catch(() => {}); // (asserted below)
  await eventually(() => FetchMemory.of(shared).waiting === 1, 'the read waits for memory');
  await e.close();
  await assert.rejects(read, (err: Error) => /closed while a read waited for memory/.test(String((err as { cause?: Error }).cause?.message)));
  assert.equal(FetchMemory.of(shared).waiting, 0);
  elsewhere();
  requests();
});
