// Format 2 in the engine: partial writes become journal blocks, whole chunks chunk objects, and a
// reopen (a crash recovery) replays the root's journals over the manifest. Each case is an
// ordering a replay could get wrong: an older journal block laid over a newer chunk object.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { makeVault, countKeys, eventually, SettlingStore } from './vault-fixture';
import { generationOfId, newObjectId } from '../../src/volume/manifest';
import { chunkKey } from '../../src/volume/object-keys';
import { VolumeObjects } from '../../src/volume/volume-objects';
import { verifyManifest } from '../../src/volume/verify';

const MiB = 2 ** 20;
const KiB = 1024;

async function reopened(f: Awaited<ReturnType<typeof makeVault>>, name: string) {
  return (await f.reopen()).openEngine(name, { readOnly: true, readCacheBytes: 0 });
}

test('partial writes are journal blocks; a reopen replays them; compaction folds them into chunk objects', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('v', 16 * MiB);
  const e = await f.vault.openEngine('v');
  const model = Buffer.alloc(16 * MiB);
  for (const [off, len] of [[0, 4 * KiB], [CHUNK_SIZE + 512, 10_000], [3 * CHUNK_SIZE - 4096, 8192]]) {
    const data = randomBytes(len);
    data.copy(model, off);
    await e.write(off, data);
  }
  await e.flush();
  const store = f.store as SettlingStore;
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/chunks/'), 0, 'no chunk object for a few blocks');
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/journals/'), 1, 'one journal per flush');
  const r1 = await reopened(f, 'v');
  assert.ok((await r1.read(0, 16 * MiB)).equals(model), 'the journal replays');
  await r1.close();
  await e.compact();
  await store.settled();
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/chunks/'), 4, 'chunks 0, 1, 2 and 3 folded');
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/journals/'), 0, 'journals deleted after the root');
  assert.ok((await e.read(0, 16 * MiB)).equals(model));
  await e.close();
  const r2 = await reopened(f, 'v');
  assert.ok((await r2.read(0, 16 * MiB)).equals(model), 'after compaction and reopen');
  await r2.close();
});

test('a journal bigger than a store reads whole (early builds wrote ~500 MiB ones) is verified by ranged reads', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 16 * MiB);
  const e = await f.vault.openEngine('v');
  await e.write(512, randomBytes(300 * KiB)); // partial: journal blocks
  await e.flush();
  await e.close();
  const store = f.store as SettlingStore;
  const wholeGets: string[] = [];
  const get = store.get.bind(store);
  store.get = async (key: string, into?: Buffer) => {
    if (key.includes('/journals/')) wholeGets.push(key);
    return get(key, into);
  };
  const limit = VolumeObjects.wholeReadLimit;
  t.after(() => {
    VolumeObjects.wholeReadLimit = limit;
    store.get = get;
  });
  VolumeObjects.wholeReadLimit = 64 * KiB; // the journal is bigger: read by ranges
  const { manifest, root, objects } = await f.vault.loadManifestOf('v');
  assert.equal(root.journals?.length, 1);
  assert.ok(root.journals![0].storedSize > 64 * KiB);
  const r = await verifyManifest(objects, manifest, root);
  assert.deepEqual(r.damagedJournals, [], 'the journal verifies');
  assert.deepEqual(wholeGets, [], 'never read whole');
  // and damage in it is still found
  const key = objects.journalKeyOf(root.journals![0]);
  const body = Buffer.from((await get(key)).body);
  body[body.length - 30] ^= 1;
  await store.put(key, body);
  const bad = await verifyManifest(objects, manifest, root);
  assert.equal(bad.damagedJournals.length, 1);
});

test('an older journal block never shows over a newer whole-chunk rewrite after a reopen', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const e = await f.vault.openEngine('v');
  await e.write(4096, Buffer.alloc(4096, 0x11)); // journal J1: a block of chunk 0
  await e.write(CHUNK_SIZE, Buffer.alloc(4096, 0x22)); // and one of chunk 1, so J1 stays alive
  await e.flush();
  const whole = randomBytes(CHUNK_SIZE); // chunk 0 rewritten whole: a chunk object, J1 still named
  await e.write(0, whole);
  await e.flush();
  await e.close();
  const r = await reopened(f, 'v');
  assert.ok((await r.read(0, CHUNK_SIZE)).equals(whole), 'the rewrite wins over the older journal block');
  assert.ok((await r.read(CHUNK_SIZE, 4096)).equals(Buffer.alloc(4096, 0x22)));
  await r.close();
});

test('a trim of a whole chunk with journal blocks reads zeros after a reopen', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const e = await f.vault.openEngine('v');
  await e.write(8192, Buffer.alloc(4096, 0x33));
  await e.write(CHUNK_SIZE + 8192, Buffer.alloc(4096, 0x44));
  await e.flush();
  await e.trim(0, CHUNK_SIZE);
  await e.flush();
  await e.close();
  const r = await reopened(f, 'v');
  assert.ok((await r.read(0, CHUNK_SIZE)).equals(Buffer.alloc(CHUNK_SIZE)), 'trimmed');
  assert.ok((await r.read(CHUNK_SIZE + 8192, 4096)).equals(Buffer.alloc(4096, 0x44)));
  await r.close();
});

test('a compaction step that folds some chunks: the journals it leaves never lay old blocks over them', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const chunks = 12; // more than one compaction step (8 chunks)
  await f.vault.createVolume('v', chunks * CHUNK_SIZE);
  const e = await f.vault.openEngine('v');
  const model = Buffer.alloc(chunks * CHUNK_SIZE);
  const put = async (off: number, byte: number) => {
    const data = Buffer.alloc(4096, byte);
    data.copy(model, off);
    await e.write(off, data);
  };
  for (let i = 0; i < chunks; i++) await put(i * CHUNK_SIZE, 0x10 + i); // J1: a block in every chunk
  await put(4096, 0x55); // and a second one in chunk 0, so that J1 still has a live block there
  await e.flush();
  await put(0, 0x99); // J2: only chunk 0, over J1's block
  await e.flush();
  const folded = await (e as any).sealer.compactStep(); // chunks of the oldest journal, J1: 0..7
  assert.equal(folded, 8);
  await e.flush();
  // J2 now has no live block (chunk 0 is folded) and leaves the root; J1 stays for chunks 8..11
  assert.equal(e.stats().journals >= 1, true);
  await e.close();
  const r = await reopened(f, 'v');
  assert.ok((await r.read(0, chunks * CHUNK_SIZE)).equals(model), 'every block as last written');
  await r.close();
});

test('a format 1 volume keeps working: its v1 chunks read, take journal blocks, and fold into v2 chunks', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('old', 12 * MiB);
  const e = await f.vault.openEngine('old');
  // chunks as format 1 wrote them: one sealed object per chunk (the codec's v1 seal)
  const objects = (e as any).objects;
  objects.writeChunk = async (i: number, data: Buffer, epoch: number) => {
    const id = newObjectId();
    const sealed = await objects.codec.seal(objects.keys.data, data, objects.place('chunk', i, generationOfId(id)));
    await objects.store.put(chunkKey(meta.id, id), sealed);
    return { id, epoch, storedSize: sealed.length };
  };
  const model = randomBytes(12 * MiB);
  await e.write(0, model);
  await e.close();
  const store = f.store as SettlingStore;
  for await (const o of store.list(`volumes/${meta.id}/chunks/`)) {
    assert.equal((await store.get(o.key)).body.subarray(0, 4).toString('latin1'), 'NBVO', 'a format 1 object');
  }
  const v = await f.reopen();
  const e2 = await v.openEngine('old', { readCacheBytes: 0 });
  assert.ok((await e2.read(5 * MiB + 3, 100_000)).equals(model.subarray(5 * MiB + 3, 5 * MiB + 100_003)), 'v1 chunks read');
  const patch = randomBytes(5000);
  patch.copy(model, CHUNK_SIZE + 4000);
  await e2.write(CHUNK_SIZE + 4000, patch); // a journal block over a v1 chunk
  await e2.flush();
  assert.ok((await e2.read(0, 12 * MiB)).equals(model));
  await e2.compact(); // chunk 1 becomes a v2 container
  await e2.close();
  await store.settled();
  const formats: string[] = [];
  for await (const o of store.list(`volumes/${meta.id}/chunks/`)) formats.push((await store.get(o.key)).body.subarray(0, 4).toString('latin1'));
  assert.deepEqual(formats.sort(), ['NBVC', 'NBVO', 'NBVO'], 'the rewritten chunk moved to format 2, the others stay');
  const r = await reopened(f, 'old');
  assert.ok((await r.read(0, 12 * MiB)).equals(model), 'all of it, after a reopen');
  await r.close();
});

test('compaction keeps nothing it fetched in the read cache: a reader\'s hot frames stay, no dead ones come in', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 16 * MiB);
  const e = await f.vault.openEngine('v', { readCacheBytes: 64 * MiB });
  const model = randomBytes(16 * MiB);
  await e.write(0, model); // four chunk objects
  await e.flush();
  for (const i of [0, 1, 2]) {
    const block = randomBytes(4 * KiB); // journal blocks over chunks 0..2
    block.copy(model, i * CHUNK_SIZE + 8 * KiB);
    await e.write(i * CHUNK_SIZE + 8 * KiB, block);
  }
  await e.flush();
  assert.ok((await e.read(3 * CHUNK_SIZE + 64 * KiB, 4 * KiB)).equals(model.subarray(3 * CHUNK_SIZE + 64 * KiB, 3 * CHUNK_SIZE + 68 * KiB)));
  const cache = (e as any).reads.frames;
  const keys = () => new Set<string>([...cache.lru.keys()]);
  const before = keys();
  assert.equal(before.size, 1, 'the hot frame of chunk 3 is cached');
  const reads = (e as any).reads;
  const endFold = reads.endFold.bind(reads);
  let memoAtEnd = -1;
  reads.endFold = () => {
    memoAtEnd = reads.foldMemo.size;
    endFold();
  };
  await e.compact();
  const after = keys();
  assert.deepEqual([...after].filter((k) => !before.has(k)), [], 'compaction cached none of the chunks and journal frames it folded');
  assert.equal(memoAtEnd, 1, 'the journal frame it read (blocks of 3 chunks) was in the fold memo');
  assert.equal(reads.foldMemo.size, 0, 'and left it when the step ended');
  assert.deepEqual([...before].filter((k) => !after.has(k)), [], 'the hot frame is still cached');
  assert.ok((await e.read(0, 16 * MiB)).equals(model), 'the folded chunks read right');
  await e.close();
});

test('compaction that keeps failing backs off instead of retrying at every tick', async (t) => {
  let failing = false;
  const store = new (class extends SettlingStore {
    override get(key: string, into?: Buffer) {
      if (failing && key.includes('/journals/')) return Promise.reject(Object.assign(new Error('EIO: i/o error'), { code: 'ERR_STORE_IO' }));
      return super.get(key, into);
    }
    override getRange(key: string, offset: number, length: number) {
      if (failing && key.includes('/journals/')) return Promise.reject(Object.assign(new Error('EIO: i/o error'), { code: 'ERR_STORE_IO' }));
      return super.getRange(key, offset, length);
    }
  })();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 4 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v', { readCacheBytes: 0 });
  t.after(() => e.close().catch(() => {}));
  await e.write(4096, Buffer.alloc(4096, 1));
  await e.flush(); // one journal
  failing = true;
  const sealer = (e as any).sealer;
  let steps = 0;
  const step = sealer.compactStep.bind(sealer);
  sealer.compactStep = () => {
    steps++;
    return step();
  };
  (e as any).writeBack.lastWriteMs = 0; // idle for long: compaction is due at every tick (100 ms)
  const t0 = performance.now();
  await eventually(() => steps >= 2, 'two compaction attempts', 20_000);
  await new Promise((r) => setTimeout(r, Math.max(0, 2000 - (performance.now() - t0))));
  // (at least 2 s have passed: a retry without backoff, every 100 ms tick, makes ~20)
  const took = performance.now() - t0;
  assert.ok(steps <= 4 + Math.floor(took / 2000), `${steps} compaction attempts in ${Math.round(took)} ms (0.5 s, 1 s, 2 s apart; not one per tick)`);
  failing = false;
  await eventually(() => (e as any).state.overlay.journals.length === 0, 'compaction succeeds once the store answers', 20_000);
});
