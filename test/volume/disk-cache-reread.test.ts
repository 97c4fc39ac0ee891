// Bytes from the local disk cache that fail authentication above it (VolumeObjects over a
// DiskCacheStore): the cache's CRCs catch a torn or flipped file, not an entry that is whole but
// wrong — filled from a store answer that was bad once, or a valid entry holding another object's
// bytes. Such an entry is dropped and the read retried once from the store, so it never becomes a
// lasting read error; when the store's bytes fail too, the error names the object (no zeros) and
// nothing bad stays cached.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { FRAME_BYTES, createInlineCodec, parseFramedHeader } from '../../src/codec';
import { SecretKey } from '../../src/keys/secret-key';
import { DiskCache } from '../../src/store/disk-cache';
import { DiskCacheStore } from '../../src/store/disk-cache-store';
import { MemoryStore } from '../../src/store/memory-store';
import type { StoredObject } from '../../src/store/object-store';
import { chunkKey, isImmutableObjectKey, journalKey } from '../../src/volume/object-keys';
import { VolumeObjects } from '../../src/volume/volume-objects';
import { createLogger, setLogger } from '../../src/util/log';
import { PassThroughStore } from '../helpers/pass-through-store';

setLogger(createLogger(process.env.NBD_VAULT_LOG_LEVEL ?? 'silent'));
const CHUNK = 4 * 1024 * 1024;
const codec = createInlineCodec();
const vaultId = randomBytes(16).toString('hex');
const volumeId = randomBytes(16).toString('hex');
const volumeKeys = { data: new SecretKey(randomBytes(32), 'data'), manifest: new SecretKey(randomBytes(32), 'manifest') };
const tmp = mkdtempSync(join(tmpdir(), 'nbdv-dcr-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let dirs = 0;

/** Counts reads; while `lies` > 0 (or forever with Infinity) flips the last byte (a sealed
 *  frame's tag) of what a read of a key matching `liar` returns, but for container headers (reads
 *  under 4 KiB), whose damage is another path. */
class LyingStore extends PassThroughStore {
  reads = 0;
  lies = 0;
  liar = /./;
  private lie(key: string, bytes: Buffer): Buffer {
    if (this.lies <= 0 || !this.liar.test(key) || bytes.length < 4096) return bytes;
    this.lies--;
    const out = Buffer.from(bytes);
    out[out.length - 1] ^= 0x10; // inside the sealed payload or its tag, never a header length
    return out;
  }
  override async get(key: string): Promise<StoredObject> {
    this.reads++;
    const o = await this.inner.get(key);
    return { ...o, body: this.lie(key, o.body) };
  }
  override async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    this.reads++;
    return this.lie(key, await this.inner.getRange(key, offset, length));
  }
}

async function setup() {
  const store = new LyingStore(new MemoryStore());
  const cached = new DiskCacheStore(store, await DiskCache.open(join(tmp, `c${dirs++}`), 64 * 2 ** 20), isImmutableObjectKey);
  const writer = new VolumeObjects(store, codec, volumeKeys, vaultId, volumeId, 'vm'); // not through the cache
  const data = [randomBytes(CHUNK), randomBytes(CHUNK)];
  const entries = [await writer.writeChunk(0, data[0], 1), await writer.writeChunk(1, data[1], 1)];
  /** a reader through the cache, with no container header known yet */
  const reader = () => new VolumeObjects(cached, codec, volumeKeys, vaultId, volumeId, 'vm');
  return { store, cached, data, entries, reader, keyOf: (i: number) => chunkKey(volumeId, entries[i].id!) };
}

const frameOf = (data: Buffer, f: number) => data.subarray(f * FRAME_BYTES, (f + 1) * FRAME_BYTES);

test('a frame the store returned wrong once (and the cache kept): dropped, read again from the store, cached right', async () => {
  const { store, cached, data, entries, reader } = await setup();
  const r = reader();
  assert.deepEqual(await r.chunkLayout(0, entries[0], CHUNK), { framed: true, frameBytes: FRAME_BYTES, frameCount: 32 });
  await cached.cache.settle();
  store.lies = 1; // the next frame read from the store comes back with a flipped byte
  store.reads = 0;
  assert.deepEqual(await r.readChunkFrame(0, entries[0], CHUNK, 5), frameOf(data[0], 5));
  assert.equal(store.reads, 3, 'the bad answer, then the header and the frame once more from the store');
  assert.equal(cached.stats().rejected, 1);
  await cached.cache.settle();
  // what gets cached is the store's good answer (the retry's own fill may be skipped while the
  // bad entry's write is still being abandoned: then the next miss fills it), and it authenticates
  store.reads = 0;
  assert.deepEqual(await reader().readChunkFrame(0, entries[0], CHUNK, 5), frameOf(data[0], 5));
  assert.ok(store.reads <= 1, `at most the frame once more: ${store.reads}`);
  await cached.cache.settle();
  store.reads = 0;
  assert.deepEqual(await reader().readChunkFrame(0, entries[0], CHUNK, 5), frameOf(data[0], 5));
  assert.equal(store.reads, 0, 'header and frame from the cache');
  assert.equal(cached.stats().rejected, 1);
  await cached.close();
});

test("a valid cache entry holding another object's bytes (CRCs all right): dropped, the read retried from the store", async () => {
  const { store, cached, data, entries, reader, keyOf } = await setup();
  // fill the cache: chunk 0 whole, chunk 1's header and frame 3
  assert.deepEqual(await reader().readChunk(0, entries[0], CHUNK), data[0]);
  const r1 = reader();
  assert.deepEqual(await r1.readChunkFrame(1, entries[1], CHUNK, 3), frameOf(data[1], 3));
  await cached.cache.settle();
  assert.equal(cached.cache.find(keyOf(1), 0, 'whole'), null, 'chunk 1 is cached by ranges');
  // chunk 0's entry now holds chunk 1's sealed object, and chunk 1's frame-3 entry holds chunk
  // 0's bytes at that range: both entries with valid CRCs, as a stray writer could leave them
  const whole1 = (await store.get(keyOf(1))).body;
  const h = parseFramedHeader(whole1, 'chunk', 'chunk 1');
  const frame = cached.cache.find(keyOf(1), h.frameOffsets[3], h.frameLengths[3])!;
  assert.ok(frame && frame.offset === h.frameOffsets[3] && frame.length === h.frameLengths[3], 'the frame entry');
  const wrongRange = (await store.get(keyOf(0))).body.subarray(frame.offset, frame.offset + frame.length);
  for (const [key, offset, bytes, toEnd] of [[keyOf(0), 0, whole1, true], [keyOf(1), frame.offset, wrongRange, false]] as const) {
    const staged = (await cached.cache.stage(key, offset, Buffer.from(bytes), toEnd, true))!;
    assert.ok(staged, 'the stray entry is written');
    await staged.commit('');
  }
  store.reads = 0;
  assert.deepEqual(await reader().readChunk(0, entries[0], CHUNK), data[0], 'the whole chunk, right');
  assert.deepEqual(await r1.readChunkFrame(1, entries[1], CHUNK, 3), frameOf(data[1], 3), 'the frame, right');
  assert.equal(cached.stats().rejected, 2);
  assert.equal(store.reads, 3, 'the whole chunk once; the header and the frame (its header was dropped with it)');
  await cached.cache.settle();
  for (let round = 0; ; round++) {
    store.reads = 0;
    assert.deepEqual(await reader().readChunk(0, entries[0], CHUNK), data[0]);
    assert.deepEqual(await reader().readChunkFrame(1, entries[1], CHUNK, 3), frameOf(data[1], 3));
    await cached.cache.settle();
    if (store.reads === 0) break; // the good bytes are cached again
    assert.ok(round === 0 && store.reads <= 2, `a second miss at most once per object: ${store.reads} reads in round ${round}`);
  }
  await cached.close();
});

test('bad in the cache and bad in the store: a clear error naming the object, never zeros, nothing bad left cached', async () => {
  const { store, cached, entries, reader, keyOf } = await setup();
  const r = reader();
  await r.chunkLayout(0, entries[0], CHUNK);
  store.lies = Infinity;
  await assert.rejects(r.readChunkFrame(0, entries[0], CHUNK, 2), (err: any) => {
    assert.equal(err.code, 'ERR_AUTH_FAILED', err.message);
    assert.match(err.message, new RegExp(`chunk 0 frame 2 of volume "vm".*${keyOf(0)}`));
    return true;
  });
  await assert.rejects(reader().readChunk(0, entries[0], CHUNK), (err: any) => err.code === 'ERR_AUTH_FAILED' && err.message.includes(keyOf(0)));
  await cached.cache.settle();
  assert.equal(cached.cache.hasKey(keyOf(0)), false, 'no entry of the failing object is kept');
  // once the store answers right again, so does the read
  store.lies = 0;
  const right = await reader().readChunkFrame(0, entries[0], CHUNK, 2);
  assert.equal(right.length, FRAME_BYTES);
  await cached.close();
});

test('journals and a failure with no cache involved: the same retry for a journal frame; no retry when the cache had no part', async () => {
  const store = new LyingStore(new MemoryStore());
  const cached = new DiskCacheStore(store, await DiskCache.open(join(tmp, `c${dirs++}`), 64 * 2 ** 20), isImmutableObjectKey);
  const writer = new VolumeObjects(store, codec, volumeKeys, vaultId, volumeId, 'vm');
  const block = randomBytes(8192);
  const ref = await writer.writeJournal([{ chunkIndex: 0, firstBlock: 0, blockCount: 2, zero: false, frame: 1, frameOffset: 0 }], [block]);
  const r = new VolumeObjects(cached, codec, volumeKeys, vaultId, volumeId, 'vm');
  store.liar = new RegExp(journalKey(volumeId, ref.id));
  store.lies = 1; // the prefix read (the whole small journal, cached as one entry): frame 1's tag flipped
  assert.equal((await r.readJournalIndex(ref)).length, 1, 'the index frame is intact');
  await cached.cache.settle();
  assert.deepEqual(await r.readJournalFrame(ref, 1), block);
  assert.equal(cached.stats().rejected, 1);
  // straight to the store (no DiskCacheStore): a bad answer is an error at once, one read
  const direct = new VolumeObjects(store, codec, volumeKeys, vaultId, volumeId, 'vm');
  await direct.readJournalIndex(ref);
  store.lies = 1;
  store.reads = 0;
  await assert.rejects(direct.readJournalFrame(ref, 1), (err: any) => err.code === 'ERR_AUTH_FAILED');
  assert.equal(store.reads, 1);
  await cached.close();
});
