// Open file handles of recently read disk cache entries, so a hit costs one pread instead of
// open + pread + close: each is a trip through libuv's thread pool, and on the 2-core VM of the
// benchmarks open and close cost the main thread more than the read itself (BENCHMARKS.md).
// An entry's file never changes once visible, and a handle belongs to one record: a record that
// is dropped (evicted, replaced, found corrupt) has its handle closed as soon as no read uses it,
// so an unlinked file's blocks are not held. At most `maxOpen` handles stay open; the least
// recently used idle one is closed first (busy ones are never closed under a read).
import { promises as fsp } from 'node:fs';

interface Handle {
  readonly file: Promise<fsp.FileHandle>;
  refs: number;
  retired: boolean;
}

export class EntryHandles<R extends object> {
  /** insertion order = recency: a used handle is moved to the end */
  readonly #open = new Map<R, Handle>();
  readonly #closing = new Set<Promise<unknown>>();

  constructor(
    private readonly maxOpen: number,
    private readonly pathOf: (record: R) => string,
  ) {}

  get openCount(): number {
    return this.#open.size;
  }

  /** Runs `work` with the record's file open; concurrent users share one open. A failed open is
   *  not kept: the next use tries again. */
  async use<T>(record: R, work: (file: fsp.FileHandle) => Promise<T>): Promise<T> {
    let handle = this.#open.get(record);
    if (handle) {
      this.#open.delete(record);
      this.#open.set(record, handle);
    } else {
      handle = { file: fsp.open(this.pathOf(record), 'r'), refs: 0, retired: false };
      handle.file.catch(() => undefined);
      this.#open.set(record, handle);
    }
    handle.refs++;
    this.#trim();
    try {
      return await work(await handle.file);
    } catch (err) {
      if (this.#open.get(record) === handle) this.retire(record);
      throw err;
    } finally {
      handle.refs--;
      if (handle.retired && handle.refs === 0) this.#close(handle);
    }
  }

  /** The record is gone (or its file is no longer trusted): close its handle once idle. */
  retire(record: R): void {
    const handle = this.#open.get(record);
    if (!handle) return;
    this.#open.delete(record);
    handle.retired = true;
    if (handle.refs === 0) this.#close(handle);
  }

  /** Closes every handle (the cache is closing: no read runs any more). */
  async closeAll(): Promise<void> {
    for (const record of [...this.#open.keys()]) this.retire(record);
    while (this.#closing.size > 0) await Promise.allSettled([...this.#closing]);
  }

  #trim(): void {
    for (const [record, handle] of this.#open) {
      if (this.#open.size <= this.maxOpen) return;
      if (handle.refs === 0) this.retire(record);
    }
  }

  #close(handle: Handle): void {
    const closing = handle.file.then((file) => file.close()).catch(() => undefined);
    this.#closing.add(closing);
    void closing.finally(() => this.#closing.delete(closing));
  }
}
