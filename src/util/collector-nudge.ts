// Shared memory that V8 does not weigh. A SharedArrayBuffer dropped by the read path (a decoded
// chunk or frame the read cache let go when the budget had no room to keep it for reuse) is
// garbage V8's heuristics never see: they follow the JS heap, which grows slowly in a server, so
// no collection came while gigabytes of such buffers waited for one (a probe: 8 readers of 4
// volumes at --memory-limit 256M grew the server to 4.4 GB; BENCHMARKS.md, stop 40). Whoever
// allocates such memory tells this module; after every NUDGE_BYTES of it, a full collection is
// asked for, at most one per MIN_INTERVAL_MS. 'async' only posts it as a task: it runs on the main
// thread soon after and stops the world while it runs (tens of ms on a server's small heap), hence
// the interval.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** unweighed bytes allocated between two collections started here */
export const NUDGE_BYTES = 64 * 2 ** 20;
/** at most one collection started here per this (each pauses every connection a little) */
export const MIN_INTERVAL_MS = 250;

type Collect = (options: { type: 'major' | 'minor'; execution: 'sync' | 'async' }) => void;

let collect: Collect | null | undefined;
let allocated = 0;
let started = 0;
let lastStart = -Infinity;

/** V8's gc() without --expose-gc on the command line: the flag, set now, exposes it to a new
 *  context. Null where that fails (a runtime without it): nothing is nudged then. */
function collector(): Collect | null {
  if (collect === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      collect = runInNewContext('gc') as Collect;
    } catch {
      collect = null;
    }
  }
  return collect;
}

/** BYTES of shared memory were allocated (each will be garbage V8 does not weigh once dropped). */
export function allocatedUnweighed(bytes: number): void {
  allocated += bytes;
  if (allocated < NUDGE_BYTES) return;
  const now = performance.now();
  if (now - lastStart < MIN_INTERVAL_MS) return; // (counted on: the next allocation asks again)
  lastStart = now;
  allocated = 0;
  started++;
  collector()?.({ type: 'major', execution: 'async' });
}

/** collections started here since the start (metrics, tests) */
export function nudgedCollections(): number {
  return started;
}
