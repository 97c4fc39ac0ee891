// The Export interface: what nbd/ serves. nbd/ imports only this type from volume/.
//
// Contract: nbd/ validates every request before calling (range inside `size`, flags allowed by
// `caps`, writes only when !caps.readOnly, lengths within the advertised maximum). An
// implementation may therefore assert those facts and throw BugError if they are broken.
// Errors are VaultError values; nbd/errno.ts maps them to NBD errors.

export interface ExportCaps {
  readonly readOnly: boolean;
  readonly canFlush: boolean;
  readonly canFua: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canFastZero: boolean;
  readonly canCache: boolean;
  /** Every connection to this export shares one instance and a flush from any of them
   *  makes every acknowledged write durable: the NBD spec's condition for CAN_MULTI_CONN. */
  readonly canMultiConn: boolean;
}

/** One extent of base:allocation block status. */
export interface Extent {
  readonly length: number;
  /** NBD_STATE_HOLE: no storage is allocated for this range. */
  readonly hole: boolean;
  /** NBD_STATE_ZERO: this range reads as zeros. */
  readonly zero: boolean;
}

export interface ReadOptions {
  /** Who asks (nbd/ passes one object per connection): reads that must fetch chunks from the
   *  store queue fairly between requesters, so one client's misses never starve another's. */
  readonly requester?: object;
}

/** One extent of a metadata context other than base:allocation: the context defines `flags`
 *  (for qemu:dirty-bitmap:*, 1 = dirty; for qemu:allocation-depth, the depth). */
export interface ContextExtent {
  readonly length: number;
  readonly flags: number;
}

export interface WriteOptions {
  /** Force unit access: return only once this write is durable. */
  readonly fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** NBD_CMD_FLAG_NO_HOLE: the range must stay allocated (write real zeros). */
  readonly noHole?: boolean;
  /** NBD_CMD_FLAG_FAST_ZERO: fail with ERR_NOT_SUPPORTED rather than be slow. */
  readonly fastZero?: boolean;
}

/** A write's bytes: one Buffer, or consecutive pieces of it (nbd/ hands over the socket's own
 *  chunks for large payloads instead of copying them into one Buffer). */
export type WriteData = Buffer | readonly Buffer[];

export function writeDataLength(data: WriteData): number {
  if (Buffer.isBuffer(data)) return data.length;
  let n = 0;
  for (const part of data as readonly Buffer[]) n += part.length;
  return n;
}

/** Copy `length` bytes of `data`, starting at `from`, into `dst` at `at`. */
export function copyWriteData(data: WriteData, from: number, dst: Buffer, at: number, length: number): void {
  if (Buffer.isBuffer(data)) {
    data.copy(dst, at, from, from + length);
    return;
  }
  let skip = from;
  for (const part of data as readonly Buffer[]) {
    if (length === 0) return;
    if (skip >= part.length) {
      skip -= part.length;
      continue;
    }
    const n = Math.min(part.length - skip, length);
    part.copy(dst, at, skip, skip + n);
    at += n;
    length -= n;
    skip = 0;
  }
}

export interface Export {
  readonly name: string;
  readonly description: string;
  /** Size in bytes (< 2^53). May grow between connections (resize); fixed per connection. */
  readonly size: number;
  readonly caps: ExportCaps;

  read(offset: number, length: number, opts?: ReadOptions): Promise<Buffer>;
  /** The export may not change `data`; it may keep references to it (nbd/ never reuses it). */
  write(offset: number, data: WriteData, opts?: WriteOptions): Promise<void>;
  /** Discard: the range may read back as anything afterwards; we make it read as zeros. */
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void>;
  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void>;
  /** Durable: every write acknowledged before this call, on any connection, is in the store. */
  flush(): Promise<void>;
  /** Advisory prefetch into the read cache. */
  cache(offset: number, length: number): Promise<void>;
  /** Extents covering at least the first byte of [offset, offset+length); may cover less than
   *  the whole range, never more than the export. */
  blockStatus(offset: number, length: number): Promise<Extent[]>;

  /** Names of the metadata contexts offered besides base:allocation (NBD "Metadata querying"),
   *  e.g. "qemu:dirty-bitmap:S1". Optional: an export without it offers base:allocation only. */
  listMetaContexts?(): Promise<readonly string[]>;
  /** Extents of context `name` (one of listMetaContexts()), same rules as blockStatus: at least
   *  the first byte of the range, never past the export. Throws ERR_NOT_FOUND for a name it
   *  does not offer (e.g. a snapshot deleted since the context was selected). */
  metaContextStatus?(name: string, offset: number, length: number): Promise<ContextExtent[]>;
}

/** What the NBD server asks for exports by name. Implemented by the memory exports (tests) and
 *  by the vault (volumes and `VOL@SNAP` snapshot exports). */
export interface ExportProvider {
  /** The name a client gets when it asks for the empty export name "". */
  readonly defaultName: string;
  list(): Promise<Array<{ name: string; description: string }>>;
  /** The shared Export for `name` (every connection to one name gets the same instance), or
   *  null when no such export exists. Each successful open is paired with one release(). */
  open(name: string): Promise<Export | null>;
  release(exp: Export): Promise<void>;
  /** Shutdown: flush every open export and close it. */
  closeAll(): Promise<void>;
}
