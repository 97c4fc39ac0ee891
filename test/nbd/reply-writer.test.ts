// reply-writer.ts: a client that does not read its replies is dropped after a minute, or after
// CONTENDED_STALL_MS while other connections wait for the memory budget (a dozen non-readers froze
// every other client for that minute).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { CONTENDED_STALL_MS, ReplyWriter } from '../../src/nbd/reply-writer';

/** a socket whose client never reads: every write leaves it needing a drain */
function stuckSocket(): Socket {
  return Object.assign(new EventEmitter(), {
    destroyed: false,
    writableEnded: false,
    writableNeedDrain: true,
    cork() {},
    uncork() {},
    write() {
      return false;
    },
  }) as unknown as Socket;
}

test('unread replies: dropped after 15 s while others wait for memory, after 60 s otherwise; a drain resets the watch', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  let contended = false;
  let stalls = 0;
  const w = new ReplyWriter(stuckSocket(), () => stalls++, () => contended);
  w.write([Buffer.alloc(16)]);
  t.mock.timers.tick(CONTENDED_STALL_MS);
  assert.equal(stalls, 0, 'nobody waits: not yet');
  t.mock.timers.tick(60_000 - CONTENDED_STALL_MS - 1);
  assert.equal(stalls, 0);
  t.mock.timers.tick(1);
  assert.equal(stalls, 1, 'a minute without a drain');

  const s2 = stuckSocket();
  const w2 = new ReplyWriter(s2, () => stalls++, () => contended);
  w2.write([Buffer.alloc(16)]);
  contended = true;
  t.mock.timers.tick(CONTENDED_STALL_MS - 1);
  assert.equal(stalls, 1);
  t.mock.timers.tick(1);
  assert.equal(stalls, 2, 'others wait: dropped after 15 s');

  const s3 = stuckSocket();
  const w3 = new ReplyWriter(s3, () => stalls++, () => contended);
  w3.write([Buffer.alloc(16)]);
  t.mock.timers.tick(CONTENDED_STALL_MS - 1);
  s3.emit('drain'); // the client read some
  t.mock.timers.tick(CONTENDED_STALL_MS);
  assert.equal(stalls, 2, 'a drain stops the watch');
});
