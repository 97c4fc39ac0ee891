// The piscina worker behind createCodec(): runs sealObject/openObject off the main thread.
// Inputs arrive transferred (the pool copied them into fresh ArrayBuffers) or in shared memory
// the caller keeps unchanged until the reply; results go back transferred (Piscina.move), so a
// 4 MiB chunk is never copied by structured clone. Errors come back as records, because a
// VaultError's `code` does not survive structured cloning.
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { BugError, VaultError, type VaultErrorCode } from '../errors';
import { openChunkContainerSync, openFrameSync, sealFramesSync, type FrameKind, type FramesPlace } from './framed-container';
import type { ObjectPlace } from './object-place';
import { openObject } from './open-object';
import { sealObject } from './seal-object';

export interface WorkerSealTask {
  key: Uint8Array;
  plaintext: Uint8Array;
  place: ObjectPlace;
  zstdLevel: number;
}

export interface WorkerOpenTask {
  key: Uint8Array;
  sealed: Uint8Array;
  place: ObjectPlace;
}

export interface WorkerSealFramesTask {
  key: Uint8Array;
  kind: FrameKind;
  /** views of one transferred ArrayBuffer (or of shared memory) */
  frames: Uint8Array[];
  place: FramesPlace;
  logicalLength: number;
  zstdLevel: number;
  /** shared memory the container is written into when it fits */
  into?: Uint8Array;
}

export interface WorkerOpenChunkTask {
  key: Uint8Array;
  container: Uint8Array;
  place: FramesPlace;
  chunkLength: number;
  what: string;
  /** where the chunk goes: shared memory the caller lends (not transferred, not copied) */
  into?: Uint8Array;
}

/** Frames opened in one task (one message each way, however many frames): see frame-open-batches.ts. */
export interface WorkerOpenFramesTask {
  /** distinct keys of the batch; each frame names one by index */
  keys: Uint8Array[];
  /** views of the batcher's shared staging memory (or of one transferred ArrayBuffer) */
  sealed: Uint8Array[];
  keyIndex: number[];
  places: ObjectPlace[];
  expectedLengths: (number | null)[];
  /** per frame: shared memory the caller lends to decode it into, or null (fresh memory) */
  into: (Uint8Array | null)[];
}

export interface WorkerErrorRecord {
  errorCode: VaultErrorCode;
  message: string;
}

/** The worker replies with the output bytes, or an error record. */
export type WorkerReply = Uint8Array | WorkerErrorRecord;

export function seal(task: WorkerSealTask): WorkerReply {
  return runCatching(() => sealObject(task.key, task.plaintext, task.place, task.zstdLevel));
}

/** A whole container in one task: 32 frames of a 4 MiB chunk are sealed back to back here. */
export function sealFrames(task: WorkerSealFramesTask): WorkerReply {
  return runCatching(() => sealFramesSync(task.key, task.kind, task.frames, task.place, task.logicalLength, task.zstdLevel, undefined, task.into));
}

/** A whole chunk container opened in one task. */
export function openChunk(task: WorkerOpenChunkTask): WorkerReply {
  return runCatching(() => openChunkContainerSync(task.key, task.container, task.place, task.chunkLength, task.what, task.into));
}

/** Each frame's plaintext (transferred, each its own ArrayBuffer; or in the memory the caller
 *  lent, which goes back as it is) or its own error record. */
export function openFrames(task: WorkerOpenFramesTask): WorkerReply[] {
  const replies: WorkerReply[] = [];
  const transfer: ArrayBuffer[] = [];
  for (let i = 0; i < task.sealed.length; i++) {
    const reply = errorRecordOr(() => openFrameSync(task.keys[task.keyIndex[i]], task.sealed[i], task.places[i], task.expectedLengths[i], task.into[i] ?? undefined));
    if (ArrayBuffer.isView(reply) && !(reply.buffer instanceof SharedArrayBuffer)) transfer.push(reply.buffer as ArrayBuffer);
    replies.push(reply);
  }
  return move({ [transferableSymbol]: transfer, [valueSymbol]: replies } as never) as unknown as WorkerReply[];
}

export function open(task: WorkerOpenTask): WorkerReply {
  return runCatching(() => openObject(task.key, task.sealed, task.place));
}

function runCatching(work: () => Buffer): WorkerReply {
  const reply = errorRecordOr(work);
  // shared memory goes back as it is (it cannot be transferred, and is the caller's already)
  if (ArrayBuffer.isView(reply) && reply.buffer instanceof SharedArrayBuffer) return reply;
  return ArrayBuffer.isView(reply) ? (move(reply) as Uint8Array) : reply;
}

function errorRecordOr(work: () => Buffer): WorkerReply {
  try {
    return work();
  } catch (err) {
    if (err instanceof VaultError) return { errorCode: err.code, message: err.message };
    return { errorCode: 'ERR_BUG', message: `codec worker: ${err instanceof Error ? err.message : String(err)}` };
  }
}

export function errorFromReply(record: WorkerErrorRecord): VaultError {
  return record.errorCode === 'ERR_BUG' ? new BugError(record.message) : new VaultError(record.errorCode, record.message);
}
