// Serialises async work per key (here: per chunk), so read-modify-write of one chunk never
// interleaves with another write to it. Work on different keys runs concurrently.

export class KeyedMutex<K> {
  private readonly tails = new Map<K, Promise<void>>();

  isLocked(key: K): boolean {
    return this.tails.has(key);
  }

  async run<T>(key: K, work: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await work();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
