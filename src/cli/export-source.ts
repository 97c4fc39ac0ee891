// What `nbd-vault export` reads. A snapshot is read as it is. A volume that the local server is
// serving is read through a temporary snapshot taken by that server: the export then holds the
// writes the server has acknowledged but not yet sealed, is one point in time, and no compaction
// can delete an object under it (the server folds journals into new chunk objects and deletes the
// old ones at once, so a reader of a root it has replaced can find an object gone). A volume at
// rest is read from its root.
import { createHash } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import * as os from 'node:os';
import { VaultError, isVaultError } from '../errors';
import type { VolumeEngine } from '../volume/volume-engine';
import { splitExportName } from '../volume/volume-references';
import { TEMPORARY_EXPORT_SNAPSHOT } from '../volume/snapshot-record';
import { adminRequest, servesThis } from './admin-socket';
import { defaultSnapshotName } from './snapshot-commands';
import type { VaultContext, VaultSettings } from './vault-context';

export interface ExportSource {
  readonly engine: VolumeEngine;
  /** how the volume was read, for the closing line; '' for a snapshot or a volume at rest */
  readonly via: string;
  /** Maps a read failure to what the user should do about it. */
  explain(err: unknown): Promise<unknown>;
  /** Closes the engine and deletes the temporary snapshot, if any. */
  close(): Promise<void>;
}

/** The temporary snapshot's name: says what it is, sorts by time, unique per process, and names
 *  the machine (a tag of its host name, machine id and pid namespace) and the process that read
 *  it, so that a later export on the same machine can tell one whose process is gone. */
export function temporarySnapshotName(now = new Date(), pid = process.pid, tag = hostTag()): string {
  return `export-${defaultSnapshotName(now)}-${tag}-${pid}`;
}

const TEMPORARY_NAME = TEMPORARY_EXPORT_SNAPSHOT;

/** 8 hex digits naming where pids mean the same: the host name, the machine id and the pid
 *  namespace (containers that share a host name have namespaces of their own), hashed. */
export function hostTag(where = `${os.hostname()}\n${orEmpty(() => readFileSync('/etc/machine-id', 'utf8').trim())}\n${orEmpty(() => readlinkSync('/proc/self/ns/pid'))}`): string {
  return createHash('sha256').update(where).digest('hex').slice(0, 8);
}

/** What `read` returns, or '' where it fails (no such file: another OS, a container without it). */
function orEmpty(read: () => string): string {
  try {
    return read();
  } catch {
    return '';
  }
}

/** Linux's largest pid (PID_MAX_LIMIT) */
const MAX_PID = 4_194_304;

/** The process still runs (EPERM: it does, as another user). */
function alive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid < 1 || pid > MAX_PID) return true; // not a pid of ours: leave it
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Temporary snapshots that exports on this machine left when they were killed (SIGKILL, a crash,
 * a power cut): their process is gone, so nothing reads them, and kept from retention they would
 * pin their chunks forever. Deleted before the next export takes its own. One of another machine,
 * or of a process that runs (or a pid taken again since) is left alone. Returns the names deleted.
 */
export async function removeAbandonedSnapshots(ctx: VaultContext, volume: string, tag = hostTag()): Promise<string[]> {
  const removed: string[] = [];
  for (const snap of await ctx.vault.listSnapshots(volume)) {
    const m = TEMPORARY_NAME.exec(snap.name);
    if (!m || m[1] !== tag || Number(m[2]) === process.pid || alive(Number(m[2]))) continue;
    try {
      await deleteTemporarySnapshot(ctx, volume, snap.name);
      removed.push(snap.name);
    } catch (err) {
      // (another export deleting it at the same moment, or the store): this export goes on
      ctx.logger.warn({ volume, snapshot: snap.name, err: (err as Error).message }, 'could not delete the temporary snapshot a killed export left; the next export tries again');
    }
  }
  return removed;
}

/** A temporary snapshot is kept (a retention prune must not delete it under its export): cleared,
 *  then deleted. Gone already: nothing to do. */
async function deleteTemporarySnapshot(ctx: VaultContext, volume: string, name: string): Promise<void> {
  const { objects } = await ctx.vault.loadVolume(volume);
  const found = (await objects.listSnapshots()).find((x) => x.name === name);
  if (!found) return;
  await objects.setSnapshotKeep(found.id, false);
  await ctx.vault.deleteSnapshot(volume, name);
}

export async function openExportSource(ctx: VaultContext, s: VaultSettings, spec: string): Promise<ExportSource> {
  const [volume, snap] = splitExportName(spec);
  if (snap !== null) return plain(await ctx.vault.openSnapshotEngine(volume, snap, { readaheadChunks: 0 }));
  if (await servedHere(ctx, s)) {
    // Through the server, whether it has the volume open now or not (it closes volumes nobody
    // uses, and a client may come back mid-export); unless another server writes it.
    try {
      return await throughSnapshot(ctx, s, volume);
    } catch (err) {
      if (!isVaultError(err, 'ERR_LEASE')) throw err;
    }
  }
  // the root's seq before the engine opens: a commit in between then counts as a change
  const seq = await ctx.vault.rootSeqOf(volume);
  // a writer elsewhere (another machine's server) replaced the root and deleted what it named
  const explain = async (err: unknown) => {
    if (!isVaultError(err, 'ERR_IO') || !/is missing from the store/.test((err as Error).message)) return err;
    if ((await ctx.vault.rootSeqOf(volume).catch(() => seq)) === seq) return err;
    return new VaultError('ERR_IO', `volume "${volume}" changed while it was exported (a server elsewhere is writing it): snapshot it (nbd-vault snapshot ${volume} NAME) and export ${volume}@NAME`);
  };
  if ((await ctx.vault.liveWriterHorizon(await ctx.vault.findVolume(volume), Date.now(), 0)) !== null) {
    ctx.logger.warn({ volume }, 'a server elsewhere is writing this volume: the export holds what it has stored (FLUSHed writes), not what it acknowledged since, and may fail if it changes meanwhile; for one point in time, snapshot it through that server and export VOL@SNAP');
  }
  let engine: VolumeEngine;
  try {
    engine = await ctx.vault.openEngine(volume, { readOnly: true, readaheadChunks: 0 });
  } catch (err) {
    throw await explain(err); // (its manifest pages, replaced between reading the root and them)
  }
  return { engine, via: '', explain, close: () => engine.close() };
}

function plain(engine: VolumeEngine): ExportSource {
  return { engine, via: '', explain: async (err) => err, close: () => engine.close() };
}

/** True when a server on this state directory serves this vault. */
async function servedHere(ctx: VaultContext, s: VaultSettings): Promise<boolean> {
  const reply = await adminRequest(s.state, { op: 'ping' });
  if (reply?.ok === false && reply.code === 'ERR_SHUTDOWN') throw new VaultError(reply.code, reply.message); // its volumes are still leased
  return servesThis(reply, ctx) && reply.ok;
}

async function throughSnapshot(ctx: VaultContext, s: VaultSettings, volume: string): Promise<ExportSource> {
  const name = temporarySnapshotName();
  const removeOrSay = () =>
    deleteTemporarySnapshot(ctx, volume, name).catch((err) => {
      ctx.logger.warn({ volume, snapshot: name, err: (err as Error).message }, `could not delete the temporary snapshot: delete it with nbd-vault snapshot keep --clear ${volume} ${name} && nbd-vault snapshot delete ${volume} ${name}`);
    });
  let engine: VolumeEngine | undefined;
  // Ctrl-C or a service stop mid-export: close the engine (its reader mark goes with it: a
  // snapshot being read is not deleted), delete the snapshot, then exit as the signal would.
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`export of ${volume} interrupted: deleting the temporary snapshot ${volume}@${name}\n`);
    void Promise.resolve(engine?.close())
      .catch(() => {})
      .then(removeOrSay)
      .finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  const stopWatching = () => {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (const old of await removeAbandonedSnapshots(ctx, volume)) {
      ctx.logger.warn({ volume, snapshot: old }, 'deleted the temporary snapshot an export on this machine left when it was killed');
    }
    // keep: a retention prune of the server's schedule must not delete it under the export
    const reply = await adminRequest(s.state, { op: 'snapshot', volume, name, keep: true });
    if (!reply) throw new VaultError('ERR_IO', `the server serving "${volume}" stopped answering on its admin socket; export again`);
    if (!reply.ok) throw new VaultError(reply.code, reply.message);
    engine = await ctx.vault.openSnapshotEngine(volume, name, { readaheadChunks: 0 });
  } catch (err) {
    stopWatching();
    await removeOrSay();
    throw err;
  }
  const opened = engine;
  return {
    engine: opened,
    via: ` through the temporary snapshot ${volume}@${name} taken by the running server`,
    explain: async (err) => err,
    async close() {
      stopWatching();
      try {
        await opened.close();
      } finally {
        await removeOrSay();
      }
    },
  };
}
