// `serve --snapshot-every DURATION [--prune POLICY]`: scheduled snapshots without cron. Every
// period, each volume this server has open for writing is snapshotted through the same path as
// the admin socket's `snapshot` (one consistent point while clients keep writing), named
// `auto-<UTC time>`; then, with a policy, the volume's snapshots of exactly that form are pruned
// (snapshots taken by hand are never touched by the schedule: `auto-before-upgrade` was, and
// `snapshot create` refuses a name of the schedule's form). One run at a time; failures are logged and
// the next period tries again.
import { VaultError, describeError } from '../errors';
import type { Logger } from '../util/log';
import { describePolicy, type RetentionPolicy } from '../volume/retention';
import { pruneSnapshots } from '../volume/snapshot-prune';
import { SCHEDULED_SNAPSHOT } from '../volume/snapshot-record';
import { removeAbandonedSnapshots } from './temporary-snapshots';
import type { Vault } from '../volume/vault';
import type { VaultExportProvider } from './vault-export-provider';

export const AUTO_PREFIX = 'auto-';

/** `90s`, `15m`, `1h30m`, `1d` (m = minutes here) → milliseconds. */
const MAX_INTERVAL_MS = 366 * 86_400_000;
/** Node fires a timer of more than 2^31 - 1 ms (24.8 days) after 1 ms: a longer wait is taken
 *  in pieces. */
const LONGEST_TIMER_MS = 2 ** 31 - 1;

export function parseInterval(text: string): number {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text.trim());
  const [d, h, min, s] = (m?.slice(1) ?? []).map((v) => Number(v ?? 0));
  const ms = m && text.trim() !== '' ? (((d * 24 + h) * 60 + min) * 60 + s) * 1000 : NaN;
  if (!(ms >= 1000 && ms <= MAX_INTERVAL_MS)) throw new VaultError('ERR_INVALID_ARGUMENT', `--snapshot-every wants a duration from 1s to 366d such as 90s, 15m, 1h or 1d, got "${text}"`);
  return ms;
}

export function autoSnapshotName(now: Date): string {
  return AUTO_PREFIX + now.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

export interface ScheduleOptions {
  readonly vault: Vault;
  readonly provider: VaultExportProvider;
  readonly everyMs: number;
  readonly policy: RetentionPolicy | null;
  readonly logger: Logger;
  readonly now?: () => Date;
}

export class SnapshotSchedule {
  private timer: NodeJS.Timeout | null = null;
  /** when the next round is due (wall clock): rounds keep their cadence, as setInterval's did */
  private dueAt: number;
  private running: Promise<void> | null = null;
  private stopped = false;

  constructor(private readonly opts: ScheduleOptions) {
    this.dueAt = Date.now() + opts.everyMs;
    this.arm();
    opts.logger.info({ everyMs: opts.everyMs, prune: opts.policy ? describePolicy(opts.policy) : null }, 'snapshot schedule started');
  }

  private arm(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => this.fire(), Math.min(Math.max(0, this.dueAt - Date.now()), LONGEST_TIMER_MS));
    this.timer.unref();
  }

  private fire(): void {
    // a piece of a long wait, or a timer a few ms ahead of the wall clock: wait for the rest
    if (Date.now() < this.dueAt - 1000) return this.arm();
    const now = Date.now();
    this.dueAt += this.opts.everyMs;
    if (this.dueAt <= now) this.dueAt = now + this.opts.everyMs; // (the machine slept through rounds)
    this.arm();
    void this.tick();
  }

  /** One round now (the timer calls it; tests may too). Skipped while the previous one runs. */
  tick(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.round().finally(() => (this.running = null));
    return this.running;
  }

  private async round(): Promise<void> {
    const { provider, vault, logger, policy } = this.opts;
    const now = (this.opts.now ?? (() => new Date()))();
    const volumes = provider.takeWrittenNames();
    for (const volume of volumes) {
      if (this.stopped) return; // the server stops: the round's other volumes wait for the next start
      try {
        const snap = await provider.snapshot(volume, autoSnapshotName(now));
        logger.info({ volume, snapshot: snap.name }, 'scheduled snapshot taken');
        if (policy) {
          await removeAbandonedSnapshots(vault, logger, volume); // (kept: no policy removes them)
          await pruneSnapshots(vault, volume, { policy, dryRun: false, now, match: (n) => SCHEDULED_SNAPSHOT.test(n) }, logger);
        }
      } catch (err) {
        provider.stillUnsnapshotted(volume);
        logger.error({ volume, err: describeError(err) }, 'scheduled snapshot or prune failed; next period tries again');
      }
    }
  }

  /** No round starts, and the running one takes no further volume; settles once it has ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
