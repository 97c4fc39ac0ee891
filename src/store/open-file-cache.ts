// Files kept open between reads (the disk cache's entries, the fs store's objects), so a read
// costs one pread instead of open + pread + close: each is a trip through libuv's thread pool,
// and on the 2-core VM of the benchmarks open and close cost the main thread more than the read
// itself (BENCHMARKS.md). An open file belongs to one key; a key whose file is gone or no longer
// trusted is retired: its file is closed as soon as no read uses it, so an unlinked file's blocks
// are not held. All caches of a process share one bound (OpenFilesBudget: a quarter of its
// open-files limit): over it, the least recently used idle file is closed, the opening cache's
// own first, then another cache's (busy ones are never closed under a read). What a key's file
// may do meanwhile (change, be replaced) is the user's to check: the cache only keeps what
// `open` returned.
import type { promises as fsp } from 'node:fs';
import { openFilesShare } from '../util/open-files';
import { InFlight } from '../util/in-flight';

/** Reads into `buf` from `position` until it is full or the file ends; the bytes read. */
export async function readAt(file: fsp.FileHandle, buf: Buffer, position: number): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await file.read(buf, got, buf.length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/** What `open` returns: a file handle, or a record holding one. */
export interface Closable {
  close(): Promise<void>;
}

interface Handle<F> {
  readonly file: Promise<F>;
  refs: number;
  retired: boolean;
}

interface IdleCloser {
  /** Closes this cache's least recently used idle file; false when it has none. */
  closeIdleOne(): boolean;
}

/** How many files the OpenFileCaches sharing it may keep open together. */
export class OpenFilesBudget {
  open = 0;
  readonly #caches = new Set<IdleCloser>();

  constructor(readonly limit: number) {}

  opened(cache: IdleCloser): void {
    this.open++;
    this.#caches.add(cache);
  }

  closed(cache: IdleCloser, cacheIsEmpty: boolean): void {
    this.open--;
    if (cacheIsEmpty) this.#caches.delete(cache);
  }

  /** Over the limit: close idle files, `first`'s before the others'. */
  trim(first: IdleCloser): void {
    while (this.open > this.limit) {
      if (first.closeIdleOne()) continue;
      if (![...this.#caches].some((c) => c !== first && c.closeIdleOne())) return; // all busy: until they finish
    }
  }
}

let processBudget: OpenFilesBudget | undefined;

/** The budget every cache of the process shares by default. */
export function processOpenFiles(): OpenFilesBudget {
  processBudget ??= new OpenFilesBudget(openFilesShare());
  return processBudget;
}

export class OpenFileCache<K, F extends Closable> implements IdleCloser {
  /** insertion order = recency: a used handle is moved to the end */
  readonly #open = new Map<K, Handle<F>>();
  readonly #closing = new InFlight();

  constructor(
    private readonly openFile: (key: K) => Promise<F>,
    private readonly budget: OpenFilesBudget = processOpenFiles(),
  ) {}

  get openCount(): number {
    return this.#open.size;
  }

  /** Runs `work` with the key's file open; concurrent users share one open. A failed open, or a
   *  `work` that throws, retires the file: the next use opens again. */
  async use<T>(key: K, work: (file: F) => Promise<T>): Promise<T> {
    let handle = this.#open.get(key);
    if (handle) {
      this.#open.delete(key);
      this.#open.set(key, handle);
    } else {
      handle = { file: this.openFile(key), refs: 0, retired: false };
      handle.file.catch(() => undefined);
      this.#open.set(key, handle);
      this.budget.opened(this);
    }
    handle.refs++;
    this.budget.trim(this);
    try {
      return await work(await handle.file);
    } catch (err) {
      if (this.#open.get(key) === handle) this.retire(key);
      throw err;
    } finally {
      handle.refs--;
      if (handle.retired && handle.refs === 0) this.#close(handle);
    }
  }

  /** The key's file is gone or no longer trusted: close it once idle; the next use opens again. */
  retire(key: K): void {
    const handle = this.#open.get(key);
    if (!handle) return;
    this.#open.delete(key);
    this.budget.closed(this, this.#open.size === 0);
    handle.retired = true;
    if (handle.refs === 0) this.#close(handle);
  }

  closeIdleOne(): boolean {
    for (const [key, handle] of this.#open) {
      if (handle.refs === 0) {
        this.retire(key);
        return true;
      }
    }
    return false;
  }

  /** Closes every handle (the cache is closing: no read runs any more). */
  async closeAll(): Promise<void> {
    for (const key of [...this.#open.keys()]) this.retire(key);
    await this.#closing.settled();
  }

  #close(handle: Handle<F>): void {
    void this.#closing.track(handle.file.then((file) => file.close()).catch(() => undefined));
  }
}
