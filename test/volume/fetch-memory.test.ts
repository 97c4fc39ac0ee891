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
import { SettlingStore, makeVault } from './vault-fixture';

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

test('with the budget full of requests, two volumes streaming at once hold at most the floor, and every read finishes', async (t) => {
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
