// The ObjectStore contract: the only thing store/ offers to the layers above.
//
// - Keys are '/'-separated strings such as `volumes/<id>/chunks/ab/<id>`; no leading '/'.
// - put() stores a whole Buffer (never a stream) so that any layer may replay it; no layer keeps
//   `body` or a view of it once the call settled (the caller reuses that memory).
// - get() of a missing key throws VaultError ERR_STORE_NOT_FOUND; it never returns empty bytes.
//   get(key, into): a store may read the object into the caller's memory `into` instead of fresh
//   memory (the body is then a view of it; a store that cannot, or an object that does not fit,
//   gets fresh memory as without it). No layer keeps `into` or writes to it once the call settled,
//   and none hands out a view of it but the body it returns.
// - getRange(key, offset, length) returns the bytes [offset, min(offset + length, size)): a range
//   reaching past the end returns what exists (a shorter buffer; offset >= size → empty buffer);
//   a missing key throws ERR_STORE_NOT_FOUND. offset and length are integers >= 0, else
//   ERR_INVALID_ARGUMENT.
// - delete() of a missing key succeeds (idempotent); deleteMany() likewise.
// - list(prefix) yields every object whose key starts with prefix, once each, in key order.
// - A conditional put that loses throws ERR_STORE_PRECONDITION; it never overwrites.
// - Each store maps its own failures to ERR_STORE_* codes (transient ones are retryable).
// Decorators (retry, faulty) implement every method explicitly: no automatic pass-through.

export interface StoredObject {
  readonly body: Buffer;
  /** Opaque version tag (S3 ETag, unquoted; fs: random per put; memory: content hash). Equal
   *  bytes may or may not get equal tags: compare tags, never infer content from them. */
  readonly etag: string;
}

export interface ObjectInfo {
  readonly key: string;
  readonly size: number;
  readonly etag: string;
  readonly lastModified: Date;
}

export interface PutOptions {
  /** Create only: fail with ERR_STORE_PRECONDITION if the key exists (If-None-Match: *). */
  readonly ifNoneMatch?: '*';
  /** Replace only the version with this etag (If-Match). */
  readonly ifMatch?: string;
  /** Volume data (chunk and journal objects, and copies of them): on a full store it fails as it
   *  is. Anything else may spend a store's reserve for metadata (fs: space-reserve.ts). */
  readonly data?: true;
}

export interface StoreProps {
  /** A put replaces an object atomically: readers see the old or the new bytes, never a mix. */
  readonly atomicReplace: boolean;
  /** ifNoneMatch / ifMatch are honoured atomically. */
  readonly conditionalPut: boolean;
  /** How many requests are worth keeping in flight at once. */
  readonly maxConcurrency: number;
}

export interface ObjectStore {
  /** A secret-free description of the stack, e.g. `retry(s3(bucket/prefix))`. */
  readonly name: string;
  readonly props: StoreProps;
  /** `into`: memory the body may be read into (see the contract above). */
  get(key: string, into?: Buffer): Promise<StoredObject>;
  /** The bytes [offset, min(offset + length, size)) of `key` (see the contract above). */
  getRange(key: string, offset: number, length: number): Promise<Buffer>;
  /** Returns info, or null when the object does not exist. */
  head(key: string): Promise<ObjectInfo | null>;
  put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }>;
  delete(key: string): Promise<void>;
  deleteMany(keys: readonly string[]): Promise<void>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Optional: the distinct segments S such that some key starts with `prefix` + S + '/' (a
   *  listing with a delimiter: `volumes/` → the volume ids, without walking their objects).
   *  May name a segment whose objects were deleted since. Use childSegments(), which falls back
   *  to a full listing for a store without it. */
  listChildren?(prefix: string): Promise<string[]>;
  close(): Promise<void>;
  /** The store this one decorates, or null for a base store (tests reach a FaultyStore with it). */
  unwrap(): ObjectStore | null;
}

export type StoreLayer = (inner: ObjectStore) => ObjectStore;

/** No object nbd-vault reads whole comes near this (a chunk container is ~4 MiB, a journal ~4
 *  MiB, a page tens of KiB, the root of a 256 TiB volume ~3 MiB): a store that answers a bigger
 *  one lies, and reading it whole would let one object exhaust the process's memory (a 1 GiB
 *  "root" read again by every connecting client). Stores refuse to read such an object whole;
 *  a bigger journal (the format allows 4,095 frames) is read by ranges (volume-objects.ts). */
export const MAX_OBJECT_BYTES = 64 * 2 ** 20;

/** Where a get reads `bytes` (see the contract): the caller's `into` when they fit, else fresh memory. */
export function readTarget(into: Buffer | undefined, bytes: number): Buffer {
  return into && bytes <= into.length ? into.subarray(0, bytes) : Buffer.allocUnsafe(bytes);
}

/** ObjectStore.listChildren, or the same from a full listing (a store without it). Sorted. */
export async function childSegments(store: ObjectStore, prefix: string): Promise<string[]> {
  return store.listChildren ? store.listChildren(prefix) : childSegmentsFromList(store, prefix);
}

/** The segments below `prefix` from a full listing (what listChildren answers without one). */
export async function childSegmentsFromList(store: Pick<ObjectStore, 'list'>, prefix: string): Promise<string[]> {
  const found = new Set<string>();
  for await (const info of store.list(prefix)) {
    const slash = info.key.indexOf('/', prefix.length);
    if (slash > prefix.length) found.add(info.key.slice(prefix.length, slash));
  }
  return [...found].sort();
}
