import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeAfter } from '../../src/util/close-after';

test('closeAfter: the body failed and the close failed too: the body\'s error is thrown, the close\'s handed to suppressed', async () => {
  const suppressed: unknown[] = [];
  let closed = 0;
  await assert.rejects(
    closeAfter(
      async () => {
        throw new Error('the body failed');
      },
      async () => {
        closed++;
        throw new Error('the close failed');
      },
      (err) => suppressed.push(err),
    ),
    /the body failed/,
  );
  assert.equal(closed, 1);
  assert.deepEqual(suppressed.map((e) => (e as Error).message), ['the close failed']);
});

test('closeAfter: the body succeeded: its result, after the close; a failing close is the error then', async () => {
  const order: string[] = [];
  const body = async () => (order.push('body'), 42);
  assert.equal(await closeAfter(body, async () => void order.push('close'), () => assert.fail('nothing suppressed')), 42);
  assert.deepEqual(order, ['body', 'close']);
  await assert.rejects(
    closeAfter(body, async () => Promise.reject(new Error('not durable')), () => assert.fail('nothing suppressed')),
    /not durable/,
  );
});

test('closeAfter: a failed body with a clean close: the body\'s error, nothing suppressed', async () => {
  let closed = false;
  await assert.rejects(
    closeAfter(() => Promise.reject(new Error('first')), async () => void (closed = true), () => assert.fail('nothing suppressed')),
    /first/,
  );
  assert.ok(closed);
});
