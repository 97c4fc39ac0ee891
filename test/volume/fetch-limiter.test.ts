import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FetchLimiter } from '../../src/volume/fetch-limiter';

/** A fetch that finishes when its gate opens; records when it started. */
function gated(started: string[], name: string): { work: () => Promise<string>; open: () => void } {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  return {
    work: async () => {
      started.push(name);
      await gate;
      return name;
    },
    open: () => open(),
  };
}

const tick = () => new Promise((r) => setImmediate(r));

test('fetch limiter: never more than the limit at once; waiters served round robin between requesters', async () => {
  const limiter = new FetchLimiter(2);
  const started: string[] = [];
  const flood = {};
  const other = {};
  const fetches = new Map<string, ReturnType<typeof gated>>();
  const results: Promise<string>[] = [];
  const start = (name: string, requester: object) => {
    const g = gated(started, name);
    fetches.set(name, g);
    results.push(limiter.run(g.work, requester));
  };
  for (let i = 0; i < 6; i++) start(`flood${i}`, flood);
  start('other0', other);
  await tick();
  assert.deepEqual(started, ['flood0', 'flood1'], 'two at once');
  assert.equal(limiter.inFlight, 2);
  assert.equal(limiter.queued, 5);
  assert.equal(limiter.hasFreeSlot, false);
  fetches.get('flood0')!.open();
  await tick();
  // flood queued first, so it goes first; the other client is next, not behind flood2..flood5
  assert.deepEqual(started.slice(2), ['flood2']);
  fetches.get('flood1')!.open();
  await tick();
  assert.deepEqual(started.slice(3), ['other0'], 'the other requester next');
  for (const name of ['flood2', 'other0', 'flood3', 'flood4', 'flood5']) {
    fetches.get(name)!.open();
    await tick();
  }
  assert.deepEqual((await Promise.all(results)).sort(), ['flood0', 'flood1', 'flood2', 'flood3', 'flood4', 'flood5', 'other0']);
  assert.equal(limiter.inFlight, 0);
  assert.equal(limiter.queued, 0);
  assert.equal(limiter.hasFreeSlot, true);
});

test('fetch limiter: a failed fetch frees its slot', async () => {
  const limiter = new FetchLimiter(1);
  await assert.rejects(limiter.run(async () => Promise.reject(new Error('store down'))), /store down/);
  assert.equal(await limiter.run(async () => 'ok'), 'ok');
  assert.equal(limiter.inFlight, 0);
});
