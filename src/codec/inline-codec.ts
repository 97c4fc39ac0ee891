// A Codec that runs on the calling thread: for tests, tools and small objects. A 4 MiB chunk
// blocks the event loop for ~10 ms here; servers use createCodec() (worker-pool.ts).
import type { SecretKey } from '../keys/secret-key';
import type { Codec } from './codec';
import { checkZstdLevel } from './codec-options';
import { openChunkContainerSync, openFrameSync, sealFramesSync, type FrameKind, type FramesPlace } from './framed-container';
import type { ObjectPlace } from './object-place';
import { openSync } from './open-object';
import { sealSync } from './seal-object';
import { containerMemory } from './staging-buffers';

export interface InlineCodecOptions {
  zstdLevel?: number;
}

export function createInlineCodec(options: InlineCodecOptions = {}): Codec {
  const zstdLevel = checkZstdLevel(options.zstdLevel);
  const containerLoans = containerMemory();
  return {
    async seal(key: SecretKey, plaintext: Buffer, place: ObjectPlace): Promise<Buffer | null> {
      return sealSync(key, plaintext, place, { zstdLevel });
    },
    async open(key: SecretKey, sealed: Buffer, place: ObjectPlace): Promise<Buffer> {
      return openSync(key, sealed, place);
    },
    async sealFrames(key: SecretKey, kind: FrameKind, frames: Buffer[], place: FramesPlace, logicalLength: number, into?: Buffer): Promise<Buffer> {
      return sealFramesSync(key.bytes, kind, frames, place, logicalLength, zstdLevel, undefined, into);
    },
    async openFrame(key: SecretKey, sealedFrame: Buffer, place: ObjectPlace, expectedLength: number | null, into?: Buffer): Promise<Buffer> {
      return openFrameSync(key.bytes, sealedFrame, place, expectedLength, into);
    },
    async openChunkContainer(key: SecretKey, container: Buffer, place: FramesPlace, chunkLength: number, what: string, into?: Buffer): Promise<Buffer> {
      return openChunkContainerSync(key.bytes, container, place, chunkLength, what, into);
    },
    withContainerMemory<T>(use: (memory: Buffer) => Promise<T>): Promise<T> {
      return containerLoans.lend(use);
    },
    async close(): Promise<void> {},
  };
}
