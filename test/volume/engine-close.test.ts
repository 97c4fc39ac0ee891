// An engine's close ends its background work before it settles: a compaction step in flight stops
// at its next chunk and is waited for, and none starts during the close's flush. Before, a step
// started by the timer while the close committed went on after the close had given the lease
// back: it stored chunk objects no root would name, and once `serve` took the codec threads away,
// logged one "journal read failed" error per frame it still wanted (341 in one shutdown).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { makeVault, countKeys, eventually, SettlingStore } from './vault-fixture';
import { PassThroughStore } from '../helpers/pass-through-store';
import type { PutOptions, StoredObject } from '../../src/store/object-store';
import { MemoryBudget } from '../../src/util/memory-budget';

const MiB = 2 ** 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Holds the reads of journal objects, or the puts of roots, while asked to; counts every call
 *  that writes or deletes, so a test can see what happened after a point. */
class HoldingStore extends PassThroughStore {
  holdJournalReads = false;
  holdRootPuts = false;
  readonly held: Array<() => void> = [];
  writes: string[] = [];
  private wait(): Promise<void> {
    return new Promise((r) => this.held.push(r));
  }
  release(): void {
    this.holdJournalReads = this.holdRootPuts = false;
    for (const r of this.held.splice(0)) r();
  }
  override async get(key: string, into?: Buffer): Promise<StoredObject> {
    if (this.holdJournalReads && key.includes('/journals/')) await this.wait();
    return super.get(key, into);
  }
  override async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (this.holdJournalReads && key.includes('/journals/')) await this.wait();
    return super.getRange(key, offset, length);
  }
  override async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    this.writes.push(`put ${key}`);
    if (this.holdRootPuts && key.endsWith('/root')) await this.wait();
    return super.put(key, body, opts);
  }
  override deleteMany(keys: readonly string[]): Promise<void> {
    this.writes.push(...keys.map((k) => `delete ${k}`));
    return super.deleteMany(keys);
  }
}

/** A volume of 12 chunks with a block written in each, flushed: one journal, 12 chunks to fold. */
async function journaled() {
  const inner = new SettlingStore();
  const store = new HoldingStore(inner);
  const f = await makeVault(store);
  const meta = await f.vault.createVolume('v', 12 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v', { readCacheBytes: 0 });
  for (let i = 0; i < 12; i++) await e.write(i * CHUNK_SIZE + 4096, Buffer.alloc(4096, i + 1));
  await e.flush();
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/journals/'), 1);
  const check = async () => {
    const r = await (await f.reopen()).openEngine('v', { readOnly: true, readCacheBytes: 0 });
    for (let i = 0; i < 12; i++) assert.ok((await r.read(i * CHUNK_SIZE + 4096, 4096)).equals(Buffer.alloc(4096, i + 1)), `chunk ${i}'s block`);
    await r.close();
  };
  return { f, e, store, inner, prefix: `volumes/${meta.id}/`, check };
}

test('a close stops a compaction step in flight at its next chunk, waits for it, and leaves no object behind', async (t) => {
  const { f, e, store, inner, prefix, check } = await journaled();
  t.after(() => f.cleanup());
  store.holdJournalReads = true;
  const step = (e as any).sealer.compactStep() as Promise<number>;
  let folded: number | null = null;
  void step.then((n) => (folded = n));
  await eventually(() => store.held.length > 0, 'the step reads the journal');
  let closed = false;
  const closing = e.close().then(() => (closed = true));
  await sleep(100);
  assert.equal(closed, false, 'the close waits for the step in flight');
  store.release();
  await closing;
  assert.equal(folded, 0, 'the step stopped: no chunk folded');
  const after = store.writes.length;
  await inner.settled();
  await sleep(200);
  assert.deepEqual(store.writes.slice(after), [], 'nothing stored or deleted after the close settled');
  assert.equal(await countKeys(inner, prefix, '/chunks/'), 0, 'the chunks the step had stored are deleted again');
  assert.equal(await countKeys(inner, prefix, '/journals/'), 1, 'the journal stays for the next open');
  await check();
});

test('no compaction step starts while a close flushes, so none runs on after it', async (t) => {
  const { f, e, store, inner, prefix } = await journaled();
  t.after(() => f.cleanup());
  await e.write(0, Buffer.alloc(4096, 0xee)); // a change, so the close's flush commits a root
  store.holdRootPuts = true;
  let closed = false;
  const closing = e.close().then(() => (closed = true));
  await eventually(() => store.held.length > 0, 'the close commits its root');
  (e as any).writeBack.lastWriteMs = 0; // idle for long: the timer's next tick would fold the journals
  (e as any).writeBack.tick();
  await sleep(300); // two timer periods
  const duringClose = store.writes.filter((w) => w.includes('/chunks/'));
  store.release();
  await closing;
  assert.ok(closed);
  const after = store.writes.length;
  await inner.settled();
  await sleep(300);
  assert.deepEqual(duringClose, [], 'no chunk object stored while the close flushed');
  assert.deepEqual(store.writes.slice(after), [], 'nothing stored or deleted after the close settled');
  assert.equal(await countKeys(inner, prefix, '/chunks/'), 0);
  const r = await (await f.reopen()).openEngine('v', { readOnly: true, readCacheBytes: 0 });
  assert.ok((await r.read(0, 4096)).equals(Buffer.alloc(4096, 0xee)), 'the close flushed the last write');
  for (let i = 1; i < 12; i++) assert.ok((await r.read(i * CHUNK_SIZE + 4096, 4096)).equals(Buffer.alloc(4096, i + 1)), `chunk ${i}'s block`);
  await r.close();
});

/** Lists of snapshot records wait while asked to: a snapshot is then between its start and its
 *  exclusive section. */
class SlowListStore extends HoldingStore {
  holdSnapshotLists = false;
  override async *list(prefix: string) {
    if (this.holdSnapshotLists && prefix.includes('/snapshots/')) await new Promise((r) => setTimeout(r, 300));
    yield* super.list(prefix);
  }
}

test('a snapshot asked for before a close is taken before the close settles; one asked for after is refused, and nothing is stored after the close', async (t) => {
  const inner = new SettlingStore();
  const store = new SlowListStore(inner);
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 16 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v', { autoCommitMs: 0 });
  for (let k = 0; k < 16; k++) await e.write(k * CHUNK_SIZE + 8192, Buffer.alloc(4096, k + 1)); // journal blocks
  await e.flush();
  store.holdSnapshotLists = true;
  const snap = e.snapshot('s1');
  let taken = false;
  void snap.then(() => (taken = true));
  const closing = e.close();
  const late = e.snapshot('s2').then(() => null, (err: any) => err);
  await closing;
  const after = store.writes.length;
  assert.ok(taken, 'the snapshot asked for first was taken before the close settled');
  assert.equal((await snap).name, 's1');
  assert.equal((await late)?.code, 'ERR_SHUTDOWN', 'a snapshot asked for once the close began is refused');
  assert.throws(() => (e as any).opts.lease.check(), (err: any) => err.code === 'ERR_LEASE', 'a released lease fences every later commit');
  await inner.settled();
  await sleep(200);
  assert.deepEqual(store.writes.slice(after), [], 'nothing stored or deleted after the close settled');
  const v2 = await f.reopen();
  const r = await v2.openSnapshotEngine('v', 's1', { readCacheBytes: 0 });
  for (let k = 0; k < 16; k++) assert.ok((await r.read(k * CHUNK_SIZE + 8192, 4096)).equals(Buffer.alloc(4096, k + 1)), `snapshot block ${k}`);
  await r.close();
});

test('readahead in flight at a close is waited for, and keeps no share of the memory budget', async (t) => {
  const inner = new SettlingStore();
  const store = new HoldingStore(inner);
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 16 * CHUNK_SIZE);
  const w = await f.vault.openEngine('v');
  await w.write(0, Buffer.alloc(12 * CHUNK_SIZE, 0x5a));
  await w.close();
  const budget = new MemoryBudget(1024 * MiB);
  const e = await f.vault.openEngine('v', { memoryBudget: budget, readCacheBytes: 256 * MiB, readaheadChunks: 8 });
  let fetching = 0;
  let landed = 0;
  const slowGet = store.get.bind(store);
  store.get = async (key: string, into?: Buffer) => {
    if (!key.includes('/chunks/')) return slowGet(key, into);
    fetching++;
    await sleep(200);
    landed++;
    return slowGet(key, into);
  };
  for (let k = 0; k < 3; k++) e.readDone(await e.read(k * MiB, MiB)); // a stream: readahead starts
  assert.ok(fetching > landed, 'readahead fetches are in flight');
  await e.close();
  assert.equal(landed, fetching, 'the close waited for every fetch');
  assert.equal(budget.usedBytes, 0, 'the closed engine holds none of the budget');
  await sleep(300);
  assert.equal(budget.usedBytes, 0);
});

test('a write waiting for room when the close gives up on a failing store is refused (ERR_SHUTDOWN), not left waiting for good', async (t) => {
  const inner = new SettlingStore();
  const store = new (class extends HoldingStore {
    failing = false;
    override async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
      if (this.failing && /\/(chunks|journals)\//.test(key)) throw Object.assign(new Error('the store is down'), { code: 'ERR_IO' });
      return super.put(key, body, opts);
    }
  })(inner);
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 4 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v', { dirtyLimitBytes: MiB, readCacheBytes: 0 });
  store.failing = true;
  await e.write(0, Buffer.alloc(MiB, 1)); // the dirty limit is full, and sealing fails
  let outcome: unknown = 'waiting';
  const waiting = e.write(CHUNK_SIZE, Buffer.alloc(64 * 1024, 2)).then(
    () => (outcome = 'written'),
    (err) => (outcome = err),
  );
  await sleep(200);
  assert.equal(outcome, 'waiting', 'the write waits for room');
  await assert.rejects(e.close(), 'the close says its flush failed');
  await Promise.race([waiting, sleep(2000)]);
  assert.equal((outcome as any)?.code, 'ERR_SHUTDOWN', 'the waiting write is refused once the volume closed');
});
