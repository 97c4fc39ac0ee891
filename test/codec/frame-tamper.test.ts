// Tamper cases of format 2: sealed frames and framed containers. A frame moved to another
// position, chunk, generation, kind or container fails authentication; a lying container header
// gives ERR_CORRUPT or an authentication failure, never wrong bytes and never zeros.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  FRAME_BYTES,
  FramedHeaderIncomplete,
  chunkFrameLength,
  createCodec,
  createInlineCodec,
  openFrameSync,
  openSync,
  parseFramedHeader,
  sealFramesSync,
  sealSync,
  type ContainerMagic,
  type FrameKind,
  type ObjectPlace,
} from '../../src/codec';
import { FRAMED_HEADER_FIXED_BYTES, SEAL_OVERHEAD_BYTES, MAX_JOURNAL_FRAMES, MAX_SEALED_FRAME_BYTES, OFFSET_KIND, OFFSET_VERSION } from '../../src/codec/format';
import { CHUNK_BYTES, mixedBytes, seededBytes, testKey, testPlace } from './codec-fixtures';

const key = testKey();
const base = testPlace();
const framesPlace = { vaultId: base.vaultId, volumeId: base.volumeId, index: 42, generation: 7 };

function split(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += FRAME_BYTES) out.push(data.subarray(at, Math.min(at + FRAME_BYTES, data.length)));
  return out;
}

/** 3.5 frames: random, zero, text, random tail. */
function chunkData(seed: number): Buffer {
  const data = Buffer.alloc(3 * FRAME_BYTES + FRAME_BYTES / 2);
  seededBytes(FRAME_BYTES, seed).copy(data, 0);
  mixedBytes(FRAME_BYTES, seed).copy(data, 2 * FRAME_BYTES);
  seededBytes(FRAME_BYTES / 2, seed + 1).copy(data, 3 * FRAME_BYTES);
  return data;
}

const data = chunkData(1);
const container = sealFramesSync(key.bytes, 'chunk-frame', split(data), framesPlace, data.length, 3);
const chunkPlace = (frame: number, over: Partial<ObjectPlace> = {}): ObjectPlace => ({ ...framesPlace, kind: 'chunk-frame', frame, ...over });

/** Reads a whole container as a reader does: parse (with the size), open every frame at its place. */
function readAll(bytes: Buffer, length: number, place: (f: number) => ObjectPlace = chunkPlace, magic: ContainerMagic = 'chunk'): Buffer {
  const h = parseFramedHeader(bytes, magic, 'test object', bytes.length);
  const parts: Buffer[] = [];
  for (let f = 0; f < h.frameCount; f++) {
    parts.push(openFrameSync(key.bytes, bytes.subarray(h.frameOffsets[f], h.frameOffsets[f] + h.frameLengths[f]), place(f), magic === 'chunk' ? chunkFrameLength(length, f) : null));
  }
  return Buffer.concat(parts);
}

function expectCode(work: () => unknown, code: string | string[]): void {
  const codes = Array.isArray(code) ? code : [code];
  assert.throws(work, (err: any) => {
    assert.ok(codes.includes(err.code), `expected ${codes.join('|')}, got ${err.code}: ${err.message}`);
    return true;
  });
}

function frameOf(bytes: Buffer, f: number): Buffer {
  const h = parseFramedHeader(bytes, 'chunk', 't', bytes.length);
  return bytes.subarray(h.frameOffsets[f], h.frameOffsets[f] + h.frameLengths[f]);
}

test('round trip: every frame opens at its place; the zero frame is sealed like the others', () => {
  assert.deepEqual(readAll(container, data.length), data);
  const h = parseFramedHeader(container, 'chunk', 't', container.length);
  assert.equal(h.frameCount, 4);
  assert.ok(h.frameLengths[1] < 100, 'the zero frame is a few bytes');
});

test('a frame opened at another frame number, chunk, generation, kind, volume: ERR_AUTH_FAILED', () => {
  const f0 = frameOf(container, 0);
  const otherVolume = Buffer.from(base.volumeId);
  otherVolume[0] ^= 1;
  for (const place of [
    chunkPlace(1),
    chunkPlace(0, { index: 43 }),
    chunkPlace(0, { generation: 6 }),
    chunkPlace(0, { generation: 8 }),
    chunkPlace(0, { kind: 'journal-frame' }),
    chunkPlace(0, { volumeId: otherVolume }),
    chunkPlace(2 ** 32 - 1),
  ]) {
    expectCode(() => openFrameSync(key.bytes, f0, place, FRAME_BYTES), 'ERR_AUTH_FAILED');
  }
});

test('frames swapped between positions in one container: ERR_AUTH_FAILED', () => {
  const h = parseFramedHeader(container, 'chunk', 't', container.length);
  const parts = [0, 1, 2, 3].map((f) => frameOf(container, f));
  // swap frames 0 and 2 together with their lengths: the header is consistent, the frames are not
  const swapped = rebuild([parts[2], parts[1], parts[0], parts[3]], h.logicalLength);
  expectCode(() => readAll(swapped, data.length), 'ERR_AUTH_FAILED');
});

test('a frame swapped in from another chunk, another generation of the same chunk, or a journal: ERR_AUTH_FAILED', () => {
  const other = chunkData(2);
  const sources = [
    sealFramesSync(key.bytes, 'chunk-frame', split(other), { ...framesPlace, index: 43 }, other.length, 3),
    sealFramesSync(key.bytes, 'chunk-frame', split(other), { ...framesPlace, generation: 8 }, other.length, 3), // a replayed/newer write
  ];
  for (const source of sources) {
    for (const f of [0, 1, 3]) {
      const parts = [0, 1, 2, 3].map((g) => (g === f ? frameOf(source, f) : frameOf(container, g)));
      expectCode(() => readAll(rebuild(parts, data.length), data.length), 'ERR_AUTH_FAILED');
    }
  }
  const journal = sealFramesSync(key.bytes, 'journal-frame', [Buffer.alloc(8), seededBytes(4096, 3)], { ...framesPlace, index: 0 }, 4104, 3);
  const jh = parseFramedHeader(journal, 'journal', 'j', journal.length);
  const jFrame = journal.subarray(jh.frameOffsets[1], jh.frameOffsets[1] + jh.frameLengths[1]);
  expectCode(() => openFrameSync(key.bytes, jFrame, chunkPlace(1, { index: 0 }), 4096), 'ERR_AUTH_FAILED');
});

test('v1 / v2 confusion: never opens, never parses as the other', () => {
  const v1 = sealSync(key, data.subarray(0, FRAME_BYTES), { ...base, kind: 'chunk' })!;
  expectCode(() => openFrameSync(key.bytes, v1, chunkPlace(0), FRAME_BYTES), 'ERR_CORRUPT'); // version 1 where a frame belongs
  expectCode(() => openSync(key, frameOf(container, 0), { ...base, kind: 'chunk' }), 'ERR_CORRUPT'); // a frame where a v1 object belongs
  expectCode(() => parseFramedHeader(v1, 'chunk', 't', v1.length), 'ERR_CORRUPT');
  expectCode(() => parseFramedHeader(container, 'journal', 't', container.length), 'ERR_CORRUPT');
  // header bytes edited to pass the version check: the AD (header and its length) no longer matches
  const asV1 = Buffer.from(frameOf(container, 0));
  asV1[OFFSET_VERSION] = 1;
  asV1[OFFSET_KIND] = 1;
  expectCode(() => openSync(key, asV1, { ...base, kind: 'chunk', index: 42, generation: 7 }), 'ERR_AUTH_FAILED');
  const asFrame = Buffer.from(v1);
  asFrame[OFFSET_VERSION] = 2;
  asFrame[OFFSET_KIND] = 7;
  expectCode(() => openFrameSync(key.bytes, asFrame, chunkPlace(0, { index: base.index, generation: base.generation }), FRAME_BYTES), 'ERR_AUTH_FAILED');
});

test('lying header lengths: ERR_CORRUPT or ERR_AUTH_FAILED, never bytes', () => {
  const h = parseFramedHeader(container, 'chunk', 't', container.length);
  const lie = (edit: (b: Buffer) => void) => {
    const b = Buffer.from(container);
    edit(b);
    return b;
  };
  // one length moved to the next frame: the sum holds, the frames are cut in the wrong places
  const moved = lie((b) => {
    b.writeUInt32LE(h.frameLengths[0] - 10, 16);
    b.writeUInt32LE(h.frameLengths[1] + 10, 20);
  });
  expectCode(() => readAll(moved, data.length), ['ERR_AUTH_FAILED', 'ERR_CORRUPT']);
  const swappedLengths = lie((b) => {
    b.writeUInt32LE(h.frameLengths[1], 16);
    b.writeUInt32LE(h.frameLengths[0], 20);
  });
  expectCode(() => readAll(swappedLengths, data.length), ['ERR_AUTH_FAILED', 'ERR_CORRUPT']);
  // lengths that do not add up to the object's size
  expectCode(() => readAll(lie((b) => b.writeUInt32LE(h.frameLengths[2] + 1, 24)), data.length), 'ERR_CORRUPT');
  expectCode(() => readAll(lie((b) => b.writeUInt32LE(h.frameLengths[2] - 1, 24)), data.length), 'ERR_CORRUPT');
  // out of bounds
  expectCode(() => readAll(lie((b) => b.writeUInt32LE(51, 16)), data.length), 'ERR_CORRUPT');
  expectCode(() => readAll(lie((b) => b.writeUInt32LE(MAX_SEALED_FRAME_BYTES + 1, 16)), data.length), 'ERR_CORRUPT');
  expectCode(() => readAll(lie((b) => b.writeUInt32LE(0xffffffff, 16)), data.length), 'ERR_CORRUPT');
  // a logical length that needs another frame count; a frame count that is not the length's
  expectCode(() => readAll(lie((b) => b.writeUInt32LE(data.length + FRAME_BYTES, 8)), data.length), 'ERR_CORRUPT');
  expectCode(() => readAll(lie((b) => b.writeUInt32LE(5, 12)), data.length), 'ERR_CORRUPT');
  expectCode(() => readAll(lie((b) => b.writeUInt32LE(0xffffffff, 12)), data.length), 'ERR_CORRUPT');
  // a shorter logical length with the same frame count: the last frame's length check catches it
  expectCode(() => readAll(lie((b) => b.writeUInt32LE(data.length - 1, 8)), data.length - 1), 'ERR_CORRUPT');
  // version, reserved
  expectCode(() => readAll(lie((b) => (b[4] = 3)), data.length), 'ERR_CORRUPT');
  expectCode(() => readAll(lie((b) => (b[6] = 1)), data.length), 'ERR_CORRUPT');
});

test('truncated containers and short prefixes', () => {
  for (const cut of [0, 3, 15, 16, 20, container.length - 1]) {
    expectCode(() => parseFramedHeader(container.subarray(0, cut), 'chunk', 't', cut), 'ERR_CORRUPT');
  }
  // a prefix of a longer object: the reader is told how much more the header needs
  for (const [cut, need] of [[0, 16], [10, 16], [16, 32], [31, 32]]) {
    assert.throws(
      () => parseFramedHeader(container.subarray(0, cut), 'chunk', 't', container.length),
      (err: any) => err instanceof FramedHeaderIncomplete && err.needBytes === need && err.code === 'ERR_CORRUPT',
    );
  }
  assert.equal(parseFramedHeader(container.subarray(0, 32), 'chunk', 't', container.length).frameCount, 4);
  // a bad magic is reported as such even in a short prefix
  expectCode(() => parseFramedHeader(Buffer.from('XXXXXX'), 'chunk', 't'), 'ERR_CORRUPT');
  assert.ok(!(catchErr(() => parseFramedHeader(Buffer.from('XXXXXX'), 'chunk', 't')) instanceof FramedHeaderIncomplete));
});

test('journal bounds: frame count 0 or above the limit, length above its frames', () => {
  const journal = sealFramesSync(key.bytes, 'journal-frame', [Buffer.alloc(8), seededBytes(4096, 3)], { ...framesPlace, index: 0 }, 4104, 3);
  for (const n of [0, MAX_JOURNAL_FRAMES + 1, 0xffffffff]) {
    const b = Buffer.from(journal);
    b.writeUInt32LE(n, 12);
    expectCode(() => parseFramedHeader(b, 'journal', 'j'), 'ERR_CORRUPT');
  }
  const b = Buffer.from(journal);
  b.writeUInt32LE(2 * FRAME_BYTES + 1, 8);
  expectCode(() => parseFramedHeader(b, 'journal', 'j'), 'ERR_CORRUPT');
  const jPlace = (f: number): ObjectPlace => ({ ...framesPlace, index: 0, kind: 'journal-frame', frame: f });
  assert.deepEqual(readAll(journal, 4104, jPlace, 'journal'), Buffer.concat([Buffer.alloc(8), seededBytes(4096, 3)]));
});

test('an expected frame length that differs: ERR_CORRUPT', () => {
  expectCode(() => openFrameSync(key.bytes, frameOf(container, 3), chunkPlace(3), FRAME_BYTES), 'ERR_CORRUPT');
  expectCode(() => openFrameSync(key.bytes, frameOf(container, 0), chunkPlace(0), FRAME_BYTES - 1), 'ERR_CORRUPT');
});

test('sealFrames refuses frames that do not fit the container (a writer bug)', () => {
  const kinds: [FrameKind, Buffer[], number][] = [
    ['chunk-frame', [Buffer.alloc(FRAME_BYTES - 1), Buffer.alloc(10)], FRAME_BYTES + 9], // a short frame in the middle
    ['chunk-frame', [Buffer.alloc(10)], 11], // lengths do not add up
    ['chunk-frame', [], 0],
    ['journal-frame', [Buffer.alloc(FRAME_BYTES + 1)], FRAME_BYTES + 1],
  ];
  for (const [kind, frames, length] of kinds) expectCode(() => sealFramesSync(key.bytes, kind, frames, framesPlace, length, 3), 'ERR_BUG');
});

test('pool and inline codec: same containers, typed errors across the thread boundary, caller buffers intact', async () => {
  const pool = createCodec({ workers: 2 });
  const inline = createInlineCodec();
  try {
    const chunk = mixedBytes(CHUNK_BYTES, 5);
    const before = Buffer.from(chunk);
    const frames = split(chunk);
    const fromPool = await pool.sealFrames(key, 'chunk-frame', frames, framesPlace, chunk.length);
    assert.deepEqual(chunk, before, 'caller buffer untouched');
    assert.equal(frames[0].length, FRAME_BYTES, 'not detached');
    assert.deepEqual(readAll(fromPool, chunk.length), chunk);
    const fromInline = await inline.sealFrames(key, 'chunk-frame', frames, framesPlace, chunk.length);
    const h = parseFramedHeader(fromInline, 'chunk', 't', fromInline.length);
    for (const codec of [pool, inline]) {
      for (const f of [0, 5, 31]) {
        const sealed = fromInline.subarray(h.frameOffsets[f], h.frameOffsets[f] + h.frameLengths[f]);
        assert.deepEqual(await codec.openFrame(key, sealed, chunkPlace(f), FRAME_BYTES), chunk.subarray(f * FRAME_BYTES, (f + 1) * FRAME_BYTES));
        await assert.rejects(codec.openFrame(key, sealed, chunkPlace(f + 1), FRAME_BYTES), { code: 'ERR_AUTH_FAILED' });
        await assert.rejects(codec.openFrame(key, sealed, chunkPlace(f), FRAME_BYTES + 1), { code: 'ERR_CORRUPT' });
      }
    }
    // frames in shared memory go to the worker without a copy
    const shared = new Uint8Array(new SharedArrayBuffer(chunk.length));
    shared.set(chunk);
    const sharedFrames = split(Buffer.from(shared.buffer));
    assert.deepEqual(readAll(await pool.sealFrames(key, 'chunk-frame', sharedFrames, framesPlace, chunk.length), chunk.length), chunk);
    await assert.rejects(pool.sealFrames(key, 'chunk-frame', frames.slice(1), framesPlace, chunk.length), { code: 'ERR_BUG' });
    await assert.rejects(pool.openFrame(key, frameOf(fromPool, 0), { ...base, kind: 'chunk' }, FRAME_BYTES), { code: 'ERR_BUG' });
  } finally {
    await pool.close();
    await inline.close();
  }
});

function rebuild(parts: Buffer[], logicalLength: number): Buffer {
  const header = Buffer.alloc(16 + 4 * parts.length);
  header.write('NBVC', 0, 'latin1');
  header[4] = 2;
  header.writeUInt32LE(logicalLength, 8);
  header.writeUInt32LE(parts.length, 12);
  parts.forEach((p, f) => header.writeUInt32LE(p.length, 16 + 4 * f));
  return Buffer.concat([header, ...parts]);
}

function catchErr(work: () => unknown): unknown {
  try {
    work();
  } catch (err) {
    return err;
  }
  return null;
}

test('openChunkContainer (one task per chunk): same bytes, same refusals as frame by frame', async () => {
  const pool = createCodec({ workers: 1 });
  const inline = createInlineCodec();
  try {
    for (const codec of [pool, inline]) {
      assert.deepEqual(await codec.openChunkContainer(key, container, framesPlace, data.length, 'obj'), data);
      await assert.rejects(codec.openChunkContainer(key, container, framesPlace, data.length + 1, 'obj'), { code: 'ERR_CORRUPT', message: /obj/ });
      await assert.rejects(codec.openChunkContainer(key, container, { ...framesPlace, index: 43 }, data.length, 'obj'), { code: 'ERR_AUTH_FAILED' });
      await assert.rejects(codec.openChunkContainer(key, container, { ...framesPlace, generation: 8 }, data.length, 'obj'), { code: 'ERR_AUTH_FAILED' });
      const parts = [0, 1, 2, 3].map((f) => frameOf(container, f));
      await assert.rejects(codec.openChunkContainer(key, rebuild([parts[1], parts[0], parts[2], parts[3]], data.length), framesPlace, data.length, 'obj'), { code: 'ERR_AUTH_FAILED' });
      await assert.rejects(codec.openChunkContainer(key, container.subarray(0, container.length - 1), framesPlace, data.length, 'obj'), { code: 'ERR_CORRUPT' });
      const v1 = sealSync(key, data, { ...base, kind: 'chunk' })!;
      await assert.rejects(codec.openChunkContainer(key, v1, framesPlace, data.length, 'obj'), { code: 'ERR_CORRUPT' });
    }
  } finally {
    await pool.close();
    await inline.close();
  }
});

test('a genuine frame of another length at the right place (same chunk, same id, shorter write): ERR_CORRUPT, never a zero tail', async () => {
  // the same place sealed over a shorter chunk: its last frame authenticates but is 4096 bytes short
  const shorter = data.subarray(0, data.length - 4096);
  const other = sealFramesSync(key.bytes, 'chunk-frame', split(shorter), framesPlace, shorter.length, 3);
  const lied = Buffer.from(other);
  lied.writeUInt32LE(data.length, 8); // the header claims the full length
  for (const codec of [createInlineCodec(), createCodec({ workers: 1 })]) {
    try {
      await assert.rejects(codec.openChunkContainer(key, lied, framesPlace, data.length, 'obj'), { code: 'ERR_CORRUPT' });
      const last = frameOf(other, 3);
      await assert.rejects(codec.openFrame(key, last, chunkPlace(3), chunkFrameLength(data.length, 3)), { code: 'ERR_CORRUPT' });
    } finally {
      await codec.close();
    }
  }
  expectCode(() => readAll(lied, data.length), 'ERR_CORRUPT');
});

test('openChunkContainer into shared memory: decoded there, that very buffer returned; the same refusals; a wrong buffer is a bug', async () => {
  for (const codec of [createCodec({ workers: 1 }), createInlineCodec()]) {
    try {
      const into = Buffer.from(new SharedArrayBuffer(data.length)).fill(0xee);
      const out = await codec.openChunkContainer(key, container, framesPlace, data.length, 'obj', into);
      assert.equal(out, into, 'the caller’s own buffer');
      assert.ok(into.equals(data), 'decoded into it');
      await assert.rejects(codec.openChunkContainer(key, container, { ...framesPlace, index: 43 }, data.length, 'obj', into), { code: 'ERR_AUTH_FAILED' });
      await assert.rejects(codec.openChunkContainer(key, container, framesPlace, data.length, 'obj', Buffer.from(new SharedArrayBuffer(data.length - 1))), /buffer for a/);
    } finally {
      await codec.close();
    }
  }
  const pool = createCodec({ workers: 1 });
  try {
    await assert.rejects(pool.openChunkContainer(key, container, framesPlace, data.length, 'obj', Buffer.alloc(data.length)), /shared memory/);
  } finally {
    await pool.close();
  }
});

test('sealFrames into shared memory: the container written there (a view of that very buffer), the same container as without; one that does not fit gets its own memory', async () => {
  const frames = split(data);
  for (const codec of [createCodec({ workers: 1 }), createInlineCodec()]) {
    try {
      const into = Buffer.from(new SharedArrayBuffer(data.length + 4096)).fill(0xee);
      const sealed = await codec.sealFrames(key, 'chunk-frame', frames, framesPlace, data.length, into);
      assert.equal(sealed.buffer, into.buffer, 'the caller’s own memory');
      assert.equal(sealed.byteOffset, into.byteOffset);
      assert.ok(into.subarray(sealed.length).every((b) => b === 0xee), 'nothing written past the container');
      assert.ok((await codec.openChunkContainer(key, sealed, framesPlace, data.length, 'obj')).equals(data), 'it opens to the chunk');
      const plain = await codec.sealFrames(key, 'chunk-frame', frames, framesPlace, data.length);
      assert.deepEqual(parseFramedHeader(sealed, 'chunk', 'a').frameLengths, parseFramedHeader(plain, 'chunk', 'b').frameLengths, 'the same frames as without `into`');
      // exactly the largest container these frames could make: sealed straight into it
      const bound = FRAMED_HEADER_FIXED_BYTES + frames.reduce((n, f) => n + 4 + f.length + SEAL_OVERHEAD_BYTES, 0);
      const largest = Buffer.from(new SharedArrayBuffer(bound)).fill(0xee);
      const straight = await codec.sealFrames(key, 'chunk-frame', frames, framesPlace, data.length, largest);
      assert.equal(straight.buffer, largest.buffer);
      assert.ok(largest.subarray(straight.length).every((b) => b === 0xee), 'nothing written past the container');
      assert.ok((await codec.openChunkContainer(key, straight, framesPlace, data.length, 'obj')).equals(data));
      // frames that are views of `into` itself: sealed first elsewhere, never over frames not yet read
      const overlapping = Buffer.from(new SharedArrayBuffer(2 * bound));
      data.copy(overlapping);
      const inside = split(overlapping.subarray(0, data.length));
      const overSealed = await codec.sealFrames(key, 'chunk-frame', inside, framesPlace, data.length, overlapping);
      assert.ok((await codec.openChunkContainer(key, Buffer.from(overSealed), framesPlace, data.length, 'obj')).equals(data), 'frames read from `into` seal to the chunk');
      const exact = Buffer.from(new SharedArrayBuffer(plain.length)).fill(0xee);
      const fitted = await codec.sealFrames(key, 'chunk-frame', frames, framesPlace, data.length, exact);
      assert.equal(fitted.buffer, exact.buffer, 'memory of exactly the container\'s size: written there');
      assert.ok((await codec.openChunkContainer(key, fitted, framesPlace, data.length, 'obj')).equals(data));
      const small = Buffer.from(new SharedArrayBuffer(64)).fill(0xee);
      const own = await codec.sealFrames(key, 'chunk-frame', frames, framesPlace, data.length, small);
      assert.notEqual(own.buffer, small.buffer);
      assert.ok(small.every((b) => b === 0xee), 'a buffer it does not fit is left alone');
      assert.ok((await codec.openChunkContainer(key, own, framesPlace, data.length, 'obj')).equals(data));
    } finally {
      await codec.close();
    }
  }
  const pool = createCodec({ workers: 1 });
  try {
    await assert.rejects(pool.sealFrames(key, 'chunk-frame', frames, framesPlace, data.length, Buffer.alloc(data.length + 4096)), /shared memory/);
  } finally {
    await pool.close();
  }
});
