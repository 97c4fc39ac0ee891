// What changed between two states of a volume, and which layer holds each chunk, from manifests
// alone (no chunk is read). One computation serves `nbd-vault diff`, the qemu:dirty-bitmap:*
// contexts and qemu:allocation-depth, so they agree by construction.
//
// Granularity is the chunk: a chunk is dirty when its manifest entry names another object (or
// became zero, or stopped being zero) — written, rewritten, trimmed or zeroed. Chunks still in
// the write-back cache count from their pending content.
import { CHUNK_SIZE } from './chunk-math';
import type { ContextExtent } from '../block-io';
import { PAGE_ENTRIES, type Manifest } from './manifest';

/** qemu:dirty-bitmap:* flag: the range changed. */
export const STATE_DIRTY = 1;
/** qemu:allocation-depth values. */
export const DEPTH_UNALLOCATED = 0;
export const DEPTH_LOCAL = 1;
export const DEPTH_BACKING = 2;

/** Chunks in the write-back cache: index → true when it holds data, false when now all zero. */
export type PendingChunks = ReadonlyMap<number, boolean>;
const NONE: PendingChunks = new Map();

/** Per-chunk flags of one context. */
export interface ChunkState {
  flagsOf(i: number): number;
  /** Flags shared by every chunk of [first, end) (one manifest page at most) when they can be
   *  known without visiting each chunk; undefined otherwise. */
  spanFlags?(first: number, end: number): number | undefined;
}

function zeroIn(m: Manifest, i: number): boolean {
  return i >= m.chunkCount || m.isZero(i);
}

/** Whether any pending chunk lies in [first, end). */
function pendingIn(pending: PendingChunks, first: number, end: number): boolean {
  if (pending.size === 0) return false;
  for (const i of pending.keys()) if (i >= first && i < end) return true;
  return false;
}

/** Dirty (1) where `current` (plus its pending chunks) differs from `base`, 0 elsewhere. */
export function dirtyState(base: Manifest, current: Manifest, pending: PendingChunks = NONE): ChunkState {
  return {
    flagsOf(i) {
      const p = pending.get(i);
      // Pending data gets a new object: dirty. Pending zeros are dirty unless base was zero.
      if (p !== undefined) return p || !zeroIn(base, i) ? STATE_DIRTY : 0;
      if (i < base.chunkCount && i < current.chunkCount) return current.sameIds(base, i, 1) ? 0 : STATE_DIRTY;
      return zeroIn(base, i) && zeroIn(current, i) ? 0 : STATE_DIRTY;
    },
    spanFlags(first, end) {
      if (end > base.chunkCount || end > current.chunkCount || pendingIn(pending, first, end)) return undefined;
      // one memcmp over the span's ids: an untouched span costs no per-chunk work
      return current.sameIds(base, first, end - first) ? 0 : undefined;
    },
  };
}

/** qemu:allocation-depth of a volume: 0 zero, 1 its own chunk, 2 a chunk shared with a clone's
 *  origin (entries of epoch 0 in a clone). */
export function allocationDepthState(m: Manifest, isClone: boolean, pending: PendingChunks = NONE): ChunkState {
  return {
    flagsOf(i) {
      const p = pending.get(i);
      if (p !== undefined) return p ? DEPTH_LOCAL : DEPTH_UNALLOCATED;
      if (zeroIn(m, i)) return DEPTH_UNALLOCATED;
      return isClone && m.epochOf(i) === 0 ? DEPTH_BACKING : DEPTH_LOCAL;
    },
    spanFlags(first, end) {
      return !pendingIn(pending, first, end) && m.allZeroIds(first, Math.min(end, m.chunkCount) - first) ? DEPTH_UNALLOCATED : undefined;
    },
  };
}

/** Span sizes (chunks) tried before single chunks: a manifest page, then 32 chunks. */
const SPAN_LEVELS = [PAGE_ENTRIES, 32];

/**
 * Runs of equal flags over [offset, min(offset+length, size)), merged, at most `maxRuns` (the
 * first byte is always covered). Cost: one memcmp per untouched page; in a touched page one per
 * 32 chunks, and one step per chunk only inside the 32-chunk spans that changed.
 */
export function chunkRuns(state: ChunkState, offset: number, length: number, size: number, maxRuns = Infinity): ContextExtent[] {
  const runs: Array<{ length: number; flags: number }> = [];
  const end = Math.min(size, offset + length);
  const chunks = Math.ceil(size / CHUNK_SIZE);
  const tried = SPAN_LEVELS.map(() => -1); // the span of each level last asked about
  let pos = offset;
  while (pos < end) {
    const i = Math.floor(pos / CHUNK_SIZE);
    let upTo = i + 1;
    let flags: number | undefined;
    if (state.spanFlags) {
      for (let l = 0; l < SPAN_LEVELS.length && flags === undefined; l++) {
        const start = i - (i % SPAN_LEVELS[l]);
        if (tried[l] === start) continue;
        tried[l] = start;
        const spanEnd = Math.min(chunks, start + SPAN_LEVELS[l]);
        flags = state.spanFlags(i, spanEnd);
        if (flags !== undefined) upTo = spanEnd;
      }
    }
    flags ??= state.flagsOf(i);
    const next = Math.min(end, upTo * CHUNK_SIZE);
    const last = runs[runs.length - 1];
    if (last && last.flags === flags) last.length += next - pos;
    else if (runs.length >= maxRuns) break;
    else runs.push({ length: next - pos, flags });
    pos = next;
  }
  return runs;
}

export interface ChangedRange {
  readonly offset: number;
  readonly length: number;
}

/** Every extent of a whole volume's dirty map, clean ones too (the shape of `nbdinfo --map`). */
export function changeMap(a: Manifest, sizeA: number, b: Manifest, sizeB: number, pending: PendingChunks = NONE): Array<ChangedRange & { dirty: boolean }> {
  // The map of B (the export its dirty bitmap describes): after a shrink, what lay past B's end
  // is gone, not changed (a range there named bytes a client cannot read from B).
  void sizeA;
  const size = sizeB;
  let offset = 0;
  return chunkRuns(dirtyState(a, b, pending), 0, size, size).map((r) => {
    const e = { offset, length: r.length, dirty: r.flags === STATE_DIRTY };
    offset += r.length;
    return e;
  });
}

/** Changed byte ranges between two manifests of one volume, within B (past the end of A, any
 *  data counts as a change; zeros do not). `pending`: chunks whose content is not (only) their
 *  manifest entry (journal blocks of a live root), counted as changed. */
export function diffManifests(a: Manifest, sizeA: number, b: Manifest, sizeB: number, pending: PendingChunks = NONE): ChangedRange[] {
  return changeMap(a, sizeA, b, sizeB, pending)
    .filter((e) => e.dirty)
    .map(({ offset, length }) => ({ offset, length }));
}
