// Whole-chunk rewrites (sealer.ts): a chunk written whole is stored on its own, beside others,
// and applied as soon as it is stored, outside the seal cycles. What must hold: each is applied
// on its own; a flush waits for them and makes them durable; a failed one loses nothing and is
// stored by the next cycle; a write into a chunk being rewritten wins; a chunk that older
// journals hold blocks of goes through a cycle (its reset), never alone; the memory budget a
// write holds goes back once its chunk is stored.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import type { PutOptions } from '../../src/store/object-store';
import { VaultError } from '../../src/errors';
import { MemoryBudget } from '../../src/util/memory-budget';
import { SettlingStore, eventually, makeVault } from './vault-fixture';

/** A store whose chunk-object puts wait at a gate (opened one at a time or all) or fail. */
class GatedStore extends SettlingStore {
  gated = false;
  failChunks = false;
  waiting: Array<() => void> = [];
  chunkPuts = 0;
  override async put(key: string, body: Buffer, opts?: PutOptions) {
    if (key.includes('/chunks/')) {
      if (this.failChunks) throw new VaultError('ERR_STORE_IO', 'injected put failure');
      if (this.gated) await new Promise<void>((r) => this.waiting.push(r));
      this.chunkPuts++;
    }
    return super.put(key, body, opts);
  }
  openOne(): void {
    this.waiting.shift()?.();
  }
  openAll(): void {
    this.gated = false;
    for (const r of this.waiting.splice(0)) r();
  }
}

async function setup(t: { after(fn: () => void): void }, chunks = 8, memoryBudget?: MemoryBudget) {
  const store = new GatedStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', chunks * CHUNK_SIZE);
  const e = await f.vault.openEngine('v', { dirtyLimitBytes: 64 * 2 ** 20, uploadConcurrency: 4, memoryBudget });
  const internals = e as unknown as {
    state: { dirtyBytes: number; blocks: { keptBytes: number }; overlay: { hasChunk(i: number): boolean }; active: { chunks: Map<number, unknown> } };
    sealer: { failures: number; rewritable(i: number): boolean };
  };
  /** the volume as a fresh process finds it in the store (the last durable root) */
  const durable = async (offset: number, length: number) => {
    const r = await (await f.reopen()).openEngine('v', { readOnly: true });
    try {
      return await r.read(offset, length);
    } finally {
      await r.close();
    }
  };
  return { store, f, e, state: internals.state, sealer: internals.sealer, durable };
}

test('whole chunks are stored side by side, each applied (its memory given back) as soon as it is stored', async (t) => {
  const { store, e, state, durable } = await setup(t);
  store.gated = true;
  const data = randomBytes(3 * CHUNK_SIZE);
  await e.write(0, data);
  await eventually(() => store.waiting.length === 3, 'three chunk puts wait side by side');
  assert.equal(state.dirtyBytes, 3 * CHUNK_SIZE);
  store.openOne();
  await eventually(() => state.dirtyBytes === 2 * CHUNK_SIZE, 'the stored chunk left the dirty data while the other two wait');
  assert.ok((await e.read(0, data.length)).equals(data), 'reads see every chunk meanwhile');
  store.openAll();
  await e.flush();
  assert.equal(state.dirtyBytes, 0);
  assert.ok((await durable(0, data.length)).equals(data));
  await e.close();
});

test('a flush waits for the rewrites in flight and makes them durable', async (t) => {
  const { store, e, durable } = await setup(t);
  store.gated = true;
  const data = randomBytes(2 * CHUNK_SIZE);
  await e.write(CHUNK_SIZE, data);
  await eventually(() => store.waiting.length === 2, 'two chunk puts wait');
  let flushed = false;
  const flush = e.flush().then(() => (flushed = true));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(flushed, false, 'the flush waits for the chunks being stored');
  store.openAll();
  await flush;
  assert.ok((await durable(CHUNK_SIZE, data.length)).equals(data), 'after the flush the store holds them, named by its root');
  await e.close();
});

test('a rewrite that fails loses nothing: readable meanwhile, stored by the next flush', async (t) => {
  const { store, e, sealer, durable } = await setup(t);
  store.failChunks = true;
  const data = randomBytes(2 * CHUNK_SIZE);
  await e.write(2 * CHUNK_SIZE, data);
  await eventually(() => sealer.failures > 0, 'a rewrite failed');
  assert.ok((await e.read(2 * CHUNK_SIZE, data.length)).equals(data), 'still readable from the dirty data');
  await assert.rejects(e.flush(), (err: VaultError) => err.code === 'ERR_IO', 'a flush while the store fails reports it');
  store.failChunks = false;
  await e.flush();
  assert.ok((await durable(2 * CHUNK_SIZE, data.length)).equals(data));
  await e.close();
});

test('a write into a chunk while it is being rewritten wins over the rewrite', async (t) => {
  const { store, e, durable } = await setup(t);
  store.gated = true;
  const whole = randomBytes(CHUNK_SIZE);
  await e.write(0, whole);
  await eventually(() => store.waiting.length === 1, 'the rewrite waits for its put');
  const patch = randomBytes(100_000);
  await e.write(5_000, patch); // a partial write: merged over what the rewrite holds
  const expected = Buffer.from(whole);
  patch.copy(expected, 5_000);
  assert.ok((await e.read(0, CHUNK_SIZE)).equals(expected), 'before the rewrite is stored');
  store.openOne();
  await eventually(() => store.chunkPuts === 1, 'the rewrite is stored');
  assert.ok((await e.read(0, CHUNK_SIZE)).equals(expected), 'after the rewrite is applied');
  store.openAll();
  await e.flush();
  assert.ok((await durable(0, CHUNK_SIZE)).equals(expected));
  await e.close();
});

test('a whole chunk that older journals hold blocks of is sealed by a cycle (with its reset), never on its own', async (t) => {
  const { e, state, sealer, durable } = await setup(t);
  const first = randomBytes(8192);
  await e.write(4096, first);
  await e.flush(); // a journal holds those two blocks of chunk 0
  assert.ok(state.overlay.hasChunk(0));
  assert.equal(sealer.rewritable(0), false);
  const whole = randomBytes(CHUNK_SIZE);
  await e.write(0, whole);
  await e.flush();
  assert.equal(state.overlay.hasChunk(0), false, 'the cycle stored chunk 0 whole and dropped its journal blocks');
  assert.ok((await durable(0, CHUNK_SIZE)).equals(whole), 'a reopen applies none of the older journal blocks over it');
  await e.close();
});

test('the memory budget a whole-chunk write holds goes back once the chunk is stored, without a flush', async (t) => {
  const budget = new MemoryBudget(48 * 2 ** 20);
  const { e, state } = await setup(t, 16, budget);
  const data = randomBytes(11 * CHUNK_SIZE);
  // chunk-aligned writes (dd bs=4M): no block is ever left half-written to trigger a cycle
  for (let k = 0; k < 11; k++) await e.write(k * CHUNK_SIZE, data.subarray(k * CHUNK_SIZE, (k + 1) * CHUNK_SIZE));
  await eventually(() => state.dirtyBytes === 0, 'every chunk is stored');
  // (emptied slabs kept for the next writes hold budget too, and give way when it is needed)
  await eventually(() => budget.usedBytes === state.blocks.keptBytes, `the writes' budget is back (held: ${budget.usedBytes - state.blocks.keptBytes} bytes)`, 3_000);
  assert.equal(state.active.chunks.size, 0, 'no empty entry is left in the active batch');
  // and so a request that needs most of the budget gets it at once
  const release = await Promise.race([budget.reserve(40 * 2 ** 20), new Promise<null>((r) => setTimeout(() => r(null), 1_000))]);
  assert.ok(release, 'a 40 MiB reservation is granted');
  release();
  assert.ok((await e.read(0, data.length)).equals(data));
  await e.close();
});

test('a write over several chunks keeps its budget share until the last of them is stored', async (t) => {
  const budget = new MemoryBudget(256 * 2 ** 20);
  const { store, e, state } = await setup(t, 8, budget);
  store.gated = true;
  const data = randomBytes(8 * CHUNK_SIZE); // one 32 MiB request (NBD's largest payload)
  await e.write(0, data);
  await eventually(() => store.waiting.length === 4, 'four chunk puts wait');
  assert.equal(budget.usedBytes, data.length);
  store.openOne();
  await eventually(() => store.chunkPuts === 1, 'one chunk is stored');
  assert.equal(budget.usedBytes - state.blocks.keptBytes, data.length, 'the other seven chunks of the write are still dirty: its share stays');
  store.openAll();
  await eventually(() => budget.usedBytes === state.blocks.keptBytes, 'the share is back once every chunk is stored');
  assert.ok((await e.read(0, data.length)).equals(data));
  await e.close();
});
