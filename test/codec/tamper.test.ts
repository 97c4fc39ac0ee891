// Tamper cases: every change to a sealed object, and every open at the wrong place or with the
// wrong key, must throw a specific VaultError code — never return bytes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import sodium from 'sodium-native';
import { openSync, sealSync, type ObjectPlace } from '../../src/codec';
import { buildAssociatedData } from '../../src/codec/associated-data';
import { FLAG_COMPRESSED, HEADER_BYTES, OFFSET_FLAGS, OFFSET_NONCE, OFFSET_PLAINTEXT_LENGTH, OFFSET_RESERVED, SEAL_OVERHEAD_BYTES, TAG_BYTES } from '../../src/codec/format';
import { CHUNK_BYTES, mixedBytes, seededBytes, testKey, testPlace } from './codec-fixtures';

const key = testKey();
const place = testPlace();
const compressed = sealSync(key, mixedBytes(256 * 1024, 9), place)!;
const raw = sealSync(key, seededBytes(4096, 9), place)!;

function expectCode(sealed: Buffer, code: string, at: ObjectPlace = place, k = key): void {
  assert.throws(() => openSync(k, sealed, at), (err: any) => {
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    return true;
  });
}

function flipped(sealed: Buffer, byteOffset: number, bit = 0): Buffer {
  const copy = Buffer.from(sealed);
  copy[byteOffset] ^= 1 << bit;
  return copy;
}

test('flipped bit in the magic or version: ERR_CORRUPT (not one of our objects)', () => {
  for (let offset = 0; offset < 5; offset++) expectCode(flipped(compressed, offset), 'ERR_CORRUPT');
});

test('flipped bit in kind, flags, reserved or plaintext length: ERR_AUTH_FAILED', () => {
  for (let offset = 5; offset < OFFSET_NONCE; offset++) {
    for (const bit of [0, 7]) {
      expectCode(flipped(compressed, offset, bit), 'ERR_AUTH_FAILED');
      expectCode(flipped(raw, offset, bit), 'ERR_AUTH_FAILED');
    }
  }
});

test('flipped bit in the nonce: ERR_AUTH_FAILED', () => {
  for (let offset = OFFSET_NONCE; offset < HEADER_BYTES; offset += 5) expectCode(flipped(compressed, offset, 3), 'ERR_AUTH_FAILED');
});

test('flipped bit in the ciphertext (first, middle, last byte): ERR_AUTH_FAILED', () => {
  const tagStart = compressed.length - TAG_BYTES;
  for (const offset of [HEADER_BYTES, Math.floor((HEADER_BYTES + tagStart) / 2), tagStart - 1]) {
    expectCode(flipped(compressed, offset, 5), 'ERR_AUTH_FAILED');
  }
});

test('flipped bit in the tag: ERR_AUTH_FAILED', () => {
  for (let offset = compressed.length - TAG_BYTES; offset < compressed.length; offset += 3) expectCode(flipped(compressed, offset, 1), 'ERR_AUTH_FAILED');
});

test('truncation and extension', () => {
  expectCode(compressed.subarray(0, compressed.length - 1), 'ERR_AUTH_FAILED');
  expectCode(compressed.subarray(0, compressed.length - TAG_BYTES), 'ERR_AUTH_FAILED');
  expectCode(compressed.subarray(0, SEAL_OVERHEAD_BYTES), 'ERR_AUTH_FAILED');
  expectCode(compressed.subarray(0, SEAL_OVERHEAD_BYTES - 1), 'ERR_CORRUPT');
  expectCode(compressed.subarray(0, 10), 'ERR_CORRUPT');
  expectCode(Buffer.alloc(0), 'ERR_CORRUPT');
  expectCode(Buffer.concat([compressed, Buffer.from([0])]), 'ERR_AUTH_FAILED');
});

test('opened at another place: chunk index, generation, volume, vault, kind → ERR_AUTH_FAILED', () => {
  const otherId = Buffer.from(place.volumeId);
  otherId[15] ^= 1;
  const elsewhere: Partial<ObjectPlace>[] = [
    { index: place.index + 1 },
    { index: place.index + 2 ** 32 }, // the high word of the u64 is bound too
    { generation: place.generation - 1 }, // a replayed older write
    { generation: place.generation + 1 },
    { volumeId: otherId },
    { vaultId: otherId },
    { kind: 'page' },
    { kind: 'snapshot' },
  ];
  for (const change of elsewhere) {
    expectCode(compressed, 'ERR_AUTH_FAILED', { ...place, ...change });
    expectCode(raw, 'ERR_AUTH_FAILED', { ...place, ...change });
  }
});

test('two chunks swapped between indexes fail at both places', () => {
  const a = sealSync(key, seededBytes(8192, 1), testPlace({ index: 1 }))!;
  const b = sealSync(key, seededBytes(8192, 2), testPlace({ index: 2 }))!;
  expectCode(a, 'ERR_AUTH_FAILED', testPlace({ index: 2 }));
  expectCode(b, 'ERR_AUTH_FAILED', testPlace({ index: 1 }));
});

test('wrong volume key: ERR_AUTH_FAILED', () => {
  expectCode(compressed, 'ERR_AUTH_FAILED', place, testKey(2));
});

test('a full 4 MiB object with one flipped bit fails', () => {
  const big = sealSync(key, mixedBytes(CHUNK_BYTES, 10), place)!;
  expectCode(flipped(big, big.length >> 1), 'ERR_AUTH_FAILED');
});

/** Re-encrypts an object after editing its header: what a writer holding the key could produce. */
function resealedWithHeader(sealed: Buffer, edit: (header: Buffer) => void): Buffer {
  const payload = Buffer.alloc(sealed.length - SEAL_OVERHEAD_BYTES);
  const body = sealed.subarray(HEADER_BYTES);
  sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(payload, null, body, buildAssociatedData(sealed, place), sealed.subarray(OFFSET_NONCE, HEADER_BYTES), key.bytes);
  const out = Buffer.from(sealed);
  edit(out);
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out.subarray(HEADER_BYTES), payload, buildAssociatedData(out, place), null, out.subarray(OFFSET_NONCE, HEADER_BYTES), key.bytes);
  return out;
}

test('authentic but inconsistent objects: ERR_CORRUPT, never wrong bytes', () => {
  expectCode(resealedWithHeader(raw, (h) => (h[OFFSET_FLAGS] |= FLAG_COMPRESSED)), 'ERR_CORRUPT'); // not a zstd frame
  expectCode(resealedWithHeader(raw, (h) => h.writeUInt32LE(4095, OFFSET_PLAINTEXT_LENGTH)), 'ERR_CORRUPT');
  expectCode(resealedWithHeader(compressed, (h) => h.writeUInt32LE(256 * 1024 - 1, OFFSET_PLAINTEXT_LENGTH)), 'ERR_CORRUPT');
  expectCode(resealedWithHeader(compressed, (h) => h.writeUInt32LE(256 * 1024 + 1, OFFSET_PLAINTEXT_LENGTH)), 'ERR_CORRUPT');
  expectCode(resealedWithHeader(compressed, (h) => h.writeUInt32LE(0xffffffff, OFFSET_PLAINTEXT_LENGTH)), 'ERR_CORRUPT');
  expectCode(resealedWithHeader(raw, (h) => (h[OFFSET_FLAGS] |= 0x80)), 'ERR_CORRUPT');
  expectCode(resealedWithHeader(raw, (h) => (h[OFFSET_RESERVED] = 1)), 'ERR_CORRUPT');
});

test('error messages name the place, not key material', () => {
  try {
    openSync(key, flipped(compressed, 100), place);
    assert.fail('should throw');
  } catch (err: any) {
    assert.match(err.message, /chunk 42 gen 7 of volume 01020304/);
    assert.ok(!err.message.includes(key.bytes.toString('hex')));
  }
});
