// `nbd-vault serve` over a vault: open (on a first run, create) the key, the vault and a default
// volume, then serve every volume as an NBD export until SIGINT/SIGTERM, flushing all on the way
// out. The server part is runServer() from serve-command.ts; this file only builds the provider.
import { VaultError } from '../errors';
import { SCHEDULED_SNAPSHOT, reservedSnapshotName } from '../volume/snapshot-record';
import { formatSize } from '../util/size';
import { createLogger } from '../util/log';
import { VaultExportProvider } from './vault-export-provider';
import { resolveSettings, SERVE_VAULT_SETTINGS, type Settings } from './settings';
import type { Logger } from '../util/log';
import { describeError } from '../errors';
import { openVaultContext, type VaultSettings } from './vault-context';
import { checkMemoryLimit, guardSighup, parseListen, runServer, runtimeShareOf } from './serve-command';
import { MemoryBudget } from '../util/memory-budget';
import { SealMemory, sealShareOf } from '../volume/seal-memory';
import { FetchMemory } from '../volume/fetch-memory';
import { startAdminServer, type AdminRequest } from './admin-socket';
import { resolveServerSecurity, securitySummary, type ServerSecurity } from './tls-setup';
import { resolve } from 'node:path';
import { parseRetentionPolicy } from '../volume/retention';
import { parseInterval, SnapshotSchedule } from './snapshot-schedule';
import { parseMetricsAddress, PromMetrics, startMetricsServer } from './metrics';
import { baseStoreName, findLayer } from '../store';
import { DiskCacheStore } from '../store/disk-cache-store';
import { WarmJobs } from './cache-command';
import type { ObjectStore } from '../store/object-store';
import { isVolumeDataKey, metaKey, volumeDeletingKey, volumePrefix } from '../volume/object-keys';
import { volumeIdCandidates } from '../volume/volume-references';
import { keptPayloadBytesInProcess } from '../nbd/payload-buffers';
import { keptSlabBytesInProcess } from '../volume/block-slabs';

export { SERVE_VAULT_SETTINGS };

const FIRST_VOLUME = { name: 'default', size: 10 * 2 ** 30 };

export async function serveVault(opts: Record<string, unknown>, handshakeTimeoutMs: number): Promise<void> {
  guardSighup();
  const s = resolveSettings(opts, SERVE_VAULT_SETTINGS);
  // checked before the vault is opened: a refused TLS setup must not create a first volume
  const securityCheck = () => resolveServerSecurity(s, parseListen(s.listen!), opts, createLogger('silent'));
  securityCheck();
  // A bad schedule or policy fails at startup, before anything is opened.
  if (s.prune !== undefined && s.snapshotEvery === undefined) throw new VaultError('ERR_INVALID_ARGUMENT', '--prune needs --snapshot-every (to prune by hand: nbd-vault snapshot prune)');
  const everyMs = s.snapshotEvery === undefined ? null : parseInterval(s.snapshotEvery);
  const policy = s.prune === undefined ? null : parseRetentionPolicy(s.prune);
  // One budget for the process: every engine and every NBD connection draws from it.
  const memoryBudget = new MemoryBudget(checkMemoryLimit(s.memoryLimit!));
  // Sealing's share of it, held for good: seal cycles, whole-chunk rewrites and compaction of
  // every volume draw their in-flight buffers from it (they must never wait behind the writers
  // whose data they drain).
  const sealMemory = new SealMemory(sealShareOf(memoryBudget.limitBytes));
  memoryBudget.tryReserve(sealMemory.bytes);
  // The runtime's share, held for good too: the limit bounds the process, not only its data.
  memoryBudget.tryReserve(runtimeShareOf(memoryBudget.limitBytes, sealMemory.bytes));
  // The engines are known once the provider exists; the store stack needs the sink before that.
  let exportsForMetrics: VaultExportProvider | null = null;
  const fetchMemory = FetchMemory.of(memoryBudget);
  const memoryStats = () => ({
    ...memoryBudget.stats(),
    fetchFloorBytes: fetchMemory.floorHeld,
    fetchesWaiting: fetchMemory.waiting,
    payloadsKeptBytes: keptPayloadBytesInProcess(),
    slabsKeptBytes: keptSlabBytesInProcess(),
  });
  const metrics = s.metrics ? new PromMetrics(() => exportsForMetrics?.engineStats() ?? [], memoryStats) : undefined;
  const metricsAddress = s.metrics ? parseMetricsAddress(s.metrics) : undefined;
  const diskCache = s.diskCache ? { dir: s.diskCache, bytes: s.diskCacheSize! } : undefined;
  const ctx = await openVaultContext(s as VaultSettings, { firstRun: true, metrics, diskCache });
  const cacheStore = findLayer(ctx.store, DiskCacheStore);
  if (cacheStore) metrics?.watchDiskCache(() => cacheStore.stats());
  const warmJobs = new WarmJobs(ctx.vault, cacheStore);
  try {
    let volumes = await ctx.vault.listVolumes();
    if (volumes.length === 0) {
      // A store with volume objects but no volume (a replica whose first sync was cut off before
      // the metadata, which it copies last; metadata lost) is no empty vault to make one in.
      const orphans = await volumesWithoutMetadata(ctx.store);
      if (orphans.length > 0) {
        throw new VaultError('ERR_NOT_FOUND', `the vault holds no volume, but objects of ${orphans.length} volume(s) without metadata (ids ${orphans.join(', ')}): a replica whose sync was cut off (run it again), or volumes whose metadata was lost (restore it from a backup); create a volume with \`nbd-vault volume create\` to serve this store anyway`);
      }
      // (named as --default-volume asks, if it does: that is the volume the user means)
      const first = s.defaultVolume ?? FIRST_VOLUME.name;
      await ctx.vault.createVolume(first, FIRST_VOLUME.size);
      ctx.logger.warn({ volume: first, size: FIRST_VOLUME.size }, `created volume "${first}" (${formatSize(FIRST_VOLUME.size)}) in an empty vault`);
      volumes = await ctx.vault.listVolumes();
    }
    if (s.defaultVolume !== undefined && !volumes.some((v) => v.name === s.defaultVolume)) {
      throw new VaultError('ERR_INVALID_ARGUMENT', `--default-volume names no volume: "${s.defaultVolume}" (the vault has ${volumes.map((v) => v.name).join(', ')})`);
    }
    const defaultName = s.defaultVolume ?? (volumes.some((v) => v.name === 'default') ? 'default' : volumes[0].name);
    const provider = new VaultExportProvider(
      ctx.vault,
      defaultName,
      { dirtyLimitBytes: s.dirtyLimit, readCacheBytes: s.readCache, uploadConcurrency: s.uploadConcurrency, memoryBudget, sealMemory },
      ctx.logger,
    );
    exportsForMetrics = provider;
    const listen = parseListen(s.listen!);
    const security = resolveServerSecurity(s, listen, opts, ctx.logger);
    ctx.logger.info({ store: ctx.store.name, volumes: volumes.map((v) => v.name), diskCache: cacheStore ? { dir: cacheStore.cache.dir, entries: cacheStore.cache.entries, bytes: cacheStore.cache.usedBytes, limit: cacheStore.cache.maxBytes } : undefined }, 'vault opened');
    // Watch other writers' heartbeats from now on: a dead one's volumes are then taken over a
    // lease ttl after startup at most, not a ttl after the first client asks.
    ctx.vault.watchLeaseHolders().then(
      (n) => n > 0 && ctx.logger.info({ writers: n }, 'watching the heartbeats of other writers holding volume leases'),
      (err) => ctx.logger.warn({ err: describeError(err) }, 'could not look at the volume leases at startup'),
    );
    const admin = await startAdminServer(
      s.state,
      ctx.vault.vaultId,
      baseStoreName(ctx.store),
      async (req: AdminRequest) => {
        if (req.op === 'ping') return { pid: process.pid, open: provider.openNames() };
        if (req.op === 'snapshot') {
          // (the schedule's names are its own: its --prune would delete one taken this way)
          if (SCHEDULED_SNAPSHOT.test(req.name)) throw new VaultError('ERR_INVALID_ARGUMENT', reservedSnapshotName(req.name)!);
          return provider.snapshot(req.volume, req.name, { keep: req.keep === true });
        }
        if (req.op === 'cacheWarm') return req.report ? warmJobs.report(req.volume) : warmJobs.startOrReport(req.volume);
        throw new Error(`unknown admin request ${JSON.stringify((req as { op: unknown }).op)}`);
      },
      ctx.logger,
    );
    const schedule = everyMs === null ? null : new SnapshotSchedule({ vault: ctx.vault, provider, everyMs, policy, logger: ctx.logger });
    // Before the exports close (and again after, should the server fail): a round, an admin
    // request or a warm job running on would snapshot a closed engine or read a closed store.
    let stopped: Promise<void> | null = null;
    const stopBackgroundWork = () => (stopped ??= Promise.all([schedule?.stop(), admin.refuse(), warmJobs.stop()]).then(() => {}));
    let metricsServer: import('node:http').Server | null = null;
    try {
      if (metrics && metricsAddress) metricsServer = await startMetricsServer(metrics, metricsAddress, ctx.logger);
      await runServer(provider, {
        metrics,
        listen,
        socket: s.socket,
        maxConnections: s.maxConnections!,
        handshakeTimeoutMs,
        logger: ctx.logger,
        security,
        memoryBudget,
        onReload: () => reloadSettings(opts, s, listen, ctx.logger),
        onShutdown: stopBackgroundWork,
        // for people (stdout): where to point a client first
        onListening: (uris) => process.stdout.write(`serving ${volumes.length} volume(s) from ${ctx.store.name} at ${uris[0]}\ntry: ${tryHint(uris[0], s.tlsPsk, security)}\n`),
      });
    } finally {
      await stopBackgroundWork();
      await admin.close();
      metricsServer?.close();
      metricsServer?.closeAllConnections();
    }
  } finally {
    await ctx.close();
  }
}

/** A first client command that works against this server, TLS included. */
function tryHint(uri: string, pskFile: string | undefined, security: ServerSecurity): string {
  if (!security.tls) return `qemu-img info ${uri}`;
  if (!pskFile || !security.tls.pskKeys) return `nbdinfo '${uri}?tls-certificates=DIR' (DIR: ca-cert.pem, client-cert.pem, client-key.pem)`;
  // an identity the access config lets open the export in the URI (the first one may be refused it)
  const exportName = decodeURIComponent(new URL(uri).pathname.replace(/^\//, ''));
  const identities = [...security.tls.pskKeys.keys()];
  const identity = identities.find((id) => !security.access || security.access.accessTo(id, exportName) !== 'none') ?? identities[0];
  return `nbdinfo '${uri.replace('nbds://', `nbds://${encodeURIComponent(identity)}@`)}?tls-psk-file=${resolve(pskFile)}'`;
}

/** SIGHUP: read the config file and environment again. The log level applies at once, without
 *  dropping anyone, and so do the files behind the running TLS settings (PSK file, certificates)
 *  and the config's access section: open sessions they no longer allow end. A setting that needs
 *  a restart (listen address, store, keys, TLS paths …) is named in the log and keeps its running
 *  value. A bad file changes nothing. */
function reloadSettings(opts: Record<string, unknown>, running: Settings, listen: { host: string; port: number }, logger: Logger): ServerSecurity {
  const fresh = resolveSettings(opts, SERVE_VAULT_SETTINGS) as Record<string, unknown>;
  const security = resolveServerSecurity(running, listen, opts, logger);
  const needRestart: string[] = [];
  for (const [name, value] of Object.entries(fresh)) {
    if (value === (running as Record<string, unknown>)[name] || name === 'logLevel') continue;
    needRestart.push(name);
  }
  if (fresh.logLevel !== logger.level) {
    logger.level = String(fresh.logLevel);
    running.logLevel = String(fresh.logLevel);
  }
  logger.info({ logLevel: logger.level, tls: securitySummary(security), needRestart }, needRestart.length ? 'configuration reloaded; some changes need a restart' : 'configuration reloaded');
  return security;
}

/** Ids under volumes/ that hold data (chunks, pages, journals, snapshot records) but neither
 *  metadata nor a deletion mark: gc's orphans. (The leftovers of a delete cut off, a lone root of
 *  a create cut off, a lease: garbage, no reason to refuse.) */
async function volumesWithoutMetadata(store: ObjectStore): Promise<string[]> {
  const ids: string[] = [];
  for (const id of await volumeIdCandidates(store)) {
    if ((await store.head(metaKey(id))) || (await store.head(volumeDeletingKey(id)))) continue;
    for await (const info of store.list(volumePrefix(id))) {
      if (!isVolumeDataKey(id, info.key)) continue;
      ids.push(id);
      break;
    }
  }
  return ids;
}
