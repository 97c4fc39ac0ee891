// LiveReadView: a read that finds an object gone moves the view to the newest root and reads
// again; an engine the view left is closed once no read is under way on it; other errors pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LiveReadView, VIEW_FRESH_MS } from '../../src/cli/live-read-view';
import { VaultError } from '../../src/errors';
import { createLogger } from '../../src/util/log';
import type { VolumeEngine } from '../../src/volume/volume-engine';

const logger = createLogger('silent');

/** A stand-in engine: reads answer with `answer` (or what `next` says), close is counted. */
function fakeEngine(seq: number, read: () => Promise<Buffer>) {
  const e = {
    name: 'vol',
    description: 'volume vol',
    size: 1 << 20,
    caps: { readOnly: true, canFlush: false, canFua: false, canTrim: false, canZero: false, canFastZero: false, canCache: true, canMultiConn: true },
    currentSeq: seq,
    closed: 0,
    read,
    async close() {
      e.closed++;
    },
  };
  return e;
}

const missing = () => new VaultError('ERR_IO', 'chunk 0 of vol is missing from the store (object volumes/x/chunks/0)');

test('a read that finds an object gone moves to the newest root and reads again; the engine left is closed', async () => {
  const old = fakeEngine(1, async () => {
    throw missing();
  });
  const fresh = fakeEngine(2, async () => Buffer.from('new'));
  const engines = [old, fresh];
  let opened = 0;
  const view = await LiveReadView.open(async () => engines[opened++] as unknown as VolumeEngine, logger);
  assert.equal((await view.read(0, 3)).toString(), 'new');
  assert.equal(opened, 2);
  assert.equal(view.currentSeq, 2);
  assert.equal(old.closed, 1, 'the engine left behind is closed');
  assert.equal(fresh.closed, 0);
  await view.close();
  assert.equal(fresh.closed, 1);
});

test('an engine the view left stays open while a read on it is under way', async () => {
  let finishSlow!: (b: Buffer) => void;
  let calls = 0;
  const old = fakeEngine(1, () => {
    calls++;
    if (calls === 1) return new Promise<Buffer>((r) => (finishSlow = r)); // slow, still fine
    return Promise.reject(missing());
  });
  const fresh = fakeEngine(2, async () => Buffer.from('new'));
  const engines = [old, fresh];
  let opened = 0;
  const view = await LiveReadView.open(async () => engines[opened++] as unknown as VolumeEngine, logger);
  const slow = view.read(0, 3);
  assert.equal((await view.read(0, 3)).toString(), 'new', 'the second read moved the view');
  assert.equal(old.closed, 0, 'not closed under the slow read');
  finishSlow(Buffer.from('old'));
  assert.equal((await slow).toString(), 'old');
  assert.equal(old.closed, 1, 'closed once its last read ended');
  await view.close();
});

test('other errors pass through without a move; a root that keeps vanishing ends in the error', async () => {
  const failing = fakeEngine(1, async () => {
    throw new VaultError('ERR_AUTH_FAILED', 'chunk 0 failed authentication');
  });
  let opened = 0;
  const view = await LiveReadView.open(async () => (opened++, failing as unknown as VolumeEngine), logger);
  await assert.rejects(view.read(0, 3), /failed authentication/);
  assert.equal(opened, 1, 'no move for damage');

  const gone = () =>
    fakeEngine(1, async () => {
      throw missing();
    });
  let moves = 0;
  const restless = await LiveReadView.open(async () => (moves++, gone() as unknown as VolumeEngine), logger);
  await assert.rejects(restless.read(0, 3), /missing from the store/);
  assert.equal(moves, 3, 'the first engine and two moves, then the error');
  await restless.close();
});

test('freshen moves a view older than VIEW_FRESH_MS to the newest root, and leaves a young one', async () => {
  let opened = 0;
  const view = await LiveReadView.open(async () => fakeEngine(++opened, async () => Buffer.alloc(0)) as unknown as VolumeEngine, logger);
  await view.freshen();
  assert.equal(opened, 1, 'young: not moved');
  await new Promise((r) => setTimeout(r, VIEW_FRESH_MS + 50));
  await view.freshen();
  assert.equal(opened, 2);
  assert.equal(view.currentSeq, 2);
  await view.close();
});
