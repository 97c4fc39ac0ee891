// Frame opens batched into worker tasks. Random reads that miss the RAM cache open a 128 KiB
// frame each, thousands of times a second; with one task per frame the main thread spent more on
// dispatch (an input copy, a message and a thread wake-up each way) than a worker spent opening
// the frame — measured on this 2-core VM: 6,200 frames/s through the pool, 9,000/s inline on one
// thread. Opens wait here while every codec slot is busy; the next free slot takes all that wait
// (up to MAX_FRAMES_PER_TASK) as one task: one copy, one message each way. A frame that finds a
// slot free goes alone, at once, so batching adds no latency at low load.
import { BugError, VaultError } from '../errors';
import type { SecretKey } from '../keys/secret-key';
import { errorFromReply, type WorkerOpenFramesTask, type WorkerReply } from './codec-worker';
import type { ObjectPlace } from './object-place';
import { asBuffer } from './seal-object';
import type { Slots } from './slots';
import { MAX_SEALED_FRAME_BYTES } from './format';
import { StagingBuffers } from './staging-buffers';
import { ownCopy, packedBytes, packInto, placeCopy } from './task-copies';

/** 8 × 128 KiB: a queue depth of 32 fills the 4 slots of a 2-worker pool in one round. */
export const MAX_FRAMES_PER_TASK = 8;
/** A task's sealed frames are copied into shared memory kept for the next task (staging-buffers.ts). */
const STAGING_BYTES = MAX_FRAMES_PER_TASK * (MAX_SEALED_FRAME_BYTES + 8);

interface PendingOpen {
  key: SecretKey;
  sealed: Buffer;
  place: ObjectPlace;
  expectedLength: number | null;
  /** shared memory to decode into (returned as it is), or undefined */
  into: Buffer | undefined;
  resolve(plain: Buffer): void;
  reject(err: unknown): void;
}

export type OpenFramesDispatch = (task: WorkerOpenFramesTask, transferList: ArrayBuffer[]) => Promise<WorkerReply[]>;

export class FrameOpenBatches {
  readonly #slots: Slots;
  readonly #dispatch: OpenFramesDispatch;
  readonly #isClosed: () => boolean;
  readonly #pending: PendingOpen[] = [];
  #acquiring = false;
  #pumpScheduled = false;
  readonly #staging = new StagingBuffers(STAGING_BYTES);

  constructor(slots: Slots, dispatch: OpenFramesDispatch, isClosed: () => boolean) {
    this.#slots = slots;
    this.#dispatch = dispatch;
    this.#isClosed = isClosed;
  }

  open(key: SecretKey, sealed: Buffer, place: ObjectPlace, expectedLength: number | null, into?: Buffer): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      this.#pending.push({ key, sealed, place, expectedLength, into, resolve, reject });
      // Opens requested in the same event-loop turn (reads completing together) go together.
      if (this.#pumpScheduled) return;
      this.#pumpScheduled = true;
      setImmediate(() => {
        this.#pumpScheduled = false;
        this.#pump();
      });
    });
  }

  /** One slot request at a time: whoever waits when it is granted goes in that task. */
  #pump(): void {
    if (this.#acquiring || this.#pending.length === 0) return;
    this.#acquiring = true;
    void this.#slots.acquire().then(() => {
      this.#acquiring = false;
      const batch = this.#pending.splice(0, MAX_FRAMES_PER_TASK);
      this.#pump();
      void this.#run(batch).finally(() => this.#slots.release());
    });
  }

  async #run(batch: PendingOpen[]): Promise<void> {
    const staging = this.#staging.take();
    try {
      if (this.#isClosed()) throw new VaultError('ERR_SHUTDOWN', 'the codec is closed');
      const [task, transferList] = openFramesTask(batch, staging);
      const replies = await this.#dispatch(task, transferList);
      batch.forEach((open, i) => {
        const reply = replies[i];
        // decoded into lent memory: the reply is that memory under another SharedArrayBuffer
        // object, and the caller's own buffer is the one it knows (and tells apart by identity)
        if (!ArrayBuffer.isView(reply)) open.reject(errorFromReply(reply));
        else if (!open.into) open.resolve(asBuffer(reply));
        else if (inLentMemory(reply, open.into)) open.resolve(open.into);
        else open.reject(new BugError('openFrame: the frame was not decoded into the memory lent for it'));
      });
    } catch (err) {
      for (const open of batch) open.reject(err);
    } finally {
      this.#staging.give(staging); // the worker is done with it: its reply came, or it failed
    }
  }
}

/** A worker's reply is the lent memory itself (shared, the same length): never fresh bytes, which
 *  would leave the caller's buffer holding whatever an earlier frame left there. */
export function inLentMemory(reply: Uint8Array, into: Uint8Array): boolean {
  return reply.buffer instanceof SharedArrayBuffer && reply.byteOffset === into.byteOffset && reply.length === into.length;
}

/**
 * The task for a batch: its distinct keys copied once each, all sealed frames copied into the
 * shared staging buffer (sealed bytes only; an oversized batch gets an exactly-sized buffer of
 * its own, transferred), places with their ids in buffers of their own.
 */
function openFramesTask(batch: readonly PendingOpen[], staging: Buffer): [WorkerOpenFramesTask, ArrayBuffer[]] {
  const keyIndexOf = new Map<SecretKey, number>();
  const keys: Uint8Array[] = [];
  const keyIndex = batch.map(({ key }) => {
    let index = keyIndexOf.get(key);
    if (index === undefined) {
      index = keys.push(ownCopy(key.bytes)) - 1;
      keyIndexOf.set(key, index);
    }
    return index;
  });
  const frames = batch.map((open) => open.sealed);
  const total = packedBytes(frames);
  const packed = total <= staging.length ? staging : Buffer.allocUnsafeSlow(total);
  const sealed = packInto(frames, packed);
  const places = batch.map(({ place }) => placeCopy(place));
  const task: WorkerOpenFramesTask = { keys, sealed, keyIndex, places, expectedLengths: batch.map((open) => open.expectedLength), into: batch.map((open) => open.into ?? null) };
  const transfer = keys.map((k) => k.buffer as ArrayBuffer);
  if (packed !== staging) transfer.push(packed.buffer as ArrayBuffer);
  return [task, transfer];
}
