// LiveReadView: a read that finds an object gone moves the view to the store's newer root and
// reads again; the same root missing an object is damage; a volume resized or made again under
// the name fails the read instead of answering from it; an engine the view left is closed once
// no read is under way on it, and gets no memory back after.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LiveReadView, VolumeChanged } from '../../src/cli/live-read-view';
import { VaultError } from '../../src/errors';
import { createLogger } from '../../src/util/log';
import type { VolumeEngine } from '../../src/volume/volume-engine';

const logger = createLogger('silent');
const MIB = 1 << 20;

/** The store's root now, as every fake engine sees it. */
const store = { seq: 1 };

interface Fake {
  closes: number;
  hits: number;
  given: Buffer[];
  readonly currentSeq: number;
}

/** A stand-in read-only engine on root `seq` of volume `id`. */
function fakeEngine(seq: number, read: () => Promise<Buffer>, id = 'v1', size = 8 * MIB): Fake & VolumeEngine {
  const e = {
    name: 'vol',
    description: 'volume vol',
    size,
    volumeId: id,
    caps: { readOnly: true, canFlush: false, canFua: false, canTrim: false, canZero: false, canFastZero: false, canCache: true, canMultiConn: true },
    currentSeq: seq,
    closes: 0,
    given: [] as Buffer[],
    read,
    readDone(b: Buffer) {
      e.given.push(b);
    },
    async storeRootSeq() {
      return store.seq;
    },
    async close() {
      e.closes++;
    },
    hits: 0,
    stats() {
      return { readCacheHits: e.hits, readCacheMisses: 1, readCacheBytes: 100, decodeBuffersReused: 0, decodeBuffersFreeBytes: 0, dirtyBytes: 0, dirtyChunks: 0, uploadsInFlight: 0, journals: 2, journalBlocks: 5, leaseHeld: false, leaseLost: false };
    },
  };
  return e as unknown as Fake & VolumeEngine;
}

const missing = () => new VaultError('ERR_IO', 'chunk 0 of vol is missing from the store (object volumes/x/chunks/0)');
const gone = async (): Promise<Buffer> => {
  throw missing();
};

/** A view whose engines come from `engines`, in order; `opened()` counts the opens. */
async function viewOf(engines: Array<Fake & VolumeEngine>) {
  let n = 0;
  const view = await LiveReadView.open(async () => {
    if (n >= engines.length) throw new Error('no more engines');
    return engines[n++];
  }, logger);
  return { view, opened: () => n };
}

test('a read that finds an object gone moves to the newer root and reads again; the engine left is closed', async () => {
  store.seq = 1;
  const old = fakeEngine(1, gone);
  old.hits = 7;
  const fresh = fakeEngine(2, async () => Buffer.from('new'));
  const { view, opened } = await viewOf([old, fresh]);
  store.seq = 2; // the writer elsewhere committed, and deleted what root 1 named
  const data = await view.read(0, 3);
  assert.equal(data.toString(), 'new');
  assert.equal(opened(), 2);
  assert.equal(view.currentSeq, 2);
  assert.equal(old.closes, 1, 'the engine left behind is closed');
  view.readDone(data);
  assert.deepEqual(fresh.given, [data], 'the memory goes back to the engine that lent it');
  // its counters go on from the engine it left (a counter falling back reads as a reset); the
  // journals it replays are the writer's, not counted again
  fresh.hits = 3;
  const stats = view.stats();
  assert.deepEqual([stats.readCacheHits, stats.readCacheMisses, stats.readCacheBytes, stats.journals, stats.journalBlocks], [7 + 3, 1 + 1, 100, 0, 0]);
  await view.close();
  assert.equal(fresh.closes, 1);
});

test('the same root missing an object is damage: the error stands, and the view does not reopen', async () => {
  store.seq = 1;
  const { view, opened } = await viewOf([fakeEngine(1, gone)]);
  await assert.rejects(view.read(0, 3), /missing from the store/);
  assert.equal(opened(), 1);
  await view.close();
});

test('an engine the view left stays open while a read on it is under way, and gets no memory back after', async () => {
  store.seq = 1;
  let finishSlow!: (b: Buffer) => void;
  let calls = 0;
  const old = fakeEngine(1, () => (++calls === 1 ? new Promise<Buffer>((r) => (finishSlow = r)) : gone()));
  const fresh = fakeEngine(2, async () => Buffer.from('new'));
  const { view } = await viewOf([old, fresh]);
  const slow = view.read(0, 3);
  store.seq = 2;
  assert.equal((await view.read(0, 3)).toString(), 'new', 'the second read moved the view');
  assert.equal(old.closes, 0, 'not closed under the slow read');
  finishSlow(Buffer.from('old'));
  const late = await slow;
  assert.equal(late.toString(), 'old');
  assert.equal(old.closes, 1, 'closed once its last read ended');
  view.readDone(late);
  assert.deepEqual(old.given, [], 'a closed engine is given no memory back');
  await view.close();
});

test('closing the view closes the engines it left, also one a read is still on, and waits for their closes', async () => {
  store.seq = 1;
  let calls = 0;
  const old = fakeEngine(1, () => (++calls === 1 ? new Promise<Buffer>(() => {}) : gone())); // the first read never ends
  let finishClose!: () => void;
  old.close = () => {
    old.closes++;
    return new Promise<void>((r) => (finishClose = r));
  };
  const fresh = fakeEngine(2, async () => Buffer.from('new'));
  const { view } = await viewOf([old, fresh]);
  void view.read(0, 3);
  store.seq = 2;
  assert.equal((await view.read(0, 3)).toString(), 'new', 'the second read moved the view');
  assert.equal(old.closes, 0, 'not closed under the read still on it');
  let closed = false;
  const closing = view.close().then(() => (closed = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(old.closes, 1, 'the view closing closes the engine it left');
  assert.equal(fresh.closes, 1);
  assert.equal(closed, false, 'not closed before the left engine finished closing');
  finishClose();
  await closing;
  assert.equal(closed, true);
});

test('a volume resized, or deleted and made again under its name, fails the read; later misses fail at once; freshen says so', async () => {
  for (const [next, said] of [
    [fakeEngine(2, async () => Buffer.from('other volume'), 'v2'), /was deleted and made again since this read-only client connected: reconnect/],
    [fakeEngine(2, async () => Buffer.from('smaller'), 'v1', 4 * MIB), /was resized \(8388608 to 4194304 bytes\)/],
  ] as const) {
    store.seq = 1;
    const { view, opened } = await viewOf([fakeEngine(1, gone), next]);
    store.seq = 2;
    await assert.rejects(view.read(0, 3), (err: Error) => err instanceof VolumeChanged && said.test(err.message));
    assert.equal(next.closes, 1, 'the engine of the changed volume is closed, not read');
    await assert.rejects(view.read(0, 3), VolumeChanged);
    assert.equal(opened(), 2, 'no further opens');
    await assert.rejects(view.freshen(), VolumeChanged);
    await view.close();
  }
});

test('other errors pass through without a move; a root that keeps being replaced ends in the error', async () => {
  store.seq = 1;
  const { view, opened } = await viewOf([
    fakeEngine(1, async () => {
      throw new VaultError('ERR_AUTH_FAILED', 'chunk 0 failed authentication');
    }),
  ]);
  store.seq = 2;
  await assert.rejects(view.read(0, 3), /failed authentication/);
  assert.equal(opened(), 1, 'no move for damage');
  await view.close();

  store.seq = 10;
  let seq = 0;
  let moves = 0;
  const restless = await LiveReadView.open(async () => {
    moves++;
    return fakeEngine(++seq, gone); // every root is behind the store's
  }, logger);
  await assert.rejects(restless.read(0, 3), /missing from the store/);
  assert.equal(moves, 4, 'the first engine and three moves, then the error');
  await restless.close();
});

test('freshen (a new connection) moves the view only when the store has a newer root', async () => {
  store.seq = 1;
  const { view, opened } = await viewOf([fakeEngine(1, gone), fakeEngine(2, gone)]);
  await view.freshen();
  assert.equal(opened(), 1, 'no newer root: not moved');
  store.seq = 2;
  await view.freshen();
  assert.equal(opened(), 2);
  assert.equal(view.currentSeq, 2);
  await view.close();
});
