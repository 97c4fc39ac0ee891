// `nbd-vault sync --to STORE [VOL…]`: copy the vault's snapshots to a second store (a replica
// that is itself a complete vault). Thin: open both stores, run VaultSync, print. The master key
// reads manifests and seals the replica's roots; chunks are copied sealed, never opened.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { VaultError } from '../errors';
import { FsStore, baseStoreName, findLayer, openStore, type ObjectStore } from '../store';
import { formatSize } from '../util/size';
import { VAULT_KEY } from '../volume/object-keys';
import { Vault } from '../volume/vault';
import { VaultSync } from '../volume/vault-sync';
import { Progress } from './progress';
import { addSettings } from './settings';
import { out, VAULT_SETTINGS, withVault } from './vault-context';

export function registerSyncCommand(program: Command): void {
  const cmd = program
    .command('sync [volumes...]')
    .description("Copy the vault's snapshots (sealed, incremental, resumable) to another store: a replica you can serve with the same keys")
    .requiredOption('--to <url>', 'destination store (directory, file://, s3://…): empty, or a replica of this vault')
    .option('--prune', 'also delete from the replica the snapshots deleted from the source')
    .option('--parallel <n>', 'objects copied at once (memory: n × 4 MiB at most)', '16')
    .option('--json', 'print {"copied","bytes","skipped","snapshots",…} as JSON');
  addSettings(cmd, VAULT_SETTINGS).action(async (volumes: string[], opts) => {
    const parallel = Number(opts.parallel);
    if (!Number.isSafeInteger(parallel) || parallel <= 0 || parallel > 256) throw new VaultError('ERR_INVALID_ARGUMENT', `--parallel wants 1 to 256, got "${opts.parallel}"`);
    await withVault(opts, async (ctx) => {
      const dest = openStore(opts.to);
      if (dest.name === ctx.store.name) throw new VaultError('ERR_INVALID_ARGUMENT', `--to names the source store itself (${dest.name})`);
      await refuseForeignDirectory(dest).catch(async (err) => {
        await dest.close();
        throw err;
      });
      // The replica has the source's vault id: it gets a private state directory, so its roots are
      // never compared with the source's sequence numbers this machine remembers.
      const replicaState = await mkdtemp(join(tmpdir(), 'nbd-vault-sync-'));
      const destName = baseStoreName(dest);
      const bar = new Progress(`sync to ${destName}`, 0, 'bytes');
      try {
        const sync = new VaultSync(
          ctx.vault,
          dest,
          () => Vault.open(dest, ctx.master, ctx.codec, { stateDir: replicaState, logger: ctx.logger }),
          { volumes, prune: Boolean(opts.prune), concurrency: parallel, onProgress: (done, total) => bar.update(done, total) },
          ctx.logger,
        );
        const r = await sync.run();
        bar.done();
        // a snapshot not copied is a backup that did not happen: cron must hear of it
        const notCopied = r.snapshots.filter((s) => s.status === 'name-taken' || s.status === 'held' || s.status === 'damaged');
        if (r.nameTaken.length > 0 || notCopied.length > 0) process.exitCode = 1;
        if (opts.json) return out(JSON.stringify(r, null, 2));
        const fresh = r.snapshots.filter((s) => s.status === 'copied').length;
        out(`synced to ${destName}: ${fresh} new snapshot(s) of ${r.snapshots.length}, ${r.copied} objects copied (${formatSize(r.bytes)}), ${r.skipped} already in the replica (from an earlier sync, or shared with a snapshot copied before)`);
        for (const s of r.snapshots) {
          if (s.status === 'name-taken' || s.status === 'held' || s.status === 'damaged') out(`  FAILED   ${s.export} (${s.status}): ${s.reason}`);
          else if (s.status !== 'present') out(`  ${s.status.padEnd(8)} ${s.export}`);
        }
        for (const p of r.pruned) out(`  pruned   ${p}`);
        for (const v of r.withoutSnapshots) out(`  skipped  ${v} (no snapshot: snapshot it first)`);
        for (const c of r.nameTaken) {
          const fix = `delete that one from the replica (nbd-vault volume delete ${c.origin ?? c.volume} --id ${c.replicaId} --store '${opts.to}' --yes), then sync again`;
          if (c.origin) out(`  FAILED   ${c.volume}: a clone of ${c.origin}, whose name the replica has for another volume (id ${c.replicaId}): ${fix}`);
          else out(`  FAILED   ${c.volume}: the replica has another volume of this name (id ${c.replicaId}; the source's is ${c.sourceId}): ${fix}`);
        }
      } finally {
        await rm(replicaState, { recursive: true, force: true });
        await dest.close();
      }
    });
  });
}

/** A directory that holds files but no vault (a mistyped path): sync would write a vault among
 *  them. (The store's own listing sees only names of its layout; an S3 bucket is checked by the
 *  sync itself.) */
async function refuseForeignDirectory(dest: ObjectStore): Promise<void> {
  const fs = findLayer(dest, FsStore);
  if (!fs || (await dest.head(VAULT_KEY))) return;
  const names = await readdir(fs.root).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  // (the store's own names: a first sync cut off before its `vault` object leaves them; and a
  // file system's own directory at the root of a disk mounted for backups)
  const foreign = names.filter((n) => !n.startsWith('~') && !n.endsWith('~') && n !== 'volumes' && n !== 'vault' && n !== 'lost+found');
  if (foreign.length > 0) throw new VaultError('ERR_EXISTS', `${fs.root} is not empty (it holds "${foreign[0]}", and no vault): a replica must start empty or hold this vault`);
}
