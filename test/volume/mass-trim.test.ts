// A TRIM over thousands of allocated chunks (what mkfs or fstrim sends for a used disk) turns
// them all into zero entries: many uploads that complete without any I/O. They must not recurse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { makeVault, countKeys, SettlingStore } from './vault-fixture';

test('trimming 1,500 allocated chunks at once completes and deletes their objects', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const n = 1500;
  const meta = await f.vault.createVolume('big', n * CHUNK_SIZE);
  const e = await f.vault.openEngine('big', { uploadConcurrency: 64 });
  for (let i = 0; i < n; i += 500) await Promise.all(Array.from({ length: 500 }, (_, k) => e.write((i + k) * CHUNK_SIZE + 7, Buffer.from([1]))));
  await e.flush();
  await e.compact(); // the journal of 1,500 one-byte writes folded into 1,500 chunk objects
  assert.equal(await countKeys(f.store, `volumes/${meta.id}/`, '/chunks/'), n);
  assert.equal(await countKeys(f.store, `volumes/${meta.id}/`, '/journals/'), 0);
  await e.trim(0, n * CHUNK_SIZE);
  await e.flush();
  await (f.store as SettlingStore).settled(); // deletes run after the root, in the background
  assert.equal(await countKeys(f.store, `volumes/${meta.id}/`, '/chunks/'), 0);
  assert.equal(await countKeys(f.store, `volumes/${meta.id}/`, '/journals/'), 0);
  assert.deepEqual(await e.blockStatus(0, n * CHUNK_SIZE), [{ length: n * CHUNK_SIZE, hole: true, zero: true }]);
  await e.close();
});
