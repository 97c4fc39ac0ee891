// RetryReport: how RetryStore tells an operator that a store fails, without a line per retry.
// In an outage every operation in flight (reads, uploads, heartbeats, lease renewals) retries on
// its own schedule, and one warning per retry made 651 lines in 2.5 minutes of an S3 outage. Now:
// - a retry is logged at warn at most once per RETRY_REPORT_MS, saying how many retries it stands
//   for and how long the store has been failing; the others go to debug;
// - when an operation succeeds after a failure that was reported, one info line says so.
// So an outage writes one line every 10 s, and a store that fails now and then at most a warn
// and an info line per 10 s.
import { describeError, type VaultError } from '../errors';
import { log } from '../util/log';

export const RETRY_REPORT_MS = 10_000;

export interface RetryReportEvent {
  readonly op: string;
  readonly key: string;
  readonly attempt: number;
  readonly delayMs: number;
  readonly error: VaultError;
}

export class RetryReport {
  /** when the first retry since the last success happened (null: none since) */
  private failingSince: number | null = null;
  /** a warn line was written since failingSince (only then is the recovery worth a line) */
  private reported = false;
  private lastLineMs = -Infinity;
  /** retries since the last warn line, and since failingSince */
  private unreported = 0;
  private retries = 0;

  constructor(
    private readonly store: string,
    private readonly now: () => number,
  ) {}

  retrying(e: RetryReportEvent): void {
    const t = this.now();
    if (this.failingSince === null) this.failingSince = t;
    this.retries++;
    this.unreported++;
    const fields = { store: this.store, op: e.op, objectKey: e.key, attempt: e.attempt, delayMs: Math.round(e.delayMs), code: e.error.code, err: describeError(e.error) };
    if (t - this.lastLineMs < RETRY_REPORT_MS) {
      log().debug(fields, 'store operation failed, retrying');
      return;
    }
    log().warn({ ...fields, retries: this.unreported, failingForMs: Math.round(t - this.failingSince) }, 'store operation failed, retrying');
    this.lastLineMs = t;
    this.unreported = 0;
    this.reported = true;
  }

  succeeded(): void {
    if (this.failingSince === null) return;
    if (this.reported) log().info({ store: this.store, failedForMs: Math.round(this.now() - this.failingSince), retries: this.retries }, 'store operations succeed again');
    this.failingSince = null;
    this.reported = false;
    this.retries = 0;
    this.unreported = 0;
  }
}
