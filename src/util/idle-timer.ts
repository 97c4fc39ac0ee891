// "Let the kept buffers go once nobody has used the pool for a while": a use only notes the time;
// one unref'd timer checks it when due and waits out the rest if there was a use meanwhile (no
// timer work per use, and it never keeps the process alive).

export class IdleTimer {
  private timer: NodeJS.Timeout | null = null;
  private lastTouchMs = 0;

  /** `onIdle` runs once `ms` have passed since the last touch(); never with ms = Infinity. */
  constructor(
    private readonly ms: number,
    private readonly onIdle: () => void,
  ) {}

  /** The pool was used now: the idle period starts again. */
  touch(): void {
    if (this.ms === Infinity) return;
    this.lastTouchMs = Date.now();
    if (!this.timer) this.arm(this.ms);
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      const idle = Date.now() - this.lastTouchMs;
      if (idle >= this.ms) this.onIdle();
      else this.arm(this.ms - idle);
    }, ms);
    this.timer.unref();
  }
}
