// Shared test data for the codec tests: deterministic keys, places and plaintexts.
import sodium from 'sodium-native';
import { SecretKey } from '../../src/keys/secret-key';
import type { ObjectPlace } from '../../src/codec';

export const CHUNK_BYTES = 4 * 1024 * 1024;

/** Deterministic pseudo-random bytes from a small integer seed. */
export function seededBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  const seedBytes = Buffer.alloc(sodium.randombytes_SEEDBYTES);
  seedBytes.writeUInt32LE(seed, 0);
  sodium.randombytes_buf_deterministic(out, seedBytes);
  return out;
}

export function testKey(seed = 1, label = 'data'): SecretKey {
  return new SecretKey(seededBytes(32, 1000 + seed), label);
}

export function testPlace(overrides: Partial<ObjectPlace> = {}): ObjectPlace {
  return {
    vaultId: Buffer.from('00112233445566778899aabbccddeeff', 'hex'),
    volumeId: Buffer.from('0102030405060708090a0b0c0d0e0f10', 'hex'),
    kind: 'chunk',
    index: 42,
    generation: 7,
    ...overrides,
  };
}

/** Text-like data that zstd shrinks well (a disk full of logs and configs). */
export function compressibleBytes(length: number): Buffer {
  const line = Buffer.from('Nov 25 12:00:00 host kernel: EXT4-fs (vda1): mounted filesystem with ordered data mode\n');
  const out = Buffer.alloc(length);
  for (let at = 0; at < length; at += line.length) line.copy(out, at, 0, Math.min(line.length, length - at));
  return out;
}

/** Half random, half text, then a zero tail: a typical used-but-not-full chunk. */
export function mixedBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  seededBytes(Math.floor(length / 4), seed).copy(out, 0);
  compressibleBytes(Math.floor(length / 4)).copy(out, Math.floor(length / 4));
  return out;
}
