// A counting semaphore with a FIFO wait queue: bounds how many codec tasks are in flight. A slot
// handed to a waiter resolves on a later macrotask (setImmediate), so when many tasks finish at
// once their successors' input copies interleave with timers and I/O instead of running back to
// back in one microtask chain.
export class Slots {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(count: number) {
    this.#free = count;
  }

  acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  release(): void {
    const next = this.#waiting.shift();
    if (next) setImmediate(next); // hand the slot over directly, a macrotask later
    else this.#free++;
  }
}
