// A small LRU of parsed container headers (format 2 chunks and journals), keyed by object key, so
// a second ranged read of the same object needs no second header fetch. Objects are immutable
// (fresh ids), so an entry never goes stale; it is bounded by an estimate of its bytes. Headers
// are unauthenticated: a reader drops an entry when a frame it pointed at fails to open.
import type { FramedHeader } from '../codec';

/** A v1 chunk (one whole sealed object) or a parsed framed container. */
export type ContainerLayout = { readonly framed: false } | ({ readonly framed: true } & FramedHeader);

const ENTRY_OVERHEAD_BYTES = 128;

function weightOf(layout: ContainerLayout): number {
  return ENTRY_OVERHEAD_BYTES + (layout.framed ? 16 * layout.frameCount : 0);
}

export class ContainerHeaderCache {
  readonly #entries = new Map<string, ContainerLayout>();
  #bytes = 0;

  constructor(readonly limitBytes: number = 512 * 1024) {}

  get(key: string): ContainerLayout | undefined {
    const layout = this.#entries.get(key);
    if (layout !== undefined) {
      this.#entries.delete(key); // most recently used goes last
      this.#entries.set(key, layout);
    }
    return layout;
  }

  set(key: string, layout: ContainerLayout): void {
    this.delete(key);
    const weight = weightOf(layout);
    if (weight > this.limitBytes) return;
    this.#entries.set(key, layout);
    this.#bytes += weight;
    for (const [oldest, old] of this.#entries) {
      if (this.#bytes <= this.limitBytes) break;
      this.#entries.delete(oldest);
      this.#bytes -= weightOf(old);
    }
  }

  delete(key: string): void {
    const old = this.#entries.get(key);
    if (old === undefined) return;
    this.#entries.delete(key);
    this.#bytes -= weightOf(old);
  }

  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }
}
