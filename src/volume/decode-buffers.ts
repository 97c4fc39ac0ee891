// Recycled buffers for the whole chunks a stream decodes. A cold export decodes every chunk into
// memory it has never touched: each fresh 4 MiB buffer costs ~1,000 page faults in a codec worker
// and, counted as external memory, drives V8's collector. Reused, two cold exports of the 1 GiB
// corpus cost the workers 1.3 CPU-s and the collector 0.8 CPU-s less, and run 1.1-1.2x faster
// (BENCHMARKS.md). Chunks in the read cache's stream area are dropped a moment after the stream
// passed; their buffers come back here and the next chunk is decoded into them. A second pool of
// 128 KiB does the same for the frames random reads fetch: once the read cache is full, each miss
// decodes into the memory of the frame it evicted.
//
// A buffer is reused only when nothing can still see it:
// - the read cache no longer holds it (checked when it would be reused, not when it was dropped:
//   a dropped chunk may be cached again, kept for a random read);
// - every view of it that a read handed out has been given back. The read path counts each view
//   it returns (lend); the NBD layer gives one back once its reply is written (Export.readDone).
//   A view that never comes back (a caller that does not give views back, a reply whose
//   connection died) keeps its buffer out of the pool for good: the collector frees it then;
// - reads inside the read path that copy from it have run: their continuations are microtasks of
//   the fetch or cache hit, so a buffer waits for the next macrotask (setImmediate) before reuse.
// Buffers are per volume, so even a mistake here could not show one volume's data to another.
import { FRAME_BYTES } from '../codec';
import { allocatedUnweighed } from '../util/collector-nudge';
import { IdleTimer } from '../util/idle-timer';
import { holdKept, type MemoryBudget } from '../util/memory-budget';
import { CHUNK_SIZE } from './chunk-math';

/** free bytes kept at most (per pool, per volume): 8 whole chunks, 256 frames; more are left to
 *  the collector. Frames need the deeper list: 32 random misses in flight drop 32 frames at once. */
const MAX_FREE_BYTES = 32 * 2 ** 20;
/** free bytes kept even when the budget has no free room, by taking it from the caches (per
 *  pool, per volume): 32 frames, one QD32 burst of misses, or one whole chunk. A full budget is
 *  the steady state of a read cache smaller than the working set: every miss evicts a frame. Left
 *  to the collector, each evicted frame was shared memory V8 does not count (its collections follow
 *  the heap and external memory, not SharedArrayBuffers): random reads with a 640 MiB limit grew
 *  the server past 2 GiB (BENCHMARKS.md). Kept, the next miss decodes into it. */
const MAX_FREE_EVICTING_BYTES = 4 * 2 ** 20;
/** free buffers are let go when no decode has taken one for this long (an idle volume holds none) */
const IDLE_MS = 5_000;

interface BufferState {
  /** views handed out and not given back */
  lent: number;
  /** the read cache let it go (under this key): it may be reused once every view is back */
  droppedKey: string | null;
}

export class DecodeBuffers {
  private readonly free: Array<{ buf: Buffer; release: () => void }> = [];
  private readonly states = new WeakMap<ArrayBufferLike, BufferState>();
  /** the views lent and not given back (a view given back twice, or never lent, counts nothing) */
  private readonly lentViews = new WeakSet<Buffer>();
  private readonly idle = new IdleTimer(IDLE_MS, () => this.clear());
  private closed = false;
  /** buffers reused (for metrics and tests) */
  reused = 0;

  constructor(
    readonly bufferBytes: number,
    /** does the read cache hold this buffer under this key? (then it is not reused) */
    private readonly cached: (key: string, buf: Buffer) => boolean,
    private readonly budget?: MemoryBudget,
  ) {}

  /** A buffer of bufferBytes in shared memory (the codec worker decodes into it without a copy);
   *  its content is whatever it held before: the decoder writes every byte or fails. */
  take(): Buffer {
    this.idle.touch();
    const f = this.free.pop();
    if (f) {
      f.release();
      this.reused++;
      this.states.set(f.buf.buffer, { lent: 0, droppedKey: null });
      return f.buf;
    }
    const buf = Buffer.from(new SharedArrayBuffer(this.bufferBytes));
    allocatedUnweighed(this.bufferBytes); // (dropped later, the collector would not see it)
    this.states.set(buf.buffer, { lent: 0, droppedKey: null });
    return buf;
  }

  /** A read hands out `view` (of one of our buffers) to its caller. */
  lend(view: Buffer): void {
    const s = this.states.get(view.buffer);
    if (!s || this.lentViews.has(view)) return;
    this.lentViews.add(view);
    s.lent++;
  }

  /** The caller of a read is done with `view` (its reply was written). */
  giveBack(view: Buffer): void {
    const s = this.states.get(view.buffer);
    if (!s || !this.lentViews.delete(view)) return;
    s.lent--;
    if (s.lent === 0 && s.droppedKey !== null) this.recycleSoon(view, s.droppedKey);
  }

  /** The read cache let the buffer go (stored under `key`), or a fetch into it failed. */
  dropped(buf: Buffer, key: string): void {
    const s = this.states.get(buf.buffer);
    if (!s) return;
    s.droppedKey = key;
    if (s.lent === 0) this.recycleSoon(buf, key);
  }

  private recycleSoon(buf: Buffer, key: string): void {
    const whole = Buffer.from(buf.buffer, 0, this.bufferBytes);
    setImmediate(() => {
      const s = this.states.get(whole.buffer);
      if (this.closed || !s || s.lent > 0 || s.droppedKey !== key || this.cached(key, whole)) return;
      this.states.delete(whole.buffer); // from now on no read can lend it until take() again
      if ((this.free.length + 1) * this.bufferBytes > MAX_FREE_BYTES) return;
      // kept in room the budget has free; without any, a few by evicting cached entries
      const mayEvict = (this.free.length + 1) * this.bufferBytes <= MAX_FREE_EVICTING_BYTES;
      const release = holdKept(this.budget, this.bufferBytes) ?? (mayEvict ? this.budget!.tryReserve(this.bufferBytes) : null);
      if (!release) return; // no room: let the collector have it
      this.free.push({ buf: whole, release });
      this.idle.touch(); // kept from now: let go 5 s after, unless a decode takes it first
    });
  }

  /** Let every free buffer go (idle, or the engine closed). */
  clear(): void {
    for (const f of this.free.splice(0)) f.release();
    this.idle.cancel();
  }

  /** The engine closed: nothing is kept from now on. */
  close(): void {
    this.closed = true;
    this.clear();
  }

  get freeCount(): number {
    return this.free.length;
  }

  get freeBytes(): number {
    return this.free.length * this.bufferBytes;
  }
}

/** The read path's recycled decode memory: whole chunks (a stream's) and single frames (a random
 *  read's miss), a pool each under the rule above. Views are lent, given back and dropped through
 *  here; each pool ignores buffers it does not own. */
export class ReadBuffers {
  readonly chunks: DecodeBuffers;
  readonly frames: DecodeBuffers;

  constructor(cached: (key: string, buf: Buffer) => boolean, budget?: MemoryBudget) {
    this.chunks = new DecodeBuffers(CHUNK_SIZE, cached, budget);
    this.frames = new DecodeBuffers(FRAME_BYTES, cached, budget);
  }

  /** `read` decodes into a buffer of `pool`. One it did not decode into (a zero entry, a
   *  version-1 chunk), or a failed read's, goes straight back: nobody has seen it. */
  async decodeInto(pool: DecodeBuffers, read: (into: Buffer) => Promise<Buffer>): Promise<Buffer> {
    const into = pool.take();
    let data: Buffer | null = null;
    try {
      data = await read(into);
      return data;
    } finally {
      if (data?.buffer !== into.buffer) pool.dropped(into, '');
    }
  }

  lend(view: Buffer): void {
    this.chunks.lend(view);
    this.frames.lend(view);
  }

  giveBack(view: Buffer): void {
    this.chunks.giveBack(view);
    this.frames.giveBack(view);
  }

  dropped(buf: Buffer, key: string): void {
    this.chunks.dropped(buf, key);
    this.frames.dropped(buf, key);
  }

  /** chunks and frames decoded into reused memory, since the start (metrics) */
  get reused(): number {
    return this.chunks.reused + this.frames.reused;
  }

  /** bytes kept for the next decode (metrics) */
  get freeBytes(): number {
    return this.chunks.freeBytes + this.frames.freeBytes;
  }

  close(): void {
    this.chunks.close();
    this.frames.close();
  }
}
