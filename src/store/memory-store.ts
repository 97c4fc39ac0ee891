// MemoryStore: an in-process ObjectStore for tests and `memory://` URLs.
//
// Assumes: nothing; single process, single event loop.
// Guarantees: the ObjectStore contract exactly (see object-store.ts). Every operation completes on a
// later microtask (never synchronously), so callers see the same ordering hazards as a real store.
// Conditional puts are atomic (the check and the write run in one synchronous step). Bodies are
// copied on put and on get, so a caller mutating its Buffer cannot change stored bytes.
// etag: sha256 of the body, hex, first 32 chars (a content hash, as S3's single-part ETag is; FsStore draws one per put).
// Named stores (`MemoryStore.named('x')`) are shared within a process, so two `memory://x` opens see
// the same objects; close() does not drop the data (a reopen sees it), `MemoryStore.dropNamed` does.
import { createHash } from 'node:crypto';
import { VaultError } from '../errors';
import { childSegmentsFromList, readTarget, type ObjectInfo, type ObjectStore, type PutOptions, type StoredObject, type StoreProps } from './object-store';
import { checkKey, checkPrefix, checkRange } from './keys';

interface Entry {
  readonly body: Buffer;
  readonly etag: string;
  readonly lastModified: Date;
}

export function contentEtag(body: Uint8Array): string {
  return createHash('sha256').update(body).digest('hex').slice(0, 32);
}

const namedMaps = new Map<string, Map<string, Entry>>();

export class MemoryStore implements ObjectStore {
  readonly name: string;
  readonly props: StoreProps = { atomicReplace: true, conditionalPut: true, maxConcurrency: 64 };
  private readonly objects: Map<string, Entry>;

  constructor(label = 'memory', objects: Map<string, Entry> = new Map()) {
    this.name = label;
    this.objects = objects;
  }

  /** The process-wide store called `storeName` (created empty on first use). */
  static named(storeName: string): MemoryStore {
    let map = namedMaps.get(storeName);
    if (!map) {
      map = new Map();
      namedMaps.set(storeName, map);
    }
    return new MemoryStore(`memory(${storeName})`, map);
  }

  static dropNamed(storeName: string): void {
    namedMaps.delete(storeName);
  }

  /** Number of objects held (tests). */
  get size(): number {
    return this.objects.size;
  }

  async get(key: string, into?: Buffer): Promise<StoredObject> {
    checkKey(key);
    await tick();
    const e = this.objects.get(key);
    if (!e) throw new VaultError('ERR_STORE_NOT_FOUND', `${this.name}: no object ${key}`);
    // into the caller's memory when it fits, as the fs store does: tests run that path too
    const body = readTarget(into, e.body.length);
    e.body.copy(body);
    return { body, etag: e.etag };
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    checkKey(key);
    checkRange(offset, length);
    await tick();
    const e = this.objects.get(key);
    if (!e) throw new VaultError('ERR_STORE_NOT_FOUND', `${this.name}: no object ${key}`);
    return Buffer.from(e.body.subarray(Math.min(offset, e.body.length), Math.min(offset + length, e.body.length)));
  }

  async head(key: string): Promise<ObjectInfo | null> {
    checkKey(key);
    await tick();
    const e = this.objects.get(key);
    return e ? { key, size: e.body.length, etag: e.etag, lastModified: e.lastModified } : null;
  }

  async put(key: string, body: Buffer, opts: PutOptions = {}): Promise<{ etag: string }> {
    checkKey(key);
    const copy = Buffer.from(body);
    const etag = contentEtag(copy);
    await tick();
    const cur = this.objects.get(key);
    if (opts.ifNoneMatch === '*' && cur) {
      throw new VaultError('ERR_STORE_PRECONDITION', `${this.name}: ${key} already exists`);
    }
    if (opts.ifMatch !== undefined && (!cur || cur.etag !== opts.ifMatch)) {
      throw new VaultError('ERR_STORE_PRECONDITION', `${this.name}: ${key} is not at etag ${opts.ifMatch}`);
    }
    this.objects.set(key, { body: copy, etag, lastModified: new Date() });
    return { etag };
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    await tick();
    this.objects.delete(key);
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    for (const k of keys) checkKey(k);
    await tick();
    for (const k of keys) this.objects.delete(k);
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkPrefix(prefix);
    await tick();
    // Snapshot of the matching keys at the start; objects deleted meanwhile are skipped.
    const keys = [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort(compareKeys);
    for (const key of keys) {
      const e = this.objects.get(key);
      if (e) yield { key, size: e.body.length, etag: e.etag, lastModified: e.lastModified };
    }
  }

  listChildren(prefix: string): Promise<string[]> {
    return childSegmentsFromList(this, prefix);
  }

  async close(): Promise<void> {
    // Nothing to release; the objects stay for other handles on a named store.
  }

  unwrap(): ObjectStore | null {
    return null;
  }
}

/** Key order as S3 lists it: by UTF-8 bytes (for ASCII keys the same as code-unit order). */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
