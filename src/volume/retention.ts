// Retention policies for snapshots, with the semantics restic documents for `forget`
// (restic internal/restic/snapshot_policy.go): snapshots are walked newest first; each
// `keep-<unit> N` rule keeps the newest snapshot of each of the N most recent buckets (hour, day,
// ISO week, month, year of the creation time) that hold a snapshot, and — while it still has counts
// left when the walk reaches the oldest snapshot — that oldest one too; `keep-last N` keeps the N
// newest; `keep-within D` keeps every snapshot created within D of the newest one (not of now). A
// snapshot kept by any rule is kept. Buckets are taken in UTC, so a plan is the same on every
// machine. Snapshots carrying the keep flag are always kept, and count in the rules like any other (as
// restic's tagged keeps do): `--keep-last 1` with the newest flagged keeps that one alone.
// Pure: the caller passes the snapshots and the clock.
import { VaultError } from '../errors';

export type BucketRule = 'last' | 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';
export const BUCKET_RULES: readonly BucketRule[] = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'];

/** restic's `1y2m3d4h`: calendar years, months, days and hours. */
export interface CalendarDuration {
  readonly years: number;
  readonly months: number;
  readonly days: number;
  readonly hours: number;
}

export interface RetentionPolicy {
  /** how many buckets each rule keeps; -1 = every bucket ("keep all") */
  readonly counts: Partial<Record<BucketRule, number>>;
  readonly within?: CalendarDuration;
}

export interface RetentionCandidate {
  readonly name: string;
  readonly createdAt: string;
  /** the snapshot's keep flag: never removed */
  readonly keep?: boolean;
}

export interface RetentionDecision<T extends RetentionCandidate> {
  readonly snapshot: T;
  readonly keep: boolean;
  /** why it is kept, e.g. ["daily snapshot", "within 7d"]; empty when removed */
  readonly reasons: string[];
}

const REASON: Record<BucketRule, string> = {
  last: 'last snapshot',
  hourly: 'hourly snapshot',
  daily: 'daily snapshot',
  weekly: 'weekly snapshot',
  monthly: 'monthly snapshot',
  yearly: 'yearly snapshot',
};

export function isEmptyPolicy(p: RetentionPolicy): boolean {
  return BUCKET_RULES.every((r) => !p.counts[r]) && (p.within === undefined || durationIsZero(p.within));
}

/** Decide, for every snapshot, whether the policy keeps it. Result: newest first. */
export function planRetention<T extends RetentionCandidate>(snapshots: readonly T[], policy: RetentionPolicy, now: Date = new Date()): RetentionDecision<T>[] {
  // An empty policy would remove everything: refused, as restic does.
  if (isEmptyPolicy(policy)) throw new VaultError('ERR_INVALID_ARGUMENT', 'the retention policy keeps nothing: give at least one --keep-* rule');
  const list = snapshots
    .map((s) => ({ s, t: parseTime(s) }))
    .sort((a, b) => b.t - a.t || b.s.name.localeCompare(a.s.name));
  const buckets = BUCKET_RULES.map((rule) => ({ rule, count: policy.counts[rule] ?? 0, last: NaN as number }));
  // Counted from the newest snapshot that is not in the future (restic's findLatestTimestamp).
  const latest = list.find((x) => x.t <= now.getTime())?.t ?? now.getTime();
  const withinFrom = policy.within && !durationIsZero(policy.within) ? subtract(latest, policy.within) : null;
  return list.map(({ s, t }, nr) => {
    const reasons: string[] = [];
    if (s.keep) reasons.push('keep flag');
    if (withinFrom !== null && t > withinFrom) reasons.push(`within ${formatDuration(policy.within!)}`);
    for (const b of buckets) {
      if (b.count === 0 || b.count < -1) continue;
      const val = b.rule === 'last' ? nr : bucketOf(b.rule, t);
      // also the oldest snapshot while counts are left: the longest history the counts allow
      if (val !== b.last || nr === list.length - 1) {
        const onlyAsOldest = val === b.last;
        b.last = val;
        if (b.count > 0) b.count--;
        reasons.push(onlyAsOldest ? `oldest ${REASON[b.rule]}` : REASON[b.rule]);
      }
    }
    return { snapshot: s, keep: reasons.length > 0, reasons };
  });
}

function parseTime(s: RetentionCandidate): number {
  const t = Date.parse(s.createdAt);
  if (!Number.isFinite(t)) throw new VaultError('ERR_CORRUPT', `snapshot "${s.name}" has an invalid creation time ${JSON.stringify(s.createdAt)}`);
  return t;
}

/** The bucket of a time (UTC), as restic's bucker functions: YYYYMMDDHH, YYYYMMDD, YYYYWW, … */
export function bucketOf(rule: Exclude<BucketRule, 'last'>, t: number): number {
  const d = new Date(t);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth() + 1;
  const day = d.getUTCDate();
  switch (rule) {
    case 'hourly':
      return y * 1_000_000 + m * 10_000 + day * 100 + d.getUTCHours();
    case 'daily':
      return y * 10_000 + m * 100 + day;
    case 'weekly': {
      const [wy, w] = isoWeek(d);
      return wy * 100 + w;
    }
    case 'monthly':
      return y * 100 + m;
    case 'yearly':
      return y;
  }
}

/** ISO 8601 week-numbering year and week (weeks start on Monday; week 1 holds a Thursday). */
export function isoWeek(d: Date): [number, number] {
  const day = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
  const dow = (new Date(day).getUTCDay() + 6) % 7; // Monday 0 … Sunday 6
  const thursday = new Date(day + (3 - dow) * 86_400_000);
  const year = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / (7 * 86_400_000));
  return [year, week];
}

/** Go's time.AddDate(-y, -m, -d).Add(-h hours) in UTC (out-of-range days normalise the same way). */
function subtract(t: number, d: CalendarDuration): number {
  const x = new Date(t);
  x.setUTCFullYear(x.getUTCFullYear() - d.years, x.getUTCMonth() - d.months, x.getUTCDate() - d.days);
  return x.getTime() - d.hours * 3_600_000;
}

function durationIsZero(d: CalendarDuration): boolean {
  return d.years === 0 && d.months === 0 && d.days === 0 && d.hours === 0;
}

export function formatDuration(d: CalendarDuration): string {
  const parts = [d.years && `${d.years}y`, d.months && `${d.months}m`, d.days && `${d.days}d`, d.hours && `${d.hours}h`].filter(Boolean);
  return parts.length > 0 ? parts.join('') : '0h';
}

/** restic's duration syntax: `1y2m3d4h`, any subset in this order (`7d`, `36h`, `1y6m`). */
export function parseCalendarDuration(text: string): CalendarDuration {
  const m = /^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?$/.exec(text.trim());
  if (!m || text.trim() === '') throw new VaultError('ERR_INVALID_ARGUMENT', `invalid duration "${text}": use y, m, d and h, e.g. 7d, 36h, 1y6m`);
  const [years, months, days, hours] = m.slice(1).map((v) => (v === undefined ? 0 : Number(v)));
  return { years, months, days, hours };
}

/** A count of `--keep-<rule> N`: a whole number, or -1 / "unlimited" for every bucket. */
export function parseKeepCount(rule: string, text: string): number {
  if (text === 'unlimited' || text === '-1') return -1;
  if (!/^\d+$/.test(text)) throw new VaultError('ERR_INVALID_ARGUMENT', `--keep-${rule} wants a whole number (or -1 for all), got "${text}"`);
  return Number(text);
}

/**
 * A policy written as one string (`serve --prune`, config files): rules separated by spaces or
 * commas, each `RULE=VALUE` or `RULE VALUE`, RULE one of last, hourly, daily, weekly, monthly,
 * yearly, within, optionally spelled as the prune flag (`--keep-daily 7`, `keep-daily=7`).
 */
export function parseRetentionPolicy(text: string): RetentionPolicy {
  const tokens = text.split(/[\s,]+/).filter(Boolean).flatMap((t) => (t.includes('=') ? t.split('=') : [t]));
  const counts: Partial<Record<BucketRule, number>> = {};
  let within: CalendarDuration | undefined;
  for (let k = 0; k < tokens.length; k += 2) {
    const rule = tokens[k].replace(/^(--)?keep-/, '');
    const value = tokens[k + 1];
    if (value === undefined) throw new VaultError('ERR_INVALID_ARGUMENT', `retention policy "${text}": "${tokens[k]}" has no value`);
    if (rule === 'within') within = parseCalendarDuration(value);
    else if ((BUCKET_RULES as readonly string[]).includes(rule)) counts[rule as BucketRule] = parseKeepCount(rule, value);
    else throw new VaultError('ERR_INVALID_ARGUMENT', `retention policy "${text}": unknown rule "${tokens[k]}" (known: ${[...BUCKET_RULES, 'within'].join(', ')})`);
  }
  const policy = { counts, within };
  if (isEmptyPolicy(policy)) throw new VaultError('ERR_INVALID_ARGUMENT', `retention policy "${text}" keeps nothing: give at least one rule, e.g. "daily=7,weekly=4"`);
  return policy;
}

export function describePolicy(p: RetentionPolicy): string {
  const parts = BUCKET_RULES.filter((r) => p.counts[r]).map((r) => `${p.counts[r] === -1 ? 'all' : p.counts[r]} ${r === 'last' ? 'latest' : r}`);
  if (p.within && !durationIsZero(p.within)) parts.push(`all within ${formatDuration(p.within)} of the newest`);
  return `keep ${parts.join(', ')}`;
}
