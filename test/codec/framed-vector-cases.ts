// Known-answer vectors of format 2: a framed chunk container and a journal container (shared by
// make-vectors.ts and vectors.test.ts). Plaintext frames are described by generators (a 128 KiB
// frame in hex would bloat the vector); the sha256 of each frame is committed beside them.
import { FRAME_BYTES, type FrameKind } from '../../src/codec';
import { compressibleBytes, seededBytes } from './codec-fixtures';

export type FrameSource = { gen: 'text' | 'zero'; length: number } | { gen: 'random'; seed: number; length: number } | { gen: 'hex'; hex: string };

export interface FramedVectorCase {
  name: string;
  description: string;
  kind: FrameKind;
  index: number;
  generation: number;
  frames: FrameSource[];
  nonceSeed: number;
  zstdLevel: number;
}

export interface FramedVector extends FramedVectorCase {
  zstdVersion: string;
  key: string;
  vaultId: string;
  volumeId: string;
  logicalLength: number;
  /** one 24-byte nonce per frame */
  nonces: string[];
  frameSha256: string[];
  container: string;
}

/** A journal index by hand (src/volume/journal-record.ts is the code): 2 extents, 24 bytes each. */
function journalIndexHex(): string {
  const b = Buffer.alloc(8 + 2 * 24);
  b.writeUInt32LE(2, 0);
  // extent 0: chunk 3, blocks 5..6 (2 blocks) from data frame 1 at offset 0
  b.writeUIntLE(3, 8, 6);
  b.writeUInt16LE(5, 16);
  b.writeUInt16LE(2, 18);
  b.writeUInt8(0, 20);
  b.writeUInt32LE(1, 24);
  b.writeUInt32LE(0, 28);
  // extent 1: chunk 2^40 + 7, blocks 0..15 zeroed (no data)
  b.writeUIntLE(2 ** 40 + 7, 32, 6);
  b.writeUInt16LE(0, 40);
  b.writeUInt16LE(16, 42);
  b.writeUInt8(1, 44);
  b.writeUInt32LE(0, 48);
  b.writeUInt32LE(0, 52);
  return b.toString('hex');
}

export const FRAMED_VECTOR_CASES: FramedVectorCase[] = [
  {
    name: 'chunk-v2-container',
    description: 'a 2.5-frame chunk: frame 0 text (compressed), frame 1 all zero (still sealed), frame 2 1000 random bytes (raw)',
    kind: 'chunk-frame',
    index: 9,
    generation: 0x0000a1b2c3d4,
    frames: [
      { gen: 'text', length: FRAME_BYTES },
      { gen: 'zero', length: FRAME_BYTES },
      { gen: 'random', seed: 5, length: 1000 },
    ],
    nonceSeed: 100,
    zstdLevel: 3,
  },
  {
    name: 'journal-container',
    description: 'a journal: frame 0 the index (2 extents), frame 1 two 4 KiB blocks of text',
    kind: 'journal-frame',
    index: 0,
    generation: 0x00000f0e0d0c,
    frames: [{ gen: 'hex', hex: journalIndexHex() }, { gen: 'text', length: 8192 }],
    nonceSeed: 200,
    zstdLevel: 3,
  },
];

export function frameBytes(source: FrameSource): Buffer {
  switch (source.gen) {
    case 'text':
      return compressibleBytes(source.length);
    case 'zero':
      return Buffer.alloc(source.length);
    case 'random':
      return seededBytes(source.length, source.seed);
    case 'hex':
      return Buffer.from(source.hex, 'hex');
  }
}
