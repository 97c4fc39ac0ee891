import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TIMED_OUT, settledWithin, within } from '../../src/util/within';

const later = <T>(ms: number, v: T, fail = false) => new Promise<T>((resolve, reject) => setTimeout(() => (fail ? reject(new Error(String(v))) : resolve(v)), ms));

test('within: the value in time, TIMED_OUT after, a rejection in time passes through, one after is swallowed', async () => {
  assert.equal(await within(later(5, 'v'), 200), 'v');
  assert.equal(await within(later(200, 'v'), 5), TIMED_OUT);
  await assert.rejects(within(later(5, 'boom', true), 200), /boom/);
  const lateFailure = later(50, 'late', true);
  assert.equal(await within(lateFailure, 5), TIMED_OUT);
  await lateFailure.catch(() => {}); // settled by now: nothing unhandled escaped within()
});

test('settledWithin: true when the promise settles either way in time, false otherwise', async () => {
  assert.equal(await settledWithin(later(5, 1), 200), true);
  assert.equal(await settledWithin(later(5, 1, true), 200), true);
  assert.equal(await settledWithin(new Promise(() => {}), 20), false);
});
