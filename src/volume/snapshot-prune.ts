// `snapshot prune`: apply a retention policy (retention.ts) to a volume's snapshots and delete
// what it does not keep, each through Vault.deleteSnapshot — the same path as `snapshot delete`,
// so objects are freed the same way and a running server, clones and gc are as safe as there.
// Never removed: snapshots with the keep flag (deleteSnapshot refuses them too, closing the race
// with a flag set after the plan) and snapshots a clone is made from. Not counted: the temporary
// snapshot an export reads a served volume through.
import { isVaultError } from '../errors';
import type { Logger } from '../util/log';
import { planRetention, type RetentionPolicy } from './retention';
import { TEMPORARY_EXPORT_SNAPSHOT, type SnapshotRecord } from './snapshot-record';
import type { Vault } from './vault';

export interface PruneOptions {
  readonly policy: RetentionPolicy;
  readonly dryRun: boolean;
  /** the clock (tests set it); default: now */
  readonly now?: Date;
  /** prune only the snapshots whose name this accepts (serve's schedule: its own); others are left alone */
  readonly match?: (name: string) => boolean;
}

export interface PruneDecision {
  readonly name: string;
  readonly createdAt: string;
  readonly keep: boolean;
  /** the rules that keep it (empty: removed) */
  readonly reasons: string[];
  /** objects its removal freed (0 in a dry run) */
  readonly freedObjects: number;
}

export interface PruneResult {
  readonly volume: string;
  readonly dryRun: boolean;
  /** newest first */
  readonly snapshots: PruneDecision[];
  readonly kept: number;
  readonly removed: number;
  readonly freedObjects: number;
}

/** Ids of the snapshots of `volumeId` that some clone is made from. */
async function clonedSnapshotIds(vault: Vault, volumeId: string): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const v of await vault.listVolumes({ strict: true })) {
    if (v.id === volumeId) continue;
    const { root } = await vault.loadVolume(v.name, v);
    if (root.origin?.volumeId === volumeId) ids.add(root.origin.snapshotId);
  }
  return ids;
}

export async function pruneSnapshots(vault: Vault, volumeName: string, opts: PruneOptions, logger: Logger): Promise<PruneResult> {
  const { meta, objects } = await vault.loadVolume(volumeName);
  // (an export's temporary snapshot is no backup: counted, it took the "last" or today's slot
  // from a real one, which was removed, and the export then deleted its own)
  const snaps: SnapshotRecord[] = (await objects.listSnapshots()).filter((x) => !TEMPORARY_EXPORT_SNAPSHOT.test(x.name) && (opts.match?.(x.name) ?? true));
  const cloned = await clonedSnapshotIds(vault, meta.id);
  const plan = planRetention(snaps, opts.policy, opts.now ?? new Date());
  const decisions: PruneDecision[] = [];
  for (const d of plan) {
    const reasons = [...d.reasons];
    if (cloned.has(d.snapshot.id)) reasons.push('has clones');
    // a dry run says what the run would do: a snapshot a client reads is kept by it
    if (opts.dryRun && reasons.length === 0 && (await vault.snapshotBeingRead(volumeName, d.snapshot.id))) reasons.push('being read');
    let keep = reasons.length > 0;
    let freed = 0;
    if (!keep && !opts.dryRun) {
      try {
        freed = (await vault.deleteSnapshot(volumeName, d.snapshot.name)).freedObjects;
      } catch (err) {
        // A clone made, or the keep flag set, after the plan: the snapshot stays.
        if (isVaultError(err, 'ERR_EXISTS')) {
          keep = true;
          reasons.push(err.message.includes('keep flag') ? 'keep flag' : err.message.includes('is being read by') ? 'being read' : 'has clones');
        } else if (!isVaultError(err, 'ERR_NOT_FOUND')) throw err; // (gone already: removed all the same)
      }
    }
    decisions.push({ name: d.snapshot.name, createdAt: d.snapshot.createdAt, keep, reasons, freedObjects: freed });
  }
  const removed = decisions.filter((d) => !d.keep).length;
  const freedObjects = decisions.reduce((n, d) => n + d.freedObjects, 0);
  logger.info({ volume: volumeName, kept: decisions.length - removed, removed, freedObjects, dryRun: opts.dryRun }, 'snapshots pruned');
  return { volume: volumeName, dryRun: opts.dryRun, snapshots: decisions, kept: decisions.length - removed, removed, freedObjects };
}
