// MeteredStore under RetryStore (as openStore stacks them with `metrics`): every attempt is
// reported with its result, and every retry once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FaultyStore, findLayer, MeteredStore, openStore } from '../../src/store';
import { faultyLayer } from '../../src/store/faulty-store';
import type { MetricsSink } from '../../src/util/metrics';

function recordingSink() {
  const requests: Array<[string, string]> = [];
  const retries: string[] = [];
  const sink: MetricsSink = {
    nbdRequest() {},
    storeRequest: (op, result, seconds) => {
      assert.ok(seconds >= 0 && seconds < 10);
      requests.push([op, result]);
    },
    storeRetry: (op) => retries.push(op),
  };
  return { sink, requests, retries };
}

test('attempts, results and retries reach the sink', async () => {
  const r = recordingSink();
  const store = openStore('memory://', { metrics: r.sink, layers: [faultyLayer({}, () => 0.5)], retry: { baseDelayMs: 1, maxDelayMs: 2 } });
  assert.equal(store.name, 'retry(faulty(memory))', 'metering does not change the stack\'s name');
  assert.ok(findLayer(store, MeteredStore), 'metered layer present');
  const faulty = findLayer(store, FaultyStore)!;
  faulty.failNext('put', 2);
  await store.put('a', Buffer.from('x'));
  await assert.rejects(store.get('missing'), (e: { code?: string }) => e.code === 'ERR_STORE_NOT_FOUND');
  const listed = [];
  for await (const info of store.list('')) listed.push(info.key);
  assert.deepEqual(listed, ['a']);
  await store.deleteMany(['a']);
  assert.deepEqual(r.requests, [
    ['put', 'ERR_STORE_TRANSIENT'],
    ['put', 'ERR_STORE_TRANSIENT'],
    ['put', 'ok'],
    ['get', 'ERR_STORE_NOT_FOUND'],
    ['list', 'ok'],
    ['deleteMany', 'ok'],
  ]);
  assert.deepEqual(r.retries, ['put', 'put']);
});

test('without a sink the stack is unchanged', () => {
  const store = openStore('memory://');
  assert.equal(store.name, 'retry(memory)');
  assert.equal(findLayer(store, MeteredStore), null);
});

test('getRange is metered with its bytes; injected getRange faults are retried like get', async () => {
  const r = recordingSink();
  const bytes: Array<[string, number]> = [];
  const sink: MetricsSink = { ...r.sink, storeBytes: (op, n) => bytes.push([op, n]) };
  const store = openStore('memory://', { metrics: sink, layers: [faultyLayer({}, () => 0.5)], retry: { baseDelayMs: 1, maxDelayMs: 2 } });
  const faulty = findLayer(store, FaultyStore)!;
  await store.put('a', Buffer.alloc(1000, 7));
  faulty.failNext('getRange', 1);
  faulty.failNext('get', 1); // a fault aimed at get strikes ranged reads too
  const got = await store.getRange('a', 900, 500);
  assert.deepEqual([...got], Array(100).fill(7));
  assert.equal(faulty.calls.getRange, 3);
  assert.equal(faulty.injected.getRange, 2);
  await store.get('a');
  await assert.rejects(store.getRange('missing', 0, 1), (e: { code?: string }) => e.code === 'ERR_STORE_NOT_FOUND');
  assert.deepEqual(r.requests, [
    ['put', 'ok'],
    ['getRange', 'ERR_STORE_TRANSIENT'],
    ['getRange', 'ERR_STORE_TRANSIENT'],
    ['getRange', 'ok'],
    ['get', 'ok'],
    ['getRange', 'ERR_STORE_NOT_FOUND'],
  ]);
  assert.deepEqual(r.retries, ['getRange', 'getRange']);
  assert.deepEqual(bytes, [['put', 1000], ['getRange', 100], ['get', 1000]]);
});
