// Root records: format 2 is written (with journals), formats 1 and 2 are read, anything else or
// any malformed journal list is ERR_CORRUPT.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ROOT_FORMAT, decodeRoot, encodeRoot, journalsOf, type RootRecord } from '../../src/volume/root-record';

const volumeId = 'ab'.repeat(16);
const base: RootRecord = { v: ROOT_FORMAT, volumeId, seq: 3, size: 8 * 2 ** 20, chunkSize: 4 * 2 ** 20, pageEntries: 4096, epoch: 2, pages: [{ id: 'cd'.repeat(16), epoch: 2 }], updatedAt: '2026-12-03T00:00:00.000Z' };
const journals = [
  { id: '01'.repeat(16), storedSize: 4242 },
  { id: '02'.repeat(16), storedSize: 99 },
];

function raw(edit: (r: any) => void): Buffer {
  const r = JSON.parse(encodeRoot({ ...base, journals }).toString());
  edit(r);
  return Buffer.from(JSON.stringify(r));
}

test('encode writes format 2 with journals (oldest first); decode returns them', () => {
  const bytes = encodeRoot({ ...base, journals });
  const json = JSON.parse(bytes.toString());
  assert.equal(json.v, 2);
  assert.deepEqual(json.journals, [['01'.repeat(16), 4242], ['02'.repeat(16), 99]]);
  const back = decodeRoot(bytes, volumeId);
  assert.deepEqual(back.journals, journals);
  assert.deepEqual(back.pages, base.pages);
  assert.deepEqual(decodeRoot(encodeRoot(base), volumeId).journals, [], 'a root built without journals has none');
  assert.equal(JSON.parse(encodeRoot({ ...base, v: 1 }).toString()).v, 2, 'always written as format 2');
});

test('format 1 roots are still read, with no journals', () => {
  const v1 = raw((r) => {
    r.v = 1;
    delete r.journals;
  });
  const back = decodeRoot(v1, volumeId);
  assert.deepEqual(back.journals, []);
  assert.deepEqual(journalsOf(back), []);
  assert.equal(back.seq, 3);
});

test('a root of a newer format says so (upgrade), not "malformed"', () => {
  assert.throws(() => decodeRoot(raw((r) => (r.v = 3)), volumeId), { code: 'ERR_NOT_SUPPORTED', message: /format 3, newer than this build reads \(1, 2\): upgrade nbd-vault/ });
});

test('malformed: unknown format, v1 with journals, v2 without, bad journal entries', () => {
  const bad: ((r: any) => void)[] = [
    (r) => (r.v = 0),
    (r) => (r.v = '2'),
    (r) => (r.v = 1),
    (r) => delete r.journals,
    (r) => (r.journals = {}),
    (r) => (r.journals = [['01'.repeat(16)]]),
    (r) => (r.journals = [['01'.repeat(16), 0]]),
    (r) => (r.journals = [['01'.repeat(16), -5]]),
    (r) => (r.journals = [['01'.repeat(16), 1.5]]),
    (r) => (r.journals = [['XY'.repeat(16), 10]]),
    (r) => (r.journals = [['01'.repeat(15), 10]]),
    (r) => (r.journals = [['01'.repeat(16), 10, 'x']]),
    (r) => (r.journals = [['01'.repeat(16), 10], ['01'.repeat(16), 20]]), // the same journal twice
    (r) => (r.journals = [null]),
  ];
  for (const edit of bad) assert.throws(() => decodeRoot(raw(edit), volumeId), { code: 'ERR_CORRUPT' });
});
