import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryBudget } from '../../src/util/memory-budget';
import { seededRandom } from '../../src/store/seeded-random';

/** Lets every settled promise run its continuations. */
const settle = () => new Promise((r) => setImmediate(r));

/** A cache of fixed-size entries holding reservations of `budget`, evicting oldest first. */
class FakeCache {
  readonly entries: Array<() => void> = [];
  evictCalls = 0;
  constructor(
    readonly budget: MemoryBudget,
    readonly entryBytes: number,
  ) {}
  add(): boolean {
    const release = this.budget.tryReserve(this.entryBytes);
    if (!release) return false;
    this.entries.push(release);
    return true;
  }
  evict(bytes: number): number {
    this.evictCalls++;
    let freed = 0;
    while (freed < bytes && this.entries.length > 0) {
      this.entries.shift()!();
      freed += this.entryBytes;
    }
    return freed;
  }
}

test('reserve holds bytes until released; release is idempotent', async () => {
  const b = new MemoryBudget(100);
  const r1 = await b.reserve(60);
  assert.equal(b.usedBytes, 60);
  const r2 = await b.reserve(40);
  assert.equal(b.usedBytes, 100);
  r1();
  r1();
  assert.equal(b.usedBytes, 40);
  r2();
  assert.equal(b.usedBytes, 0);
  assert.deepEqual(b.stats(), { limitBytes: 100, usedBytes: 0, waiting: 0, waitingBytes: 0, waitsTotal: 0 });
});

test('a reserve that does not fit waits, then is granted when room is released', async () => {
  const b = new MemoryBudget(100);
  const r1 = await b.reserve(80);
  let granted: (() => void) | null = null;
  void b.reserve(30).then((r) => (granted = r));
  await settle();
  assert.equal(granted, null, 'must wait: 80 + 30 > 100');
  assert.deepEqual({ ...b.stats() }, { limitBytes: 100, usedBytes: 80, waiting: 1, waitingBytes: 30, waitsTotal: 1 });
  r1();
  await settle();
  assert.ok(granted, 'granted once the 80 are released');
  assert.equal(b.usedBytes, 30);
  assert.equal(b.stats().waiting, 0);
  (granted as () => void)();
  assert.equal(b.usedBytes, 0);
});

test('waiters are served in arrival order: a small later request never overtakes a large earlier one', async () => {
  const b = new MemoryBudget(100);
  const held = await b.reserve(90);
  const order: string[] = [];
  const big = b.reserve(80).then((r) => (order.push('big'), r));
  const small = b.reserve(5).then((r) => (order.push('small'), r));
  await settle();
  assert.deepEqual(order, [], 'the 5 bytes would fit (90 + 5), but the 80 came first');
  assert.equal(b.tryReserve(1), null, 'tryReserve does not jump the queue either');
  held();
  await settle();
  assert.deepEqual(order, ['big', 'small']);
  assert.equal(b.usedBytes, 85);
  (await big)();
  (await small)();
  assert.equal(b.usedBytes, 0);
});

test('a request larger than the limit is admitted alone, when nothing else is held', async () => {
  const b = new MemoryBudget(100);
  const small = await b.reserve(10);
  let huge: (() => void) | null = null;
  void b.reserve(250).then((r) => (huge = r));
  let after: (() => void) | null = null;
  void b.reserve(1).then((r) => (after = r));
  await settle();
  assert.equal(huge, null, 'waits while 10 bytes are held');
  small();
  await settle();
  assert.ok(huge, 'admitted alone');
  assert.equal(b.usedBytes, 250);
  assert.equal(after, null, 'nothing else while the oversized request is held');
  (huge as () => void)();
  await settle();
  assert.ok(after);
  assert.equal(b.usedBytes, 1);
  // with nothing held, an oversized request goes through at once
  (after as () => void)();
  const r = await b.reserve(1000);
  assert.equal(b.usedBytes, 1000);
  r();
});

test('tryReserve: grants what fits, never more than the limit, null otherwise', () => {
  const b = new MemoryBudget(100);
  const a = b.tryReserve(70);
  assert.ok(a);
  assert.equal(b.tryReserve(31), null);
  assert.equal(b.usedBytes, 70);
  const c = b.tryReserve(30);
  assert.ok(c);
  assert.equal(b.usedBytes, 100);
  a();
  c!();
  assert.equal(b.tryReserve(101), null, 'a cache never holds more than the limit, even alone');
  assert.equal(b.usedBytes, 0);
});

test('caches are asked to evict before anyone waits, and before a cache is refused', async () => {
  const b = new MemoryBudget(100);
  const cache = new FakeCache(b, 10);
  b.registerCache(cache);
  for (let i = 0; i < 10; i++) assert.ok(cache.add());
  assert.equal(b.usedBytes, 100);
  // a reservation evicts what it needs, and no more
  const r = await b.reserve(25);
  assert.equal(cache.entries.length, 7, 'evicted 3 entries of 10 for 25 bytes');
  assert.equal(b.usedBytes, 95);
  // tryReserve evicts too (a cache growing pushes its own old entries out)
  assert.ok(cache.add());
  assert.equal(cache.entries.length, 7);
  r();
  assert.equal(b.usedBytes, 70);
});

test('tryReserveFree: only free room, never by eviction; refused while anyone waits', async () => {
  const b = new MemoryBudget(100);
  const cache = new FakeCache(b, 10);
  b.registerCache(cache);
  for (let i = 0; i < 8; i++) assert.ok(cache.add());
  const a = b.tryReserveFree(20);
  assert.ok(a, 'the free 20 bytes');
  assert.equal(b.tryReserveFree(10), null, 'nothing free: refused');
  assert.equal(cache.evictCalls, 0, 'no cache was asked to evict');
  assert.equal(cache.entries.length, 8);
  a!();
  assert.equal(b.tryReserveFree(101), null, 'never more than the limit');
  const big = b.reserve(90); // reserve() has the cache evict for it
  const release = await big;
  assert.equal(b.tryReserveFree(1), null, 'full');
  release();
  const held = b.tryReserve(100)!;
  const waiting = b.reserve(10);
  assert.equal(b.tryReserveFree(0), null, 'refused while a reserve() waits');
  held();
  (await waiting)();
});

test('a waiter at the head gets what caches give back as other holders release', async () => {
  const b = new MemoryBudget(100);
  const pinned = await b.reserve(60); // not evictable
  const cache = new FakeCache(b, 10);
  const unregister = b.registerCache(cache);
  for (let i = 0; i < 4; i++) assert.ok(cache.add());
  let granted: (() => void) | null = null;
  void b.reserve(70).then((r) => (granted = r));
  await settle();
  assert.equal(granted, null, '60 pinned + 70 > 100 even with an empty cache');
  assert.equal(cache.entries.length, 0, 'the cache was emptied trying');
  assert.equal(cache.add(), false, 'a cache cannot grow while someone waits');
  pinned();
  await settle();
  assert.ok(granted);
  assert.equal(b.usedBytes, 70);
  unregister();
  unregister();
  // an unregistered cache is not asked any more
  assert.ok(cache.add() && cache.add() && cache.add());
  const calls = cache.evictCalls;
  const tooMuch = b.reserve(10);
  let late = false;
  void tooMuch.then(() => (late = true));
  await settle();
  assert.equal(late, false);
  assert.equal(cache.evictCalls, calls);
  (granted as () => void)();
  (await tooMuch)();
});

test('eviction goes round robin over the caches', async () => {
  const b = new MemoryBudget(100);
  const c1 = new FakeCache(b, 10);
  const c2 = new FakeCache(b, 10);
  b.registerCache(c1);
  b.registerCache(c2);
  for (let i = 0; i < 5; i++) assert.ok(c1.add() && c2.add());
  const r1 = await b.reserve(10);
  const r2 = await b.reserve(10);
  assert.deepEqual([c1.entries.length, c2.entries.length], [4, 4], 'one entry from each, not two from the first');
  r1();
  r2();
});

test('bad sizes are refused with a RangeError', () => {
  assert.throws(() => new MemoryBudget(0), RangeError);
  assert.throws(() => new MemoryBudget(1.5), RangeError);
  const b = new MemoryBudget(10);
  assert.throws(() => b.reserve(-1), RangeError);
  assert.throws(() => b.tryReserve(Number.NaN), RangeError);
});

// Property: random reserves, tryReserves, releases and cache growth against a model. Invariants
// after every step: used = sum of the live holds; used <= limit unless a single hold is larger
// than the limit; grants happen in request order; once everything is released, every waiter
// has been granted and used returns to 0.
for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  test(`seeded random schedule ${seed}: accounting, limit, FIFO and liveness hold`, async () => {
    const rnd = seededRandom(seed);
    const limit = 1000;
    const b = new MemoryBudget(limit);
    const cache = new FakeCache(b, 50);
    b.registerCache(cache);
    const live = new Map<number, { bytes: number; release: () => void }>();
    let next = 0;
    const requested: number[] = [];
    const granted: number[] = [];
    const check = (where: string) => {
      let sum = cache.entries.length * cache.entryBytes;
      for (const h of live.values()) sum += h.bytes;
      assert.equal(b.usedBytes, sum, `${where}: used = sum of holds`);
      const oversized = [...live.values()].some((h) => h.bytes > limit);
      if (oversized) assert.equal(live.size, 1, `${where}: an oversized hold is alone`);
      else assert.ok(b.usedBytes <= limit, `${where}: used ${b.usedBytes} <= ${limit}`);
    };
    for (let step = 0; step < 400; step++) {
      const x = rnd();
      if (x < 0.45) {
        const id = next++;
        const bytes = rnd() < 0.03 ? limit + Math.floor(rnd() * 500) : Math.floor(rnd() * 400);
        requested.push(id);
        void b.reserve(bytes).then((release) => {
          granted.push(id);
          live.set(id, { bytes, release });
        });
      } else if (x < 0.6) {
        cache.add();
      } else if (live.size > 0) {
        const ids = [...live.keys()];
        const id = ids[Math.floor(rnd() * ids.length)];
        const h = live.get(id)!;
        live.delete(id);
        h.release();
        if (rnd() < 0.2) h.release(); // idempotent
      }
      await settle();
      check(`seed ${seed} step ${step}`);
    }
    // drain: release everything live until every request is granted
    for (let round = 0; granted.length < requested.length || live.size > 0; round++) {
      assert.ok(round < 10_000, 'liveness: every waiter is granted once holders release');
      for (const [id, h] of live) {
        live.delete(id);
        h.release();
      }
      await settle();
      check(`seed ${seed} drain ${round}`);
    }
    assert.deepEqual(granted, requested, 'granted in request order');
    cache.evict(Infinity);
    assert.equal(b.usedBytes, 0);
    assert.equal(b.stats().waiting, 0);
    assert.equal(b.stats().waitingBytes, 0);
  });
}
