// createCodec(): the Codec servers use. seal/open of anything but small objects runs in a piscina
// worker pool so the event loop stays responsive (a 4 MiB chunk is ~10 ms of CPU). Per call the
// main thread does only the all-zero check and, for input outside shared memory, one copy into
// memory the worker may read (a fresh transferred buffer; opened frames: staging kept for the next
// task); the caller keeps its Buffer untouched. Shared memory goes as it is, and a result lands
// in the caller's shared memory (`into`) or comes back transferred.
// Objects below INLINE_BELOW_BYTES run on the calling thread: a round trip to a worker costs more.
// At most TASKS_IN_FLIGHT_PER_WORKER × workers tasks are handed to piscina at once; the rest wait
// here *uncopied*, so a burst of 32 chunks costs the event loop one copy at a time, not 32 at once
// (~3 ms each), and queued work holds no second copy of its input.
import path from 'node:path';
import { Piscina } from 'piscina';
import { BugError, VaultError } from '../errors';
import type { SecretKey } from '../keys/secret-key';
import type { Codec } from './codec';
import { checkWorkerCount, checkZstdLevel } from './codec-options';
import { errorFromReply, type WorkerOpenChunkTask, type WorkerOpenFramesTask, type WorkerOpenTask, type WorkerReply, type WorkerSealFramesTask, type WorkerSealTask } from './codec-worker';
import { assertFramePlace, openChunkContainerSync, openFrameSync, sealFramesSync, type FrameKind, type FramesPlace } from './framed-container';
import type { ObjectPlace } from './object-place';
import { openObject } from './open-object';
import { asBuffer, sealObject } from './seal-object';
import { FrameOpenBatches, inLentMemory } from './frame-open-batches';
import { containerMemory } from './staging-buffers';
import { Slots } from './slots';
import { framesPlaceCopy, ownCopy, packedCopy, placeCopy } from './task-copies';
import { isAllZero } from './zero-detect';

export const INLINE_BELOW_BYTES = 16 * 1024;
const TASKS_IN_FLIGHT_PER_WORKER = 2;

export interface CodecOptions {
  /** Worker threads; default os.availableParallelism(). */
  workers?: number;
  /** zstd level; default 3. */
  zstdLevel?: number;
}

export function createCodec(options: CodecOptions = {}): Codec {
  const workers = checkWorkerCount(options.workers);
  const zstdLevel = checkZstdLevel(options.zstdLevel);
  const pool = new Piscina({
    filename: path.join(__dirname, 'codec-worker.js'),
    minThreads: workers,
    maxThreads: workers,
    idleTimeout: 60_000,
  });
  const slots = new Slots(workers * TASKS_IN_FLIGHT_PER_WORKER);
  /** lent to read a stored container into or seal one into (withContainerMemory) */
  const containerLoans = containerMemory();
  let closed = false;
  const frameOpens = new FrameOpenBatches(
    slots,
    (task: WorkerOpenFramesTask, transferList: ArrayBuffer[]) => pool.run(task, { name: 'openFrames', transferList }) as Promise<WorkerReply[]>,
    () => closed,
  );

  type Task = WorkerSealTask | WorkerOpenTask | WorkerSealFramesTask | WorkerOpenChunkTask;
  async function run(name: 'seal' | 'open' | 'sealFrames' | 'openChunk', makeTask: () => [Task, ArrayBuffer[]]): Promise<Buffer> {
    await slots.acquire();
    try {
      if (closed) throw new VaultError('ERR_SHUTDOWN', 'the codec is closed');
      const [task, transferList] = makeTask();
      const reply: WorkerReply = await pool.run(task, { name, transferList });
      if (ArrayBuffer.isView(reply)) return asBuffer(reply);
      throw errorFromReply(reply);
    } finally {
      slots.release();
    }
  }

  return {
    async seal(key: SecretKey, plaintext: Buffer, place: ObjectPlace): Promise<Buffer | null> {
      if (place.kind === 'chunk' && isAllZero(plaintext)) return null;
      if (plaintext.length < INLINE_BELOW_BYTES) return sealObject(key.bytes, plaintext, place, zstdLevel);
      return run('seal', () => {
        // A plaintext in shared memory is handed over as is (no copy): the caller guarantees it
        // does not change until the seal completes (volume/ freezes buffers under upload).
        const shared = plaintext.buffer instanceof SharedArrayBuffer;
        const task: WorkerSealTask = { key: ownCopy(key.bytes), plaintext: shared ? plaintext : ownCopy(plaintext), place: placeCopy(place), zstdLevel };
        return [task, shared ? [task.key.buffer as ArrayBuffer] : [task.key.buffer as ArrayBuffer, task.plaintext.buffer as ArrayBuffer]];
      });
    },
    async open(key: SecretKey, sealed: Buffer, place: ObjectPlace): Promise<Buffer> {
      if (sealed.length < INLINE_BELOW_BYTES) return openObject(key.bytes, sealed, place);
      return run('open', () => {
        const task: WorkerOpenTask = { key: ownCopy(key.bytes), sealed: ownCopy(sealed), place: placeCopy(place) };
        return [task, [task.key.buffer as ArrayBuffer, task.sealed.buffer as ArrayBuffer]];
      });
    },
    async sealFrames(key: SecretKey, kind: FrameKind, frames: Buffer[], place: FramesPlace, logicalLength: number, into?: Buffer): Promise<Buffer> {
      assertShared(into, 'sealFrames');
      const total = frames.reduce((n, f) => n + f.length, 0);
      if (total < INLINE_BELOW_BYTES) return sealFramesSync(key.bytes, kind, frames, place, logicalLength, zstdLevel, undefined, into);
      const out = await run('sealFrames', () => {
        // Frames in shared memory go as they are (the caller keeps them unchanged until the seal
        // completes); otherwise one copy of all frames into one fresh ArrayBuffer, transferred.
        const shared = frames.every((f) => f.buffer instanceof SharedArrayBuffer);
        const task: WorkerSealFramesTask = { key: ownCopy(key.bytes), kind, frames: shared ? frames : packedCopy(frames), place: framesPlaceCopy(place), logicalLength, zstdLevel, into };
        const transfer = [task.key.buffer as ArrayBuffer];
        if (!shared && task.frames.length > 0) transfer.push(task.frames[0].buffer as ArrayBuffer);
        return [task, transfer];
      });
      // written into `into`: the reply is that memory under another SharedArrayBuffer object, and
      // the caller's own buffer is the one it knows
      return into && out.buffer instanceof SharedArrayBuffer ? into.subarray(0, out.length) : out;
    },
    async openFrame(key: SecretKey, sealedFrame: Buffer, place: ObjectPlace, expectedLength: number | null, into?: Buffer): Promise<Buffer> {
      assertFramePlace(place);
      assertShared(into, 'openFrame');
      if (sealedFrame.length < INLINE_BELOW_BYTES) return openFrameSync(key.bytes, sealedFrame, place, expectedLength, into);
      return frameOpens.open(key, sealedFrame, place, expectedLength, into);
    },
    async openChunkContainer(key: SecretKey, container: Buffer, place: FramesPlace, chunkLength: number, what: string, into?: Buffer): Promise<Buffer> {
      assertShared(into, 'openChunkContainer');
      if (container.length < INLINE_BELOW_BYTES) return openChunkContainerSync(key.bytes, container, place, chunkLength, what, into);
      const out = await run('openChunk', () => {
        // shared memory (withContainerMemory's) goes as it is: the caller keeps it until this settles
        const shared = container.buffer instanceof SharedArrayBuffer;
        const input = shared ? container : ownCopy(container);
        const task: WorkerOpenChunkTask = { key: ownCopy(key.bytes), container: input, place: framesPlaceCopy(place), chunkLength, what, into };
        return [task, shared ? [task.key.buffer as ArrayBuffer] : [task.key.buffer as ArrayBuffer, input.buffer as ArrayBuffer]];
      });
      // the worker's reply is a view of the same memory under another SharedArrayBuffer object:
      // the caller's own buffer is what it knows (and tells apart by identity)
      if (into && !inLentMemory(out, into)) throw new BugError('openChunkContainer: the chunk was not decoded into the memory lent for it');
      return into ?? out;
    },
    withContainerMemory<T>(use: (memory: Buffer) => Promise<T>): Promise<T> {
      return containerLoans.lend(use);
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await pool.destroy();
    },
  };
}

/** Memory lent for a result (`into`) must be shared: a worker writes there, and it is never transferred. */
function assertShared(into: Buffer | undefined, call: string): void {
  if (into && !(into.buffer instanceof SharedArrayBuffer)) throw new BugError(`${call}: \`into\` must be shared memory`);
}
