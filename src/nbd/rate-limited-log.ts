// Log lines a stranger can cause (refused and timed-out connections, failed TLS handshakes) go
// through this, so a flood of them cannot flood the log: at most `burst` lines per message per
// window; the rest are counted and reported in one line when the next window opens.
import type { Logger } from '../util/log';

export class RateLimitedLog {
  private readonly windows = new Map<string, { start: number; logged: number; suppressed: number }>();

  constructor(
    private readonly logger: Logger,
    private readonly windowMs = 10_000,
    private readonly burst = 10,
    private readonly now: () => number = Date.now,
  ) {}

  warn(fields: Record<string, unknown>, msg: string): void {
    const t = this.now();
    let w = this.windows.get(msg);
    if (!w || t - w.start >= this.windowMs) {
      if (w && w.suppressed > 0) this.logger.warn({ suppressed: w.suppressed, windowMs: this.windowMs }, `${msg} (more lines of this kind were not logged)`);
      w = { start: t, logged: 0, suppressed: 0 };
      this.windows.set(msg, w);
    }
    if (w.logged < this.burst) {
      w.logged++;
      this.logger.warn(fields, msg);
    } else {
      w.suppressed++;
    }
  }
}
