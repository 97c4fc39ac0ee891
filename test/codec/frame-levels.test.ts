// The zstd level of each frame of a container: the configured one, zstd's fastest after a frame
// that saved less than 1/5, back after one that saved 1/3; in a run of such frames, one whose
// sample does not compress is stored uncompressed (frame-compression.ts). Checked on the sealed
// lengths, which are what each level's zstd output makes them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FRAME_BYTES, SEAL_OVERHEAD_BYTES, openFrameSync, parseFramedHeader, sealFramesSync } from '../../src/codec';
import { FLAG_COMPRESSED, OFFSET_FLAGS } from '../../src/codec/format';
import { POOR_DATA_ZSTD_LEVEL, nextFrameLevel, worthCompressing } from '../../src/codec/frame-compression';
import { compressBound, compressInto } from '../../src/codec/zstd-contexts';
import { seededBytes, testKey, testPlace } from './codec-fixtures';

const key = testKey();
const base = testPlace();
const place = { vaultId: base.vaultId, volumeId: base.volumeId, index: 3, generation: 9 };

/** Words from a small vocabulary in a seeded order: compresses to about a third, and better at
 *  level 3 than at -1. */
function textLike(length: number, seed: number): Buffer {
  const words = ['volume', 'chunk', 'frame', 'journal', 'snapshot', 'kernel:', 'EXT4-fs', 'mounted', 'with', 'data', '\n', 'the', 'of', '2026-12-05'];
  const rnd = seededBytes(length, seed);
  const out = Buffer.alloc(length);
  for (let at = 0, i = 0; at < length; i++) at += out.write(words[rnd[i] % words.length] + ' ', at);
  return out;
}

/** Random bytes after a zero run of `zeroShare` of the frame: saves about that share at any level. */
function poor(length: number, seed: number, zeroShare: number): Buffer {
  const out = seededBytes(length, seed);
  out.fill(0, 0, Math.floor(length * zeroShare));
  return out;
}

function payloadAt(frame: Buffer, level: number): number {
  const dst = Buffer.alloc(compressBound(frame.length));
  return Math.min(compressInto(dst, frame, level), frame.length);
}

test('nextFrameLevel: below 1/5 saved goes fast, 1/3 saved comes back, a configured fast level stays', () => {
  const n = 1000;
  assert.equal(nextFrameLevel(3, 3, 880, n), POOR_DATA_ZSTD_LEVEL, 'saved 12 %: fast next');
  assert.equal(nextFrameLevel(3, 3, 801, n), POOR_DATA_ZSTD_LEVEL, 'saved just under 1/5: fast next');
  assert.equal(nextFrameLevel(3, 3, 800, n), 3, 'saved exactly 1/5: stays');
  assert.equal(nextFrameLevel(3, 3, 1000, n), POOR_DATA_ZSTD_LEVEL, 'stored raw: fast next');
  assert.equal(nextFrameLevel(POOR_DATA_ZSTD_LEVEL, 3, 668, n), POOR_DATA_ZSTD_LEVEL, 'saved just under a third at the fast level: stays fast');
  assert.equal(nextFrameLevel(POOR_DATA_ZSTD_LEVEL, 3, 666, n), 3, 'saved a third: back');
  assert.equal(nextFrameLevel(19, 19, 990, n), POOR_DATA_ZSTD_LEVEL, 'any configured level');
  assert.equal(nextFrameLevel(-5, -5, 1000, n), -5, 'a configured level at or below the fast one is kept');
  assert.equal(nextFrameLevel(POOR_DATA_ZSTD_LEVEL, POOR_DATA_ZSTD_LEVEL, 1000, n), POOR_DATA_ZSTD_LEVEL);
});

/** Random bytes with `zeroShare` of every 4 KiB block zero: saves about that share wherever it is
 *  sampled, and at every level. */
function evenlyPoor(length: number, seed: number, zeroShare: number): Buffer {
  const out = seededBytes(length, seed);
  for (let at = 0; at < length; at += 4096) out.fill(0, at, at + Math.floor(4096 * zeroShare));
  return out;
}

test('worthCompressing: a sample spread over the frame must save 1/8 at the fast level', () => {
  assert.equal(worthCompressing(textLike(FRAME_BYTES, 7)), true, 'text');
  assert.equal(worthCompressing(seededBytes(FRAME_BYTES, 8)), false, 'random');
  assert.equal(worthCompressing(evenlyPoor(FRAME_BYTES, 9, 0.06)), false, '6 % zeros in every block');
  assert.equal(worthCompressing(evenlyPoor(FRAME_BYTES, 10, 0.2)), true, '20 % zeros in every block');
  const tail = seededBytes(FRAME_BYTES, 11);
  tail.fill(0, FRAME_BYTES - 4096);
  assert.equal(worthCompressing(tail), true, 'the last 4 KiB zero: the sample takes the frame\'s end too');
  assert.equal(worthCompressing(seededBytes(16384, 12)), true, 'a frame no larger than the sample: compress it and see');
});

test('a container: text at level 3; poorly compressible frames after the first at the fast level; text after them fast once, then level 3 again', () => {
  // poor(): the zero run at the start falls in the sample, so the fast level compresses them
  const frames = [textLike(FRAME_BYTES, 1), poor(FRAME_BYTES, 2, 0.06), poor(FRAME_BYTES, 3, 0.06), textLike(FRAME_BYTES, 4), textLike(FRAME_BYTES, 5), poor(FRAME_BYTES / 2, 6, 0.2)];
  for (const f of [0, 3, 4]) assert.notEqual(payloadAt(frames[f], 3), payloadAt(frames[f], POOR_DATA_ZSTD_LEVEL), `text frame ${f}: the levels differ in size`);
  const container = sealFramesSync(key.bytes, 'chunk-frame', frames, place, 5.5 * FRAME_BYTES, 3);
  const header = parseFramedHeader(container, 'chunk', 'test', container.length);
  const levels = [3, 3, POOR_DATA_ZSTD_LEVEL, POOR_DATA_ZSTD_LEVEL, 3, 3];
  //   frame 1 saved ~6 % at level 3 → frame 2 fast; frame 2 saved ~6 % → frame 3 fast; frame 3
  //   (text) saved > 1/4 → frame 4 at 3; frame 4 saved > 1/8 → frame 5 at 3
  frames.forEach((frame, f) => {
    assert.equal(header.frameLengths[f], SEAL_OVERHEAD_BYTES + payloadAt(frame, levels[f]), `frame ${f} sealed at level ${levels[f]}`);
    const sealed = container.subarray(header.frameOffsets[f], header.frameOffsets[f] + header.frameLengths[f]);
    assert.ok(openFrameSync(key.bytes, sealed, { ...place, kind: 'chunk-frame', frame: f }, frame.length).equals(frame), `frame ${f} opens to its bytes`);
  });
  // the same frames at a configured level of -1: every one at -1
  const fast = sealFramesSync(key.bytes, 'chunk-frame', frames, place, 5.5 * FRAME_BYTES, POOR_DATA_ZSTD_LEVEL);
  const fastHeader = parseFramedHeader(fast, 'chunk', 'test', fast.length);
  frames.forEach((frame, f) => assert.equal(fastHeader.frameLengths[f], SEAL_OVERHEAD_BYTES + payloadAt(frame, POOR_DATA_ZSTD_LEVEL)));
});

test('in a run of poor frames, one whose sample does not compress is stored uncompressed, though the fast level would shrink it', () => {
  const frames = [poor(FRAME_BYTES, 20, 0.06), evenlyPoor(FRAME_BYTES, 21, 0.06), evenlyPoor(FRAME_BYTES, 22, 0.06), textLike(FRAME_BYTES, 23), evenlyPoor(FRAME_BYTES, 24, 0.06)];
  for (const f of [1, 2, 4]) assert.ok(payloadAt(frames[f], POOR_DATA_ZSTD_LEVEL) < FRAME_BYTES * 0.96, `frame ${f}: the fast level saves some`);
  const container = sealFramesSync(key.bytes, 'chunk-frame', frames, place, 5 * FRAME_BYTES, 3);
  const header = parseFramedHeader(container, 'chunk', 'test', container.length);
  // frame 0 at 3 (saves ~6 %) → 1 and 2 in a poor run, samples ~6 %: stored as they are; frame 3
  //   (text) compresses at the fast level and saves > 1/3 → frame 4 at level 3 again, compressed
  const expected = [SEAL_OVERHEAD_BYTES + payloadAt(frames[0], 3), SEAL_OVERHEAD_BYTES + FRAME_BYTES, SEAL_OVERHEAD_BYTES + FRAME_BYTES, SEAL_OVERHEAD_BYTES + payloadAt(frames[3], POOR_DATA_ZSTD_LEVEL), SEAL_OVERHEAD_BYTES + payloadAt(frames[4], 3)];
  assert.deepEqual(header.frameLengths, expected);
  frames.forEach((frame, f) => {
    const sealed = container.subarray(header.frameOffsets[f], header.frameOffsets[f] + header.frameLengths[f]);
    assert.equal(sealed[OFFSET_FLAGS] & FLAG_COMPRESSED, f === 1 || f === 2 ? 0 : FLAG_COMPRESSED, `frame ${f}: compressed flag`);
    assert.ok(openFrameSync(key.bytes, sealed, { ...place, kind: 'chunk-frame', frame: f }, frame.length).equals(frame), `frame ${f} opens to its bytes`);
  });
  // a journal's frames follow the same rule
  const journal = sealFramesSync(key.bytes, 'journal-frame', frames, place, 5 * FRAME_BYTES, 3);
  assert.deepEqual(parseFramedHeader(journal, 'journal', 'test', journal.length).frameLengths, expected);
});

test("a container's first frame is sampled too: one whose sample does not compress is stored as it is, and the next is at the fast level", () => {
  const frames = [evenlyPoor(FRAME_BYTES, 30, 0.06), textLike(FRAME_BYTES, 31), textLike(FRAME_BYTES, 32)];
  assert.ok(payloadAt(frames[0], 3) < FRAME_BYTES * 0.96, 'level 3 would shrink frame 0');
  const container = sealFramesSync(key.bytes, 'chunk-frame', frames, place, 3 * FRAME_BYTES, 3);
  const header = parseFramedHeader(container, 'chunk', 'test', container.length);
  assert.deepEqual(header.frameLengths, [SEAL_OVERHEAD_BYTES + FRAME_BYTES, SEAL_OVERHEAD_BYTES + payloadAt(frames[1], POOR_DATA_ZSTD_LEVEL), SEAL_OVERHEAD_BYTES + payloadAt(frames[2], 3)]);
  // text first: sampled, compressed at level 3
  const text = sealFramesSync(key.bytes, 'chunk-frame', [frames[1]], place, FRAME_BYTES, 3);
  assert.equal(parseFramedHeader(text, 'chunk', 'test', text.length).frameLengths[0], SEAL_OVERHEAD_BYTES + payloadAt(frames[1], 3));
  // a configured fast level never samples: it compresses what shrinks
  const fast = sealFramesSync(key.bytes, 'chunk-frame', frames, place, 3 * FRAME_BYTES, POOR_DATA_ZSTD_LEVEL);
  assert.equal(parseFramedHeader(fast, 'chunk', 'test', fast.length).frameLengths[0], SEAL_OVERHEAD_BYTES + payloadAt(frames[0], POOR_DATA_ZSTD_LEVEL));
});
