// Small helpers the TypeScript benchmarks share.
import net from 'node:net';
import { FRAME_BYTES } from '../src/codec';

/** A TCP port free on 127.0.0.1 right now (for a server the bench starts). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** CPU seconds (user + system) of `work` on this thread, the least of `rounds` runs: a loaded
 *  machine stretches wall time, and a first pass over fresh memory runs up to 2x slower. */
export function bestCpuSeconds(work: () => void, rounds = 3): number {
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const before = process.cpuUsage();
    work();
    const d = process.cpuUsage(before);
    best = Math.min(best, (d.user + d.system) / 1e6);
  }
  return best;
}

/** A chunk as its format-2 frames (views, FRAME_BYTES each, the last one shorter). */
export function framesOf(chunk: Buffer): Buffer[] {
  return Array.from({ length: Math.ceil(chunk.length / FRAME_BYTES) }, (_, f) => chunk.subarray(f * FRAME_BYTES, Math.min((f + 1) * FRAME_BYTES, chunk.length)));
}
