// RetryStore: what it retries, how long, the backoff schedule, and unknown-outcome conditional puts.
// All timing runs on a virtual clock: the injected sleep advances it, nothing really waits.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  FaultyStore,
  MemoryStore,
  RetriedStoreError,
  RetryStore,
  composeStore,
  faultyLayer,
  findLayer,
  retryLayer,
  seededRandom,
  type RetryPolicy,
} from '../../src/store';
import { Writable } from 'node:stream';
import pino from 'pino';
import { createLogger, setLogger } from '../../src/util/log';
import { expectCode } from './conformance';

setLogger(createLogger(process.env.NBD_VAULT_LOG_LEVEL ?? 'error'));

function virtualClock(): { now: () => number; sleep: (ms: number) => Promise<void>; delays: number[] } {
  let t = 0;
  const delays: number[] = [];
  return {
    now: () => t,
    sleep: async (ms) => {
      delays.push(ms);
      t += ms;
    },
    delays,
  };
}

function stack(policy: RetryPolicy & { seed?: number }, clock = virtualClock()) {
  const base = new MemoryStore();
  const faulty = new FaultyStore(base, {}, seededRandom(policy.seed ?? 7), { now: clock.now, sleep: clock.sleep });
  const retry = new RetryStore(faulty, { now: clock.now, sleep: clock.sleep, ...policy });
  return { base, faulty, retry, clock };
}

describe('RetryStore', () => {
  it('with 30% injected transient failures, every operation of a workload succeeds and data is intact', async () => {
    const clock = virtualClock();
    const base = new MemoryStore();
    const store = composeStore(
      base,
      faultyLayer({ rules: [{ probability: 0.15, phase: 'before' }, { probability: 0.15 / 0.85, phase: 'after' }] }, seededRandom(42), clock),
      retryLayer({ now: clock.now, sleep: clock.sleep, random: seededRandom(43) }),
    );
    assert.equal(store.name, 'retry(faulty(memory))');
    const faulty = findLayer(store, FaultyStore)!;
    const expected = new Map<string, Buffer>();
    for (let i = 0; i < 300; i++) {
      const key = `w/${String(i).padStart(4, '0')}`;
      const body = randomBytes(1 + (i % 97));
      if (i % 3 === 0) await store.put(key, body, { ifNoneMatch: '*' });
      else await store.put(key, body);
      expected.set(key, body);
    }
    for (let i = 0; i < 300; i += 5) {
      // conditional replace of existing objects
      const key = `w/${String(i).padStart(4, '0')}`;
      const cur = await store.head(key);
      const body = randomBytes(33);
      await store.put(key, body, { ifMatch: cur!.etag });
      expected.set(key, body);
    }
    for (const [key, body] of expected) assert.ok((await store.get(key)).body.equals(body), key);
    for (let i = 0; i < 300; i += 4) {
      const key = `w/${String(i).padStart(4, '0')}`;
      await store.delete(key);
      expected.delete(key);
    }
    const batch = [...expected.keys()].filter((_, i) => i % 7 === 0);
    await store.deleteMany(batch);
    for (const k of batch) expected.delete(k);
    for (let i = 0; i < 20; i++) {
      const listed: string[] = [];
      for await (const info of store.list('w/')) listed.push(info.key);
      assert.deepEqual(listed, [...expected.keys()].sort());
    }
    // The truth, read past the faults:
    const truth: string[] = [];
    for await (const info of base.list('')) truth.push(info.key);
    assert.deepEqual(truth, [...expected.keys()].sort());
    for (const [key, body] of expected) assert.ok((await base.get(key)).body.equals(body));
    const calls = Object.values(faulty.calls).reduce((a, b) => a + b, 0);
    const rate = faulty.totalInjected / calls;
    assert.ok(rate > 0.2 && rate < 0.4, `injected ${faulty.totalInjected} of ${calls} calls`);
  });

  it('fails fast (1 attempt, no sleep) on DENIED, with a clear message', async () => {
    const { faulty, retry, clock } = stack({});
    faulty.setRules({ rules: [{ probability: 1, code: 'ERR_STORE_DENIED' }] });
    const err = await expectCode(retry.get('a/b'), 'ERR_STORE_DENIED');
    assert.ok(err instanceof RetriedStoreError);
    assert.equal(err.attempts, 1);
    assert.equal(err.totalRetryDelayMs, 0);
    assert.match(err.message, /ERR_STORE_DENIED on get a\/b/);
    assert.equal(faulty.calls.get, 1);
    assert.deepEqual(clock.delays, []);
  });

  it('fails fast on NOT_FOUND, PRECONDITION and IO', async () => {
    const { faulty, retry } = stack({});
    await expectCode(retry.get('missing'), 'ERR_STORE_NOT_FOUND');
    await retry.put('k', Buffer.from('x'));
    await expectCode(retry.put('k', Buffer.from('y'), { ifNoneMatch: '*' }), 'ERR_STORE_PRECONDITION');
    faulty.failNext('head', 1, 'ERR_STORE_IO');
    const e = await expectCode(retry.head('k'), 'ERR_STORE_IO');
    assert.equal((e as RetriedStoreError).attempts, 1);
    assert.equal(faulty.calls.get + faulty.calls.put + faulty.calls.head, 4);
  });

  it('backoff is full jitter: random × min(base·2^i, max)', async () => {
    const { faulty, retry, clock } = stack({ baseDelayMs: 100, maxDelayMs: 1_000, random: () => 0.999999 });
    await retry.put('k', Buffer.from('x'));
    faulty.failNext('get', 6);
    await retry.get('k');
    assert.deepEqual(clock.delays.map(Math.round), [100, 200, 400, 800, 1000, 1000]);
    assert.equal(faulty.calls.get, 7);

    const half = stack({ baseDelayMs: 100, maxDelayMs: 1_000, random: () => 0.5 });
    await half.retry.put('k', Buffer.from('x'));
    half.faulty.failNext('get', 4);
    await half.retry.get('k');
    assert.deepEqual(half.clock.delays, [50, 100, 200, 400]);
  });

  it('rides out an outage shorter than the budget', async () => {
    const clock = virtualClock();
    const base = new MemoryStore();
    await base.put('k', Buffer.from('v'));
    const faulty = new FaultyStore(base, { outages: [{ fromMs: 0, toMs: 20_000 }] }, seededRandom(1), clock);
    const retry = new RetryStore(faulty, { ...clock, budgetMs: 60_000, baseDelayMs: 100, maxDelayMs: 5_000, random: seededRandom(2) });
    assert.equal((await retry.get('k')).body.toString(), 'v');
    assert.ok(clock.now() >= 20_000 && clock.now() < 60_000, `finished at ${clock.now()} ms`);
    assert.ok(faulty.calls.get > 3);
  });

  it('a call-count outage is ridden out too', async () => {
    const { faulty, retry } = stack({ baseDelayMs: 1, maxDelayMs: 1 });
    faulty.setRules({ outages: [{ fromCall: 0, toCall: 10 }] });
    await retry.put('k', Buffer.from('v'));
    assert.equal(faulty.calls.put, 11);
  });

  it('an outage longer than the budget fails with attempts and delay recorded', async () => {
    const clock = virtualClock();
    const faulty = new FaultyStore(new MemoryStore(), { outages: [{ fromMs: 0, toMs: 1e9 }] }, seededRandom(1), clock);
    const retry = new RetryStore(faulty, { ...clock, budgetMs: 10_000, baseDelayMs: 100, maxDelayMs: 2_000, random: seededRandom(3) });
    const err = (await expectCode(retry.put('k', Buffer.from('v')), 'ERR_STORE_TRANSIENT')) as RetriedStoreError;
    assert.ok(err.attempts > 3, `attempts ${err.attempts}`);
    assert.equal(err.attempts, faulty.calls.put);
    assert.ok(err.totalRetryDelayMs <= 10_000);
    assert.ok(Math.abs(err.totalRetryDelayMs - clock.delays.reduce((a, b) => a + b, 0)) < 1e-6);
    assert.match(err.message, /gave up after \d+ attempts/);
  });

  it('a conditional put whose reply was lost is read back, not reported as lost', async () => {
    const { faulty, retry } = stack({ baseDelayMs: 1 });
    faulty.failNext('put', 1, 'ERR_STORE_TRANSIENT', 'after'); // the create lands, the reply is lost
    const r = await retry.put('lease', Buffer.from('me'), { ifNoneMatch: '*' });
    assert.equal(r.etag, (await retry.head('lease'))!.etag);
    assert.equal(faulty.calls.put, 1, 'no second put: the read-back saw our bytes');

    faulty.failNext('put', 1, 'ERR_STORE_TRANSIENT', 'after');
    const r2 = await retry.put('lease', Buffer.from('me again'), { ifMatch: r.etag });
    assert.equal((await retry.get('lease')).body.toString(), 'me again');
    assert.equal(r2.etag, (await retry.head('lease'))!.etag);

    // Someone else won while our outcome was unknown: we must see PRECONDITION, not success.
    faulty.failNext('put', 1, 'ERR_STORE_TRANSIENT', 'before');
    await retry.unwrap()!.unwrap()!.put('other', Buffer.from('theirs'));
    await expectCode(retry.put('other', Buffer.from('mine'), { ifNoneMatch: '*' }), 'ERR_STORE_PRECONDITION');
  });

  it('list resumes after a mid-listing failure without duplicates', async () => {
    const { faulty, retry } = stack({ baseDelayMs: 1 });
    for (let i = 0; i < 50; i++) await retry.put(`l/${String(i).padStart(2, '0')}`, Buffer.from('x'));
    faulty.failNext('list', 3, 'ERR_STORE_TRANSIENT', 'after');
    const keys: string[] = [];
    for await (const info of retry.list('l/')) keys.push(info.key);
    assert.equal(keys.length, 50);
    assert.equal(new Set(keys).size, 50);
    assert.equal(faulty.calls.list, 4);
  });

  it('validates its policy at construction', () => {
    assert.throws(() => retryLayer({ baseDelayMs: -1 }), { code: 'ERR_INVALID_ARGUMENT' });
    assert.throws(() => new RetryStore(new MemoryStore(), { maxAttempts: 0 }), { code: 'ERR_INVALID_ARGUMENT' });
    assert.throws(() => retryLayer({ baseDelayMs: 10, maxDelayMs: 1 }), { code: 'ERR_INVALID_ARGUMENT' });
  });

  it('maxAttempts bounds the attempts', async () => {
    const { faulty, retry } = stack({ maxAttempts: 3 });
    faulty.failNext('get', 10);
    const err = (await expectCode(retry.get('x'), 'ERR_STORE_TRANSIENT')) as RetriedStoreError;
    assert.equal(err.attempts, 3);
  });

  it('an outage is reported once per 10 s of failing, not once per retry, and its end once', async () => {
    const clock = virtualClock();
    const base = new MemoryStore();
    for (let i = 0; i < 40; i++) await base.put(`k/${i}`, Buffer.from([i]));
    const faulty = new FaultyStore(base, { outages: [{ fromMs: 0, toMs: 45_000 }] }, seededRandom(3), { now: clock.now, sleep: clock.sleep });
    const retry = new RetryStore(faulty, { now: clock.now, sleep: clock.sleep, random: seededRandom(4), budgetMs: 600_000 });
    const lines: Array<Record<string, any>> = [];
    const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk))), done()) });
    setLogger(pino({ level: 'debug' }, sink));
    try {
      const got = await Promise.all(Array.from({ length: 40 }, (_, i) => retry.get(`k/${i}`)));
      assert.deepEqual(got.map((g) => g.body[0]), Array.from({ length: 40 }, (_, i) => i));
      await retry.get('k/0'); // no failure: nothing logged
    } finally {
      setLogger(createLogger(process.env.NBD_VAULT_LOG_LEVEL ?? 'error'));
    }
    const retries = lines.filter((l) => l.msg === 'store operation failed, retrying');
    const warned = retries.filter((l) => l.level === 40);
    const recovered = lines.filter((l) => l.msg === 'store operations succeed again');
    assert.ok(retries.length >= 100, `every operation retried many times: ${retries.length}`);
    assert.ok(clock.now() >= 45_000);
    // one warn line per 10 s of virtual time at most, each saying what it stands for
    assert.ok(warned.length >= 2 && warned.length <= Math.ceil(clock.now() / 10_000) + 1, `${warned.length} warn lines in ${clock.now()} ms`);
    assert.equal(warned[0].objectKey.startsWith('k/'), true);
    assert.equal(warned[0].code, 'ERR_STORE_TRANSIENT');
    const afterLastWarn = retries.length - 1 - retries.lastIndexOf(warned[warned.length - 1]);
    assert.equal(warned.reduce((n, l) => n + l.retries, 0) + afterLastWarn, retries.length, 'each warn line counts the retries since the one before');
    assert.ok(warned[1].failingForMs >= 10_000, 'a later line says how long the store has failed');
    assert.equal(retries.length - warned.length, retries.filter((l) => l.level === 20).length, 'the others are debug lines');
    assert.equal(recovered.length, 1, 'the end of the outage is one line');
    assert.equal(recovered[0].level, 30);
    assert.equal(recovered[0].retries, retries.length);
    assert.ok(recovered[0].failedForMs >= 45_000);
  });
});
