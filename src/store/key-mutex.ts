// KeyMutex: per-key mutual exclusion inside one process.
//
// Guarantees: run(key, fn) starts fn only after every earlier run() for the same key has settled,
// in call order; different keys never wait for each other. Memory is released when a key's queue
// drains. Does not protect against other processes (callers document what that means for them).
export class KeyMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
