import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { MemoryStore } from '../../src/store/memory-store';
import { VaultError } from '../../src/errors';
import { makeVault, countKeys } from './vault-fixture';

const MiB = 2 ** 20;

test('a snapshot freezes the volume; later writes, trims and deletes never touch its objects', async (t) => {
  const store = new MemoryStore();
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
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/chunks/'), 4 + 2, 'snapshot chunks kept, 2 new ones');

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
