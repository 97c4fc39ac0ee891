// DiskCacheStore: a store decorator that keeps the sealed bytes of immutable objects in a bounded
// local DiskCache, so a VM on S3 reads its working set at local-disk speed.
//
// What is cached: only keys `isCacheable(key)` accepts — immutable objects (chunks, pages,
// journals; the volume layer supplies the predicate), never roots, metadata, leases, sessions or
// snapshot records, which change in place. Only bytes the store returned or accepted: the cache
// learns nothing the store does not, and the layers above authenticate every read as before.
// - get: a whole-object entry answers; a miss reads the store and caches the object.
// - getRange: any entry holding the range answers (a whole object holds every range); a miss
//   reads exactly that range from the store and caches it as its own entry. The whole object is
//   NOT fetched on a ranged miss: ranged reads exist to move 128 KiB frames instead of 4 MiB
//   chunks, and frames sit at fixed offsets of an immutable object, so the next read of the same
//   frame asks for the same range and hits.
// - put (write-through): the entry's file is written while the store put runs and made visible
//   only after the store put succeeded; a cache failure never fails the put.
// - delete / deleteMany: the store first, then the entries; a miss of the same key being filled
//   while a put or delete of it runs is not cached (it could hold the object's old bytes).
// - Placement (serve): above the retry layer. A hit costs no store machinery; a miss is retried
//   below before anything is cached; store metrics count only real store requests.
// - A cache entry is trusted as much as the store's bytes: a reader whose bytes fail to
//   authenticate calls forget(key) to have the next read go to the store (the volume layer does,
//   and retries once: a bad entry its CRCs missed never becomes a lasting read error).
// - head, list: the store (sizes and listings are not cached).
// Concurrent misses of the same object or range share one store read. Hits, misses and bytes are
// counted here; evictions and corrupt entries in DiskCache.
import { childSegments, type ObjectInfo, type ObjectStore, type PutOptions, type StoredObject, type StoreLayer, type StoreProps } from './object-store';
import { checkKey, checkRange } from './keys';
import { DiskCache } from './disk-cache';
import { log } from '../util/log';

export interface DiskCacheStats {
  readonly hits: number;
  readonly misses: number;
  readonly hitBytes: number;
  readonly missBytes: number;
  readonly insertedBytes: number;
  readonly evictions: number;
  readonly evictedBytes: number;
  readonly corrupt: number;
  /** objects whose cached bytes a reader found unusable (forget): dropped, read from the store */
  readonly rejected: number;
  readonly writeErrors: number;
  readonly entries: number;
  readonly usedBytes: number;
  readonly maxBytes: number;
}

export class DiskCacheStore implements ObjectStore {
  readonly name: string;
  readonly props: StoreProps;
  private hits = 0;
  private misses = 0;
  private hitBytes = 0;
  private missBytes = 0;
  private rejected = 0;
  private readonly inflight = new Map<string, Promise<unknown>>();
  /** Per key with fills (miss reads) in flight: how many, and a generation that every put and
   *  delete of the key moves at its start and end. A fill that saw it move is not cached: it
   *  may hold bytes of the object as it was before the put or delete. */
  private readonly fills = new Map<string, { count: number; gen: number }>();

  constructor(
    private readonly inner: ObjectStore,
    readonly cache: DiskCache,
    private readonly isCacheable: (key: string) => boolean,
  ) {
    this.name = `disk-cache(${inner.name})`;
    this.props = inner.props;
  }

  stats(): DiskCacheStats {
    const c = this.cache.counters;
    return {
      hits: this.hits,
      misses: this.misses,
      hitBytes: this.hitBytes,
      missBytes: this.missBytes,
      insertedBytes: c.insertedBytes,
      evictions: c.evictions,
      evictedBytes: c.evictedBytes,
      corrupt: c.corrupt,
      rejected: this.rejected,
      writeErrors: c.writeErrors,
      entries: this.cache.entries,
      usedBytes: this.cache.usedBytes,
      maxBytes: this.cache.maxBytes,
    };
  }

  /** `into`: a hit is read into it; a miss is not (its bytes are shared with concurrent misses
   *  and copied for the cache). */
  async get(key: string, into?: Buffer): Promise<StoredObject> {
    if (!this.isCacheable(key)) return this.inner.get(key, into);
    const r = this.cache.find(key, 0, 'whole');
    if (r) {
      const body = await this.cache.read(r, 0, r.length, into);
      if (body) return this.hit({ body, etag: r.etag }, body.length);
    }
    return this.once(`w\0${key}`, () => this.fill(key, async (unchanged) => {
      const got = await this.inner.get(key);
      this.miss(got.body.length);
      // A private copy: the caller owns the body it gets and may change it before the write.
      this.cache.insertLater(key, 0, Buffer.from(got.body), true, got.etag, unchanged);
      return got;
    }), (o) => ({ body: Buffer.from(o.body), etag: o.etag }));
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (!this.isCacheable(key)) return this.inner.getRange(key, offset, length);
    checkKey(key);
    checkRange(offset, length);
    const r = this.cache.find(key, offset, length);
    if (r) {
      const body = await this.cache.read(r, offset, length);
      if (body) return this.hit(body, body.length);
    }
    return this.once(`r\0${key}\0${offset}\0${length}`, () => this.fill(key, async (unchanged) => {
      const got = await this.inner.getRange(key, offset, length);
      this.miss(got.length);
      // Shorter than asked: the range reaches the object's end. Empty: nothing worth keeping.
      if (got.length > 0) this.cache.insertLater(key, offset, Buffer.from(got), got.length < length, '', unchanged);
      return got;
    }), (b) => Buffer.from(b));
  }

  head(key: string): Promise<ObjectInfo | null> {
    return this.inner.head(key);
  }

  async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    if (!this.isCacheable(key)) return this.inner.put(key, body, opts);
    // Immutable keys are put once; should one be replaced all the same, no older entry and no
    // fill of the older bytes may outlive the put.
    this.invalidate(key);
    // The entry's data is written beside the store put; its header (with the store's etag) and
    // its rename follow only once the put succeeded.
    const staging = this.cache.stage(key, 0, body, true, true).catch(() => null);
    let result: { etag: string };
    try {
      result = await this.inner.put(key, body, opts);
    } catch (err) {
      await (await staging)?.abort();
      throw err;
    } finally {
      this.invalidate(key);
    }
    const staged = await staging;
    if (staged) await staged.commit(result.etag);
    else this.cache.dropKey(key);
    return result;
  }

  async delete(key: string): Promise<void> {
    this.invalidate(key);
    try {
      await this.inner.delete(key);
    } finally {
      this.invalidate(key);
      if (this.isCacheable(key)) this.cache.dropKey(key);
    }
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    for (const k of keys) this.invalidate(k);
    try {
      await this.inner.deleteMany(keys);
    } finally {
      for (const k of keys) {
        this.invalidate(k);
        if (this.isCacheable(k)) this.cache.dropKey(k);
      }
    }
  }

  listChildren(prefix: string): Promise<string[]> {
    return childSegments(this.inner, prefix);
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }

  /** Drops every entry of key (and any fill of it in flight): for a reader that found the bytes
   *  it got unusable (an object that failed to authenticate) and wants the store's copy next.
   *  True when the bytes may have come from (or were going into) the cache: an entry, a fill in
   *  flight or an entry being written; false when the cache had no part in them. */
  forget(key: string): boolean {
    const involved = this.cache.hasKey(key) || this.fills.has(key) || this.cache.hasPending(key);
    this.invalidate(key);
    this.cache.dropKey(key);
    if (involved) {
      this.rejected++;
      log().warn({ objectKey: key, rejected: this.rejected }, 'disk cache: bytes of this object failed authentication above; its entries are dropped and the next read goes to the store');
    }
    return involved;
  }

  /** Reads `key` into the cache unless a whole-object entry holds it already (cache warm).
   *  Returns the bytes fetched from the store (0: it was there). */
  async warm(key: string): Promise<number> {
    if (!this.isCacheable(key) || this.cache.find(key, 0, 'whole')) return 0;
    const got = await this.get(key);
    return got.body.length;
  }

  async close(): Promise<void> {
    try {
      await this.cache.close();
    } finally {
      await this.inner.close();
    }
  }

  unwrap(): ObjectStore {
    return this.inner;
  }

  private hit<T>(value: T, bytes: number): T {
    this.hits++;
    this.hitBytes += bytes;
    return value;
  }

  private miss(bytes: number): void {
    this.misses++;
    this.missBytes += bytes;
  }

  /** Runs a miss read of `key`; `unchanged()` says whether no put or delete of it ran meanwhile. */
  private async fill<T>(key: string, run: (unchanged: () => boolean) => Promise<T>): Promise<T> {
    let f = this.fills.get(key);
    if (!f) this.fills.set(key, (f = { count: 0, gen: 0 }));
    f.count++;
    const rec = f;
    const gen = rec.gen;
    try {
      return await run(() => rec.gen === gen);
    } finally {
      if (--rec.count === 0 && this.fills.get(key) === rec) this.fills.delete(key);
    }
  }

  /** No fill of key begun before now may be cached: those still reading the store see their
   *  generation move, those already writing their entry are cancelled. */
  private invalidate(key: string): void {
    const f = this.fills.get(key);
    if (f) f.gen++;
    this.cache.cancelPending(key);
  }

  /** One store read per object or range at a time; the others wait for it. */
  private once<T>(id: string, run: () => Promise<T>, copy: (x: T) => T): Promise<T> {
    const cur = this.inflight.get(id);
    if (cur) return (cur as Promise<T>).then(copy); // each caller owns the buffer it gets
    const p = run().finally(() => this.inflight.delete(id));
    this.inflight.set(id, p);
    return p;
  }
}

/** A StoreLayer: the disk cache above `inner` (see docs in this file). */
export function diskCacheLayer(cache: DiskCache, isCacheable: (key: string) => boolean): StoreLayer {
  return (inner) => new DiskCacheStore(inner, cache, isCacheable);
}
