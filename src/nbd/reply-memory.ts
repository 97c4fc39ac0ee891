// What one connection's unsent replies hold in memory, for its in-flight budget. A reply's data
// Buffer may be a slice of a larger buffer the export shares (a decoded chunk in the vault's
// read cache): the slice is small, but while it waits on the socket the whole backing store
// stays alive, even after the cache has dropped it. So the bytes counted are those of the
// distinct backing stores (ArrayBuffers) the queued replies refer to, each counted once however
// many replies slice it: a thousand replies sharing one chunk cost that chunk, a thousand
// replies from a thousand evicted chunks cost a thousand chunks. Replies are counted too (each
// costs a header and bookkeeping, even when its data is shared).
//
// hold() is called when a reply is queued on the socket and returns its release, which the
// caller runs from the socket's write callback (the data has reached the kernel).

export class ReplyMemory {
  private readonly refs = new Map<ArrayBufferLike, number>();
  private bytes = 0;
  private replies = 0;

  /** Bytes of the distinct buffers unsent replies keep alive. */
  get heldBytes(): number {
    return this.bytes;
  }

  get unsentReplies(): number {
    return this.replies;
  }

  hold(bufs: readonly Buffer[]): () => void {
    for (const b of bufs) {
      const store = b.buffer;
      const n = this.refs.get(store) ?? 0;
      if (n === 0) this.bytes += store.byteLength;
      this.refs.set(store, n + 1);
    }
    this.replies++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.replies--;
      for (const b of bufs) {
        const store = b.buffer;
        const n = this.refs.get(store)!;
        if (n > 1) this.refs.set(store, n - 1);
        else {
          this.refs.delete(store);
          this.bytes -= store.byteLength;
        }
      }
    };
  }
}
