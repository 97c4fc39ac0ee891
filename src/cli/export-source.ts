// What `nbd-vault export` reads. A snapshot is read as it is. A volume that the local server is
// serving is read through a temporary snapshot taken by that server: the export then holds the
// writes the server has acknowledged but not yet sealed, is one point in time, and no compaction
// can delete an object under it (the server folds journals into new chunk objects and deletes the
// old ones at once, so a reader of a root it has replaced can find an object gone). A volume at
// rest is read from its root.
import { VaultError, isVaultError } from '../errors';
import { isMissingObject } from '../volume/framed-reads';
import type { VolumeEngine } from '../volume/volume-engine';
import { splitExportName } from '../volume/volume-references';
import { adminRequest, servesThis } from './admin-socket';
import { deleteTemporarySnapshot, removeAbandonedSnapshots, temporarySnapshotName } from './temporary-snapshots';
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
    if (!isMissingObject(err)) return err;
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
    deleteTemporarySnapshot(ctx.vault, volume, name).catch((err) => {
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
    await removeAbandonedSnapshots(ctx.vault, ctx.logger, volume);
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
