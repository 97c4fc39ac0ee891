// `nbd-vault cache warm VOLUME[@SNAPSHOT]`: fill the disk cache with what the manifest names (its
// pages and allocated chunks; zero chunks have no object), so the first reads after a start or a
// failover run at local-disk speed. A running server owns its --disk-cache directory: the command
// asks it over the admin socket (it reports progress, polled); with no server running it opens the
// vault and the cache itself (--disk-cache DIR). Objects already whole in the cache are skipped.
import type { Command } from 'commander';
import { VaultError, isVaultError, type VaultErrorCode } from '../errors';
import { findLayer } from '../store';
import { DiskCacheStore } from '../store/disk-cache-store';
import { formatSize } from '../util/size';
import { type Vault } from '../volume/vault';
import { liveRootKeys, referencedKeys, splitExportName } from '../volume/volume-references';
import { snapshotAsRoot } from '../volume/volume-references';
import { adminRequest } from './admin-socket';
import { Progress } from './progress';
import { addSettings, resolveSettings, VAULT_SETTINGS, type Settings } from './settings';
import { openVaultContext, out, type VaultSettings } from './vault-context';
import { InFlight } from '../util/in-flight';

export interface WarmProgress {
  volume: string;
  done: number;
  total: number;
  fetchedBytes: number;
  /** objects read from the store (the others were in the cache already) */
  fetched: number;
  finished: boolean;
  error?: string;
  code?: VaultErrorCode;
}

const WARM_CONCURRENCY = 16;

/** Reads every object `spec` names into the disk cache of `store`, reporting as it goes; stops
 *  with ERR_SHUTDOWN once `signal` aborts (the server stops). */
export async function warmCache(vault: Vault, store: DiskCacheStore, spec: string, progress: WarmProgress, signal?: AbortSignal): Promise<WarmProgress> {
  const [volumeName, snapName] = splitExportName(spec);
  const { objects, root, snapshots } = await vault.loadVolume(volumeName);
  let keys: string[];
  if (snapName === null) keys = await liveRootKeys(objects, root);
  else {
    const snap = snapshots.find((x) => x.name === snapName);
    if (!snap) throw new VaultError('ERR_NOT_FOUND', `volume "${volumeName}" has no snapshot named "${snapName}"`);
    keys = await referencedKeys(objects, snapshotAsRoot(snap));
  }
  progress.total = keys.length;
  let next = 0;
  await Promise.all(
    Array.from({ length: WARM_CONCURRENCY }, async () => {
      while (next < keys.length) {
        if (signal?.aborted) throw new VaultError('ERR_SHUTDOWN', 'the server is stopping');
        const key = keys[next++];
        const fetched = await store.warm(key); // (not `+= await`: that would add to a stale total)
        progress.fetchedBytes += fetched;
        if (fetched > 0) progress.fetched++;
        progress.done++;
      }
    }),
  );
  await store.cache.settle();
  progress.finished = true;
  return progress;
}

/** The running server's warm jobs, one per volume spec (the admin op starts or reports one). */
export class WarmJobs {
  private readonly jobs = new Map<string, WarmProgress>();
  private readonly running = new InFlight();
  private readonly stopping = new AbortController();
  constructor(private readonly vault: Vault, private readonly store: DiskCacheStore | null) {}

  /** The server stops: no job starts, and once this settles none reads the store any more. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.running.settled();
  }

  startOrReport(spec: string): WarmProgress {
    if (!this.store) throw new VaultError('ERR_INVALID_ARGUMENT', 'this server runs without --disk-cache: there is no disk cache to warm');
    if (this.stopping.signal.aborted) throw new VaultError('ERR_SHUTDOWN', 'the server is stopping');
    const cur = this.jobs.get(spec);
    if (cur && !cur.finished) return { ...cur };
    const p: WarmProgress = { volume: spec, done: 0, total: 0, fetchedBytes: 0, fetched: 0, finished: false };
    this.jobs.set(spec, p);
    void this.running.track(
      warmCache(this.vault, this.store, spec, p, this.stopping.signal).catch((err) => {
        p.error = err instanceof Error ? err.message : String(err);
        if (isVaultError(err)) p.code = err.code;
        p.finished = true;
      }),
    );
    return { ...p };
  }

  /** The job's state now; a finished job is forgotten once reported. */
  report(spec: string): WarmProgress | null {
    const p = this.jobs.get(spec);
    if (p?.finished) this.jobs.delete(spec);
    return p ? { ...p } : null;
  }
}

export function registerCacheCommands(program: Command): void {
  const cache = program.command('cache').description('The local disk cache of a server (serve --disk-cache)');
  addSettings(
    cache
      .command('warm <volume>')
      .description('Fill the disk cache with the allocated chunks of VOLUME (or VOLUME@SNAPSHOT): through the running server, else by opening --disk-cache DIR'),
    [...VAULT_SETTINGS, 'diskCache', 'diskCacheSize'],
  ).action(async (volume: string, o: Record<string, unknown>) => {
    const s = resolveSettings(o, [...VAULT_SETTINGS, 'diskCache', 'diskCacheSize'] as const, process.env, { logLevel: 'warn' });
    const result = (await warmThroughServer(s.state, volume)) ?? (await warmHere(s, volume));
    if (result.error) throw new VaultError(result.code ?? 'ERR_IO', `cache warm ${volume}: ${result.error}`);
    const cached = result.total - result.fetched;
    out(`warmed ${volume}: ${result.total} objects, ${formatSize(result.fetchedBytes)} read from the store${cached > 0 ? ` (${cached} were cached already)` : ''}`);
  });
}

/** null when no server runs on this state directory. */
async function warmThroughServer(stateDir: string, volume: string): Promise<WarmProgress | null> {
  const first = await adminRequest(stateDir, { op: 'cacheWarm', volume });
  if (first === null) return null;
  const bar = new Progress(`warming ${volume}`, 0, 'objects');
  try {
    for (let reply = first; ; reply = (await adminRequest(stateDir, { op: 'cacheWarm', volume, report: true }))!) {
      if (!reply) throw new VaultError('ERR_IO', 'the server went away during the warm');
      if (!reply.ok) throw new VaultError(reply.code, reply.message);
      const p = reply.result as WarmProgress | null;
      if (!p) throw new VaultError('ERR_IO', 'the server forgot the warm job');
      bar.update(p.done, p.total);
      if (p.finished) return p;
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    bar.done();
  }
}

async function warmHere(s: VaultSettings & Partial<Settings>, volume: string): Promise<WarmProgress> {
  if (!s.diskCache) throw new VaultError('ERR_INVALID_ARGUMENT', 'no server is running on this state directory: give the cache directory with --disk-cache DIR');
  const ctx = await openVaultContext(s, { diskCache: { dir: s.diskCache, bytes: s.diskCacheSize! } });
  const bar = new Progress(`warming ${volume}`, 0, 'objects');
  const p: WarmProgress = { volume, done: 0, total: 0, fetchedBytes: 0, fetched: 0, finished: false };
  const timer = setInterval(() => bar.update(p.done, p.total), 200);
  try {
    await warmCache(ctx.vault, findLayer(ctx.store, DiskCacheStore)!, volume, p);
    bar.update(p.done, p.total);
    return p;
  } finally {
    clearInterval(timer);
    bar.done();
    await ctx.close();
  }
}
