// IdleTimer (util/idle-timer.ts): onIdle once `ms` passed since the last touch, not before; a
// touch meanwhile moves it; cancel and Infinity never fire it.
import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import { IdleTimer } from '../../src/util/idle-timer';

test('IdleTimer fires once, ms after the last touch', () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  try {
    let fired = 0;
    const t = new IdleTimer(5_000, () => fired++);
    t.touch();
    mock.timers.tick(4_000);
    t.touch(); // used at 4 s
    mock.timers.tick(4_000);
    assert.equal(fired, 0, '4 s after the last touch');
    mock.timers.tick(1_000);
    assert.equal(fired, 1, '5 s after it');
    mock.timers.tick(60_000);
    assert.equal(fired, 1, 'once: not again without a touch');
    t.touch();
    mock.timers.tick(2_000);
    t.cancel();
    mock.timers.tick(60_000);
    assert.equal(fired, 1, 'cancelled');
    const never = new IdleTimer(Infinity, () => fired++);
    never.touch();
    mock.timers.tick(10 ** 9);
    assert.equal(fired, 1, 'Infinity: never');
  } finally {
    mock.timers.reset();
  }
});
