// reply-writer.ts: a client that does not read its replies is dropped after a minute, or after
// CONTENDED_STALL_MS while other connections wait for the memory budget (a dozen non-readers froze
// every other client for that minute).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { CONTENDED_STALL_MS, ReplyWriter } from '../../src/nbd/reply-writer';

/** a socket whose client never reads: every write stays in it (writableLength) and leaves it
 *  needing a drain; `take(n)` is the client reading n bytes */
function stuckSocket(): Socket & { take(n: number): void } {
  const sock = Object.assign(new EventEmitter(), {
    destroyed: false,
    writableEnded: false,
    writableNeedDrain: true,
    writableLength: 0,
    cork() {},
    uncork() {},
    write(b: Buffer) {
      sock.writableLength += b.length;
      return false;
    },
    take(n: number) {
      sock.writableLength -= n;
    },
  });
  return sock as unknown as Socket & { take(n: number): void };
}

test('unread replies: dropped after 15 s without progress while others wait for memory, after 60 s otherwise; a slow reader stays; a drain resets the watch', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  // in steps of a second: a timer set by a timer's callback runs in a later tick() only
  const advance = (ms: number) => {
    for (; ms > 0; ms -= 1000) t.mock.timers.tick(Math.min(1000, ms));
  };
  let contended = false;
  let stalls = 0;
  const w = new ReplyWriter(stuckSocket(), () => stalls++, () => contended);
  w.write([Buffer.alloc(16)]);
  advance(CONTENDED_STALL_MS);
  assert.equal(stalls, 0, 'nobody waits: not yet');
  advance(60_000 - CONTENDED_STALL_MS - 1);
  assert.equal(stalls, 0);
  advance(1);
  assert.equal(stalls, 1, 'a minute without a drain');

  const s2 = stuckSocket();
  const w2 = new ReplyWriter(s2, () => stalls++, () => contended);
  w2.write([Buffer.alloc(16)]);
  contended = true;
  advance(CONTENDED_STALL_MS - 1);
  assert.equal(stalls, 1);
  advance(1);
  assert.equal(stalls, 2, 'others wait: dropped after 15 s');

  // a client that reads a big reply slowly (1 MiB per 15 s) is slow, not stalled, even under contention
  const slow = stuckSocket();
  const ws = new ReplyWriter(slow, () => stalls++, () => contended);
  ws.write([Buffer.alloc(32 * 2 ** 20)]);
  for (let i = 0; i < 8; i++) {
    advance(CONTENDED_STALL_MS - 1000);
    slow.take(2 ** 20);
    advance(1000);
  }
  assert.equal(stalls, 2, 'two minutes of slow reading: still served');
  advance(CONTENDED_STALL_MS);
  assert.equal(stalls, 3, 'then 15 s of nothing under contention: dropped');

  const s3 = stuckSocket();
  const w3 = new ReplyWriter(s3, () => stalls++, () => contended);
  w3.write([Buffer.alloc(16)]);
  advance(CONTENDED_STALL_MS - 1);
  s3.emit('drain'); // the client read some
  advance(CONTENDED_STALL_MS);
  assert.equal(stalls, 3, 'a drain stops the watch');
});
