// Units of a connection's share of the process memory budget, and of the request reader's
// accounting that feeds it (payloadInProgress, peekLength).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BudgetShare, BUDGET_STEP_BYTES } from '../../src/nbd/budget-share';
import { RequestReader, type NbdRequest } from '../../src/nbd/request-reader';
import { MemoryBudget } from '../../src/util/memory-budget';
import { request } from './raw-client';

const settle = () => new Promise((r) => setImmediate(r));
const STEP = BUDGET_STEP_BYTES;

test('without a budget every cover succeeds', () => {
  const s = new BudgetShare(undefined, () => assert.fail('never waits'));
  assert.equal(s.cover(1e12), true);
  assert.equal(s.heldBytes, 0);
});

test('cover takes the budget in steps, trim gives back what is no longer needed, close everything', () => {
  const b = new MemoryBudget(16 * STEP);
  const s = new BudgetShare(b, () => assert.fail('never waits'));
  assert.equal(s.cover(1), true);
  assert.equal(s.heldBytes, STEP, 'one step');
  assert.equal(s.cover(STEP), true, 'already covered');
  assert.equal(b.usedBytes, STEP);
  assert.equal(s.cover(3 * STEP + 1), true);
  assert.equal(s.heldBytes, 4 * STEP);
  assert.equal(b.usedBytes, 4 * STEP);
  s.trim(STEP + 5);
  assert.ok(s.heldBytes >= STEP + 5, 'still covers what is held');
  s.trim(0);
  assert.equal(s.heldBytes, 0);
  assert.equal(b.usedBytes, 0, 'an idle connection holds nothing');
  assert.equal(s.cover(2 * STEP), true);
  s.close();
  assert.equal(b.usedBytes, 0);
  assert.equal(s.cover(STEP), false, 'a closed share covers nothing new');
});

test('when the budget is full the share waits its turn and is told when granted', async () => {
  const b = new MemoryBudget(4 * STEP);
  const other = await b.reserve(3 * STEP);
  let granted = 0;
  const s = new BudgetShare(b, () => granted++);
  assert.equal(s.cover(2 * STEP), false);
  assert.equal(s.isWaiting, true);
  assert.equal(s.cover(2 * STEP), false, 'one reservation at a time');
  assert.equal(b.stats().waiting, 1);
  other();
  await settle();
  assert.equal(granted, 1);
  assert.equal(s.isWaiting, false);
  assert.equal(s.cover(2 * STEP), true);
  assert.equal(b.usedBytes, 2 * STEP);
  s.close();
  assert.equal(b.usedBytes, 0);
});

test('a grant that lands after the connection closed is given back at once', async () => {
  const b = new MemoryBudget(4 * STEP);
  const other = await b.reserve(4 * STEP);
  const s = new BudgetShare(b, () => assert.fail('closed: not told'));
  assert.equal(s.cover(STEP), false);
  s.close();
  other();
  await settle();
  assert.equal(b.usedBytes, 0);
  assert.equal(b.stats().waiting, 0);
});

test('request reader: payloadInProgress is the whole WRITE being read; peekLength sees the next READ/WRITE, also split across chunks', () => {
  const got: NbdRequest[] = [];
  const r = new RequestReader(32 * 2 ** 20, (q) => got.push(q));
  const read = request(0, 0, 1, 0, 65536);
  const write = request(1, 0, 2, 0, 200_000, Buffer.alloc(200_000, 7));
  const huge = request(0, 0, 3, 0, 64 * 2 ** 20);
  const flush = request(3, 0, 4, 0, 0);
  r.push(Buffer.concat([read, write.subarray(0, 28 + 1000)]));
  assert.equal(r.pendingBytes, 28 + 28 + 1000);
  assert.equal(r.payloadInProgress, 0);
  assert.equal(r.peekLength(), 65536);
  let n = 0;
  assert.equal(r.run(() => n++ >= 1), 'stopped', 'stopped after one request');
  assert.equal(got.length, 1);
  assert.equal(r.peekLength(), 200_000, 'the WRITE header is next');
  assert.equal(r.run(() => false), 'need-more');
  assert.equal(r.payloadInProgress, 200_000, 'the whole payload, not the part read so far');
  assert.equal(r.peekLength(), null, 'in the middle of a payload');
  r.push(Buffer.concat([write.subarray(28 + 1000), huge, flush]));
  assert.equal(r.run(() => got.length >= 2), 'stopped');
  assert.equal(got[1].length, 200_000);
  assert.equal(r.payloadInProgress, 0, 'the WRITE is a request now');
  assert.equal(r.peekLength(), 0, 'a READ over the payload limit is refused, never held');
  assert.equal(r.run(() => got.length >= 3), 'stopped');
  assert.equal(r.peekLength(), null, 'FLUSH holds no data');
  assert.equal(r.run(() => false), 'need-more');
  assert.equal(got.length, 4);
  assert.equal(r.pendingBytes, 0);
  // a header split over three socket chunks, and one already half consumed by the parser
  const next = request(1, 0, 5, 0, 4096, Buffer.alloc(4096, 1));
  r.push(next.subarray(0, 10));
  assert.equal(r.peekLength(), null, 'header not all here');
  r.push(next.subarray(10, 20));
  r.push(next.subarray(20, 40));
  assert.equal(r.peekLength(), 4096);
  const r2 = new RequestReader(32 * 2 ** 20, (q) => got.push(q));
  r2.push(next.subarray(0, 10));
  assert.equal(r2.run(() => false), 'need-more', 'the parser holds 10 header bytes');
  r2.push(next.subarray(10, 30));
  assert.equal(r2.peekLength(), 4096, 'peeked from the held part and the new chunk');
});
