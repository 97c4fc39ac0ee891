// What import and export share: which chunks a volume knows to be zeros, and a bounded walk.
import { CHUNK_SIZE, chunkCount } from '../volume/chunk-math';
import type { VolumeEngine } from '../volume/volume-engine';

/** 1 for each chunk the volume knows to be all zeros (from block status: no chunk is read). */
export async function zeroChunks(engine: VolumeEngine): Promise<Uint8Array> {
  const zero = new Uint8Array(chunkCount(engine.size));
  // blockStatus may answer for less than the range asked: ask again from where it stopped
  for (let pos = 0; pos < engine.size; ) {
    for (const e of await engine.blockStatus(pos, engine.size - pos)) {
      if (e.zero) for (let i = pos / CHUNK_SIZE; i < (pos + e.length) / CHUNK_SIZE; i++) zero[i] = 1;
      pos += e.length;
    }
  }
  return zero;
}

/** Run `work(i)` for i in [0, n) with at most `limit` in flight, in order of start. After a
 *  failure no new work starts, and the first failure is thrown once the running ones settled
 *  (the caller then closes what they use: an engine, a file). */
export async function forEachLimited(n: number, limit: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < n && !failed) {
      try {
        await work(next++);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(limit, n) }, worker));
  const failure = results.find((r) => r.status === 'rejected');
  if (failure) throw failure.reason;
}
