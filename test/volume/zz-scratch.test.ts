import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MemoryStore } from '../../src/store/memory-store';
import { seededRandom } from '../../src/store/seeded-random';
import { makeVault } from './vault-fixture';
const MiB = 2 ** 20;
for (const seed of [1]) test(`scratch ${seed}`, async (t) => {
  const f = await makeVault(new MemoryStore());
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 48 * MiB);
  const e = await f.vault.openEngine('v');
  const model = Buffer.alloc(48 * MiB);
  const rand = seededRandom(seed);
  for (let k = 0; k < 40; k++) {
    const off = Math.floor(rand() * (48 * MiB - 300_000));
    const data = randomBytes(1 + Math.floor(rand() * 300_000));
    data.copy(model, off);
    await e.write(off, data);
    if (k % 10 === 9) { await e.flush(); assert.ok((await e.read(0, 48 * MiB)).equals(model), `after flush ${k}`); }
  }
  await e.trim(8 * MiB, 8 * MiB);
  model.fill(0, 8 * MiB, 16 * MiB);
  await e.flush();
  assert.ok((await e.read(0, 48 * MiB)).equals(model), 'live');
  await e.close();
  const e2 = await (await f.reopen()).openEngine('v', { readCacheBytes: 0 });
  const got = await e2.read(0, 48 * MiB);
  for (let b = 0; b < 48 * 256; b++) if (!got.subarray(b * 4096, b * 4096 + 4096).equals(model.subarray(b * 4096, b * 4096 + 4096))) { console.log('bad block', b, 'chunk', Math.floor(b / 1024), 'zero?', got.subarray(b * 4096, b * 4096 + 4096).every((x) => x === 0)); }
  assert.ok(got.equals(model), 'all data intact');
  await e2.close();
});
