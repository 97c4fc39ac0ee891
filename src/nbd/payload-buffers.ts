// Memory for WRITE payloads, recycled. A payload used to be the socket's own reads: a fresh 64 KiB
// allocation per read, which the kernel's copy faulted in page by page and V8 counted as external
// memory, starting a full marking every ~30 MB (32 of them for one import of the 1 GiB corpus;
// BENCHMARKS.md). Now the socket reads into one recycled buffer (socket-reads.ts), the request
// reader copies each payload into a buffer from here, and the connection gives it back once its
// request is answered: the Export contract (export.ts) lets an export keep nothing of `data`
// after write() settles.
//
// Buffers come in power-of-two classes (a payload of n bytes takes the class >= n, a view of its
// first n bytes). Free buffers are kept up to KEPT_BYTES in all, the class given back to longest
// ago making room for the others (a random-write phase must not leave the pool full of 4 KiB
// buffers that a stream of 1 MiB writes then cannot use), and all dropped after IDLE_MS without
// use; payloads above MAX_CLASS_BYTES are plain allocations, never kept. A kept buffer holds its
// bytes of the process memory budget, from free room only (never pushing cached data out); with
// none free it is not kept. give() takes back only a
// buffer it lent and has not had back, so a mistake cannot lend one buffer to two requests (two
// connections, possibly two volumes). A payload is always filled whole before anyone reads it:
// what a buffer held before never shows.
import { IdleTimer } from '../util/idle-timer';
import { holdKept, type MemoryBudget } from '../util/memory-budget';

interface Kept {
  readonly whole: Buffer;
  /** its hold on the memory budget */
  readonly release: () => void;
}

/** free payload bytes every pool of the process keeps (metrics) */
let keptInProcess = 0;
export function keptPayloadBytesInProcess(): number {
  return keptInProcess;
}

const MIN_CLASS_BYTES = 4096;
/** payloads above this (2 MiB .. 32 MiB writes, rare) are allocated each time */
export const MAX_CLASS_BYTES = 4 * 1024 * 1024;
/** free payload memory kept for the next requests, all classes together */
export const KEPT_BYTES = 16 * 1024 * 1024;
const IDLE_MS = 5_000;

function classBytes(length: number): number {
  return Math.max(MIN_CLASS_BYTES, 2 ** Math.ceil(Math.log2(length)));
}

export class PayloadBuffers {
  /** free whole buffers by class size, the class given back to most recently last */
  private readonly free = new Map<number, Kept[]>();
  private keptBytes = 0;
  /** backing stores lent and not given back */
  private readonly lent = new WeakSet<ArrayBufferLike>();
  private readonly idle = new IdleTimer(IDLE_MS, () => this.dropAll());
  /** the server stopped: nothing is kept from now on */
  private closed = false;

  /** takes this pool off the budget's list of what gives memory back */
  private readonly unregister: () => void;

  constructor(private readonly budget?: MemoryBudget) {
    // kept buffers give way to anyone who needs the room
    this.unregister = budget?.registerCache({ evict: (bytes) => this.evictKept(bytes) }) ?? (() => {});
  }

  /** The server stopped: let everything kept go, holds and all, and keep nothing from now on. */
  close(): void {
    this.closed = true;
    this.idle.cancel();
    this.dropAll();
    this.unregister();
  }

  /** `length` bytes for a payload (content undefined: the caller fills it all). */
  take(length: number): Buffer {
    if (length > MAX_CLASS_BYTES) return Buffer.allocUnsafeSlow(length);
    this.idle.touch();
    const size = classBytes(length);
    const kept = this.free.get(size)?.pop();
    let whole: Buffer;
    if (kept) {
      kept.release(); // in a request now: its connection's share of the budget counts it
      this.keptBytes -= size;
      keptInProcess -= size;
      whole = kept.whole;
    } else whole = Buffer.allocUnsafeSlow(size);
    this.lent.add(whole.buffer);
    return whole.subarray(0, length);
  }

  /** A payload from take() that nothing reads any more. Anything else: ignored. */
  give(payload: Buffer | null | undefined): void {
    if (!payload || payload.byteOffset !== 0 || !this.lent.has(payload.buffer)) return;
    this.lent.delete(payload.buffer);
    if (this.closed) return;
    const size = payload.buffer.byteLength;
    const list = this.free.get(size) ?? [];
    this.free.delete(size); // (re)inserted last: most recently given back
    this.free.set(size, list);
    for (const [other, old] of this.free) {
      if (this.keptBytes + size <= KEPT_BYTES || other === size) break;
      this.drop(other, old); // the least recently given back class goes first
    }
    if (this.keptBytes + size > KEPT_BYTES) return; // its own class fills the pool: to the collector
    const release = holdKept(this.budget, size);
    if (!release) return; // no free room in the budget: to the collector
    list.push({ whole: Buffer.from(payload.buffer, 0, size), release });
    this.keptBytes += size;
    keptInProcess += size;
  }

  /** free bytes kept (tests, metrics) */
  get kept(): number {
    return this.keptBytes;
  }

  private drop(size: number, list: Kept[]): void {
    for (const k of list) k.release();
    this.keptBytes -= list.length * size;
    keptInProcess -= list.length * size;
    this.free.delete(size);
  }

  /** The budget needs room: drop kept buffers, least recently given back class first. */
  private evictKept(bytes: number): number {
    const before = this.keptBytes;
    for (const [size, list] of this.free) {
      if (before - this.keptBytes >= bytes) break;
      this.drop(size, list);
    }
    return before - this.keptBytes;
  }

  private dropAll(): void {
    this.evictKept(Infinity);
  }
}
