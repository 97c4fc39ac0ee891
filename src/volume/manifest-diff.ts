// Changed byte ranges between two manifests of one volume (snapshots or the live root), from the
// manifests alone: a chunk differs when its entry names another object. Chunk granularity, so a
// range is a superset of what really changed; adjacent chunks merge into one range.
import { CHUNK_SIZE } from './chunk-math';
import type { Manifest } from './manifest';

export interface ChangedRange {
  readonly offset: number;
  readonly length: number;
}

export function diffManifests(a: Manifest, sizeA: number, b: Manifest, sizeB: number): ChangedRange[] {
  const size = Math.max(sizeA, sizeB);
  const count = Math.ceil(size / CHUNK_SIZE);
  const ranges: ChangedRange[] = [];
  for (let i = 0; i < count; i++) {
    const ea = i < a.chunkCount ? a.get(i).id : null;
    const eb = i < b.chunkCount ? b.get(i).id : null;
    // Past the end of the smaller volume, any data counts as a change; zeros do not.
    if (ea === eb) continue;
    const offset = i * CHUNK_SIZE;
    const length = Math.min(CHUNK_SIZE, size - offset);
    const last = ranges[ranges.length - 1];
    if (last && last.offset + last.length === offset) ranges[ranges.length - 1] = { offset: last.offset, length: last.length + length };
    else ranges.push({ offset, length });
  }
  return ranges;
}
