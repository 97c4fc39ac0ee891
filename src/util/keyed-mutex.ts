// KeyedMutex: per-key mutual exclusion inside one process (a chunk index in volume/, an object key
// in the fs store). run(key, fn) starts fn only after every earlier run() for the same key has
// settled, in call order; different keys never wait for each other; a key's memory is released
// when its queue drains. It does not protect against other processes.

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
