// Sealing's share of the memory budget is one bound for every volume of a process: however many
// engines flush at once, the chunks and journals they hold in flight (assembled, sealed,
// uploading) stay within it. Without the shared SealMemory each engine would upload 16 chunks
// at once (its upload concurrency), and two engines 32.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { SealMemory, sealShareOf } from '../../src/volume/seal-memory';
import type { PutOptions } from '../../src/store';
import { makeVault, SettlingStore } from './vault-fixture';

/** Counts object uploads in flight under `part` (chunks or journals), slowed so they overlap. */
class InFlightStore extends SettlingStore {
  uploading = 0;
  peak = 0;
  constructor(private readonly part: string) {
    super();
  }
  override async put(key: string, body: Buffer, opts: PutOptions = {}) {
    if (!key.includes(this.part)) return super.put(key, body, opts);
    this.peak = Math.max(this.peak, ++this.uploading);
    try {
      await new Promise((r) => setTimeout(r, 20));
      return await super.put(key, body, opts);
    } finally {
      this.uploading--;
    }
  }
}

async function flushTogether(store: InFlightStore, memory: SealMemory | undefined, write: (e: import('../../src/volume/volume-engine').VolumeEngine) => Promise<void>) {
  const f = await makeVault(store);
  const engines = [];
  for (const name of ['a', 'b']) {
    await f.vault.createVolume(name, 16 * CHUNK_SIZE);
    engines.push(await f.vault.openEngine(name, { autoCommitMs: 0, writebackDelayMs: 60_000, uploadConcurrency: 16, ...(memory ? { sealMemory: memory } : {}) }));
  }
  for (const e of engines) await write(e);
  await Promise.all(engines.map((e) => e.flush()));
  for (const e of engines) await e.close();
  f.cleanup();
}

test('two engines sharing a SealMemory never upload more whole chunks at once than it holds', async () => {
  const wholeChunks = async (e: import('../../src/volume/volume-engine').VolumeEngine) => {
    for (let i = 0; i < 12; i++) await e.write(i * CHUNK_SIZE, randomBytes(CHUNK_SIZE));
  };
  const unshared = new InFlightStore('/chunks/');
  await flushTogether(unshared, undefined, wholeChunks);
  assert.ok(unshared.peak > 6, `each engine alone uploads many chunks at once (peak ${unshared.peak})`);

  const shared = new InFlightStore('/chunks/');
  const memory = new SealMemory(6 * CHUNK_SIZE); // 3 chunks: each holds 2 (assembled + sealed)
  await flushTogether(shared, memory, wholeChunks);
  assert.equal(shared.peak, 3, 'both engines together: at most 3 chunk uploads in flight');
  assert.equal(memory.stats().usedBytes, 0, 'everything held is given back');
});

test('journals hold at most 31 data frames each, are stored side by side within the bound, and read back', async () => {
  const store = new InFlightStore('/journals/');
  const memory = new SealMemory(32 * 2 ** 20 + 1);
  const f = await makeVault(store);
  await f.vault.createVolume('v', 16 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v', { autoCommitMs: 0, writebackDelayMs: 60_000, dirtyLimitBytes: 64 * 2 ** 20, sealMemory: memory });
  // every other 4 KiB block of 12 chunks: 24 MiB of journal data, no chunk covered
  const model = Buffer.alloc(16 * CHUNK_SIZE);
  for (let at = 0; at < 12 * CHUNK_SIZE; at += 8192) {
    const blk = randomBytes(4096);
    blk.copy(model, at);
    await e.write(at, blk);
  }
  await e.flush();
  // each journal holds twice its 31 × 128 KiB of data (packed and sealed): 4 fit in 32 MiB
  assert.ok(store.peak >= 2 && store.peak <= 4, `journals of one cycle are stored side by side, within the bound (peak ${store.peak})`);
  assert.equal(memory.stats().usedBytes, 0, 'everything held is given back');
  const journals = [];
  for await (const info of store.list(`volumes/`)) if (info.key.includes('/journals/')) journals.push(info);
  assert.ok(journals.length >= 7, `24 MiB of blocks make at least seven journals (got ${journals.length})`);
  for (const j of journals) assert.ok(j.size <= 32 * (128 * 1024 + 1024), `a journal of ${j.size} bytes: 32 frames at most`);
  assert.ok((await e.read(0, 16 * CHUNK_SIZE)).equals(model));
  await e.close();
  const r = await (await f.reopen()).openEngine('v', { readOnly: true, readCacheBytes: 0 });
  assert.ok((await r.read(0, 16 * CHUNK_SIZE)).equals(model), 'the journals replay after a reopen');
  await r.close();
  f.cleanup();
});

test('the share of the memory limit set aside for sealing', () => {
  assert.equal(sealShareOf(128 * 2 ** 20), 16 * 2 ** 20);
  assert.equal(sealShareOf(2 ** 30), 64 * 2 ** 20);
  assert.equal(sealShareOf(64 * 2 ** 30), 256 * 2 ** 20);
});

test('journals are packed into recycled shared buffers: flush after flush allocates none, and every journal reads back', async (t) => {
  const f = await makeVault(new SettlingStore());
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 16 * CHUNK_SIZE);
  const memory = new SealMemory(sealShareOf(2 ** 30));
  const e = await f.vault.openEngine('v', { autoCommitMs: 0, writebackDelayMs: 60_000, readCacheBytes: 0, sealMemory: memory });
  const model = Buffer.alloc(16 * CHUNK_SIZE);
  const taken: Buffer[] = [];
  const take = memory.buffers.take.bind(memory.buffers);
  memory.buffers.take = (length, from) => {
    const b = take(length, from);
    taken.push(b);
    return b;
  };
  for (let round = 0; round < 6; round++) {
    // 40 scattered 4 KiB blocks (a journal of two frames' worth across chunks), then FLUSH
    for (let k = 0; k < 40; k++) {
      const off = ((round * 131 + k * 977) % (16 * 1024)) * 4096;
      const data = randomBytes(4096);
      data.copy(model, off);
      await e.write(off, data);
    }
    await e.flush();
  }
  assert.ok(taken.length >= 6, `every journal is packed into pool buffers (${taken.length})`);
  assert.equal(new Set(taken.map((b) => b.buffer)).size, 1, 'one shared buffer, reused by every seal cycle');
  assert.ok(taken.every((b) => b.buffer instanceof SharedArrayBuffer));
  assert.ok((await e.read(0, 16 * CHUNK_SIZE)).equals(model), 'what the journals hold reads back');
  await e.close();
  const r = await (await f.reopen()).openEngine('v', { readOnly: true, readCacheBytes: 0 });
  assert.ok((await r.read(0, 16 * CHUNK_SIZE)).equals(model), 'and after a reopen (replayed from the journals)');
  await r.close();
});
