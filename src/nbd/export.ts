// The Export contract: what the protocol core serves, and all it knows of what lies behind an
// export. It belongs to nbd/, built from the block I/O vocabulary of ../block-io.ts; the memory
// exports (nbd/memory-export.ts) and the volume engine satisfy it, and cli/ hands the engines
// over. nbd/ imports nothing from volume/, volume/ nothing from nbd/.
//
// Contract: nbd/ validates every request before calling (range inside `size`, flags allowed by
// `caps`, writes only when !caps.readOnly, lengths within the advertised maximum). An
// implementation may therefore assert those facts and throw BugError if they are broken.
// Errors are VaultError values; nbd/errno.ts maps them to NBD errors.

import type { BlockCaps, ContextExtent, Extent, ReadOptions, WriteData, WriteOptions, ZeroOptions } from '../block-io';

export type { ContextExtent, Extent, ReadOptions, WriteData, WriteOptions, ZeroOptions } from '../block-io';
/** What an export can do, as NBD transmission flags say it. */
export type ExportCaps = BlockCaps;

export interface Export {
  readonly name: string;
  readonly description: string;
  /** Size in bytes (< 2^53). May grow between connections (resize); fixed per connection. */
  readonly size: number;
  readonly caps: ExportCaps;

  /** The result may be a view of memory the export keeps (a cached chunk): nbd/ never changes it. */
  read(offset: number, length: number, opts?: ReadOptions): Promise<Buffer>;
  /** Optional: nbd/ has written the reply carrying `data` (a read()'s result, once per result,
   *  only after the socket took it): the export may reuse the memory under it. Never called for
   *  a reply that was not written; an export must not rely on being called at all. */
  readDone?(data: Buffer): void;
  /** The export may not change `data`, and keeps nothing of it once the returned promise settles:
   *  nbd/ reuses that memory for a later request's payload (payload-buffers.ts). */
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

/** Why an export is opened: to serve a client that may write it ('serve'), one that may only
 *  read it ('read': a provider may serve it without what writing needs, e.g. a writer's lease),
 *  or only to look at its size and flags (NBD_OPT_INFO: 'inspect'). */
export type OpenPurpose = 'serve' | 'read' | 'inspect';

/** What the NBD server asks for exports by name. Implemented by the memory exports (tests) and
 *  by the vault's provider in cli/ (volumes and `VOL@SNAP` snapshot exports). */
export interface ExportProvider {
  /** The name a client gets when it asks for the empty export name "". */
  readonly defaultName: string;
  list(): Promise<Array<{ name: string; description: string }>>;
  /** The shared Export for `name` (every connection to one name gets the same instance), or
   *  null when no such export exists. Each successful open is paired with one release().
   *  `inspect`: the caller only reads the export's size, flags and metadata contexts and serves
   *  no request (NBD_OPT_INFO, the meta context options): a provider may answer from something
   *  lighter than what serving takes (no writer's lease). */
  open(name: string, purpose?: OpenPurpose): Promise<Export | null>;
  /** Optional: how long an open of `name` under way still waits, at most, for something that
   *  ends by itself (the lease of a server that stopped running out); undefined when it waits on
   *  nothing known. The server extends the waiting client's handshake by it. */
  openWaitLeftMs?(name: string): number | undefined;
  release(exp: Export): Promise<void>;
  /** Shutdown: flush every open export and close it. */
  closeAll(): Promise<void>;
}
