// The known-answer vector cases (shared by make-vectors.ts and vectors.test.ts).
import path from 'node:path';
import type { ObjectPlace } from '../../src/codec';

/** Source directory (tests run from dist/test/codec). */
export const VECTORS_DIR = path.resolve(__dirname, '../../../test/codec/vectors');

export interface CodecVector {
  name: string;
  description: string;
  /** zstd that produced `sealed`; compressed bytes may differ under another zstd (decoding may not). */
  zstdVersion: string;
  key: string;
  nonce: string;
  place: { vaultId: string; volumeId: string; kind: ObjectPlace['kind']; index: number; generation: number };
  zstdLevel: number;
  plaintext: string;
  sealed: string;
}

export const VECTOR_CASES: { name: string; description: string; plaintext: 'text' | 'random' | 'zero'; length: number; place: Partial<ObjectPlace>; zstdLevel: number; nonceSeed: number }[] = [
  { name: 'chunk-raw', description: '64 random bytes: does not shrink, stored raw (flags 0)', plaintext: 'random', length: 64, place: { kind: 'chunk', index: 5, generation: 2 }, zstdLevel: 3, nonceSeed: 1 },
  { name: 'chunk-compressed', description: '4 KiB of log text, zstd level 3 (flags 1)', plaintext: 'text', length: 4096, place: { kind: 'chunk', index: 2 ** 40 + 3, generation: 9 }, zstdLevel: 3, nonceSeed: 2 },
  { name: 'page-compressed', description: '1000 bytes of text as a manifest page', plaintext: 'text', length: 1000, place: { kind: 'page', index: 1, generation: 0 }, zstdLevel: 3, nonceSeed: 3 },
  { name: 'root-empty', description: 'empty plaintext as a root (sequence number 12)', plaintext: 'zero', length: 0, place: { kind: 'root', index: 0, generation: 12 }, zstdLevel: 3, nonceSeed: 4 },
];
