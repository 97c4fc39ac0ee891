// LRU cache of decoded, clean chunks, bounded in bytes. Buffers in it are never modified:
// a writer copies before changing one (see volume-engine.ts).

export class ReadCache {
  private readonly map = new Map<number, Buffer>();
  private bytes = 0;

  constructor(readonly limitBytes: number) {}

  get(chunkIndex: number): Buffer | undefined {
    const buf = this.map.get(chunkIndex);
    if (buf) {
      // Map keeps insertion order: re-insert to mark as most recently used.
      this.map.delete(chunkIndex);
      this.map.set(chunkIndex, buf);
    }
    return buf;
  }

  has(chunkIndex: number): boolean {
    return this.map.has(chunkIndex);
  }

  set(chunkIndex: number, buf: Buffer): void {
    this.delete(chunkIndex);
    if (buf.length > this.limitBytes) return;
    this.map.set(chunkIndex, buf);
    this.bytes += buf.length;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.limitBytes) break;
      this.map.delete(k);
      this.bytes -= v.length;
    }
  }

  delete(chunkIndex: number): void {
    const old = this.map.get(chunkIndex);
    if (old) {
      this.map.delete(chunkIndex);
      this.bytes -= old.length;
    }
  }

  get sizeBytes(): number {
    return this.bytes;
  }
}
