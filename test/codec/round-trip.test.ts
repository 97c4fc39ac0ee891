// Codec round trips over the data shapes a disk produces, through sealSync/openSync and both Codecs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createInlineCodec, isAllZero, openSync, sealSync, SEAL_OVERHEAD_BYTES } from '../../src/codec';
import { FLAG_COMPRESSED, OFFSET_FLAGS, OFFSET_PLAINTEXT_LENGTH } from '../../src/codec/format';
import { CHUNK_BYTES, compressibleBytes, mixedBytes, seededBytes, testKey, testPlace } from './codec-fixtures';

const key = testKey();
const place = testPlace();

function roundTrip(plaintext: Buffer, p = place): Buffer {
  const sealed = sealSync(key, plaintext, p);
  assert.ok(sealed, 'a non-zero plaintext seals to an object');
  assert.deepEqual(openSync(key, sealed, p), plaintext);
  assert.equal(sealed.readUInt32LE(OFFSET_PLAINTEXT_LENGTH), plaintext.length);
  return sealed;
}

test('random 4 MiB chunk: stored raw (compression would not shrink it), overhead exactly 52 bytes', () => {
  const sealed = roundTrip(seededBytes(CHUNK_BYTES, 1));
  assert.equal(sealed[OFFSET_FLAGS] & FLAG_COMPRESSED, 0);
  assert.equal(sealed.length, CHUNK_BYTES + SEAL_OVERHEAD_BYTES);
});

test('compressible 4 MiB chunk: compressed flag set, much smaller', () => {
  const sealed = roundTrip(compressibleBytes(CHUNK_BYTES));
  assert.equal(sealed[OFFSET_FLAGS] & FLAG_COMPRESSED, FLAG_COMPRESSED);
  assert.ok(sealed.length < CHUNK_BYTES / 20, `sealed ${sealed.length} bytes`);
});

test('partly-zero chunk (random, text, zero tail) round-trips and compresses', () => {
  const sealed = roundTrip(mixedBytes(CHUNK_BYTES, 2));
  assert.ok(sealed.length < CHUNK_BYTES * 0.3);
});

test('a single non-zero byte at the very end is not mistaken for a zero chunk', () => {
  const plaintext = Buffer.alloc(CHUNK_BYTES);
  plaintext[CHUNK_BYTES - 1] = 1;
  assert.equal(isAllZero(plaintext), false);
  roundTrip(plaintext);
});

test('all-zero chunk seals to null; other kinds still seal zeros', () => {
  assert.equal(sealSync(key, Buffer.alloc(CHUNK_BYTES), place), null);
  assert.equal(sealSync(key, Buffer.alloc(1000), place), null);
  roundTrip(Buffer.alloc(1000), testPlace({ kind: 'page' }));
});

test('short last chunk of an odd-sized volume, and small sizes down to 0 bytes', () => {
  const oddVolumeBytes = 10 * CHUNK_BYTES + 123_457; // 10 full chunks, then a short one
  const lastChunk = mixedBytes(oddVolumeBytes % CHUNK_BYTES, 3);
  roundTrip(lastChunk, testPlace({ index: Math.floor(oddVolumeBytes / CHUNK_BYTES) }));
  for (const size of [1, 2, 15, 16, 17, 511, 4096, 65_537]) roundTrip(seededBytes(size, size));
  roundTrip(Buffer.alloc(0), testPlace({ kind: 'root' }));
});

test('two seals of the same plaintext differ (fresh random nonce) and both open', () => {
  const plaintext = compressibleBytes(10_000);
  const a = sealSync(key, plaintext, place)!;
  const b = sealSync(key, plaintext, place)!;
  assert.notDeepEqual(a, b);
  assert.deepEqual(openSync(key, b, place), plaintext);
});

test('the zstd level is configurable, and a bad one fails at construction', async () => {
  const plaintext = mixedBytes(CHUNK_BYTES, 4);
  const fast = sealSync(key, plaintext, place, { zstdLevel: 1 })!;
  const strong = sealSync(key, plaintext, place, { zstdLevel: 12 })!;
  assert.deepEqual(openSync(key, fast, place), plaintext);
  assert.deepEqual(openSync(key, strong, place), plaintext);
  assert.throws(() => createInlineCodec({ zstdLevel: 99 }), { code: 'ERR_INVALID_ARGUMENT' });
  const codec = createInlineCodec({ zstdLevel: 1 });
  assert.deepEqual(await codec.open(key, (await codec.seal(key, plaintext, place))!, place), plaintext);
  await codec.close();
});

test('sealing does not modify the caller\'s buffer', () => {
  const plaintext = mixedBytes(CHUNK_BYTES, 5);
  const copy = Buffer.from(plaintext);
  const sealed = sealSync(key, plaintext, place)!;
  assert.deepEqual(plaintext, copy);
  const sealedCopy = Buffer.from(sealed);
  openSync(key, sealed, place);
  assert.deepEqual(sealed, sealedCopy);
});
