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

async function volumeWithData(size = SIZE) {
  const store = new CountingStore();
  const f = await makeVault(store);
  await f.vault.createVolume('disk', size);
  const data = randomBytes(size);
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

test("a stream's reads of a frame or more are views of the decoded chunk, and a later write does not change them", async (t) => {
  const { f, v, data } = await volumeWithData();
  t.after(() => f.cleanup());
  const e = await v.openEngine('disk');
  t.after(() => e.close());
  const step = 256 * 1024;
  const reads: Buffer[] = [];
  for (let at = 0; at < 2 * CHUNK_SIZE; at += step) reads.push(await e.read(at, step));
  reads.forEach((b, k) => assert.ok(b.equals(data.subarray(k * step, (k + 1) * step)), `stream read ${k}`));
  // the second chunk is read as a stream throughout: its 16 replies slice one decoded chunk
  const second = reads.slice(CHUNK_SIZE / step);
  assert.equal(new Set(second.map((b) => b.buffer)).size, 1, 'one backing buffer for the chunk');
  assert.equal(second[0].buffer.byteLength, CHUNK_SIZE, 'the backing buffer is the decoded chunk');
  // small reads copy: a 4 KiB reply must not keep a whole chunk alive
  const small = await e.read(CHUNK_SIZE + 8192, 4096);
  assert.ok(small.equals(data.subarray(CHUNK_SIZE + 8192, CHUNK_SIZE + 12288)));
  assert.ok(small.buffer.byteLength < CHUNK_SIZE, `a small read holds ${small.buffer.byteLength} bytes`);
  // a write after the reads changes what a new read sees, never what was returned
  const before = Buffer.from(second[1]);
  await e.write(CHUNK_SIZE + step, Buffer.alloc(step, 0xab));
  assert.ok(second[1].equals(before), 'a returned view is never written');
  const again = await e.read(CHUNK_SIZE + step, step);
  assert.ok(again.equals(Buffer.alloc(step, 0xab)), 'a new read sees the write');
  await e.flush();
  assert.ok(second[1].equals(before), 'nor after the flush seals the write');
});

test("a stream does not evict a guest's working set; what a random read hits, or a second stream reads, is kept", async (t) => {
  // 32 chunks: more than the stream detector remembers, as on any real disk
  const size = 32 * CHUNK_SIZE;
  const { store, f, v, data } = await volumeWithData(size);
  t.after(() => f.cleanup());
  // a cache of 24 MiB (and a stream area as big) for 128 MiB; no readahead: the GETs counted
  // are those of the reads
  const e = await v.openEngine('disk', { readCacheBytes: 24 * MiB, readaheadChunks: 0 });
  t.after(() => e.close());
  const hot = Array.from({ length: 64 }, (_, k) => (k % 4) * CHUNK_SIZE + k * 64 * 1024); // 8 MiB of frames in chunks 0-3
  const readHot = async () => {
    for (const o of hot) assert.ok((await e.read(o, 4096)).equals(data.subarray(o, o + 4096)), `hot read at ${o}`);
  };
  await readHot();
  const scan = async (from = 0, to = size) => {
    const step = 256 * 1024;
    for (let at = from; at < to; at += 8 * step) {
      const offsets = Array.from({ length: 8 }, (_, k) => at + k * step);
      const got = await Promise.all(offsets.map((o) => e.read(o, step)));
      got.forEach((b, k) => assert.ok(b.equals(data.subarray(offsets[k], offsets[k] + step)), `scan read at ${offsets[k]}`));
    }
  };
  const hits = async (what: string, offsets: number[]) => {
    store.wholeChunkGets = 0;
    store.rangedChunkGets = 0;
    for (const o of offsets) assert.ok((await e.read(o, 4096)).equals(data.subarray(o, o + 4096)), `read at ${o}`);
    assert.deepEqual([store.wholeChunkGets, store.rangedChunkGets], [0, 0], what);
  };
  // a scan of the first half: the stream area ends up holding its last chunks (10-15)
  await scan(0, size / 2);
  assert.ok(e.stats().readCacheBytes <= 48 * MiB, `the cache and its stream area stay in their bounds: ${e.stats().readCacheBytes}`);
  await hits('the working set is still cached after a 64 MiB scan', hot);
  // a random read of chunk 15 keeps it; chunk 14, not read, is dropped when the next stream passes
  await hits('chunk 15 is in the stream area', [15 * CHUNK_SIZE + 40960]);
  await scan(16 * CHUNK_SIZE, 24 * CHUNK_SIZE);
  await hits('the working set is still cached after chunks 16-23', hot);
  await hits('the chunk a random read hit was kept', [15 * CHUNK_SIZE + 40960, 15 * CHUNK_SIZE + 81920]);
  store.rangedChunkGets = 0;
  await e.read(14 * CHUNK_SIZE + 40960, 4096);
  assert.equal(store.rangedChunkGets, 1, 'chunk 14 went with the stream');
  // a second stream over chunks the stream area dropped (8 and 9) keeps them: another stream
  // passing through the area (chunks 24-31, read for the first time) leaves them cached
  await scan(8 * CHUNK_SIZE, 10 * CHUNK_SIZE);
  await scan(24 * CHUNK_SIZE, 32 * CHUNK_SIZE);
  await hits('chunks two streams read are kept', [9 * CHUNK_SIZE - 8192, 10 * CHUNK_SIZE - 8192]);
});
