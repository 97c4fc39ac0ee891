// `nbd-vault snapshot prune VOL|--all` (retention policies, restic `forget` semantics) and
// `snapshot keep VOL NAME [--clear]` (the flag prune never removes). Thin: parse, call
// src/volume/snapshot-prune.ts, print.
import type { Command } from 'commander';
import { VaultError } from '../errors';
import { BUCKET_RULES, describePolicy, isEmptyPolicy, parseCalendarDuration, parseKeepCount, type BucketRule, type RetentionPolicy } from '../volume/retention';
import { pruneSnapshots, type PruneResult } from '../volume/snapshot-prune';
import { removeAbandonedSnapshots } from './temporary-snapshots';
import { addSettings } from './settings';
import { snapshotArgs } from './snapshot-commands';
import { out, VAULT_SETTINGS, withVault } from './vault-context';

/** The policy from `--keep-*` flags. */
export function policyFromFlags(opts: Record<string, unknown>): RetentionPolicy {
  const counts: Partial<Record<BucketRule, number>> = {};
  for (const rule of BUCKET_RULES) {
    const v = opts[`keep${rule[0].toUpperCase()}${rule.slice(1)}`];
    if (v !== undefined) counts[rule] = parseKeepCount(rule, String(v));
  }
  const within = opts.keepWithin === undefined ? undefined : parseCalendarDuration(String(opts.keepWithin));
  return { counts, within };
}

function printPlan(r: PruneResult): void {
  const verb = r.dryRun ? 'would' : 'did';
  out(`${r.volume}: ${verb} keep ${r.kept}, ${verb} remove ${r.removed} snapshot(s)${r.dryRun ? '' : `, freed ${r.freedObjects} objects`}`);
  for (const d of r.snapshots) {
    out(`  ${d.keep ? 'keep  ' : 'remove'}  ${r.volume}@${d.name}  ${d.createdAt}${d.keep ? `  (${d.reasons.join(', ')})` : ''}`);
  }
}

export function registerRetentionCommands(program: Command): void {
  const snap = program.commands.find((c) => c.name() === 'snapshot');
  if (!snap) throw new Error('the snapshot command must be registered first');

  const prune = snap
    .command('prune [volume]')
    .description("Remove a volume's snapshots that a retention policy does not keep (restic forget semantics; buckets in UTC)")
    .option('--all', 'prune every volume')
    .option('--keep-last <n>', 'keep the n newest snapshots')
    .option('--keep-hourly <n>', 'keep the newest snapshot of each of the last n hours that have one (-1: all)')
    .option('--keep-daily <n>', 'the same per day')
    .option('--keep-weekly <n>', 'the same per ISO week')
    .option('--keep-monthly <n>', 'the same per month')
    .option('--keep-yearly <n>', 'the same per year')
    .option('--keep-within <duration>', 'keep every snapshot created within this long of the newest, e.g. 7d, 1y6m, 36h')
    .option('--dry-run', 'list what would be kept and removed, change nothing')
    .option('--json', 'print JSON');
  addSettings(prune, VAULT_SETTINGS).action(async (volume: string | undefined, _opts, cmd: Command) => {
    // (options after the arguments may land on the parent `snapshot` command: see both)
    const opts = cmd.optsWithGlobals();
    if (Boolean(volume) === Boolean(opts.all)) throw new VaultError('ERR_INVALID_ARGUMENT', 'prune which volume? give one VOLUME or --all');
    const policy = policyFromFlags(opts);
    if (isEmptyPolicy(policy)) throw new VaultError('ERR_INVALID_ARGUMENT', 'the retention policy keeps nothing: give at least one --keep-* rule');
    await withVault(opts, async (ctx) => {
      const names = volume ? [volume] : (await ctx.vault.listVolumes()).map((v) => v.name);
      const results: PruneResult[] = [];
      for (const name of names) {
        // (the snapshots of exports killed here: kept from the policy, they would stay for good)
        if (!opts.dryRun) await removeAbandonedSnapshots(ctx.vault, ctx.logger, name);
        const r = await pruneSnapshots(ctx.vault, name, { policy, dryRun: Boolean(opts.dryRun) }, ctx.logger);
        results.push(r);
        if (!opts.json) printPlan(r);
      }
      if (opts.json) out(JSON.stringify({ policy: describePolicy(policy), dryRun: Boolean(opts.dryRun), volumes: results }, null, 2));
    });
  });

  addSettings(
    snap.command('keep <volume> [name]').description('Set the keep flag of a snapshot (VOLUME NAME or VOLUME@NAME; prune never removes it); --clear clears it').option('--clear', 'clear the flag').option('--json', 'print JSON'),
    VAULT_SETTINGS,
  ).action(async (volumeArg: string, nameArg: string | undefined, _opts, cmd: Command) => {
    // (options after the arguments may land on the parent `snapshot` command: see both)
    const opts = cmd.optsWithGlobals();
    return withVault(opts, async (ctx) => {
      const [volume, name] = snapshotArgs('keep', volumeArg, nameArg);
      const { objects } = await ctx.vault.loadVolume(volume);
      const found = (await objects.listSnapshots()).find((s) => s.name === name);
      if (!found) throw new VaultError('ERR_NOT_FOUND', `volume "${volume}" has no snapshot named "${name}"`);
      await objects.setSnapshotKeep(found.id, !opts.clear);
      if (opts.json) out(JSON.stringify({ volume, snapshot: name, keep: !opts.clear }, null, 2));
      else out(`${opts.clear ? 'cleared' : 'set'} the keep flag of ${volume}@${name}`);
    });
  });
}
