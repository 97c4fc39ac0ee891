// `nbd-vault serve` over a vault: open (on a first run, create) the key, the vault and a default
// volume, then serve every volume as an NBD export until SIGINT/SIGTERM, flushing all on the way
// out. The server part is runServer() from serve-command.ts; this file only builds the provider.
import { formatSize } from '../util/size';
import { VaultExportProvider } from '../volume/vault-export-provider';
import { resolveSettings, SERVE_VAULT_SETTINGS } from './settings';
import type { Logger } from '../util/log';
import { describeError } from '../errors';
import { openVaultContext, type VaultSettings } from './vault-context';
import { parseListen, runServer } from './serve-command';
import { startAdminServer, type AdminRequest } from './admin-socket';

export { SERVE_VAULT_SETTINGS };

const FIRST_VOLUME = { name: 'default', size: 10 * 2 ** 30 };

export async function serveVault(opts: Record<string, unknown>, handshakeTimeoutMs: number): Promise<void> {
  const s = resolveSettings(opts, SERVE_VAULT_SETTINGS);
  const ctx = await openVaultContext(s as VaultSettings, { firstRun: true });
  try {
    let volumes = await ctx.vault.listVolumes();
    if (volumes.length === 0) {
      await ctx.vault.createVolume(FIRST_VOLUME.name, FIRST_VOLUME.size);
      ctx.logger.warn({ volume: FIRST_VOLUME.name, size: FIRST_VOLUME.size }, `created volume "${FIRST_VOLUME.name}" (${formatSize(FIRST_VOLUME.size)}) in an empty vault`);
      volumes = await ctx.vault.listVolumes();
    }
    const defaultName = s.defaultVolume ?? (volumes.some((v) => v.name === 'default') ? 'default' : volumes[0].name);
    const provider = new VaultExportProvider(
      ctx.vault,
      defaultName,
      { dirtyLimitBytes: s.dirtyLimit, readCacheBytes: s.readCache, uploadConcurrency: s.uploadConcurrency },
      ctx.logger,
    );
    const listen = parseListen(s.listen!);
    ctx.logger.info({ store: ctx.store.name, volumes: volumes.map((v) => v.name) }, 'vault opened');
    // Watch other writers' heartbeats from now on: a dead one's volumes are then taken over a
    // lease ttl after startup at most, not a ttl after the first client asks.
    ctx.vault.watchLeaseHolders().then(
      (n) => n > 0 && ctx.logger.info({ writers: n }, 'watching the heartbeats of other writers holding volume leases'),
      (err) => ctx.logger.warn({ err: describeError(err) }, 'could not look at the volume leases at startup'),
    );
    const admin = await startAdminServer(
      s.state,
      ctx.vault.vaultId,
      async (req: AdminRequest) => {
        if (req.op === 'ping') return { pid: process.pid, open: provider.openNames() };
        if (req.op === 'snapshot') return provider.snapshot(req.volume, req.name);
        throw new Error(`unknown admin request ${JSON.stringify((req as { op: unknown }).op)}`);
      },
      ctx.logger,
    );
    try {
      await runServer(provider, {
        listen,
        socket: s.socket,
        maxConnections: s.maxConnections!,
        handshakeTimeoutMs,
        logger: ctx.logger,
        onReload: () => reloadSettings(opts, s, ctx.logger),
        // for people (stdout): where to point a client first
        onListening: (uris) => process.stdout.write(`serving ${volumes.length} volume(s) from ${ctx.store.name} at ${uris[0]}\ntry: qemu-img info ${uris[0]}\n`),
      });
    } finally {
      admin.close();
    }
  } finally {
    await ctx.close();
  }
}

/** SIGHUP: read the config file and environment again. The log level applies at once, without
 *  dropping anyone; a setting that needs a restart (listen address, store, keys …) is named in
 *  the log and keeps its running value. A bad file changes nothing. */
function reloadSettings(opts: Record<string, unknown>, running: Record<string, unknown>, logger: Logger): void {
  const fresh = resolveSettings(opts, SERVE_VAULT_SETTINGS) as Record<string, unknown>;
  const needRestart: string[] = [];
  for (const [name, value] of Object.entries(fresh)) {
    if (value === running[name] || name === 'logLevel') continue;
    needRestart.push(name);
  }
  if (fresh.logLevel !== logger.level) {
    logger.level = String(fresh.logLevel);
    running.logLevel = fresh.logLevel;
  }
  logger.info({ logLevel: logger.level, needRestart }, needRestart.length ? 'configuration reloaded; some changes need a restart' : 'configuration reloaded');
}
