// `nbd-vault snapshot VOL [NAME]` (= snapshot create), `snapshot list VOL`, `snapshot delete VOL NAME`.
// When a server is serving the vault with this state directory, create goes through its admin
// socket (it flushes and freezes at one consistent point while clients keep writing); otherwise
// the CLI works on the store directly.
import type { Command } from 'commander';
import { VaultError } from '../errors';
import { reservedSnapshotName, type SnapshotRecord } from '../volume/snapshot-record';
import { formatSize } from '../util/size';
import { formatTable } from '../util/text-table';
import { splitExportName } from '../volume/volume-references';
import { adminRequest, servesThis } from './admin-socket';
import { addSettings } from './settings';
import { out, VAULT_SETTINGS, withVault } from './vault-context';


/**
 * The snapshot a command names, as `VOL NAME` or as the export name `VOL@NAME` that `snapshot
 * list` prints. Both at once, or neither name, is a usage error.
 */
export function snapshotArgs(command: string, volume: string, name: string | undefined): [string, string] {
  const [vol, snap] = splitExportName(volume);
  if (snap !== null && name === undefined && vol && snap) return [vol, snap];
  if (snap === null && name !== undefined) return [volume, name];
  throw new VaultError('ERR_INVALID_ARGUMENT', `which snapshot? usage: nbd-vault snapshot ${command} VOLUME NAME (or VOLUME@NAME)`);
}

export function defaultSnapshotName(now = new Date()): string {
  return now.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

async function createSnapshot(volume: string, name: string | undefined, opts: Record<string, unknown>): Promise<void> {
  // ("" would be the default export to a running server, and no volume to the store)
  if (volume === '') throw new VaultError('ERR_INVALID_ARGUMENT', 'which volume? usage: nbd-vault snapshot create VOLUME [NAME]');
  if (name === '') throw new VaultError('ERR_INVALID_ARGUMENT', 'a snapshot name cannot be empty (leave it out for one made of the time)');
  const reserved = name === undefined ? null : reservedSnapshotName(name);
  if (reserved) throw new VaultError('ERR_INVALID_ARGUMENT', reserved);
  const snapName = name ?? defaultSnapshotName();
  await withVault(opts, async (ctx, s) => {
    const started = process.hrtime.bigint();
    const keep = opts.keep === true;
    const reply = await adminRequest(s.state, { op: 'snapshot', volume, name: snapName, ...(keep ? { keep } : {}) });
    let record: SnapshotRecord;
    let via: string;
    if (servesThis(reply, ctx)) {
      if (!reply.ok) throw new VaultError(reply.code, reply.message);
      record = reply.result as SnapshotRecord;
      via = 'through the running server';
    } else {
      record = await ctx.vault.createSnapshot(volume, snapName, { keep });
      via = 'on the store';
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (opts.json) out(JSON.stringify({ volume, name: record.name, createdAt: record.createdAt, size: record.size, keep: Boolean(record.keep), ms: Math.round(ms) }, null, 2));
    else out(`created snapshot ${volume}@${record.name} (${formatSize(record.size)})${record.keep ? ' with the keep flag' : ''} ${via} in ${ms.toFixed(0)} ms`);
  });
}

export function registerSnapshotCommands(program: Command): void {
  const snap = addSettings(
    program
      .command('snapshot')
      .description('Snapshot a volume (O(1): copies no chunk); also: snapshot create|list|delete|prune|keep')
      .argument('[volume]', 'volume to snapshot')
      .argument('[name]', 'snapshot name (default: the UTC time)')
      .option('--keep', 'flag it so that prune never removes it')
      .option('--json', 'print JSON'),
    VAULT_SETTINGS,
  ).action(async (volume: string | undefined, name: string | undefined, opts) => {
    if (!volume) throw new VaultError('ERR_INVALID_ARGUMENT', 'which volume? usage: nbd-vault snapshot VOLUME [NAME]');
    await createSnapshot(volume, name, opts);
  });

  addSettings(snap.command('create <volume> [name]').description('Snapshot a volume').option('--keep', 'flag it so that prune never removes it').option('--json', 'print JSON'), VAULT_SETTINGS).action(
    async (volume: string, name: string | undefined, _opts, cmd: Command) => createSnapshot(volume, name, cmd.optsWithGlobals()),
  );

  addSettings(snap.command('list <volume>').description("List a volume's snapshots").option('--json', 'print JSON'), VAULT_SETTINGS).action(
    async (volume: string, _opts, cmd: Command) => {
      // (options after the subcommand's arguments land on the parent `snapshot` command, which
      // declares the same ones: optsWithGlobals sees both)
      const opts = cmd.optsWithGlobals();
      return withVault(opts, async (ctx) => {
        const snaps = await ctx.vault.listSnapshots(volume);
        if (opts.json) return out(JSON.stringify(snaps.map((x) => ({ name: x.name, export: `${volume}@${x.name}`, createdAt: x.createdAt, size: x.size, keep: Boolean(x.keep) })), null, 2));
        if (snaps.length === 0) return out(`volume ${volume} has no snapshots`);
        out(formatTable([['EXPORT', 'CREATED', 'SIZE', 'KEEP'], ...snaps.map((x) => [`${volume}@${x.name}`, x.createdAt, formatSize(x.size), x.keep ? 'keep' : ''])]));
      });
    },
  );

  addSettings(snap.command('delete <volume> [name]').description('Delete a snapshot (VOLUME NAME or VOLUME@NAME) and the objects only it referenced').option('--json', 'print JSON'), VAULT_SETTINGS).action(
    async (volumeArg: string, nameArg: string | undefined, _opts, cmd: Command) => {
      const opts = cmd.optsWithGlobals();
      return withVault(opts, async (ctx) => {
        const [volume, name] = snapshotArgs('delete', volumeArg, nameArg);
        const r = await ctx.vault.deleteSnapshot(volume, name);
        if (opts.json) out(JSON.stringify({ volume, snapshot: name, freedObjects: r.freedObjects }, null, 2));
        else out(`deleted snapshot ${volume}@${name} (freed ${r.freedObjects} objects)`);
      });
    },
  );
}
