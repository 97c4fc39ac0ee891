// Reading and writing the sealed data objects of one volume: chunks, journals, manifest pages (the
// root, snapshot records and deletion marks are its base's: volume-records.ts). Knows names
// (object-keys.ts), places (associated data) and which subkey seals what; knows nothing about
// caching or NBD (except a small LRU of container headers, so a ranged frame read costs one
// request). Every failure is a VaultError naming the volume and the object.
// Chunks are written as format 2 framed containers and read in both formats (docs/FORMAT.md).
import { BugError, VaultError, isVaultError } from '../errors';
import { FRAME_BYTES, MAX_CHUNK_FRAMES, chunkFrameLength, isAllZero, objectFormatOf, parseFramedHeader, type FramesPlace } from '../codec';
import type { Codec } from '../codec/codec';
import type { ObjectPlace } from '../codec/object-place';
import { MAX_OBJECT_BYTES, type ObjectStore } from '../store/object-store';
import { findLayer } from '../store/compose';
import { DiskCacheStore } from '../store/disk-cache-store';
import type { ContainerHeaderCache } from './container-header-cache';
import { FramedReads, annotate, missingObject } from './framed-reads';
import { BLOCK_BYTES, decodeJournalIndex, encodeJournalIndex, journalFrameBytesNeeded, type JournalExtent } from './journal-record';
import { chunkKey, journalKey, pageKey } from './object-keys';
import { generationOfId, newObjectId, type Entry, type PageRef } from './manifest';
import type { JournalRef } from './root-record';
import { VolumeRecords, type VolumeKeys } from './volume-records';
import { copyBytes } from '../util/shared-copy';

/** How a stored chunk is laid out: v1 is one frame, the whole chunk. */
export interface ChunkLayout {
  readonly framed: boolean;
  readonly frameBytes: number;
  readonly frameCount: number;
}

export class VolumeObjects extends VolumeRecords {
  /** a journal bigger than this is read by ranges (stores refuse to read more whole); tests lower it */
  static wholeReadLimit = MAX_OBJECT_BYTES;

  /** For a clone: the origin volume's objects, where entries and page refs of epoch 0 live. */
  origin: VolumeObjects | null = null;
  /** ranged reads of framed containers, with their header cache */
  private readonly framed: FramedReads;
  /** the local disk cache in the store stack (serve --disk-cache), if any */
  private readonly diskCache: DiskCacheStore | null;

  constructor(store: ObjectStore, codec: Codec, keys: VolumeKeys, vaultId: string, volumeId: string, volumeName: string) {
    super(store, codec, keys, vaultId, volumeId, volumeName);
    this.framed = new FramedReads(store);
    this.diskCache = findLayer(store, DiskCacheStore);
  }

  /**
   * Runs `read`, which reads object `key` and authenticates what it got. Bytes that fail
   * (ERR_AUTH_FAILED, ERR_CORRUPT) may have come from the local disk cache, whose CRCs catch a
   * torn or flipped file but not every bad entry (one filled from a bad store answer, or written
   * by something else with valid CRCs): its entries of the key are dropped and the read runs once
   * more, from the store. A second failure is the store's: reported as it is, and not cached.
   */
  private async authenticated<T>(key: string, read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (err) {
      if (!this.diskCache || !isUnusable(err) || !this.diskCache.forget(key)) throw err;
    }
    try {
      return await read();
    } catch (err) {
      if (isUnusable(err)) this.diskCache.forget(key);
      throw err;
    }
  }

  /** parsed container headers by object key (unauthenticated: dropped when a frame fails) */
  get headers(): ContainerHeaderCache {
    return this.framed.headers;
  }

  /** The same volume's objects (same keys, same places) in another store: a replica's. */
  onStore(store: ObjectStore): VolumeObjects {
    return new VolumeObjects(store, this.codec, this.keys, this.vaultId, this.volumeId, this.volumeName);
  }

  /** The store key of a chunk entry or page ref (the origin's for epoch 0 in a clone). */
  chunkKeyOf(entry: Entry): string {
    return chunkKey(entry.epoch === 0 && this.origin ? this.origin.volumeId : this.volumeId, entry.id!);
  }

  /** A journal is always the volume's own (journals are never in a snapshot, so never an origin's). */
  journalKeyOf(ref: JournalRef): string {
    return journalKey(this.volumeId, ref.id);
  }

  pageKeyOf(ref: PageRef): string {
    return pageKey(ref.epoch === 0 && this.origin ? this.origin.volumeId : this.volumeId, ref.id);
  }

  // --- chunks ---------------------------------------------------------------------------

  /** Seal and store one chunk (a format 2 container of FRAME_BYTES frames). Returns the new
   *  entry, or a zero entry for an all-zero chunk. */
  async writeChunk(chunkIndex: number, data: Buffer, epoch: number): Promise<Entry> {
    if (isAllZero(data)) return { id: null, epoch, storedSize: 0 };
    const id = newObjectId();
    const frames: Buffer[] = [];
    for (let at = 0; at < data.length; at += FRAME_BYTES) frames.push(data.subarray(at, Math.min(at + FRAME_BYTES, data.length)));
    // sealed into memory the codec lends (no fresh 4 MiB per chunk), given back once stored
    return this.codec.withContainerMemory(async (memory) => {
      const container = await this.codec.sealFrames(this.keys.data, 'chunk-frame', frames, this.framesPlace(chunkIndex, id), data.length, memory);
      const key = chunkKey(this.volumeId, id);
      await this.store.put(key, container, { data: true });
      this.headers.set(key, { framed: true, ...parseFramedHeader(container, 'chunk', key, container.length) });
      return { id, epoch, storedSize: container.length };
    });
  }

  /** The whole chunk, format 1 or 2, every frame authenticated. `into` (shared memory, the
   *  chunk's length): a format 2 chunk is decoded there (the result is then a view of it). */
  async readChunk(chunkIndex: number, entry: Entry, expectedLength: number, into?: Buffer): Promise<Buffer> {
    if (entry.id === null) return Buffer.alloc(expectedLength);
    if (entry.epoch === 0 && this.origin) return this.origin.readChunk(chunkIndex, entry, expectedLength, into);
    const key = chunkKey(this.volumeId, entry.id);
    return this.authenticated(key, () => this.readChunkOnce(chunkIndex, entry.id!, key, expectedLength, into));
  }

  /** The stored object is read into memory the codec lends (no fresh 4 MiB per read, and no copy
   *  of it for a worker); the chunk it returns is never a view of that memory. */
  private readChunkOnce(chunkIndex: number, id: string, key: string, expectedLength: number, into?: Buffer): Promise<Buffer> {
    return this.codec.withContainerMemory(async (memory) => {
      const plain = await this.readChunkVia(memory, chunkIndex, id, key, expectedLength, into);
      if (plain.buffer === memory.buffer) throw new BugError(`chunk ${chunkIndex}: decoded into the memory lent for its object`);
      return plain;
    });
  }

  private async readChunkVia(memory: Buffer, chunkIndex: number, id: string, key: string, expectedLength: number, into?: Buffer): Promise<Buffer> {
    const { body } = await this.fetch(key, this.chunkWhat(chunkIndex), memory);
    return this.openChunkBody(chunkIndex, id, key, body, expectedLength, memory, into);
  }

  private chunkWhat(chunkIndex: number): string {
    return `chunk ${chunkIndex} of volume "${this.volumeName}"`;
  }

  /** A chunk object's stored bytes → the chunk. `memory`: lent memory the body is in (or is
   *  copied to for a worker), if any. */
  private async openChunkBody(chunkIndex: number, id: string, key: string, body: Buffer, expectedLength: number, memory?: Buffer, into?: Buffer): Promise<Buffer> {
    const what = this.chunkWhat(chunkIndex);
    let plain: Buffer;
    try {
      const format = objectFormatOf(body);
      if (format === 'chunk') plain = await this.openChunkContainer(chunkIndex, id, memory ? inLentMemory(body, memory) : body, expectedLength, key, into);
      else if (format === 'v1' || format === null) plain = await this.codec.open(this.keys.data, body, this.place('chunk', chunkIndex, generationOfId(id)));
      else throw new VaultError('ERR_CORRUPT', `a ${format} container where a chunk belongs`);
    } catch (err) {
      throw annotate(err, `${what} (object ${key})`);
    }
    if (plain.length !== expectedLength) {
      throw new VaultError('ERR_CORRUPT', `${what} has ${plain.length} bytes, expected ${expectedLength}`);
    }
    return plain;
  }

  /**
   * The stored bytes of a chunk object, as the store has them, once they open at their place (a
   * clone's origin chunk: from the origin). What `sync` copies: damage in the source never
   * reaches a replica as if it were good.
   */
  async storedChunk(chunkIndex: number, entry: Entry, expectedLength: number): Promise<Buffer> {
    if (entry.id === null) throw new BugError(`chunk ${chunkIndex}: no object to read`);
    if (entry.epoch === 0 && this.origin) return this.origin.storedChunk(chunkIndex, entry, expectedLength);
    const key = chunkKey(this.volumeId, entry.id);
    return this.authenticated(key, async () => {
      const { body } = await this.fetch(key, this.chunkWhat(chunkIndex));
      await this.openChunkBody(chunkIndex, entry.id!, key, body, expectedLength);
      return body;
    });
  }

  private async openChunkContainer(chunkIndex: number, id: string, body: Buffer, chunkLength: number, key: string, into?: Buffer): Promise<Buffer> {
    try {
      const plain = await this.codec.openChunkContainer(this.keys.data, body, this.framesPlace(chunkIndex, id), chunkLength, `object ${key}`, into);
      this.headers.set(key, { framed: true, ...parseFramedHeader(body, 'chunk', key, body.length) });
      return plain;
    } catch (err) {
      this.headers.delete(key);
      throw err;
    }
  }

  /** How a chunk is stored: format 2 frames, or (v1) one frame holding the whole chunk. */
  async chunkLayout(chunkIndex: number, entry: Entry, chunkLength: number): Promise<ChunkLayout> {
    if (entry.id === null) return { framed: true, frameBytes: FRAME_BYTES, frameCount: Math.ceil(chunkLength / FRAME_BYTES) };
    if (entry.epoch === 0 && this.origin) return this.origin.chunkLayout(chunkIndex, entry, chunkLength);
    const layout = await this.authenticated(chunkKey(this.volumeId, entry.id), () => this.chunkHeaderOf(chunkIndex, entry, chunkLength));
    return layout.framed ? { framed: true, frameBytes: FRAME_BYTES, frameCount: layout.frameCount } : { framed: false, frameBytes: chunkLength, frameCount: 1 };
  }

  /**
   * One frame of a chunk (FRAME_BYTES, the last one shorter), authenticated: one ranged read once
   * the container header is known. A v1 chunk has one frame, 0, read whole. A zero entry reads
   * as zeros. `into` (shared memory of at least FRAME_BYTES): a v2 frame is decoded there and
   * returned as a view of it; anything else comes in memory of its own.
   */
  async readChunkFrame(chunkIndex: number, entry: Entry, chunkLength: number, frame: number, into?: Buffer): Promise<Buffer> {
    if (entry.id === null) {
      if (!Number.isInteger(frame) || frame < 0 || frame * FRAME_BYTES >= chunkLength) throw new BugError(`frame ${frame} of a ${chunkLength}-byte chunk`);
      return Buffer.alloc(chunkFrameLength(chunkLength, frame));
    }
    if (entry.epoch === 0 && this.origin) return this.origin.readChunkFrame(chunkIndex, entry, chunkLength, frame, into);
    const key = chunkKey(this.volumeId, entry.id);
    const layout = await this.authenticated(key, () => this.chunkHeaderOf(chunkIndex, entry, chunkLength));
    if (!layout.framed) {
      if (frame !== 0) throw new BugError(`frame ${frame} of a version-1 chunk (one frame)`);
      return this.readChunk(chunkIndex, entry, chunkLength).catch((err) => {
        this.headers.delete(key);
        throw err;
      });
    }
    if (!Number.isInteger(frame) || frame < 0 || frame >= layout.frameCount) throw new BugError(`frame ${frame} of a ${layout.frameCount}-frame chunk`);
    const what = `chunk ${chunkIndex} frame ${frame} of volume "${this.volumeName}"`;
    const id = entry.id;
    const frameLength = chunkFrameLength(chunkLength, frame);
    const target = into && into.length >= frameLength ? into.subarray(0, frameLength) : undefined;
    const open = (sealed: Buffer) => this.codec.openFrame(this.keys.data, sealed, this.framePlace('chunk-frame', chunkIndex, id, frame), frameLength, target);
    return this.authenticated(key, async () => {
      // a failed frame dropped the cached header: the retry reads it again (it may be what was bad)
      const current = await this.chunkHeaderOf(chunkIndex, entry, chunkLength);
      if (!current.framed || current.frameCount !== layout.frameCount) throw new VaultError('ERR_CORRUPT', `${what}: the container header changed between reads (object ${key})`);
      return this.framed.readFrame(key, current, frame, what, open);
    });
  }

  private chunkHeaderOf(chunkIndex: number, entry: Entry, chunkLength: number) {
    const key = chunkKey(this.volumeId, entry.id!);
    return this.framed.chunkLayout(key, entry.storedSize, chunkLength, `chunk ${chunkIndex} of volume "${this.volumeName}" (object ${key})`);
  }

  private framesPlace(index: number, id: string): FramesPlace {
    return { vaultId: this.vaultIdBytes, volumeId: this.volumeIdBytes, index, generation: generationOfId(id) };
  }

  private framePlace(kind: 'chunk-frame' | 'journal-frame', index: number, id: string, frame: number): ObjectPlace {
    return { vaultId: this.vaultIdBytes, volumeId: this.volumeIdBytes, kind, index, generation: generationOfId(id), frame };
  }

  // --- write journals (format 2) -----------------------------------------------------------

  /**
   * Seal and store a journal: frame 0 the index of `extents`, frames 1..n `dataFrames`
   * (`extents[k].frame` counts from 1). A fresh id; the caller names it in a root only after
   * this resolves.
   */
  async writeJournal(extents: JournalExtent[], dataFrames: Buffer[]): Promise<JournalRef> {
    const index = encodeJournalIndex(extents);
    for (const e of extents) if (!e.zero && e.frame > dataFrames.length) throw new BugError(`a journal extent names data frame ${e.frame} of ${dataFrames.length}`);
    dataFrames.forEach((frame, k) => {
      if (frame.length % BLOCK_BYTES !== 0 || frame.length > FRAME_BYTES || frame.length < journalFrameBytesNeeded(extents, k + 1)) {
        throw new BugError(`journal data frame ${k + 1} is ${frame.length} bytes: whole blocks, ≤ ${FRAME_BYTES}, holding what its extents name`);
      }
    });
    const id = newObjectId();
    const frames = [inSharedMemoryLike(index, dataFrames), ...dataFrames];
    const logical = frames.reduce((n, f) => n + f.length, 0);
    const key = journalKey(this.volumeId, id);
    const store = async (container: Buffer): Promise<JournalRef> => {
      await this.store.put(key, container, { data: true });
      this.headers.set(key, { framed: true, ...parseFramedHeader(container, 'journal', key, container.length) });
      return { id, storedSize: container.length };
    };
    const place = this.framesPlace(0, id);
    // data in as many frames as a chunk's (what the sealer writes): sealed into memory the codec
    // lends, given back once stored, like a chunk; an index alone (resets, zeroes) or a longer
    // journal gets a buffer of its own
    if (dataFrames.length === 0 || frames.length > MAX_CHUNK_FRAMES) return store(await this.codec.sealFrames(this.keys.data, 'journal-frame', frames, place, logical));
    return this.codec.withContainerMemory(async (memory) => store(await this.codec.sealFrames(this.keys.data, 'journal-frame', frames, place, logical, memory)));
  }

  /** A journal's extents, authenticated (frame 0); usually one ranged read for header and index. */
  async readJournalIndex(ref: JournalRef): Promise<JournalExtent[]> {
    const key = journalKey(this.volumeId, ref.id);
    const what = `journal ${ref.id} of volume "${this.volumeName}"`;
    return this.authenticated(key, async () => {
      const { layout, prefix } = await this.framed.journalLayout(key, ref.storedSize, `${what} (object ${key})`);
      const end = layout.frameOffsets[0] + layout.frameLengths[0];
      const open = async (sealed: Buffer) => decodeJournalIndex(await this.openJournalFrame(sealed, ref.id, 0), `object ${key}`, layout.frameCount);
      if (prefix && prefix.length >= end) return this.framed.opening(key, what, () => open(prefix.subarray(layout.frameOffsets[0], end)));
      return this.framed.readFrame(key, layout, 0, `${what} index`, open);
    });
  }

  /** One data frame of a journal (frame ≥ 1), authenticated plaintext of whole 4 KiB blocks. */
  async readJournalFrame(ref: JournalRef, frame: number): Promise<Buffer> {
    const key = journalKey(this.volumeId, ref.id);
    const what = `journal ${ref.id} frame ${frame} of volume "${this.volumeName}"`;
    if (!Number.isInteger(frame) || frame < 0) throw new BugError(`journal frame ${frame}`);
    return this.authenticated(key, async () => {
      const { layout } = await this.framed.journalLayout(key, ref.storedSize, what);
      if (frame >= layout.frameCount) {
        this.headers.delete(key); // unauthenticated: the retry reads it again
        throw new VaultError('ERR_CORRUPT', `${what}: the journal has ${layout.frameCount} frames (object ${key})`);
      }
      return this.framed.readFrame(key, layout, frame, what, (sealed) => this.openJournalFrame(sealed, ref.id, frame));
    });
  }

  /** A whole journal in one read: its extents and data frames (index 0 of `frames` is frame 1). */
  async readJournal(ref: JournalRef): Promise<{ extents: JournalExtent[]; frames: Buffer[] }> {
    const key = journalKey(this.volumeId, ref.id);
    const what = `journal ${ref.id} of volume "${this.volumeName}"`;
    return this.authenticated(key, () => this.readJournalOnce(ref, key, what));
  }

  private async readJournalOnce(ref: JournalRef, key: string, what: string): Promise<{ extents: JournalExtent[]; frames: Buffer[] }> {
    const body = ref.storedSize > VolumeObjects.wholeReadLimit ? await this.fetchInPieces(key, what, ref.storedSize) : (await this.fetch(key, what)).body;
    try {
      if (body.length !== ref.storedSize) throw new VaultError('ERR_CORRUPT', `object ${key} is ${body.length} bytes, the root says ${ref.storedSize}`);
      const header = parseFramedHeader(body, 'journal', `object ${key}`, body.length);
      const opened = await Promise.all(
        header.frameOffsets.map((at, f) => this.openJournalFrame(body.subarray(at, at + header.frameLengths[f]), ref.id, f)),
      );
      const extents = decodeJournalIndex(opened[0], `object ${key}`, header.frameCount);
      return { extents, frames: opened.slice(1) };
    } catch (err) {
      throw annotate(err, what);
    }
  }

  private async openJournalFrame(sealed: Buffer, id: string, frame: number): Promise<Buffer> {
    const plain = await this.codec.openFrame(this.keys.data, sealed, this.framePlace('journal-frame', 0, id, frame), null);
    if (frame > 0 && plain.length % BLOCK_BYTES !== 0) throw new VaultError('ERR_CORRUPT', `journal data frame ${frame} is ${plain.length} bytes, not whole blocks`);
    return plain;
  }

  // --- manifest pages -------------------------------------------------------------------

  async writePage(pageIndex: number, bytes: Buffer, epoch: number): Promise<PageRef> {
    const id = newObjectId();
    const sealed = await this.codec.seal(this.keys.manifest, bytes, this.place('page', pageIndex, generationOfId(id)));
    if (sealed === null) throw new VaultError('ERR_BUG', 'codec returned no object for a manifest page');
    await this.store.put(pageKey(this.volumeId, id), sealed);
    return { id, epoch };
  }

  /** An object bigger than a store reads whole (MAX_OBJECT_BYTES): a journal of up to 4,095
   *  frames, as the format allows (early format-2 builds wrote ~500 MiB ones), read by ranges
   *  into one buffer of the size its root names. */
  private async fetchInPieces(key: string, what: string, size: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(size);
    const PIECE = 16 * 2 ** 20;
    for (let at = 0; at < size; at += PIECE) {
      let piece: Buffer;
      try {
        piece = await this.store.getRange(key, at, Math.min(PIECE, size - at));
      } catch (err) {
        if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) throw missingObject(what, key, err);
        throw annotate(err, what);
      }
      if (piece.length !== Math.min(PIECE, size - at)) throw new VaultError('ERR_CORRUPT', `${what}: object ${key} is shorter than the ${size} bytes its root names`);
      piece.copy(out, at);
    }
    return out;
  }

  async readPage(pageIndex: number, ref: PageRef): Promise<Buffer> {
    return (await this.readPageStored(pageIndex, ref)).plain;
  }

  /** A page object's stored bytes once they open (what `sync` copies: see storedChunk). */
  async storedPage(pageIndex: number, ref: PageRef): Promise<Buffer> {
    return (await this.readPageStored(pageIndex, ref)).body;
  }

  private async readPageStored(pageIndex: number, ref: PageRef): Promise<{ body: Buffer; plain: Buffer }> {
    if (ref.epoch === 0 && this.origin) return this.origin.readPageStored(pageIndex, ref);
    const what = `manifest page ${pageIndex} of volume "${this.volumeName}"`;
    const key = pageKey(this.volumeId, ref.id);
    return this.authenticated(key, async () => {
      const { body } = await this.fetch(key, what);
      try {
        return { body, plain: await this.codec.open(this.keys.manifest, body, this.place('page', pageIndex, generationOfId(ref.id))) };
      } catch (err) {
        throw annotate(err, what);
      }
    });
  }
}

/** `body` in the lent memory: where the store read it, else copied there (a store that reads into
 *  fresh memory: S3, a disk-cache miss), so that its worker reads it without another copy. */
function inLentMemory(body: Buffer, memory: Buffer): Buffer {
  if (body.buffer === memory.buffer || body.length > memory.length) return body;
  copyBytes(memory, 0, body);
  return memory.subarray(0, body.length);
}

/** A read whose bytes were unusable: they failed authentication or did not parse. */
function isUnusable(err: unknown): boolean {
  return isVaultError(err, 'ERR_AUTH_FAILED') || isVaultError(err, 'ERR_CORRUPT');
}

/** The journal index in shared memory when the data frames are there: one frame outside it makes
 *  the codec copy the whole journal into a fresh transferable buffer. */
function inSharedMemoryLike(index: Buffer, dataFrames: readonly Buffer[]): Buffer {
  if (dataFrames.length === 0 || !dataFrames.every((f) => f.buffer instanceof SharedArrayBuffer)) return index;
  const shared = Buffer.from(new SharedArrayBuffer(index.length));
  index.copy(shared);
  return shared;
}
