// The chunk manifest of one volume, in memory: chunk index → (object id, epoch, stored size).
// An all-zero object id means "zero chunk, no object". Persisted as immutable pages of
// PAGE_ENTRIES entries (docs/FORMAT.md, "Manifest pages"); the root lists the pages.
//
// Epoch 0 is reserved: in a clone, an entry or page ref of epoch 0 names an object of the origin
// volume (never deleted by the clone). Volumes start at epoch 1.
//
// Epochs: every entry and page remembers the volume epoch it was written in. A snapshot freezes
// the page list and bumps the epoch, so anything with epoch < current epoch may be referenced by
// a snapshot and must not be deleted when overwritten (gc decides later).
import { randomBytes } from 'node:crypto';
import { VaultError } from '../errors';

export const PAGE_ENTRIES = 1024;
export const ENTRY_BYTES = 24; // id 16 + epoch 4 + stored size 4
export const OBJECT_ID_BYTES = 16;
const PAGE_HEADER_BYTES = 8; // u32 entry count, u32 reserved

export interface PageRef {
  readonly id: string; // hex
  readonly epoch: number;
}

export interface Entry {
  /** hex object id, or null for a zero chunk */
  readonly id: string | null;
  readonly epoch: number;
  readonly storedSize: number;
}

/** The generation bound into an object's associated data: derived from its random id, so an
 *  object opens only under the name its manifest entry gives it. */
export function generationOfId(idHex: string): number {
  return Buffer.from(idHex.slice(0, 12), 'hex').readUIntLE(0, 6);
}

export function newObjectId(): string {
  let id: Buffer;
  do id = randomBytes(OBJECT_ID_BYTES);
  while (id.every((b) => b === 0));
  return id.toString('hex');
}

let zeros = Buffer.alloc(0);
/** A shared all-zero buffer of at least `count` ids (never written to). */
function zeroIds(count: number): Buffer {
  if (zeros.length < count * OBJECT_ID_BYTES) zeros = Buffer.alloc(Math.max(count, PAGE_ENTRIES) * OBJECT_ID_BYTES);
  return zeros;
}

export class Manifest {
  private ids: Buffer;
  private epochs: Uint32Array;
  private sizes: Uint32Array;
  /** page index → the stored page currently holding it (null: never written, all zero) */
  pages: Array<PageRef | null>;
  readonly dirtyPages = new Set<number>();

  constructor(public chunkCount: number, pages?: Array<PageRef | null>) {
    this.ids = Buffer.alloc(chunkCount * OBJECT_ID_BYTES);
    this.epochs = new Uint32Array(chunkCount);
    this.sizes = new Uint32Array(chunkCount);
    this.pages = pages ? [...pages] : new Array(Math.ceil(chunkCount / PAGE_ENTRIES)).fill(null);
  }

  get pageCount(): number {
    return Math.ceil(this.chunkCount / PAGE_ENTRIES);
  }

  isZero(i: number): boolean {
    const o = i * OBJECT_ID_BYTES;
    for (let k = 0; k < OBJECT_ID_BYTES; k++) if (this.ids[o + k] !== 0) return false;
    return true;
  }

  /** The epoch of entry i (0 in a clone: the origin's), without decoding the entry. */
  epochOf(i: number): number {
    return this.epochs[i];
  }

  /** Chunks [first, first+count) name the same objects here and in `other` (both in range). */
  sameIds(other: Manifest, first: number, count: number): boolean {
    const a = first * OBJECT_ID_BYTES;
    const b = (first + count) * OBJECT_ID_BYTES;
    return this.ids.compare(other.ids, a, b, a, b) === 0;
  }

  /** Chunks [first, first+count) are all zero chunks. */
  allZeroIds(first: number, count: number): boolean {
    if (count <= 0) return true;
    const a = first * OBJECT_ID_BYTES;
    return this.ids.compare(zeroIds(count), 0, count * OBJECT_ID_BYTES, a, a + count * OBJECT_ID_BYTES) === 0;
  }

  get(i: number): Entry {
    if (this.isZero(i)) return { id: null, epoch: this.epochs[i], storedSize: 0 };
    return { id: this.ids.toString('hex', i * OBJECT_ID_BYTES, (i + 1) * OBJECT_ID_BYTES), epoch: this.epochs[i], storedSize: this.sizes[i] };
  }

  set(i: number, entry: Entry): void {
    if (entry.id === null) this.ids.fill(0, i * OBJECT_ID_BYTES, (i + 1) * OBJECT_ID_BYTES);
    else this.ids.write(entry.id, i * OBJECT_ID_BYTES, OBJECT_ID_BYTES, 'hex');
    this.epochs[i] = entry.epoch;
    this.sizes[i] = entry.storedSize;
    this.dirtyPages.add(Math.floor(i / PAGE_ENTRIES));
  }

  /** Number of chunks that have an object, and the sum of their stored sizes. */
  usage(): { allocatedChunks: number; storedBytes: number } {
    let allocatedChunks = 0;
    let storedBytes = 0;
    for (let i = 0; i < this.chunkCount; i++) {
      if (!this.isZero(i)) {
        allocatedChunks++;
        storedBytes += this.sizes[i];
      }
    }
    return { allocatedChunks, storedBytes };
  }

  /** Grow or shrink to `chunkCount` chunks. Returns the entries dropped by a shrink. */
  resize(chunkCount: number): Array<{ index: number; entry: Entry }> {
    const dropped: Array<{ index: number; entry: Entry }> = [];
    for (let i = chunkCount; i < this.chunkCount; i++) if (!this.isZero(i)) dropped.push({ index: i, entry: this.get(i) });
    const ids = Buffer.alloc(chunkCount * OBJECT_ID_BYTES);
    this.ids.copy(ids, 0, 0, Math.min(this.ids.length, ids.length));
    const epochs = new Uint32Array(chunkCount);
    epochs.set(this.epochs.subarray(0, Math.min(chunkCount, this.chunkCount)));
    const sizes = new Uint32Array(chunkCount);
    sizes.set(this.sizes.subarray(0, Math.min(chunkCount, this.chunkCount)));
    const oldPageCount = this.pageCount;
    this.ids = ids;
    this.epochs = epochs;
    this.sizes = sizes;
    this.chunkCount = chunkCount;
    const pageCount = this.pageCount;
    this.pages.length = pageCount;
    for (let p = oldPageCount; p < pageCount; p++) this.pages[p] = null;
    // The (new) last page changes length either way.
    if (pageCount > 0) this.dirtyPages.add(pageCount - 1);
    for (const p of [...this.dirtyPages]) if (p >= pageCount) this.dirtyPages.delete(p);
    return dropped;
  }

  /** Entries of page p in their stored byte form. */
  encodePage(p: number): Buffer {
    const first = p * PAGE_ENTRIES;
    const count = Math.min(PAGE_ENTRIES, this.chunkCount - first);
    const buf = Buffer.alloc(PAGE_HEADER_BYTES + count * ENTRY_BYTES);
    buf.writeUInt32LE(count, 0);
    for (let k = 0; k < count; k++) {
      const i = first + k;
      const o = PAGE_HEADER_BYTES + k * ENTRY_BYTES;
      this.ids.copy(buf, o, i * OBJECT_ID_BYTES, (i + 1) * OBJECT_ID_BYTES);
      buf.writeUInt32LE(this.epochs[i], o + 16);
      buf.writeUInt32LE(this.sizes[i], o + 20);
    }
    return buf;
  }

  /** True when page p has no object at all (store it as a null page ref). */
  pageIsEmpty(p: number): boolean {
    const first = p * PAGE_ENTRIES;
    const last = Math.min(this.chunkCount, first + PAGE_ENTRIES);
    for (let i = first; i < last; i++) if (!this.isZero(i)) return false;
    return true;
  }

  /** Mark page p's entries as the origin's (epoch 0): a clone's page loaded from its origin. */
  markOrigin(p: number): void {
    const first = p * PAGE_ENTRIES;
    this.epochs.fill(0, first, Math.min(this.chunkCount, first + PAGE_ENTRIES));
  }

  decodePage(p: number, buf: Buffer): void {
    const first = p * PAGE_ENTRIES;
    const expected = Math.min(PAGE_ENTRIES, this.chunkCount - first);
    if (buf.length < PAGE_HEADER_BYTES) throw new VaultError('ERR_CORRUPT', `manifest page ${p} is truncated`);
    const count = buf.readUInt32LE(0);
    // A page written before a grow or shrink may hold fewer or more entries than the page now spans.
    if (buf.length !== PAGE_HEADER_BYTES + count * ENTRY_BYTES || count > PAGE_ENTRIES) {
      throw new VaultError('ERR_CORRUPT', `manifest page ${p} has a bad length`);
    }
    for (let k = 0; k < Math.min(count, expected); k++) {
      const i = first + k;
      const o = PAGE_HEADER_BYTES + k * ENTRY_BYTES;
      buf.copy(this.ids, i * OBJECT_ID_BYTES, o, o + 16);
      this.epochs[i] = buf.readUInt32LE(o + 16);
      this.sizes[i] = buf.readUInt32LE(o + 20);
    }
  }
}
