// `nbd-vault init` and `nbd-vault volume create|list|info|resize|delete`. Thin: resolve
// settings, open the vault, call it, print. --json prints one JSON document on stdout.
import type { Command } from 'commander';
import { VaultError } from '../errors';
import { formatSize, parseSize } from '../util/size';
import { formatTable } from '../util/text-table';
import { Progress } from './progress';
import { adminRequest, servesThis } from './admin-socket';
import { addSettings } from './settings';
import { out, VAULT_SETTINGS, withVault, type VaultContext } from './vault-context';

/** resize and delete change what a running server may be serving: refuse while one runs here. */
async function refuseWhileServed(ctx: VaultContext, stateDir: string, what: string): Promise<void> {
  const ping = await adminRequest(stateDir, { op: 'ping' });
  if (servesThis(ping, ctx)) {
    throw new VaultError('ERR_LEASE', `a server is serving this vault (state ${stateDir}): stop it before you ${what}`);
  }
}



function sizeArg(text: string): number {
  return parseSize(text);
}

export function registerVaultCommands(program: Command): void {
  addSettings(
    program
      .command('init')
      .description('Create a vault in the store (refuses a store that holds one, or holds volumes)')
      .option('--recover', 'rebuild a lost `vault` object for the volumes in the store (checked against their keys)')
      .option('--vault-id <id>', 'with --recover: the vault id, when the volumes do not name it'),
    VAULT_SETTINGS,
  ).action(async (opts) => {
    if (opts.vaultId !== undefined && !opts.recover) throw new VaultError('ERR_INVALID_ARGUMENT', '--vault-id goes with --recover');
    const recover = opts.recover ? ((opts.vaultId as string | undefined) ?? true) : undefined;
    await withVault(
      opts,
      async (ctx) => out(recover ? `rebuilt the vault object of vault ${ctx.vault.vaultId} in ${ctx.store.name}` : `created vault ${ctx.vault.vaultId} in ${ctx.store.name}`),
      { create: true, recover },
    );
  });

  const volume = program.command('volume').description('Create, list, inspect, resize and delete volumes');

  addSettings(volume.command('create <name>').description('Create an empty volume').requiredOption('--size <size>', 'size, e.g. 20G'), VAULT_SETTINGS)
    .option('--json', 'print JSON')
    .action(async (name: string, opts) => {
      const size = sizeArg(opts.size);
      await withVault(opts, async (ctx) => {
        const meta = await ctx.vault.createVolume(name, size);
        out(opts.json ? JSON.stringify({ name: meta.name, id: meta.id, size }, null, 2) : `created volume ${meta.name} (${formatSize(size)})`);
      });
    });

  addSettings(program.command('clone <snapshot> <name>').description('Create a writable volume from VOL@SNAP, sharing its chunks (O(1))'), VAULT_SETTINGS).action(
    async (snapshot: string, name: string, opts) => {
      await withVault(opts, async (ctx) => {
        const meta = await ctx.vault.cloneVolume(snapshot, name);
        out(`created volume ${meta.name} as a clone of ${snapshot}`);
      });
    },
  );

  const deletingNote = (i: { name: string; deletingAdvice: string | null }) => `volume "${i.name}" is being deleted (${i.deletingAdvice ?? 'a `volume delete` runs'}); it opens read-only only`;

  addSettings(volume.command('list').description('List volumes: name, size, allocated, snapshots'), VAULT_SETTINGS)
    .option('--json', 'print JSON')
    .action(async (opts) => {
      await withVault(opts, async (ctx) => {
        const unreadable: Array<{ id: string; error: string }> = [];
        const vols = await ctx.vault.listVolumes({ unreadable });
        // (a volume whose metadata cannot be read is listed as such, and the command fails)
        if (unreadable.length > 0) process.exitCode = 1;
        for (const u of unreadable) ctx.logger.error({ volumeId: u.id, err: u.error }, 'volume metadata cannot be read');
        // Every one settles before a failure is thrown: the close after it wipes the key, and the
        // reads still running then each logged a false "wrong key" error.
        const infos = [];
        for (const r of await Promise.allSettled(vols.map((v) => ctx.vault.volumeInfo(v.name, v)))) {
          if (r.status === 'rejected') throw r.reason;
          infos.push(r.value);
        }
        if (opts.json) return out(JSON.stringify(infos, null, 2)); // (the unreadable ones: logged, exit 1)
        for (const u of unreadable) out(`volume id ${u.id}: UNREADABLE metadata (${u.error}): restore its meta object from a replica or a backup`);
        if (infos.length === 0) return out(unreadable.length > 0 ? 'no readable volumes' : 'no volumes');
        const rows = [['NAME', 'SIZE', 'ALLOCATED', 'STORED', 'SNAPSHOTS'], ...infos.map((i) => [i.name, formatSize(i.size), formatSize(i.allocated), formatSize(i.storedBytes), String(i.snapshots)])];
        out(formatTable(rows));
        for (const i of infos.filter((i) => i.deleting)) out(deletingNote(i));
        for (const name of new Set(infos.map((i) => i.name))) {
          const twins = infos.filter((i) => i.name === name);
          if (twins.length > 1) out(`${twins.length} volumes are named "${name}" (ids ${twins.map((i) => i.id).join(', ')}): not served; delete the unwanted one with "volume delete ${name} --id ID"`);
        }
      });
    });

  addSettings(volume.command('info <name>').description('Show one volume'), VAULT_SETTINGS)
    .option('--json', 'print JSON')
    .action(async (name: string, opts) => {
      await withVault(opts, async (ctx) => {
        const i = await ctx.vault.volumeInfo(name);
        if (opts.json) return out(JSON.stringify(i, null, 2));
        out(
          [
            `name:       ${i.name}`,
            `id:         ${i.id}`,
            `size:       ${formatSize(i.size)} (${i.size} bytes)`,
            `allocated:  ${formatSize(i.allocated)} in ${i.allocatedChunks} of ${i.chunks} chunks`,
            `stored:     ${formatSize(i.storedBytes)} (compressed + encrypted)`,
            ...(i.journals.count > 0 ? [`journals:   ${i.journals.count} (${formatSize(i.journals.storedBytes)} of recent writes, not yet folded into chunks)`] : []),
            `snapshots:  ${i.snapshots}`,
            ...(i.origin ? [`clone of:   ${i.origin}`] : []),
            ...(i.deleting ? [`deleting:   ${deletingNote(i)}`] : []),
            `root:       sequence ${i.rootSeq}, epoch ${i.epoch}, updated ${i.updatedAt}`,
            `created:    ${i.createdAt}`,
          ].join('\n'),
        );
      });
    });

  addSettings(volume.command('resize <name>').description('Grow a volume (shrinking needs --force); refused while a server serves the vault from the same --state').requiredOption('--size <size>', 'new size'), VAULT_SETTINGS)
    .option('--force', 'allow shrinking (discards the data past the new end)')
    .action(async (name: string, opts) => {
      const size = sizeArg(opts.size);
      await withVault(opts, async (ctx, s) => {
        await refuseWhileServed(ctx, s.state, 'resize a volume');
        const r = await ctx.vault.resizeVolume(name, size, Boolean(opts.force));
        out(`resized volume ${name} from ${formatSize(r.oldSize)} to ${formatSize(r.newSize)}`);
      });
    });

  addSettings(volume.command('delete <name>').description('Crypto-erase a volume (its key first), then delete its objects; refused while a server serves the vault from the same --state, or while it has clones'), VAULT_SETTINGS)
    .option('--yes', 'do not ask (required when stdin is not a terminal)')
    .option('--id <id>', 'which of two volumes sharing the name (see volume list)')
    .action(async (name: string, opts) => {
      if (!opts.yes) {
        if (!process.stdin.isTTY) throw new VaultError('ERR_INVALID_ARGUMENT', 'volume delete destroys data: add --yes');
        const rl = (await import('node:readline/promises')).createInterface({ input: process.stdin, output: process.stderr });
        const answer = await rl.question(`Delete volume "${name}" and all its snapshots for good? Type its name to confirm: `);
        rl.close();
        if (answer.trim() !== name) throw new VaultError('ERR_INVALID_ARGUMENT', 'not confirmed; nothing deleted');
      }
      await withVault(opts, async (ctx, s) => {
        await refuseWhileServed(ctx, s.state, 'delete a volume');
        const bar = new Progress(`deleting ${name}`, 0, 'objects');
        const n = await ctx.vault.deleteVolume(name, (done, total) => bar.update(done, total), opts.id);
        bar.done();
        out(`deleted volume ${name} (${n} objects)`);
      });
    });
}
