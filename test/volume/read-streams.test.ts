// The read path tells streams from random reads by byte offsets: a stream (each read starting
// where the one before ended) gets whole-chunk GETs and readahead; random 4 KiB reads get one
// ranged read of their frame and never a whole chunk — on S3 a whole chunk is 4 MiB for 4 KiB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { seededRandom } from '../../src/store/seeded-random';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { makeVault, SettlingStore } from './vault-fixture';

const MiB = 2 ** 20;
const SIZE = 64 * MiB;

/** Counts whole GETs and ranged GETs of chunk objects. */
class CountingStore extends SettlingStore {
  wholeChunkGets = 0;
  rangedChunkGets = 0;
  override async get(key: string) {
    if (key.includes('/chunks/')) this.wholeChunkGets++;
    return super.get(key);
  }
  override async getRange(key: string, offset: number, length: number) {
    if (key.includes('/chunks/')) this.rangedChunkGets++;
    return super.getRange(key, offset, length);
  }
}

async function volumeWithData() {
  const store = new CountingStore();
  const f = await makeVault(store);
  await f.vault.createVolume('disk', SIZE);
  const data = randomBytes(SIZE);
  const w = await f.vault.openEngine('disk');
  await w.write(0, data);
  await w.flush();
  await w.close();
  const v = await f.reopen();
  return { store, f, v, data };
}

test('random 4 KiB reads over every chunk fetch frames, never a whole chunk; a stream fetches chunks whole', async (t) => {
  const { store, f, v, data } = await volumeWithData();
  t.after(() => f.cleanup());
  // random reads, 8 in flight, 400 of them over the 16 chunks (a chunk's neighbour is read all
  // the time, which the chunk-number detector took for a stream)
  let e = await v.openEngine('disk');
  store.wholeChunkGets = 0;
  store.rangedChunkGets = 0;
  const rnd = seededRandom(17);
  for (let round = 0; round < 50; round++) {
    const offsets = Array.from({ length: 8 }, () => Math.floor(rnd() * (SIZE / 4096)) * 4096);
    const got = await Promise.all(offsets.map((o) => e.read(o, 4096)));
    got.forEach((b, k) => assert.ok(b.equals(data.subarray(offsets[k], offsets[k] + 4096)), `read at ${offsets[k]}`));
  }
  assert.equal(store.wholeChunkGets, 0, 'no whole chunk for random reads');
  assert.ok(store.rangedChunkGets > 16, `frames by ranged reads: ${store.rangedChunkGets}`);
  await e.close();

  // a stream: 256 KiB reads in order, 16 in flight (as nbdcopy issues them), on a cold engine
  e = await v.openEngine('disk');
  store.wholeChunkGets = 0;
  store.rangedChunkGets = 0;
  const step = 256 * 1024;
  for (let at = 0; at < SIZE; at += 16 * step) {
    const offsets = Array.from({ length: 16 }, (_, k) => at + k * step);
    const got = await Promise.all(offsets.map((o) => e.read(o, step)));
    got.forEach((b, k) => assert.ok(b.equals(data.subarray(offsets[k], offsets[k] + step)), `stream read at ${offsets[k]}`));
  }
  assert.ok(store.wholeChunkGets >= SIZE / CHUNK_SIZE - 1, `chunks whole: ${store.wholeChunkGets}`);
  assert.ok(store.rangedChunkGets <= 2 * (1 + 32), `frames only before the stream is seen: ${store.rangedChunkGets}`);
  await e.close();
});
