// VolumeObjects, format 2: chunks written as framed containers and read whole or frame by frame
// (one ranged read once the header is known), v1 chunks still read, clone origins read with the
// origin's keys, write journals. A store that lies (wrong bytes, short ranges, swapped objects,
// lying headers) gives ERR_AUTH_FAILED / ERR_CORRUPT naming the object, never wrong bytes or zeros.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FRAME_BYTES, createCodec, createInlineCodec } from '../../src/codec';
import { SecretKey } from '../../src/keys/secret-key';
import { FsStore } from '../../src/store/fs-store';
import { MemoryStore } from '../../src/store/memory-store';
import { seededRandom } from '../../src/store/seeded-random';
import type { ObjectStore } from '../../src/store/object-store';
import { ContainerHeaderCache } from '../../src/volume/container-header-cache';
import { generationOfId, newObjectId, type Entry } from '../../src/volume/manifest';
import type { JournalExtent } from '../../src/volume/journal-record';
import { chunkKey, journalKey } from '../../src/volume/object-keys';
import { VolumeObjects } from '../../src/volume/volume-objects';
import { PassThroughStore } from '../helpers/pass-through-store';
import { S3_SKIP, makeTestS3Store } from '../store/s3-env';

const CHUNK = 4 * 1024 * 1024;
const codec = createInlineCodec();
const vaultId = randomBytes(16).toString('hex');

/** Counts requests; `lie` may rewrite what a get or a ranged get returns. */
class LyingStore extends PassThroughStore {
  gets = 0;
  ranges = 0;
  lie: ((key: string, bytes: Buffer, offset: number) => Buffer) | null = null;
  override async get(key: string) {
    this.gets++;
    const o = await this.inner.get(key);
    return this.lie ? { ...o, body: this.lie(key, Buffer.from(o.body), 0) } : o;
  }
  override async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    this.ranges++;
    const { body } = await this.inner.get(key);
    const bytes = Buffer.from(body.subarray(offset, offset + length));
    return this.lie ? this.lie(key, bytes, offset) : bytes;
  }
}

function keys() {
  return { data: new SecretKey(randomBytes(32), 'data'), manifest: new SecretKey(randomBytes(32), 'manifest') };
}

function objectsOn(store: ObjectStore, volumeId = randomBytes(16).toString('hex'), k = keys()): VolumeObjects {
  return new VolumeObjects(store, codec, k, vaultId, volumeId, 'vm');
}

/** Distinct, partly compressible bytes per frame. */
function chunkData(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let at = 0; at < length; at += 4096) {
    b.write(`block ${at / 4096} seed ${seed} `.repeat(20), at);
    randomBytes(64).copy(b, at + 2048);
  }
  return b;
}

const frameOf = (data: Buffer, f: number) => data.subarray(f * FRAME_BYTES, Math.min((f + 1) * FRAME_BYTES, data.length));

async function rejects(p: Promise<unknown>, code: string | string[], mention?: string): Promise<void> {
  const codes = Array.isArray(code) ? code : [code];
  await assert.rejects(p, (err: any) => {
    assert.ok(codes.includes(err.code), `expected ${codes.join('|')}, got ${err.code}: ${err.message}`);
    if (mention) assert.ok(err.message.includes(mention), `"${err.message}" should name ${mention}`);
    return true;
  });
}

test('writeChunk stores a v2 container; readChunk, chunkLayout and readChunkFrame read it', async () => {
  const store = new LyingStore(new MemoryStore());
  const objects = objectsOn(store);
  const data = chunkData(CHUNK, 1);
  const entry = await objects.writeChunk(7, data, 3);
  const { body } = await (store as any).inner.get(chunkKey(objects.volumeId, entry.id!));
  assert.equal(body.subarray(0, 4).toString('latin1'), 'NBVC');
  assert.equal(entry.storedSize, body.length);
  assert.equal(entry.epoch, 3);

  const reader = objectsOn(store, objects.volumeId, (objects as any).keys); // a fresh reader: no cached header
  assert.deepEqual(await reader.readChunk(7, entry, CHUNK), data);
  const fresh = objectsOn(store, objects.volumeId, (objects as any).keys);
  store.ranges = 0;
  assert.deepEqual(await fresh.chunkLayout(7, entry, CHUNK), { framed: true, frameBytes: FRAME_BYTES, frameCount: 32 });
  assert.equal(store.ranges, 1, 'the header: one ranged read');
  for (const f of [0, 13, 31]) assert.deepEqual(await fresh.readChunkFrame(7, entry, CHUNK, f), frameOf(data, f));
  assert.equal(store.ranges, 4, 'each frame: one ranged read once the header is known');
  await rejects(fresh.readChunkFrame(7, entry, CHUNK, 32), 'ERR_BUG');
  // concurrent readers of a chunk whose header is not known share one header read
  const parallel = objectsOn(store, objects.volumeId, (objects as any).keys);
  store.ranges = 0;
  const frames = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((f) => parallel.readChunkFrame(7, entry, CHUNK, f)));
  frames.forEach((b, f) => assert.deepEqual(b, frameOf(data, f)));
  assert.equal(store.ranges, 1 + 8);
  await rejects(parallel.readChunkFrame(7, entry, CHUNK - 4096, 0), 'ERR_CORRUPT'); // a cached header of another length

  const zero = await objects.writeChunk(8, Buffer.alloc(CHUNK), 3);
  assert.deepEqual(zero, { id: null, epoch: 3, storedSize: 0 });
  assert.deepEqual(await objects.readChunkFrame(8, zero, CHUNK, 31), Buffer.alloc(FRAME_BYTES));
});

test('a short last chunk (and a zero frame inside a chunk) round-trips frame by frame', async () => {
  const store = new LyingStore(new MemoryStore());
  const objects = objectsOn(store);
  const length = 2 * FRAME_BYTES + 4096 + 17;
  const data = chunkData(length, 2);
  data.fill(0, FRAME_BYTES, 2 * FRAME_BYTES); // frame 1 all zero: still a sealed frame
  const entry = await objects.writeChunk(0, data, 1);
  const reader = objectsOn(store, objects.volumeId, (objects as any).keys);
  assert.deepEqual(await reader.chunkLayout(0, entry, length), { framed: true, frameBytes: FRAME_BYTES, frameCount: 3 });
  for (let f = 0; f < 3; f++) assert.deepEqual(await reader.readChunkFrame(0, entry, length, f), frameOf(data, f));
  assert.deepEqual(await reader.readChunk(0, entry, length), data);
  await rejects(objectsOn(store, objects.volumeId, (objects as any).keys).readChunk(0, entry, length + 1), 'ERR_CORRUPT');
  await rejects(objectsOn(store, objects.volumeId, (objects as any).keys).readChunkFrame(0, entry, length - 1, 0), 'ERR_CORRUPT');
});

test('a v1 chunk is still read: one frame, the whole chunk', async () => {
  const store = new LyingStore(new MemoryStore());
  const k = keys();
  const objects = objectsOn(store, undefined, k);
  const data = chunkData(CHUNK, 3);
  const id = newObjectId();
  const sealed = (await codec.seal(k.data, data, objects.place('chunk', 4, generationOfId(id))))!;
  await store.put(chunkKey(objects.volumeId, id), sealed);
  const entry: Entry = { id, epoch: 1, storedSize: sealed.length };
  assert.deepEqual(await objects.readChunk(4, entry, CHUNK), data);
  assert.deepEqual(await objects.chunkLayout(4, entry, CHUNK), { framed: false, frameBytes: CHUNK, frameCount: 1 });
  assert.deepEqual(await objects.readChunkFrame(4, entry, CHUNK, 0), data);
  await rejects(objects.readChunkFrame(4, entry, CHUNK, 1), 'ERR_BUG');
  // at another index it fails authentication, whole or by frame
  await rejects(objectsOn(store, objects.volumeId, k).readChunkFrame(5, entry, CHUNK, 0), 'ERR_AUTH_FAILED');
});

/** delays and orders of the overlapping-reads test: the same every run */
const random = seededRandom(28);

/** Records the memory each get was offered, and holds each answer a random while (reads overlap). */
class SlowStore extends PassThroughStore {
  offered: Buffer[] = [];
  override async get(key: string, into?: Buffer) {
    if (into) this.offered.push(into);
    const o = await this.inner.get(key, into);
    await new Promise((r) => setTimeout(r, random() * 4));
    return o;
  }
}

for (const [name, makeCodec] of [['inline', () => codec], ['worker', () => createCodec({ workers: 2 })]] as const) {
  test(`whole chunks are read through lent container memory (${name} codec): overlapping reads each get their own chunk, and a chunk read stays put`, async (t) => {
    const c = makeCodec();
    if (c !== codec) t.after(() => c.close());
    const store = new SlowStore(new MemoryStore()); // the memory store reads into the memory it is offered
    const k = keys();
    const objects = new VolumeObjects(store, c, k, vaultId, randomBytes(16).toString('hex'), 'vm');
    const data = Array.from({ length: 6 }, (_, i) => chunkData(CHUNK, 40 + i));
    const entries = await Promise.all(data.map((d, i) => objects.writeChunk(i, d, 1)));
    const v1 = newObjectId(); // a v1 chunk goes through the same memory
    await store.put(chunkKey(objects.volumeId, v1), (await c.seal(k.data, data[0], objects.place('chunk', 6, generationOfId(v1))))!);
    entries.push({ id: v1, epoch: 1, storedSize: 0 });
    data.push(data[0]);
    const kept: Array<[Buffer, number]> = [];
    for (let round = 0; round < 4; round++) {
      const order = [...entries.keys(), ...entries.keys()].sort(() => random() - 0.5);
      const got = await Promise.all(order.map((i) => objects.readChunk(i, entries[i], CHUNK)));
      got.forEach((g, n) => assert.ok(g.equals(data[order[n]]), `round ${round}: chunk ${order[n]}`));
      kept.push([got[0], order[0]]);
    }
    // what a read returned is never the lent memory, which later reads filled again
    for (const [g, i] of kept) assert.ok(g.equals(data[i]), `chunk ${i}, read in an earlier round, unchanged`);
    for (const [g] of kept) assert.ok(!store.offered.some((m) => m.buffer === g.buffer), 'a chunk is not a view of container memory');
    assert.equal(store.offered.length, 4 * 2 * entries.length, 'every whole-chunk get was offered memory');
    // one read after another: one piece of memory serves them all
    store.offered = [];
    for (const [i, e] of entries.entries()) assert.ok((await objects.readChunk(i, e, CHUNK)).equals(data[i]));
    assert.equal(new Set(store.offered.map((m) => m.buffer)).size, 1, 'the memory is reused');
  });
}

test('clone: epoch-0 entries are read from the origin volume with the origin keys', async () => {
  const store = new LyingStore(new MemoryStore());
  const origin = objectsOn(store);
  const clone = objectsOn(store);
  clone.origin = origin;
  const data = chunkData(CHUNK, 4);
  const written = await origin.writeChunk(2, data, 5);
  const inClone: Entry = { ...written, epoch: 0 };
  assert.deepEqual(await clone.readChunk(2, inClone, CHUNK), data);
  assert.deepEqual(await clone.chunkLayout(2, inClone, CHUNK), { framed: true, frameBytes: FRAME_BYTES, frameCount: 32 });
  assert.deepEqual(await clone.readChunkFrame(2, inClone, CHUNK, 9), frameOf(data, 9));
  // the same entry at the clone's own epoch names a clone object that does not exist
  await rejects(clone.readChunkFrame(2, { ...written, epoch: 1 }, CHUNK, 9), 'ERR_IO', chunkKey(clone.volumeId, written.id!));
});

const extents: JournalExtent[] = [
  { chunkIndex: 3, firstBlock: 10, blockCount: 2, zero: false, frame: 1, frameOffset: 0 },
  { chunkIndex: 9, firstBlock: 0, blockCount: 30, zero: false, frame: 1, frameOffset: 8192 },
  { chunkIndex: 4, firstBlock: 0, blockCount: 1024, zero: true, frame: 0, frameOffset: 0 },
  { chunkIndex: 3, firstBlock: 11, blockCount: 1, zero: false, frame: 2, frameOffset: 0 },
];
const dataFrames = [chunkData(8192 + 30 * 4096, 5), chunkData(4096, 6)];

test('journals: write, index in one ranged read, frames, whole read', async () => {
  const store = new LyingStore(new MemoryStore());
  const k = keys();
  const objects = objectsOn(store, undefined, k);
  const ref = await objects.writeJournal(extents, dataFrames);
  const { body } = await (store as any).inner.get(journalKey(objects.volumeId, ref.id));
  assert.equal(body.subarray(0, 4).toString('latin1'), 'NBVJ');
  assert.equal(ref.storedSize, body.length);

  const reader = objectsOn(store, objects.volumeId, k);
  store.ranges = 0;
  assert.deepEqual(await reader.readJournalIndex(ref), extents);
  assert.equal(store.ranges, 1, 'header and index from one prefix read');
  assert.deepEqual(await reader.readJournalFrame(ref, 1), dataFrames[0]);
  assert.deepEqual(await reader.readJournalFrame(ref, 2), dataFrames[1]);
  assert.equal(store.ranges, 3);
  await rejects(reader.readJournalFrame(ref, 3), 'ERR_CORRUPT', ref.id);
  const whole = await objectsOn(store, objects.volumeId, k).readJournal(ref);
  assert.deepEqual(whole.extents, extents);
  assert.deepEqual(whole.frames, dataFrames);
  // a journal with no data frames (only zero extents)
  const zeroOnly = await objects.writeJournal([extents[2]], []);
  assert.deepEqual(await objectsOn(store, objects.volumeId, k).readJournalIndex(zeroOnly), [extents[2]]);
});

test('a journal whose data frames are in shared memory reaches the codec all in shared memory (no copy of it)', async () => {
  const seen: boolean[] = [];
  const spy = { ...codec, sealFrames: (...args: Parameters<typeof codec.sealFrames>) => (seen.push(args[2].every((f) => f.buffer instanceof SharedArrayBuffer)), codec.sealFrames(...args)) };
  const store = new MemoryStore();
  const k = keys();
  const objects = new VolumeObjects(store, spy, k, vaultId, randomBytes(16).toString('hex'), 'vm');
  const shared = dataFrames.map((f) => {
    const s = Buffer.from(new SharedArrayBuffer(f.length));
    f.copy(s);
    return s;
  });
  const ref = await objects.writeJournal(extents, shared);
  await objects.writeJournal(extents, dataFrames);
  assert.deepEqual(seen, [true, false], 'the index joins shared data frames; plain frames stay plain');
  const whole = await objectsOn(store, objects.volumeId, k).readJournal(ref);
  assert.deepEqual(whole.extents, extents);
  assert.deepEqual(whole.frames, dataFrames);
});

test('writeJournal refuses what its index could not describe (writer bugs)', async () => {
  const objects = objectsOn(new MemoryStore());
  await rejects(objects.writeJournal(extents, dataFrames.slice(0, 1)), 'ERR_BUG'); // frame 2 named, not given
  await rejects(objects.writeJournal(extents, [dataFrames[0].subarray(0, 4096), dataFrames[1]]), 'ERR_BUG'); // frame too short
  await rejects(objects.writeJournal(extents, [dataFrames[0], Buffer.alloc(100)]), 'ERR_BUG'); // not whole blocks
});

test('a lying store: wrong bytes, short ranges, swapped objects, lying headers → errors naming the object, never bytes', async () => {
  const store = new LyingStore(new MemoryStore());
  const k = keys();
  const objects = objectsOn(store, undefined, k);
  const data = chunkData(CHUNK, 7);
  const entry = await objects.writeChunk(1, data, 1);
  const other = await objects.writeChunk(2, chunkData(CHUNK, 8), 1);
  const sameIndex = await objects.writeChunk(1, chunkData(CHUNK, 9), 1); // an older/newer write of chunk 1
  const ref = await objects.writeJournal(extents, dataFrames);
  const ref2 = await objects.writeJournal(extents, [chunkData(8192 + 30 * 4096, 10), chunkData(4096, 11)]);
  const key = chunkKey(objects.volumeId, entry.id!);
  const jkey = journalKey(objects.volumeId, ref.id);
  const fresh = () => objectsOn(store, objects.volumeId, k);
  const all = (r: VolumeObjects) => [() => r.readChunk(1, entry, CHUNK), () => r.readChunkFrame(1, entry, CHUNK, 5)];

  const cases: [string, (key: string, bytes: Buffer, offset: number) => Buffer, string[]][] = [
    ['a flipped byte in every range past the header', (_k, b, off) => { if (off > 200 || b.length > 200) b[b.length - 20] ^= 1; return b; }, ['ERR_AUTH_FAILED']],
    ['short ranges', (_k, b) => b.subarray(0, Math.max(0, b.length - 7)), ['ERR_CORRUPT', 'ERR_AUTH_FAILED']],
    ['empty ranges', () => Buffer.alloc(0), ['ERR_CORRUPT']],
    ['zeros instead of the object', (_k, b) => Buffer.alloc(b.length), ['ERR_CORRUPT']],
  ];
  for (const [why, lie, codes] of cases) {
    store.lie = (k2, b, off) => (k2 === key ? lie(k2, b, off) : b);
    for (const p of all(fresh())) await rejects(p(), codes, entry.id!).catch((err) => assert.fail(`${why}: ${err.message}`));
  }

  // swapped objects: another chunk's bytes, another write of the same chunk index
  for (const swapIn of [other, sameIndex]) {
    store.lie = (k2, b, off) => (k2 === key ? swapped(store, chunkKey(objects.volumeId, swapIn.id!), b.length, off) : b);
    for (const p of all(fresh())) await rejects(p(), ['ERR_AUTH_FAILED', 'ERR_CORRUPT'], entry.id!);
  }

  // a lying container header: two frame lengths traded (the sum holds)
  store.lie = (k2, b, off) => {
    if (k2 !== key || off !== 0) return b;
    const l0 = b.readUInt32LE(16);
    const l1 = b.readUInt32LE(20);
    if (l0 === l1) b.writeUInt32LE(l0 + 1, 16), b.writeUInt32LE(l1 - 1, 20);
    else b.writeUInt32LE(l1, 16), b.writeUInt32LE(l0, 20);
    return b;
  };
  await rejects(fresh().readChunkFrame(1, entry, CHUNK, 1), ['ERR_AUTH_FAILED', 'ERR_CORRUPT'], entry.id!);
  await rejects(fresh().readChunk(1, entry, CHUNK), ['ERR_AUTH_FAILED', 'ERR_CORRUPT'], 'chunk 1');
  // a header whose lengths do not add up to the size the manifest records
  store.lie = (k2, b, off) => (k2 === key && off === 0 ? (b.writeUInt32LE(b.readUInt32LE(16) + 1, 16), b) : b);
  await rejects(fresh().chunkLayout(1, entry, CHUNK), 'ERR_CORRUPT', entry.id!);

  // journals: flipped bytes, a swapped journal, a short prefix
  store.lie = (k2, b, off) => (k2 === jkey && off <= 40 && off + b.length > 40 ? (b[40 - off] ^= 1, b) : b); // inside frame 0
  await rejects(fresh().readJournalIndex(ref), 'ERR_AUTH_FAILED', ref.id);
  store.lie = (k2, b) => (k2 === jkey ? (b[b.length - 3] ^= 1, b) : b); // the last frame's tag
  await rejects(fresh().readJournalFrame(ref, 2), 'ERR_AUTH_FAILED', ref.id);
  await rejects(fresh().readJournal(ref), 'ERR_AUTH_FAILED', ref.id);
  store.lie = (k2, b, off) => (k2 === jkey ? swapped(store, journalKey(objects.volumeId, ref2.id), b.length, off) : b);
  await rejects(fresh().readJournalIndex(ref), ['ERR_AUTH_FAILED', 'ERR_CORRUPT'], ref.id);
  await rejects(fresh().readJournalFrame(ref, 1), ['ERR_AUTH_FAILED', 'ERR_CORRUPT'], ref.id);
  store.lie = (k2, b) => (k2 === jkey ? b.subarray(0, 10) : b);
  await rejects(fresh().readJournalIndex(ref), 'ERR_CORRUPT', ref.id);
  store.lie = null;
  await rejects(fresh().readJournalIndex({ ...ref, storedSize: ref.storedSize + 1 }), 'ERR_CORRUPT', ref.id);

  // missing objects
  await rejects(fresh().readChunkFrame(1, { ...entry, id: newObjectId() }, CHUNK, 0), 'ERR_IO');
  await rejects(fresh().readJournalIndex({ id: newObjectId(), storedSize: 500 }), 'ERR_IO');

  // honest again: a reader whose header was dropped after a failure reads the right bytes
  const reader = fresh();
  store.lie = (k2, b, off) => (k2 === key && off > 0 ? (b[b.length - 1] ^= 1, b) : b);
  await rejects(reader.readChunkFrame(1, entry, CHUNK, 3), 'ERR_AUTH_FAILED');
  store.lie = null;
  assert.deepEqual(await reader.readChunkFrame(1, entry, CHUNK, 3), frameOf(data, 3));
});

/** The same range of another object (what a store that swapped two objects returns). */
function swapped(store: LyingStore, otherKey: string, length: number, offset: number): Buffer {
  const body = (store as any).inner.objects.get(otherKey).body as Buffer;
  return Buffer.from(body.subarray(offset, offset + length));
}

test('the container header cache stays within its bound, most recently used kept', () => {
  const cache = new ContainerHeaderCache(128 * 10 + 16 * 32 * 3);
  const layout = { framed: true as const, logicalLength: CHUNK, frameCount: 32, frameOffsets: [], frameLengths: [], headerBytes: 144 };
  for (let k = 0; k < 50; k++) {
    cache.set(`k${k}`, layout);
    cache.get('k0');
  }
  assert.ok(cache.bytes <= cache.limitBytes);
  assert.ok(cache.get('k0'), 'recently used kept');
  assert.ok(cache.get('k49'));
  assert.equal(cache.get('k1'), undefined);
  cache.delete('k0');
  assert.equal(cache.get('k0'), undefined);
});

/** The real stores' ranged reads (fs: pread; S3: GET with Range) under frame and journal reads. */
async function realStoreRoundTrip(store: ObjectStore): Promise<void> {
  const k = keys();
  const writer = objectsOn(store, undefined, k);
  const length = 3 * FRAME_BYTES + 12345;
  const data = chunkData(length, 21);
  const entry = await writer.writeChunk(3, data, 1);
  const reader = objectsOn(store, writer.volumeId, k);
  for (const f of [3, 0, 2]) assert.deepEqual(await reader.readChunkFrame(3, entry, length, f), frameOf(data, f));
  assert.deepEqual(await objectsOn(store, writer.volumeId, k).readChunk(3, entry, length), data);
  const ref = await writer.writeJournal(extents, dataFrames);
  const jr = objectsOn(store, writer.volumeId, k);
  assert.deepEqual(await jr.readJournalIndex(ref), extents);
  assert.deepEqual(await jr.readJournalFrame(ref, 2), dataFrames[1]);
  // the object is not the size the manifest says: a header that cannot add up
  await rejects(objectsOn(store, writer.volumeId, k).readChunkFrame(3, { ...entry, storedSize: entry.storedSize + 1 }, length, 0), 'ERR_CORRUPT', entry.id!);
}

test('ranged frame reads on the fs store', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-frames-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await realStoreRoundTrip(new FsStore(dir));
});

test('ranged frame reads on S3 (RGW)', { skip: S3_SKIP }, async () => {
  const store = makeTestS3Store();
  try {
    await realStoreRoundTrip(store);
  } finally {
    await store.close();
  }
});
