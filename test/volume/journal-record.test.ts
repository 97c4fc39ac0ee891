// Journal index: round trip, exact bytes (the committed journal vector's index), and strict
// decoding: every field out of range is ERR_CORRUPT naming the object; encode refuses bugs.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { FRAME_BYTES } from '../../src/codec';
import { MAX_JOURNAL_EXTENTS, decodeJournalIndex, encodeJournalIndex, journalFrameBytesNeeded, type JournalExtent } from '../../src/volume/journal-record';

const extents: JournalExtent[] = [
  { chunkIndex: 3, firstBlock: 5, blockCount: 2, zero: false, frame: 1, frameOffset: 0 },
  { chunkIndex: 2 ** 40 + 7, firstBlock: 0, blockCount: 16, zero: true, frame: 0, frameOffset: 0 },
  { chunkIndex: 0, firstBlock: 1000, blockCount: 24, zero: false, frame: 2, frameOffset: 8 * 4096 },
  { chunkIndex: 2 ** 48 - 1, firstBlock: 0, blockCount: 1024, zero: true, frame: 0, frameOffset: 0 },
];

test('round trip and the layout of the committed journal vector', () => {
  assert.deepEqual(decodeJournalIndex(encodeJournalIndex(extents), 'j', 3), extents);
  assert.deepEqual(decodeJournalIndex(encodeJournalIndex([]), 'j'), []);
  const vector = JSON.parse(readFileSync(path.resolve(__dirname, '../../../test/codec/vectors/journal-container.json'), 'utf8'));
  const index = Buffer.from(vector.frames[0].hex, 'hex');
  assert.deepEqual(decodeJournalIndex(index, 'vector', 2), extents.slice(0, 2));
  assert.deepEqual(encodeJournalIndex(extents.slice(0, 2)), index);
  assert.equal(journalFrameBytesNeeded(extents, 1), 2 * 4096);
  assert.equal(journalFrameBytesNeeded(extents, 2), 32 * 4096);
  assert.equal(journalFrameBytesNeeded(extents, 3), 0);
});

test('strict decode: ERR_CORRUPT naming the object', () => {
  const good = encodeJournalIndex(extents);
  const edits: [string, (b: Buffer) => void][] = [
    ['count too large', (b) => b.writeUInt32LE(5, 0)],
    ['count too small', (b) => b.writeUInt32LE(3, 0)],
    ['reserved', (b) => b.writeUInt32LE(1, 4)],
    ['chunk index ≥ 2^48', (b) => b.writeUInt16LE(1, 8 + 6)],
    ['first block 1024', (b) => b.writeUInt16LE(1024, 8 + 8)],
    ['zero blocks', (b) => b.writeUInt16LE(0, 8 + 10)],
    ['past the chunk end', (b) => b.writeUInt16LE(1023, 8 + 8)],
    ['unknown flag', (b) => (b[8 + 12] = 2)],
    ['reserved extent bytes', (b) => (b[8 + 14] = 1)],
    ['data frame 0', (b) => b.writeUInt32LE(0, 8 + 16)],
    ['data frame beyond the journal', (b) => b.writeUInt32LE(3, 8 + 16)],
    ['offset not block aligned', (b) => b.writeUInt32LE(100, 8 + 20)],
    ['spans past its frame', (b) => b.writeUInt32LE(FRAME_BYTES - 4096, 8 + 20)],
    ['zero extent naming data', (b) => b.writeUInt32LE(1, 8 + 24 + 16)],
  ];
  for (const [why, edit] of edits) {
    const b = Buffer.from(good);
    edit(b);
    assert.throws(() => decodeJournalIndex(b, 'journal 0123 of volume "vm"', 3), (err: any) => err.code === 'ERR_CORRUPT' && /journal 0123 of volume "vm"/.test(err.message), why);
  }
  assert.throws(() => decodeJournalIndex(good.subarray(0, good.length - 1), 'j', 3), { code: 'ERR_CORRUPT' });
  assert.throws(() => decodeJournalIndex(Buffer.alloc(4), 'j'), { code: 'ERR_CORRUPT' });
  assert.throws(() => decodeJournalIndex(Buffer.concat([good, Buffer.alloc(24)]), 'j', 3), { code: 'ERR_CORRUPT' });
});

test('encode refuses invalid extents and more than fit in one frame (writer bugs)', () => {
  const bad: Partial<JournalExtent>[] = [{ frame: 0 }, { frameOffset: 1 }, { blockCount: 0 }, { firstBlock: 1023, blockCount: 2 }, { chunkIndex: 2 ** 48 }, { chunkIndex: -1 }];
  for (const change of bad) assert.throws(() => encodeJournalIndex([{ ...extents[0], ...change }]), { code: 'ERR_BUG' });
  const many = Array.from({ length: MAX_JOURNAL_EXTENTS }, (_, k) => ({ ...extents[1], chunkIndex: k }));
  assert.ok(encodeJournalIndex(many).length <= FRAME_BYTES);
  assert.throws(() => encodeJournalIndex([...many, extents[1]]), { code: 'ERR_BUG' });
});
