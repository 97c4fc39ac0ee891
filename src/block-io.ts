// The vocabulary of block I/O that the protocol core and the volume engine share: what read,
// write, zero and status calls take and give. A leaf like errors.ts: nbd/ builds its Export
// contract from it (nbd/export.ts), volume/ its engine, and neither imports the other.

export interface BlockCaps {
  readonly readOnly: boolean;
  readonly canFlush: boolean;
  readonly canFua: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canFastZero: boolean;
  readonly canCache: boolean;
  /** every connection shares one engine, and a flush makes every acknowledged write durable */
  readonly canMultiConn: boolean;
}

/** One extent of allocation status. */
export interface Extent {
  readonly length: number;
  /** no storage is allocated for this range */
  readonly hole: boolean;
  /** the range reads as zeros */
  readonly zero: boolean;
}

/** One extent of a named status context (a dirty bitmap: 1 = dirty; allocation depth). */
export interface ContextExtent {
  readonly length: number;
  readonly flags: number;
}

export interface ReadOptions {
  /** Who asks: reads that fetch from the store queue fairly between requesters. */
  readonly requester?: object;
}

export interface WriteOptions {
  /** return only once this write is durable */
  readonly fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** the range must stay allocated (write real zeros) */
  readonly noHole?: boolean;
  /** fail with ERR_NOT_SUPPORTED rather than be slow */
  readonly fastZero?: boolean;
}

/** A write's bytes: one Buffer, or consecutive pieces of it (a socket's own chunks). */
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
