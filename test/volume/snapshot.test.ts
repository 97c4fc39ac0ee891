import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { MemoryStore } from '../../src/store/memory-store';
import { VaultError } from '../../src/errors';
import { makeVault, countKeys, logger, SettlingStore } from './vault-fixture';
import { collectGarbage } from '../../src/volume/garbage-collector';

const MiB = 2 ** 20;

test('a snapshot freezes the volume; later writes, trims and deletes never touch its objects', async (t) => {
  const store = new SettlingStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('vol', 32 * MiB);
  const live = await f.vault.openEngine('vol');
  const before = randomBytes(4 * CHUNK_SIZE);
  await live.write(0, before);
  const snap = await live.snapshot('s1');
  assert.equal(snap.name, 's1');
  // keep writing: overwrite a chunk, trim another, partial-write a third
  await live.write(0, randomBytes(CHUNK_SIZE));
  await live.trim(CHUNK_SIZE, CHUNK_SIZE);
  await live.write(2 * CHUNK_SIZE + 5, Buffer.from('changed'));
  await live.flush();
  await store.settled();
  // the whole new chunk 0 is a chunk object, the partial write to chunk 2 a journal block
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/chunks/'), 4 + 1, 'snapshot chunks kept, 1 new one');
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/journals/'), 1);
  await live.compact();
  await store.settled();
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/chunks/'), 4 + 2, 'snapshot chunks kept, 2 new ones');
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/journals/'), 0);

  const frozen = await f.vault.openSnapshotEngine('vol', 's1');
  assert.ok((await frozen.read(0, 4 * CHUNK_SIZE)).equals(before), 'the snapshot reads as it was');
  assert.equal(frozen.caps.readOnly, true);
  await assert.rejects(frozen.write(0, Buffer.alloc(10)), (e: VaultError) => e.code === 'ERR_READ_ONLY');
  const liveNow = await live.read(0, 4 * CHUNK_SIZE);
  assert.ok(!liveNow.subarray(0, CHUNK_SIZE).equals(before.subarray(0, CHUNK_SIZE)));
  assert.ok(liveNow.subarray(CHUNK_SIZE, 2 * CHUNK_SIZE).equals(Buffer.alloc(CHUNK_SIZE)));
  await frozen.close();

  await assert.rejects(live.snapshot('s1'), (e: VaultError) => e.code === 'ERR_EXISTS');
  await assert.rejects(live.snapshot('bad/name'), (e: VaultError) => e.code === 'ERR_INVALID_ARGUMENT');
  await live.close();

  // deleting the snapshot frees exactly the objects only it named (old chunks 0, 1, 2)
  const r = await f.vault.deleteSnapshot('vol', 's1');
  assert.ok(r.freedObjects >= 3);
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/chunks/'), 3, 'chunk 3 (shared) and the two new chunks remain');
  const e2 = await f.vault.openEngine('vol');
  assert.ok((await e2.read(0, 4 * CHUNK_SIZE)).equals(liveNow), 'the live volume is intact after the delete');
  await e2.close();
  await assert.rejects(f.vault.openSnapshotEngine('vol', 's1'), (e: VaultError) => e.code === 'ERR_NOT_FOUND');
});

test('snapshots list in creation order and survive a reopen; each reads its own point in time', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const e = await f.vault.openEngine('v');
  const states: Buffer[] = [];
  for (let k = 0; k < 3; k++) {
    const data = randomBytes(8 * MiB);
    await e.write(0, data);
    states.push(data);
    await e.snapshot(`s${k}`);
  }
  await e.close();
  const v2 = await f.reopen();
  assert.deepEqual((await v2.listSnapshots('v')).map((s) => s.name), ['s0', 's1', 's2']);
  for (let k = 0; k < 3; k++) {
    const s = await v2.openSnapshotEngine('v', `s${k}`);
    assert.ok((await s.read(0, 8 * MiB)).equals(states[k]), `s${k}`);
    await s.close();
  }
  await v2.deleteSnapshot('v', 's1');
  for (const k of [0, 2]) {
    const s = await v2.openSnapshotEngine('v', `s${k}`);
    assert.ok((await s.read(0, 8 * MiB)).equals(states[k]), `s${k} intact after deleting s1`);
    await s.close();
  }
});

test('a clone shares the snapshot chunks, diverges on its own, and pins its origin', async (t) => {
  const store = new SettlingStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('base', 16 * MiB);
  const e = await f.vault.openEngine('base');
  const golden = randomBytes(16 * MiB);
  await e.write(0, golden);
  await e.snapshot('gold');
  await e.write(0, randomBytes(CHUNK_SIZE)); // the origin moves on
  await e.close();
  await store.settled();
  const chunksBefore = await countKeys(store, 'volumes/', '/chunks/');

  const clone = await f.vault.cloneVolume('base@gold', 'vm1');
  assert.equal(await countKeys(store, `volumes/${clone.id}/`, '/chunks/'), 0, 'a clone copies no chunk');
  const c = await f.vault.openEngine('vm1');
  assert.ok((await c.read(0, 16 * MiB)).equals(golden), 'the clone starts as the snapshot');
  const model = Buffer.from(golden);
  const mine = randomBytes(4096);
  await c.write(CHUNK_SIZE + 100, mine);
  mine.copy(model, CHUNK_SIZE + 100);
  await c.trim(2 * CHUNK_SIZE, CHUNK_SIZE);
  model.fill(0, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE);
  await c.flush();
  await c.snapshot('c1');
  const atC1 = Buffer.from(model);
  const over = randomBytes(CHUNK_SIZE);
  await c.write(3 * CHUNK_SIZE, over); // overwrite a shared chunk
  over.copy(model, 3 * CHUNK_SIZE);
  await c.close();
  await store.settled();
  assert.equal(await countKeys(store, 'volumes/', '/chunks/'), chunksBefore + 2, 'the clone never deletes shared chunks');

  const c2 = await (await f.reopen()).openEngine('vm1');
  assert.ok((await c2.read(0, 16 * MiB)).equals(model), 'the clone reads as its model after a reopen');
  await c2.close();
  const c1 = await f.vault.openSnapshotEngine('vm1', 'c1');
  assert.ok((await c1.read(0, 16 * MiB)).equals(atC1), 'the clone\'s snapshot reads as it was');
  await c1.close();
  // the origin's snapshot and volume are pinned while the clone exists
  await assert.rejects(f.vault.deleteSnapshot('base', 'gold'), (err: VaultError) => err.code === 'ERR_EXISTS');
  await assert.rejects(f.vault.deleteVolume('base'), (err: VaultError) => err.code === 'ERR_EXISTS');
  await assert.rejects(f.vault.cloneVolume('vm1@c1', 'vm2'), (err: VaultError) => err.code === 'ERR_NOT_SUPPORTED');
  // deleting the clone's snapshot never frees the origin's chunks
  await f.vault.deleteSnapshot('vm1', 'c1');
  await store.settled();
  const base = await f.vault.openSnapshotEngine('base', 'gold');
  assert.ok((await base.read(0, 16 * MiB)).equals(golden), 'the origin snapshot is intact');
  await base.close();
  const chunksAfterDelete = await countKeys(store, 'volumes/', '/chunks/');
  // c1 named the origin's chunks and vm1's chunk 1, which the live vm1 still names: nothing freed
  assert.equal(chunksAfterDelete, chunksBefore + 2);
  const gc = await collectGarbage(f.vault, { dryRun: false, graceMs: 0 }, logger);
  assert.deepEqual(gc.keys, [], 'nothing is garbage: every chunk is named by a root or a snapshot');
  assert.equal(gc.deleted, 0);
  assert.equal(await countKeys(store, 'volumes/', '/chunks/'), chunksAfterDelete);
  const c3 = await f.vault.openEngine('vm1', { readOnly: true });
  assert.ok((await c3.read(0, 16 * MiB)).equals(model), 'the clone reads its model after gc');
  await c3.close();
  const g2 = await f.vault.openSnapshotEngine('base', 'gold');
  assert.ok((await g2.read(0, 16 * MiB)).equals(golden), 'the origin snapshot reads after gc');
  await g2.close();
  await f.vault.deleteVolume('vm1');
  await f.vault.deleteSnapshot('base', 'gold');
});

test('gc keeps chunks named only by a snapshot or a clone\'s origin and removes exactly the planted garbage', async (t) => {
  const store = new SettlingStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('g', 16 * MiB);
  const e = await f.vault.openEngine('g');
  const atSnap = randomBytes(16 * MiB);
  await e.write(0, atSnap);
  await e.snapshot('s');
  // after the snapshot, chunks 0, 1 and 2 are replaced: their old objects are named only by 's'
  const live = Buffer.from(atSnap);
  const b0 = randomBytes(CHUNK_SIZE);
  await e.write(0, b0);
  b0.copy(live, 0);
  await e.trim(CHUNK_SIZE, CHUNK_SIZE);
  live.fill(0, CHUNK_SIZE, 2 * CHUNK_SIZE);
  await e.write(2 * CHUNK_SIZE + 5, Buffer.from('changed'));
  Buffer.from('changed').copy(live, 2 * CHUNK_SIZE + 5);
  await e.compact(); // the partial write to chunk 2 leaves the journal for a new chunk object
  await e.close();
  await store.settled();
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/chunks/'), 4 + 2, 'snapshot chunks 0-3, new chunks 0 and 2');
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/journals/'), 0);
  const clone = await f.vault.cloneVolume('g@s', 'c');
  const ce = await f.vault.openEngine('c');
  const cloneModel = Buffer.from(atSnap);
  const patch = randomBytes(1000);
  await ce.write(3 * CHUNK_SIZE + 77, patch);
  patch.copy(cloneModel, 3 * CHUNK_SIZE + 77);
  await ce.close();
  await store.settled();
  // leftovers of crashes: a chunk of each volume that no root names, and a volume without metadata
  const planted = [
    `volumes/${meta.id}/chunks/${'ab'.repeat(16)}`,
    `volumes/${clone.id}/chunks/${'ac'.repeat(16)}`,
    `volumes/${'cd'.repeat(16)}/chunks/${'ef'.repeat(16)}`,
  ];
  for (const k of planted) await store.put(k, randomBytes(100));
  const objectsBefore = store.size;

  const gc = await collectGarbage(f.vault, { dryRun: false, graceMs: 0 }, logger);
  assert.deepEqual([...gc.keys].sort(), [...planted].sort(), 'exactly the planted objects are garbage');
  assert.equal(gc.garbageObjects, 3);
  assert.equal(gc.garbageBytes, 300);
  assert.equal(gc.deleted, 3);
  assert.equal(gc.tooYoung, 0);
  assert.equal(store.size, objectsBefore - 3);
  for (const k of planted) assert.equal(await store.head(k), null, `${k} is gone`);

  const snap = await f.vault.openSnapshotEngine('g', 's');
  assert.ok((await snap.read(0, 16 * MiB)).equals(atSnap), 'the snapshot reads byte for byte after gc');
  await snap.close();
  const liveE = await f.vault.openEngine('g', { readOnly: true });
  assert.ok((await liveE.read(0, 16 * MiB)).equals(live), 'the live volume reads byte for byte after gc');
  await liveE.close();
  const cloneE = await f.vault.openEngine('c', { readOnly: true });
  assert.ok((await cloneE.read(0, 16 * MiB)).equals(cloneModel), 'the clone reads byte for byte after gc');
  await cloneE.close();
  const again = await collectGarbage(f.vault, { dryRun: false, graceMs: 0 }, logger);
  assert.equal(again.garbageObjects, 0, 'a second gc finds nothing');
});

test('gc removes unreferenced objects older than the grace period, and only those', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('g', 16 * MiB);
  const e = await f.vault.openEngine('g');
  const data = randomBytes(16 * MiB);
  await e.write(0, data);
  await e.snapshot('s');
  await e.close();
  // leftovers of a crash: an uploaded chunk no root names, and a whole volume without metadata
  await store.put(`volumes/${meta.id}/chunks/${'ab'.repeat(16)}`, randomBytes(100));
  await store.put(`volumes/${'cd'.repeat(16)}/chunks/${'ef'.repeat(16)}`, randomBytes(100));
  const young = await collectGarbage(f.vault, { dryRun: false, graceMs: 3_600_000 }, logger);
  assert.equal(young.deleted, 0, 'nothing younger than the grace period goes');
  assert.equal(young.tooYoung, 2);
  const dry = await collectGarbage(f.vault, { dryRun: true, graceMs: 0 }, logger);
  assert.equal(dry.garbageObjects, 2);
  assert.equal(dry.deleted, 0);
  const real = await collectGarbage(f.vault, { dryRun: false, graceMs: 0 }, logger);
  assert.equal(real.deleted, 2);
  const check = await f.vault.openEngine('g', { readOnly: true });
  assert.ok((await check.read(0, 16 * MiB)).equals(data), 'referenced data survives gc');
  await check.close();
  const snap = await f.vault.openSnapshotEngine('g', 's');
  assert.ok((await snap.read(0, 16 * MiB)).equals(data));
  await snap.close();
});

test('gc refuses to run while a volume\'s metadata cannot be read (it would look erased)', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('keep', 8 * MiB);
  const e = await f.vault.openEngine('keep');
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.close();
  const good = await store.get(`volumes/${meta.id}/meta`);
  await store.put(`volumes/${meta.id}/meta`, Buffer.from('{"v":1,"wrappedKey":"AAAA","info":"AAAA"}'));
  await assert.rejects(collectGarbage(f.vault, { dryRun: false, graceMs: 0 }, logger), /cannot be read, so nothing can be deleted safely/);
  await store.put(`volumes/${meta.id}/meta`, good.body);
  const r = await collectGarbage(f.vault, { dryRun: false, graceMs: 0 }, logger);
  assert.equal(r.deleted, 0);
  const again = await f.vault.openEngine('keep', { readOnly: true });
  assert.equal((await again.read(0, CHUNK_SIZE)).some((b) => b !== 0), true, 'the volume survived');
  await again.close();
});

test('gc keeps the data of a volume whose metadata is missing without a deletion mark (lost, not deleted); orphans takes it; a deletion mark makes it garbage', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('lost', 8 * MiB);
  const data = randomBytes(CHUNK_SIZE);
  const e = await f.vault.openEngine('lost');
  await e.write(0, data);
  await e.snapshot('s');
  await e.close();
  const prefix = `volumes/${meta.id}/`;
  const keysOf = async () => { const keys: string[] = []; for await (const o of store.list(prefix)) keys.push(o.key); return keys.sort(); };
  const before = await keysOf();
  const metaBody = (await store.get(`${prefix}meta`)).body;
  await store.delete(`${prefix}meta`); // the store lost (or withholds) one object
  const r = await collectGarbage(f.vault, { dryRun: false, graceMs: 0 }, logger);
  assert.equal(r.deleted, 0, 'nothing of the volume is deleted');
  assert.deepEqual(r.orphanVolumes, [meta.id]);
  assert.equal(r.orphanObjects, before.length - 2, 'reported kept: every object but the meta and the root (a young root is kept anyway)');
  assert.deepEqual(await keysOf(), before.filter((k) => k !== `${prefix}meta`));
  await store.put(`${prefix}meta`, metaBody); // restored from a backup: the volume is whole
  const back = await f.vault.openEngine('lost', { readOnly: true });
  assert.ok((await back.read(0, CHUNK_SIZE)).equals(data), 'the volume reads back whole');
  await back.close();

  await store.delete(`${prefix}meta`);
  const dry = await collectGarbage(f.vault, { dryRun: true, graceMs: 0, orphans: true }, logger);
  assert.equal(dry.garbageObjects, before.length - 2, 'orphans: the data is garbage (the young root waits its 10 minutes)');
  // a delete cut off after its mark and the metadata: garbage without asking
  await store.put(`${prefix}deleting`, Buffer.from('mark'));
  const marked = await collectGarbage(f.vault, { dryRun: false, graceMs: 0 }, logger);
  assert.equal(marked.orphanObjects, 0);
  assert.deepEqual(await keysOf(), [], 'a marked volume without metadata is erased');
});

test('two snapshots with one name at the same moment: exactly one is created', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const e = await f.vault.openEngine('v');
  const results = await Promise.allSettled([e.snapshot('same'), e.snapshot('same')]);
  assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  assert.equal((await f.vault.listSnapshots('v')).length, 1);
  await e.close();
});
