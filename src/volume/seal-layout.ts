// How dirty blocks are laid out for sealing (sealer.ts): several frozen batches as one view, a
// whole chunk assembled from its blocks, the partly dirty chunks cut into journals and a
// journal's frames packed into recycled shared memory. Pure layout: no store, no codec.
import { MAX_CHUNK_FRAMES } from '../codec';
import type { ChunkBufferPool } from './chunk-buffer-pool';
import { ChunkBlocks, type DirtyBatch } from './dirty-blocks';
import { BLOCK_BYTES, MAX_JOURNAL_EXTENTS, type JournalExtent } from './journal-record';
import { copyBytes } from '../util/shared-copy';

/** data blocks per journal frame (128 KiB) */
const BLOCKS_PER_FRAME = 32;
/** data frames per journal: with its index frame, as many frames as a chunk container, so a
 *  journal is sealed into the memory the codec lends for containers (a 16 MiB journal was a fresh
 *  buffer per seal, garbage once stored). The format allows 4,095. */
const MAX_DATA_FRAMES = MAX_CHUNK_FRAMES - 1;

/** One view of several batches, oldest first: newer blocks win, a newer zeroed chunk hides all
 *  older state of that chunk. */
export function mergeBatches(batches: readonly DirtyBatch[]): Map<number, ChunkBlocks> {
  if (batches.length === 1) return batches[0].chunks;
  const out = new Map<number, ChunkBlocks>();
  for (const batch of batches) {
    for (const [i, c] of batch.chunks) {
      let m = out.get(i);
      if (!m || c.zeroBase) {
        m = new ChunkBlocks(c.blockCount);
        m.zeroBase = c.zeroBase;
        out.set(i, m);
      }
      for (const [b, blk] of c.blocks) m.blocks.set(b, blk);
    }
  }
  return out;
}

/** The whole content of a chunk whose dirty state hides everything below; null if all zero. */
export function assembleChunk(c: ChunkBlocks, length: number, buffers: ChunkBufferPool): Buffer | null {
  let any = false;
  for (const blk of c.blocks.values()) if (blk !== null) any = true;
  if (!any) return null;
  // zeroBase: zero-filled first; otherwise every block is set and overwrites its bytes
  const out = buffers.take(length, c.zeroBase ? undefined : 'overwrite');
  // Blocks of a large write are consecutive views of its payload: copy each such run at once
  // (a per-block copy costs more in call overhead than in bytes).
  let runStart = -1;
  let runBlocks = 0;
  let runFirst: Buffer | null = null;
  const flushRun = () => {
    if (runFirst === null) return;
    const at = runStart * BLOCK_BYTES;
    const n = Math.min(runBlocks * BLOCK_BYTES, length - at);
    copyBytes(out, at, new Uint8Array(runFirst.buffer, runFirst.byteOffset, n));
    runFirst = null;
  };
  for (let b = 0; b * BLOCK_BYTES < length; b++) {
    const blk = c.blocks.get(b);
    if (blk === undefined) {
      flushRun();
      continue; // zeroBase: stays zero
    }
    const at = b * BLOCK_BYTES;
    if (blk === null) {
      flushRun();
      out.fill(0, at, Math.min(length, at + BLOCK_BYTES));
      continue;
    }
    const contiguous = runFirst !== null && blk.buffer === runFirst.buffer && blk.byteOffset === runFirst.byteOffset + runBlocks * BLOCK_BYTES && runStart + runBlocks === b;
    if (contiguous) runBlocks++;
    else {
      flushRun();
      runStart = b;
      runBlocks = 1;
      runFirst = blk;
    }
  }
  flushRun();
  return out;
}

/** Journal contents for the partly dirty chunks (sorted by chunk), resets first, split so that
 *  no journal passes the frame bound. Extents never span two frames. A journal's data frames are
 *  lists of blocks here; packFrames() lays them out when that journal is sealed. */
export function buildJournals(chunks: ReadonlyArray<[number, ChunkBlocks]>, resets: JournalExtent[]): Array<{ extents: JournalExtent[]; frames: Buffer[][] }> {
  const out: Array<{ extents: JournalExtent[]; frames: Buffer[][] }> = [];
  let extents: JournalExtent[] = [...resets];
  let frames: Buffer[][] = [];
  let frameBlocks: Buffer[] = [];
  const closeFrame = () => {
    if (frameBlocks.length === 0) return;
    frames.push(frameBlocks);
    frameBlocks = [];
  };
  const closeJournal = () => {
    closeFrame();
    if (extents.length > 0) out.push({ extents, frames });
    extents = [];
    frames = [];
  };
  for (const [i, c] of chunks) {
    const blocks = [...c.blocks.keys()].sort((a, b) => a - b);
    let k = 0;
    while (k < blocks.length) {
      const first = blocks[k];
      const zero = c.blocks.get(first) === null;
      if (!zero && frameBlocks.length === BLOCKS_PER_FRAME) closeFrame();
      if ((!zero && frames.length >= MAX_DATA_FRAMES) || extents.length >= MAX_JOURNAL_EXTENTS) closeJournal();
      let n = 1;
      // extend the run: consecutive blocks of the same kind, inside one frame
      while (k + n < blocks.length && blocks[k + n] === first + n && (c.blocks.get(blocks[k + n]) === null) === zero && n < 0xffff && (zero || frameBlocks.length + n < BLOCKS_PER_FRAME)) n++;
      if (zero) extents.push({ chunkIndex: i, firstBlock: first, blockCount: n, zero: true, reset: false, frame: 0, frameOffset: 0 });
      else {
        extents.push({ chunkIndex: i, firstBlock: first, blockCount: n, zero: false, reset: false, frame: frames.length + 1, frameOffset: frameBlocks.length * BLOCK_BYTES });
        for (let m = 0; m < n; m++) frameBlocks.push(c.blocks.get(first + m)!);
      }
      k += n;
    }
  }
  closeJournal();
  return out;
}

/** A journal's data frames laid out in recycled shared-memory chunk buffers (up to 32 frames in
 *  each): the codec worker reads them there without a copy, and a seal cycle allocates nothing
 *  for them once the pool is warm. The caller gives the backings back when the seal is done. */
export function packFrames(frames: readonly Buffer[][], buffers: ChunkBufferPool): { frames: Buffer[]; backings: Buffer[] } {
  const backings: Buffer[] = [];
  let backing: Buffer | null = null;
  let at = 0;
  const out = frames.map((blocks) => {
    const bytes = blocks.length * BLOCK_BYTES;
    if (backing === null || at + bytes > backing.length) {
      backing = buffers.take(buffers.chunkSize, 'overwrite');
      backings.push(backing);
      at = 0;
    }
    const start = at;
    for (const b of blocks) {
      copyBytes(backing, at, b);
      at += BLOCK_BYTES;
    }
    return backing.subarray(start, at);
  });
  return { frames: out, backings };
}
