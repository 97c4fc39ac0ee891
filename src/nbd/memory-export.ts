// A sparse in-memory Export and its provider (`nbd-vault serve --memory NAME=SIZE`): the test and
// benchmark backend for nbd/, and a fake of the vault for anything above volume/.
//
// Layout: 64 KiB pages in a Map; a page never written (or trimmed/zeroed whole) is absent and
// reads as zeros, and blockStatus reports it as a hole. Every connection to one name shares one
// instance and there is no cache, so CAN_MULTI_CONN is honest and flush is a no-op. Reads return
// a fresh Buffer (a later write must not change bytes already queued on a socket). A write
// adopts whole-page slices of its `data` Buffer: the caller must not modify it afterwards.
// Assumes nbd/ validated ranges (contract in export.ts); a broken range throws BugError.
import { BugError, VaultError } from '../errors';
import { copyWriteData, writeDataLength } from '../block-io';
import { parseSize } from '../util/size';
import type { Export, ExportCaps, ExportProvider, Extent, WriteData, WriteOptions, ZeroOptions } from './export';

export const MEMORY_PAGE_SIZE = 64 * 1024;

const MEMORY_CAPS: ExportCaps = {
  readOnly: false,
  canFlush: true,
  canFua: true,
  canTrim: true,
  canZero: true,
  canFastZero: true, // dropping pages is always faster than writing zeros
  canCache: true,
  canMultiConn: true,
};

export class MemoryExport implements Export {
  readonly caps: ExportCaps;
  private readonly pages = new Map<number, Buffer>();

  constructor(
    readonly name: string,
    readonly size: number,
    readonly description = `memory export, ${size} bytes`,
    readOnly = false,
  ) {
    if (!Number.isSafeInteger(size) || size < 0) throw new VaultError('ERR_INVALID_ARGUMENT', `bad export size ${size}`);
    this.caps = readOnly ? { ...MEMORY_CAPS, readOnly: true } : MEMORY_CAPS;
  }

  /** Pages holding data (for tests: proves trim/zero free memory). */
  get allocatedPages(): number {
    return this.pages.size;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    const out = Buffer.allocUnsafe(length);
    let at = 0;
    while (at < length) {
      const pos = offset + at;
      const index = Math.floor(pos / MEMORY_PAGE_SIZE);
      const inPage = pos - index * MEMORY_PAGE_SIZE;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, length - at);
      const page = this.pages.get(index);
      if (page) page.copy(out, at, inPage, inPage + n);
      else out.fill(0, at, at + n);
      at += n;
    }
    return out;
  }

  async write(offset: number, input: WriteData, _opts?: WriteOptions): Promise<void> {
    const length = writeDataLength(input);
    this.checkWritable(offset, length);
    let at = 0;
    while (at < length) {
      const pos = offset + at;
      const index = Math.floor(pos / MEMORY_PAGE_SIZE);
      const inPage = pos - index * MEMORY_PAGE_SIZE;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, length - at);
      // copied: the payload is recycled once this returns (export.ts)
      let page = this.pages.get(index);
      if (!page) {
        page = n === MEMORY_PAGE_SIZE ? Buffer.allocUnsafe(MEMORY_PAGE_SIZE) : Buffer.alloc(MEMORY_PAGE_SIZE);
        this.pages.set(index, page);
      }
      copyWriteData(input, at, page, inPage, n);
      at += n;
    }
  }

  async trim(offset: number, length: number, _opts?: WriteOptions): Promise<void> {
    this.zeroRange(offset, length);
  }

  async writeZeroes(offset: number, length: number, _opts?: ZeroOptions): Promise<void> {
    // NO_HOLE would ask us to keep storage allocated; in memory, a missing page *is* zeros and
    // nothing can run out of space later, so punching is the honest equivalent.
    this.zeroRange(offset, length);
  }

  async flush(): Promise<void> {
    // Nothing volatile: every acknowledged write is already visible to every connection.
  }

  async cache(offset: number, length: number): Promise<void> {
    this.checkRange(offset, length);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.checkRange(offset, length);
    const extents: Array<{ length: number; hole: boolean; zero: boolean }> = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end && extents.length < 1024) {
      const index = Math.floor(pos / MEMORY_PAGE_SIZE);
      const n = Math.min((index + 1) * MEMORY_PAGE_SIZE, end) - pos;
      const hole = !this.pages.has(index);
      const last = extents[extents.length - 1];
      if (last && last.hole === hole) last.length += n;
      else extents.push({ length: n, hole, zero: hole });
      pos += n;
    }
    return extents;
  }

  private zeroRange(offset: number, length: number): void {
    this.checkWritable(offset, length);
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const index = Math.floor(pos / MEMORY_PAGE_SIZE);
      const inPage = pos - index * MEMORY_PAGE_SIZE;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, end - pos);
      if (n === MEMORY_PAGE_SIZE) this.pages.delete(index);
      else this.pages.get(index)?.fill(0, inPage, inPage + n);
      pos += n;
    }
  }

  private checkRange(offset: number, length: number): void {
    if (!(offset >= 0 && length >= 0 && offset + length <= this.size)) {
      throw new BugError(`memory export ${this.name}: range ${offset}+${length} outside 0..${this.size}`);
    }
  }

  private checkWritable(offset: number, length: number): void {
    if (this.caps.readOnly) throw new BugError(`memory export ${this.name}: write to a read-only export`);
    this.checkRange(offset, length);
  }
}

export interface MemoryExportSpec {
  readonly name: string;
  readonly size: number;
  readonly readOnly?: boolean;
}

/** Parses `NAME=SIZE` (e.g. `disk=256M`); append `:ro` for a read-only export (`snap=1G:ro`). */
export function parseMemoryExportSpec(text: string): MemoryExportSpec {
  const m = /^([^=]*)=([^:]+)(:ro)?$/.exec(text);
  if (!m || m[1].length === 0 || Buffer.byteLength(m[1]) > 4096) {
    throw new VaultError('ERR_INVALID_ARGUMENT', `--memory wants NAME=SIZE[:ro] (e.g. disk=256M), got "${text}"`);
  }
  return { name: m[1], size: parseSize(m[2]), readOnly: m[3] !== undefined };
}

export class MemoryExportProvider implements ExportProvider {
  readonly defaultName: string;
  private readonly exports = new Map<string, MemoryExport>();

  constructor(specs: readonly MemoryExportSpec[]) {
    if (specs.length === 0) throw new VaultError('ERR_INVALID_ARGUMENT', 'at least one memory export is needed');
    for (const s of specs) {
      if (this.exports.has(s.name)) throw new VaultError('ERR_INVALID_ARGUMENT', `duplicate export name "${s.name}"`);
      this.exports.set(s.name, new MemoryExport(s.name, s.size, undefined, s.readOnly ?? false));
    }
    this.defaultName = specs[0].name;
  }

  async list(): Promise<Array<{ name: string; description: string }>> {
    return [...this.exports.values()].map((e) => ({ name: e.name, description: e.description }));
  }

  async open(name: string): Promise<Export | null> {
    return this.exports.get(name) ?? null;
  }

  async release(_exp: Export): Promise<void> {}

  async closeAll(): Promise<void> {
    for (const e of this.exports.values()) await e.flush();
  }
}
