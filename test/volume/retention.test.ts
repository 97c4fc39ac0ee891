// Retention plans against the examples restic documents for `forget` (doc/060_forget.rst) and
// the rules of its snapshot_policy.go, with creation times the test sets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VaultError } from '../../src/errors';
import { isoWeek, parseCalendarDuration, parseRetentionPolicy, planRetention, type RetentionCandidate } from '../../src/volume/retention';

// restic's example: one backup every Sunday at 11:00 for 12 weeks.
const SUNDAYS = ['2019-09-01', '2019-09-08', '2019-09-15', '2019-09-22', '2019-09-29', '2019-10-06', '2019-10-13', '2019-10-20', '2019-10-27', '2019-11-03', '2019-11-10', '2019-11-17'];
const sundays = (): RetentionCandidate[] => SUNDAYS.map((d) => ({ name: d, createdAt: `${d}T11:00:00Z` }));
const NOW = new Date('2019-11-20T00:00:00Z');

function kept(snaps: RetentionCandidate[], policy: string, now = NOW): string[] {
  return planRetention(snaps, parseRetentionPolicy(policy), now)
    .filter((d) => d.keep)
    .map((d) => d.snapshot.name)
    .sort();
}

test('restic example: --keep-daily 4 over 12 Sundays keeps the last four Sundays', () => {
  const plan = planRetention(sundays(), parseRetentionPolicy('--keep-daily 4'), NOW);
  assert.deepEqual(plan.filter((d) => d.keep).map((d) => d.snapshot.name), ['2019-11-17', '2019-11-10', '2019-11-03', '2019-10-27']);
  assert.deepEqual(plan.filter((d) => d.keep).map((d) => d.reasons), Array(4).fill(['daily snapshot']));
  assert.equal(plan.filter((d) => !d.keep).length, 8);
  assert.ok(plan.filter((d) => !d.keep).every((d) => d.reasons.length === 0));
});

test('bucket rules: newest per bucket, counts of buckets, the oldest kept while counts are left', () => {
  assert.deepEqual(kept(sundays(), 'last=3'), ['2019-11-03', '2019-11-10', '2019-11-17']);
  assert.deepEqual(kept(sundays(), 'weekly=2'), ['2019-11-10', '2019-11-17']);
  // monthly 2: the newest of November and of October
  assert.deepEqual(kept(sundays(), 'monthly=2'), ['2019-10-27', '2019-11-17']);
  // monthly 4: Nov, Oct, Sep (the 29th), and a count left → the oldest snapshot too
  const plan = planRetention(sundays(), parseRetentionPolicy('monthly=4'), NOW);
  assert.deepEqual(plan.filter((d) => d.keep).map((d) => [d.snapshot.name, d.reasons.join()]), [
    ['2019-11-17', 'monthly snapshot'],
    ['2019-10-27', 'monthly snapshot'],
    ['2019-09-29', 'monthly snapshot'],
    ['2019-09-01', 'oldest monthly snapshot'],
  ]);
  // more weekly counts than snapshots: everything stays
  assert.equal(kept(sundays(), 'weekly=20').length, 12);
  // -1: every bucket
  assert.equal(kept(sundays(), 'yearly=-1').length, 2, 'one year bucket (2019) plus the oldest');
  // rules are ORed: a snapshot kept by any rule is kept
  assert.deepEqual(kept(sundays(), 'last=1,monthly=2'), ['2019-10-27', '2019-11-17']);
  const both = planRetention(sundays(), parseRetentionPolicy('last=1 daily=1 weekly=1'), NOW)[0];
  assert.deepEqual(both.reasons, ['last snapshot', 'daily snapshot', 'weekly snapshot']);
});

test('hourly buckets and several snapshots per bucket: the newest of each bucket is kept', () => {
  const snaps = ['10:05', '10:40', '11:10', '11:55', '12:30'].map((t) => ({ name: t, createdAt: `2024-03-01T${t}:00Z` }));
  assert.deepEqual(kept(snaps, 'hourly=2', new Date('2024-03-02T00:00:00Z')), ['11:55', '12:30']);
  assert.deepEqual(kept(snaps, 'hourly=3', new Date('2024-03-02T00:00:00Z')), ['10:40', '11:55', '12:30']);
});

test('--keep-within counts back from the newest snapshot, not from now', () => {
  // a month after the last backup, "within 14d" still keeps the last two weeks of backups
  assert.deepEqual(kept(sundays(), 'within=14d', new Date('2019-12-20T00:00:00Z')), ['2019-11-10', '2019-11-17']);
  assert.deepEqual(kept(sundays(), 'within=1m', new Date('2019-12-20T00:00:00Z')), ['2019-10-20', '2019-10-27', '2019-11-03', '2019-11-10', '2019-11-17']);
  // a snapshot in the future does not count as the newest
  const future = [...sundays(), { name: 'future', createdAt: '2030-01-01T00:00:00Z' }];
  assert.deepEqual(kept(future, 'within=7d'), ['2019-11-17', 'future']);
});

test('restic example: daily backups, --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --keep-yearly 75', () => {
  // "one backup every day for 100 years": 7 dailies, 4 more weeklies, 12 or 11 monthlies, 75 or 74 yearlies
  const snaps: RetentionCandidate[] = [];
  // (ending on a Sunday, so that the 7 dailies are one ISO week, as the docs' arithmetic assumes)
  for (let t = Date.UTC(1925, 0, 1, 3); t < Date.UTC(2024, 11, 30); t += 86_400_000) snaps.push({ name: String(t), createdAt: new Date(t).toISOString() });
  const plan = planRetention(snaps, parseRetentionPolicy('daily=7 weekly=5 monthly=12 yearly=75'), new Date('2025-01-02T00:00:00Z'));
  const keep = plan.filter((d) => d.keep);
  assert.ok(keep.length >= 7 + 4 + 11 + 74 && keep.length <= 7 + 4 + 12 + 75, `kept ${keep.length}`);
  assert.deepEqual(plan.slice(0, 7).map((d) => d.keep), Array(7).fill(true), 'the 7 newest days');
  const count = (r: string) => keep.filter((d) => d.reasons.includes(r)).length;
  assert.equal(count('daily snapshot'), 7);
  assert.equal(count('weekly snapshot'), 5);
  assert.equal(count('monthly snapshot'), 12);
  assert.equal(count('yearly snapshot'), 75);
  assert.equal(keep.length, 7 + 4 + 11 + 74, 'here: the newest is daily, weekly, monthly and yearly at once');
  // the yearlies are the last day of each year (but the newest, 2024-12-29)
  assert.ok(keep.filter((d) => d.reasons.includes('yearly snapshot')).slice(1).every((d) => d.snapshot.createdAt.slice(5, 10) === '12-31'));
  assert.equal(keep.at(-1)!.snapshot.createdAt.slice(0, 4), '1950', 'no count is left for the oldest');
});

test('the keep flag: kept under every policy', () => {
  const snaps = sundays().map((s) => (s.name === '2019-11-17' || s.name === '2019-09-08' ? { ...s, keep: true } : s));
  const plan = planRetention(snaps, parseRetentionPolicy('last=2'), NOW);
  assert.deepEqual(plan.filter((d) => d.keep).map((d) => [d.snapshot.name, d.reasons.join()]), [
    ['2019-11-17', 'keep flag,last snapshot'],
    ['2019-11-10', 'last snapshot'],
    ['2019-09-08', 'keep flag'],
  ]);
  for (const policy of ['last=1', 'daily=1', 'within=1h', 'yearly=1', 'monthly=1']) {
    assert.ok(kept(snaps, policy).includes('2019-09-08'), policy);
  }
});

test('ISO weeks, durations and policy strings', () => {
  assert.deepEqual(isoWeek(new Date('2019-12-30T00:00:00Z')), [2020, 1], 'a Monday in week 1 of the next year');
  assert.deepEqual(isoWeek(new Date('2021-01-03T00:00:00Z')), [2020, 53]);
  assert.deepEqual(isoWeek(new Date('2019-11-17T11:00:00Z')), [2019, 46]);
  assert.deepEqual(parseCalendarDuration('1y2m3d4h'), { years: 1, months: 2, days: 3, hours: 4 });
  assert.deepEqual(parseRetentionPolicy('--keep-daily 7 --keep-weekly 4 --keep-within 2d'), { counts: { daily: 7, weekly: 4 }, within: { years: 0, months: 0, days: 2, hours: 0 } });
  assert.deepEqual(parseRetentionPolicy('keep-last=3,hourly=unlimited').counts, { last: 3, hourly: -1 });
  const bad = (text: string, re: RegExp) => assert.throws(() => parseRetentionPolicy(text), (e: VaultError) => e.code === 'ERR_INVALID_ARGUMENT' && re.test(e.message));
  bad('daily=7,fortnightly=2', /unknown rule "fortnightly"/);
  bad('daily', /has no value/);
  bad('daily=seven', /whole number/);
  bad('within=1w', /invalid duration "1w"/);
  bad('last=0', /keeps nothing/);
  assert.throws(() => planRetention(sundays(), { counts: {} }), (e: VaultError) => e.code === 'ERR_INVALID_ARGUMENT');
});
