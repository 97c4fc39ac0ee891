import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InFlight } from '../../src/util/in-flight';

test('InFlight: settled() waits for everything tracked, also what is tracked meanwhile, and for rejections too', async () => {
  const work = new InFlight();
  const order: string[] = [];
  const later = (ms: number, what: string, fail = false) =>
    new Promise<void>((resolve, reject) => setTimeout(() => (order.push(what), fail ? reject(new Error(what)) : resolve()), ms));
  void work.track(later(20, 'first').then(() => void work.track(later(20, 'added meanwhile'))));
  work.track(later(10, 'failed', true)).catch(() => {});
  await work.settled();
  assert.deepEqual(order, ['failed', 'first', 'added meanwhile']);
  assert.equal(work.size, 0);
  await work.settled(); // nothing tracked: at once
});
