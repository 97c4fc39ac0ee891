// Ranged reads of framed containers (format 2 chunks and journals) for one store: container
// headers from a prefix read (cached in a small LRU, one fetch shared by concurrent readers), then
// one ranged read per sealed frame. Headers are unauthenticated: a reader drops a cached header
// when a frame it pointed at fails, so a bad read never sticks. Opening frames is the caller's.
import { VaultError, isVaultError } from '../errors';
import { FRAMED_HEADER_MAX_CHUNK, FramedHeaderIncomplete, objectFormatOf, parseFramedHeader } from '../codec';
import type { ObjectStore } from '../store/object-store';
import { ContainerHeaderCache, type ContainerLayout } from './container-header-cache';

/** A journal's first ranged read: its header, and usually its index frame too. */
export const JOURNAL_PREFIX_BYTES = 64 * 1024;

export type FramedLayout = ContainerLayout & { framed: true };

export class FramedReads {
  /** parsed container headers by object key */
  readonly headers = new ContainerHeaderCache();
  private readonly pending = new Map<string, Promise<ContainerLayout>>();

  constructor(private readonly store: ObjectStore) {}

  /**
   * A chunk object's layout (v1: one whole sealed object; v2: its container header), cached or
   * from one ranged read of min(FRAMED_HEADER_MAX_CHUNK, storedSize) bytes. `what` names the
   * object in errors; `storedSize` is the manifest's (0: unknown).
   */
  async chunkLayout(key: string, storedSize: number, chunkLength: number, what: string): Promise<ContainerLayout> {
    const cached = this.headers.get(key);
    if (cached) {
      if (cached.framed && cached.logicalLength !== chunkLength) throw new VaultError('ERR_CORRUPT', `${what} holds ${cached.logicalLength} bytes, expected ${chunkLength}`);
      return cached;
    }
    let pending = this.pending.get(key);
    if (!pending) {
      pending = this.fetchChunkLayout(key, storedSize, chunkLength, what).finally(() => this.pending.delete(key));
      this.pending.set(key, pending);
    }
    return pending;
  }

  private async fetchChunkLayout(key: string, storedSize: number, chunkLength: number, what: string): Promise<ContainerLayout> {
    const size = storedSize > 0 ? storedSize : undefined;
    const want = Math.min(FRAMED_HEADER_MAX_CHUNK, size ?? FRAMED_HEADER_MAX_CHUNK);
    const prefix = await this.range(key, 0, want, what);
    let layout: ContainerLayout;
    try {
      const format = objectFormatOf(prefix);
      if (format === 'v1') layout = { framed: false };
      else {
        if (prefix.length < want && format === 'chunk') throw new VaultError('ERR_CORRUPT', `the store returned ${prefix.length} of ${want} header bytes`);
        const header = parseFramedHeader(prefix, 'chunk', 'container', size);
        if (header.logicalLength !== chunkLength) throw new VaultError('ERR_CORRUPT', `holds a chunk of ${header.logicalLength} bytes, expected ${chunkLength}`);
        layout = { framed: true, ...header };
      }
    } catch (err) {
      throw annotate(err, what);
    }
    this.headers.set(key, layout);
    return layout;
  }

  /** A journal's container header: cached, or from a prefix (fetching more if it says so). The
   *  prefix comes back too: it usually holds the index frame. */
  async journalLayout(key: string, storedSize: number, what: string): Promise<{ layout: FramedLayout; prefix: Buffer | null }> {
    const cached = this.headers.get(key);
    if (cached?.framed) return { layout: cached, prefix: null };
    let want = Math.min(JOURNAL_PREFIX_BYTES, storedSize);
    for (;;) {
      const prefix = await this.range(key, 0, want, what);
      try {
        if (prefix.length < want) throw new VaultError('ERR_CORRUPT', `the store returned ${prefix.length} of ${want} bytes (object ${key})`);
        const layout: FramedLayout = { framed: true, ...parseFramedHeader(prefix, 'journal', `object ${key}`, storedSize) };
        this.headers.set(key, layout);
        return { layout, prefix };
      } catch (err) {
        // needBytes ≤ storedSize here: parseFramedHeader reports a longer need as corruption
        if (err instanceof FramedHeaderIncomplete && err.needBytes > want) {
          want = err.needBytes;
          continue;
        }
        throw annotate(err, what);
      }
    }
  }

  /** One sealed frame by ranged read, opened by `open`; any failure drops the cached header. */
  async readFrame<T>(key: string, layout: FramedLayout, frame: number, what: string, open: (sealed: Buffer) => Promise<T>): Promise<T> {
    const length = layout.frameLengths[frame];
    const sealed = await this.range(key, layout.frameOffsets[frame], length, what);
    return this.opening(key, what, async () => {
      if (sealed.length !== length) throw new VaultError('ERR_CORRUPT', `the store returned ${sealed.length} of ${length} bytes`);
      return open(sealed);
    });
  }

  /** Runs `work` on bytes located by a cached header; a failure drops that header. */
  async opening<T>(key: string, what: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      this.headers.delete(key);
      throw annotate(err, `${what} (object ${key})`);
    }
  }

  /** Bytes [offset, offset + length) of an object (one ranged read); missing → ERR_IO naming it. */
  private async range(key: string, offset: number, length: number, what: string): Promise<Buffer> {
    try {
      return await this.store.getRange(key, offset, length);
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) {
        throw missingObject(what, key, err);
      }
      throw annotate(err, what);
    }
  }
}

/** `what` (an object's role) is not in the store: ERR_IO, saying so in one recognisable form. */
export function missingObject(what: string, key: string, cause: unknown): VaultError {
  return new VaultError('ERR_IO', `${what} is missing from the store (object ${key})`, { cause });
}

/** The error says an object was missing (missingObject, possibly wrapped by annotate or a read's
 *  own message): under a root another writer replaced, a newer root may not name it any more. */
export function isMissingObject(err: unknown): boolean {
  return isVaultError(err, 'ERR_IO') && /is missing from the store/.test((err as Error).message);
}

export function annotate(err: unknown, what: string): VaultError {
  if (err instanceof VaultError) return new VaultError(err.code, `${what}: ${err.message}`, { cause: err });
  return new VaultError('ERR_IO', `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}
