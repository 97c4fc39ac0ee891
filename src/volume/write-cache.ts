// The write-back cache: chunks written by clients and not yet uploaded, bounded in bytes.
// A dirty chunk holds the whole chunk's new content (or null: the chunk is now all zero).
// While a chunk is being uploaded its buffer is frozen: a writer replaces it with a modified
// copy instead of changing it (copy-on-write), so the upload seals exactly what it captured.
// When the cache is full, waitForRoom() blocks writers (backpressure); writes never fail for room.

export interface DirtyChunk {
  data: Buffer | null;
  /** global write counter when the oldest write not covered by an upload was made: its own
   *  first write, or an older one inherited from a record whose upload had not yet succeeded */
  firstWrite: number;
  /** global write counter of this record's own first write */
  readonly ownFirstWrite: number;
  /** bytes written into this chunk since it became dirty (to spot fully rewritten chunks) */
  bytesWritten: number;
  lastWriteMs: number;
  uploading: boolean;
  /** the last upload attempt failed; flush reports it */
  error: unknown;
  /** failed attempts in a row, and when the background may try again (backoff) */
  failures: number;
  retryAtMs: number;
}

export class WriteCache {
  private readonly map = new Map<number, DirtyChunk>();
  private bytes = 0;
  private waiters: Array<() => void> = [];
  /** counts writes; a flush waits for every dirty chunk with firstWrite <= its mark */
  writeCounter = 0;

  constructor(readonly limitBytes: number) {}

  get(chunkIndex: number): DirtyChunk | undefined {
    return this.map.get(chunkIndex);
  }

  get size(): number {
    return this.map.size;
  }

  get sizeBytes(): number {
    return this.bytes;
  }

  /** writers blocked in waitForRoom() right now */
  get waiting(): number {
    return this.waiters.length;
  }

  entries(): IterableIterator<[number, DirtyChunk]> {
    return this.map.entries();
  }

  /**
   * Wait until `extra` more bytes fit (always admits one chunk into an empty cache), and reserve
   * them: writers admitted at the same moment must not all see the same free room. The caller
   * calls the returned release once its put() is done (or it gave up).
   */
  async waitForRoom(extra: number): Promise<() => void> {
    while (this.bytes + this.reserved > 0 && this.bytes + this.reserved + extra > this.limitBytes) {
      await new Promise<void>((r) => this.waiters.push(r));
    }
    this.reserved += extra;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.reserved -= extra;
      this.wake();
    };
  }

  /** bytes promised to admitted writers that have not put yet */
  private reserved = 0;

  /** Record new content for a chunk; returns the dirty record now in the cache. */
  put(chunkIndex: number, data: Buffer | null, bytesWritten: number, nowMs: number): DirtyChunk {
    const writeId = ++this.writeCounter;
    const old = this.map.get(chunkIndex);
    if (old && !old.uploading) {
      this.bytes += (data?.length ?? 0) - (old.data?.length ?? 0);
      old.data = data;
      old.bytesWritten += bytesWritten;
      old.lastWriteMs = nowMs;
      return old;
    }
    // Replacing a record under upload (copy-on-write): the new record holds the old one's bytes
    // too, and that upload may yet fail, so it inherits the old record's oldest write — a flush
    // that had to wait for the old record waits for this one.
    const firstWrite = old ? old.firstWrite : writeId;
    const fresh: DirtyChunk = { data, firstWrite, ownFirstWrite: writeId, bytesWritten, lastWriteMs: nowMs, uploading: false, error: null, failures: 0, retryAtMs: 0 };
    this.bytes += (data?.length ?? 0) - (old?.data?.length ?? 0);
    this.map.set(chunkIndex, fresh);
    this.wake();
    return fresh;
  }

  /** Drop `d` after its upload, unless a newer write replaced it meanwhile. A replacing record
   *  then no longer owes `d`'s writes (they are stored now): it keeps only its own, so a flush
   *  waiting for `d`'s writes does not also wait for the writes that keep arriving after it. */
  settle(chunkIndex: number, d: DirtyChunk): boolean {
    const current = this.map.get(chunkIndex);
    if (current !== d) {
      if (current && current.firstWrite === d.firstWrite) current.firstWrite = current.ownFirstWrite;
      return false;
    }
    this.map.delete(chunkIndex);
    this.bytes -= d.data?.length ?? 0;
    this.wake();
    return true;
  }

  /** Drop every entry at or beyond chunkIndex (volume shrink). */
  dropFrom(chunkIndex: number): void {
    for (const [i, d] of this.map) if (i >= chunkIndex) this.settle(i, d);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }
}
