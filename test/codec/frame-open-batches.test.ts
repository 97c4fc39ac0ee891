// Frame opens batched into worker tasks (src/codec/frame-open-batches.ts): opens that wait
// together go in one task, every frame still gets its own bytes or its own error, and a closed
// codec fails what waits. Through the real worker pool too, with keys of two volumes mixed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { valueSymbol } from 'piscina';
import { createCodec, FRAME_BYTES, parseFramedHeader, sealFramesSync, type ObjectPlace } from '../../src/codec';
import { openFrames, type WorkerOpenFramesTask, type WorkerReply } from '../../src/codec/codec-worker';
import { FrameOpenBatches, MAX_FRAMES_PER_TASK } from '../../src/codec/frame-open-batches';
import { Slots } from '../../src/codec/slots';
import type { SecretKey } from '../../src/keys/secret-key';
import { mixedBytes, seededBytes, testKey, testPlace } from './codec-fixtures';

interface SealedFrame {
  key: SecretKey;
  sealed: Buffer;
  place: ObjectPlace;
  plain: Buffer;
}

/** 32 frames of one chunk container of volume `volumeSeed`, each with its place and plaintext. */
function chunkFrames(volumeSeed: number, chunkIndex: number): SealedFrame[] {
  const key = testKey(volumeSeed);
  const base = testPlace({ volumeId: seededBytes(16, volumeSeed), index: chunkIndex });
  const plains = Array.from({ length: 32 }, (_, f) => (f % 2 ? mixedBytes(FRAME_BYTES, chunkIndex * 100 + f) : seededBytes(FRAME_BYTES, chunkIndex * 100 + f)));
  const container = sealFramesSync(key.bytes, 'chunk-frame', plains, base, 32 * FRAME_BYTES, 3);
  const header = parseFramedHeader(container, 'chunk', 'test');
  return plains.map((plain, f) => ({
    key,
    plain,
    place: { ...base, kind: 'chunk-frame', frame: f },
    sealed: Buffer.from(container.subarray(header.frameOffsets[f], header.frameOffsets[f] + header.frameLengths[f])),
  }));
}

test('opens waiting together go in tasks of up to MAX_FRAMES_PER_TASK; each frame gets its own bytes or error', async () => {
  const frames = chunkFrames(1, 3).slice(0, 20);
  const tasks: number[] = [];
  const slots = new Slots(1);
  const batches = new FrameOpenBatches(
    slots,
    async (task: WorkerOpenFramesTask) => {
      tasks.push(task.sealed.length);
      await new Promise((r) => setTimeout(r, 5)); // a worker busy for a while: the rest queue
      return (openFrames(task) as unknown as Record<symbol, WorkerReply[]>)[valueSymbol];
    },
    () => false,
  );
  const tampered = Buffer.from(frames[5].sealed);
  tampered[tampered.length - 1] ^= 1;
  const results = await Promise.allSettled(
    frames.map((f, i) => {
      if (i === 5) return batches.open(f.key, tampered, f.place, FRAME_BYTES);
      if (i === 9) return batches.open(f.key, f.sealed, { ...f.place, frame: 10 }, FRAME_BYTES); // moved frame
      if (i === 13) return batches.open(f.key, f.sealed, f.place, FRAME_BYTES - 1); // wrong length
      return batches.open(f.key, f.sealed, f.place, FRAME_BYTES);
    }),
  );
  assert.deepEqual(tasks, [MAX_FRAMES_PER_TASK, MAX_FRAMES_PER_TASK, 20 - 2 * MAX_FRAMES_PER_TASK]);
  results.forEach((r, i) => {
    if (i === 5 || i === 9) assert.equal(r.status === 'rejected' && (r.reason as { code: string }).code, 'ERR_AUTH_FAILED', `frame ${i}`);
    else if (i === 13) assert.equal(r.status === 'rejected' && (r.reason as { code: string }).code, 'ERR_CORRUPT', `frame ${i}`);
    else assert.ok(r.status === 'fulfilled' && r.value.equals(frames[i].plain), `frame ${i} opened to its own bytes`);
  });
});

test('a dispatch that fails fails every frame of its task, and a closed codec fails what waits', async () => {
  const frames = chunkFrames(2, 1).slice(0, 3);
  let closed = false;
  const failing = new FrameOpenBatches(new Slots(1), () => Promise.reject(new Error('worker died')), () => closed);
  const failed = await Promise.allSettled(frames.map((f) => failing.open(f.key, f.sealed, f.place, FRAME_BYTES)));
  assert.deepEqual(failed.map((r) => r.status === 'rejected' && (r.reason as Error).message), ['worker died', 'worker died', 'worker died']);
  closed = true;
  const shut = new FrameOpenBatches(new Slots(1), () => assert.fail('nothing is dispatched after close'), () => closed);
  await assert.rejects(shut.open(frames[0].key, frames[0].sealed, frames[0].place, FRAME_BYTES), { code: 'ERR_SHUTDOWN' });
});

test('the worker pool opens 96 frames of two volumes at once, each with its own key and place', async () => {
  const pool = createCodec({ workers: 2 });
  try {
    const frames = [...chunkFrames(3, 0), ...chunkFrames(4, 0), ...chunkFrames(3, 1)];
    const callerCopies = frames.map((f) => Buffer.from(f.sealed));
    const opened = await Promise.all(frames.map((f) => pool.openFrame(f.key, f.sealed, f.place, FRAME_BYTES)));
    opened.forEach((o, i) => assert.ok(o.equals(frames[i].plain), `frame ${i}`));
    frames.forEach((f, i) => assert.ok(f.sealed.equals(callerCopies[i]), `caller's sealed frame ${i} untouched`));
    // a frame of volume 3 opened with volume 4's key, beside good ones
    const mixed = await Promise.allSettled([pool.openFrame(frames[40].key, frames[1].sealed, frames[1].place, FRAME_BYTES), pool.openFrame(frames[1].key, frames[1].sealed, frames[1].place, FRAME_BYTES)]);
    assert.equal(mixed[0].status === 'rejected' && (mixed[0].reason as { code: string }).code, 'ERR_AUTH_FAILED');
    assert.ok(mixed[1].status === 'fulfilled' && mixed[1].value.equals(frames[1].plain));
  } finally {
    await pool.close();
  }
  await assert.rejects(pool.openFrame(testKey(3), Buffer.alloc(FRAME_BYTES), testPlace({ kind: 'chunk-frame', frame: 0 }), FRAME_BYTES), { code: 'ERR_SHUTDOWN' });
});

test('a frame opened into lent memory comes back as that very buffer, every byte written; fresh bytes from a worker are a bug', async () => {
  const frames = chunkFrames(2, 4).slice(0, 4);
  const run = (task: WorkerOpenFramesTask) => (openFrames(task) as unknown as Record<symbol, WorkerReply[]>)[valueSymbol];
  const batches = new FrameOpenBatches(new Slots(1), async (task) => run(task), () => false);
  const lent = frames.map(() => Buffer.from(new SharedArrayBuffer(FRAME_BYTES)).fill(0xee));
  const got = await Promise.all(frames.map((f, i) => batches.open(f.key, f.sealed, f.place, FRAME_BYTES, lent[i])));
  got.forEach((b, i) => {
    assert.equal(b, lent[i], 'the caller gets its own buffer back');
    assert.ok(b.equals(frames[i].plain), `frame ${i} decoded into it`);
  });
  // a worker that answers with bytes of its own (not the lent memory) leaves the lent buffer stale
  const liar = new FrameOpenBatches(new Slots(1), async (task) => run({ ...task, into: task.into.map(() => null) }), () => false);
  const stale = Buffer.from(new SharedArrayBuffer(FRAME_BYTES));
  await assert.rejects(liar.open(frames[0].key, frames[0].sealed, frames[0].place, FRAME_BYTES, stale), (err: Error) => err.name === 'BugError' || /not decoded into the memory lent/.test(err.message));
});
