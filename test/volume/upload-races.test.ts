// Interleavings a guest produces every day (mkfs/fstrim discards, rewrites while a chunk uploads,
// FLUSH racing new writes). Found in review; each case failed before per-chunk upload ordering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { MemoryStore } from '../../src/store/memory-store';
import type { PutOptions } from '../../src/store/object-store';
import { SealMemory } from '../../src/volume/seal-memory';
import { makeVault, SettlingStore } from './vault-fixture';

/** The first chunk put is slow: a later upload of the same chunk would finish first. */
class SlowFirstChunkPut extends MemoryStore {
  private chunkPuts = 0;
  private startedNow!: () => void;
  private doneNow!: () => void;
  /** resolves when the slow put has begun / has stored its object */
  readonly slowStarted = new Promise<void>((r) => (this.startedNow = r));
  readonly slowDone = new Promise<void>((r) => (this.doneNow = r));
  override async put(key: string, body: Buffer, opts?: PutOptions) {
    if (key.includes('/chunks/') && this.chunkPuts++ === 0) {
      this.startedNow();
      await new Promise((r) => setTimeout(r, 300));
      try {
        return await super.put(key, body, opts);
      } finally {
        this.doneNow();
      }
    }
    return super.put(key, body, opts);
  }
}

test('a full chunk trimmed while it uploads stays trimmed, live and after reopen', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * 2 ** 20);
  const e = await f.vault.openEngine('v', { autoCommitMs: 0 });
  await e.write(0, randomBytes(CHUNK_SIZE)); // a full chunk: its upload starts at once
  await e.trim(0, CHUNK_SIZE);
  await e.flush();
  assert.ok((await e.read(0, CHUNK_SIZE)).every((b) => b === 0), 'live');
  await e.close();
  const e2 = await (await f.reopen()).openEngine('v', { readOnly: true });
  assert.ok((await e2.read(0, CHUNK_SIZE)).every((b) => b === 0), 'after reopen');
});

test('a slow older upload never overwrites a newer version of the chunk', async (t) => {
  const store = new SlowFirstChunkPut();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * 2 ** 20);
  const e = await f.vault.openEngine('v', { autoCommitMs: 0, writebackDelayMs: 60_000 });
  await e.write(0, Buffer.alloc(CHUNK_SIZE, 0x41)); // upload starts, slowly
  await store.slowStarted;
  await e.write(0, Buffer.alloc(4096, 0x42)); // a newer version while it uploads
  await e.flush();
  assert.equal((await e.read(0, 1))[0], 0x42);
  await store.slowDone; // the older upload has landed
  await e.close();
  const e2 = await (await f.reopen()).openEngine('v', { readOnly: true });
  assert.equal((await e2.read(0, 1))[0], 0x42, 'the acknowledged, flushed write survives');
  assert.equal((await e2.read(4096, 1))[0], 0x41);
});

test('FLUSH makes durable a write acknowledged before it, even when a newer write replaces it mid-upload', async (t) => {
  const store = new SlowFirstChunkPut();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * 2 ** 20);
  const e = await f.vault.openEngine('v', { autoCommitMs: 0, writebackDelayMs: 60_000 });
  await e.write(0, Buffer.alloc(CHUNK_SIZE, 0x41)); // A: upload starts, slowly
  await e.write(CHUNK_SIZE, Buffer.alloc(4096, 0x43));
  await store.slowStarted;
  const flushed = e.flush();
  await e.write(0, Buffer.alloc(4096, 0x42)); // B, after the FLUSH: replaces A's record
  await flushed;
  // "crash" now: another process opens the store
  const e2 = await (await f.reopen()).openEngine('v', { readOnly: true });
  const byte = (await e2.read(0, 1))[0];
  assert.ok(byte === 0x41 || byte === 0x42, `A (or B over it) is durable after FLUSH, got ${byte}`);
  assert.equal((await e2.read(4096, 1))[0], 0x41, 'the rest of A is there');
  assert.equal((await e2.read(CHUNK_SIZE, 1))[0], 0x43);
  await e.close(); // the writer still holds the lease and flushes B cleanly
  const e3 = await (await f.reopen()).openEngine('v', { readOnly: true });
  assert.equal((await e3.read(0, 1))[0], 0x42, 'B is durable after close');
  await e3.close();
});

test('a seal cycle that fails one journal stops its other uploads before it reports, and a retry stores everything', async (t) => {
  /** journal puts take 20 ms; the third one fails (once) */
  class ThirdJournalFails extends SettlingStore {
    journalPuts = 0;
    started = 0;
    override async put(key: string, body: Buffer, opts?: PutOptions) {
      if (!key.includes('/journals/')) return super.put(key, body, opts);
      this.started++;
      await new Promise((r) => setTimeout(r, 20));
      if (++this.journalPuts === 3) throw new Error('injected: journal upload failed');
      return super.put(key, body, opts);
    }
  }
  const store = new ThirdJournalFails();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 16 * CHUNK_SIZE);
  // 8 upload workers, seal memory for 2 journals (8 MiB each): the others wait their turn in it
  const sealMemory = new SealMemory(16 * 2 ** 20);
  const e = await f.vault.openEngine('v', { autoCommitMs: 0, writebackDelayMs: 60_000, dirtyLimitBytes: 64 * 2 ** 20, uploadConcurrency: 8, sealMemory });
  t.after(() => e.close());
  // every other block of 12 chunks: 24 MiB of journal data, at least seven journals
  const model = Buffer.alloc(16 * CHUNK_SIZE);
  for (let at = 0; at < 12 * CHUNK_SIZE; at += 8192) {
    const blk = randomBytes(4096);
    blk.copy(model, at);
    await e.write(at, blk);
  }
  await assert.rejects(e.flush(), /journal upload failed/);
  const startedAtFailure = store.started;
  assert.ok(startedAtFailure <= 5, `uploads stopped at the failure (two waves of two, and one let in at that instant), those waiting for seal memory too (${startedAtFailure} started)`);
  assert.equal(sealMemory.stats().usedBytes, 0, 'seal memory all given back');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(store.started, startedAtFailure, 'no journal upload starts after the cycle reported its failure');
  assert.equal((e as any).state.unreferenced.size, 0, 'every upload of the failed cycle is forgotten (gc is not held back)');
  await store.settled();
  const orphans: string[] = [];
  for await (const info of store.list('volumes/')) if (info.key.includes('/journals/')) orphans.push(info.key);
  assert.deepEqual(orphans, [], 'what the failed cycle stored is deleted');
  await e.flush(); // the retry
  assert.ok((await e.read(0, 16 * CHUNK_SIZE)).equals(model));
  await e.close();
  const r = await (await f.reopen()).openEngine('v', { readOnly: true, readCacheBytes: 0 });
  assert.ok((await r.read(0, 16 * CHUNK_SIZE)).equals(model), 'stored as written');
  await r.close();
});
