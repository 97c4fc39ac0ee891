// Commands that move or check data without an NBD client: export, verify, diff, gc (import: import-command.ts).
// Long work shows a progress bar on a terminal and stays quiet in pipes.
import type { Command } from 'commander';
import { open as openFile, rm, stat, type FileHandle } from 'node:fs/promises';
import { VaultError, describeError, isVaultError } from '../errors';
import { isAllZero } from '../codec';
import { CHUNK_SIZE, chunkCount, chunkLength } from '../volume/chunk-math';
import { changeMap, diffManifests } from '../volume/changed-blocks';
import { verifySource, type Damage, type JournalDamage } from '../volume/verify';
import { collectGarbage } from '../volume/garbage-collector';
import { splitExportName } from '../volume/volume-references';
import { VOLUMES_PREFIX } from '../volume/object-keys';
import { formatSize } from '../util/size';
import { FsStore, findLayer } from '../store';
import { openExportSource } from './export-source';
import { Progress } from './progress';
import { addSettings } from './settings';
import { VAULT_SETTINGS, withVault } from './vault-context';
import { out, writeStdout } from './stdout';
import { writeAll } from '../util/write-all';
import { closeAfter } from '../util/close-after';
import { forEachLimited, zeroChunks } from './chunk-walk';

/** a temporary file of a put this old is one whose process died (a put takes seconds) */
const TEMPORARY_FILE_AGE_MS = 24 * 3600_000;

export function registerDataCommands(program: Command): void {
  addSettings(
    program
      .command('export <source> <file>')
      .description('Write VOL or VOL@SNAP to FILE (sparse) or - (stdout); rerun to restart'),
    VAULT_SETTINGS,
  ).action(async (source: string, file: string, opts) => {
    await withVault(opts, async (ctx, s) => {
      const toStdout = file === '-';
      // A sparse file: zero chunks are holes left by a truncate, which a device cannot take.
      // (Checked before the source opens: a served volume's is a temporary snapshot to delete.)
      const existing = toStdout ? null : await stat(file).catch(() => null);
      if (existing && !existing.isFile()) {
        throw new VaultError('ERR_INVALID_ARGUMENT', `${file} is not a regular file: export writes a sparse file, or - for standard output (to fill a block device, nbdcopy from the export, or \`export ${source} - | dd of=${file}\`)`);
      }
      const src = await openExportSource(ctx, s, source);
      const engine = src.engine;
      let fh: FileHandle | null = null;
      const bar = new Progress(`export ${source}`, engine.size);
      let done = 0;
      const copy = async () => {
        // opened (and truncated) only once the source is known to open, and inside the close below
        if (!toStdout) fh = await openFile(file, 'w').catch((err: NodeJS.ErrnoException) => {
          throw new VaultError('ERR_IO', `cannot write ${file}: ${err.code === 'ENOENT' ? 'no such directory' : err.message}`);
        });
        if (fh) {
          await fh.truncate(engine.size).catch(async (err: NodeJS.ErrnoException) => {
            if (!existing) await rm(file, { force: true }); // made by us, and empty: not left behind
            throw new VaultError('ERR_IO', `cannot write ${file}: ${err.code === 'EFBIG' ? `its filesystem does not take a file of ${formatSize(engine.size)}` : err.message}`);
          });
        } // holes where the volume is zero
        const n = chunkCount(engine.size);
        const zero = await zeroChunks(engine);
        if (fh) {
          const f = fh;
          await forEachLimited(n, 8, async (i) => {
            const len = chunkLength(engine.size, i);
            if (!zero[i]) {
              const data = await engine.read(i * CHUNK_SIZE, len);
              if (!isAllZero(data)) await writeAll(f, data.subarray(0, len), i * CHUNK_SIZE);
            }
            bar.update((done += len));
          });
        } else {
          // stdout is a stream: keep order, read ahead a few chunks
          const ahead: Array<Promise<Buffer>> = [];
          const fetch = (i: number) => {
            const p = zero[i] ? Promise.resolve(Buffer.alloc(chunkLength(engine.size, i))) : engine.read(i * CHUNK_SIZE, chunkLength(engine.size, i));
            p.catch(() => {}); // awaited in order below; a failure there is reported, not unhandled
            return p;
          };
          for (let i = 0; i < Math.min(8, n); i++) ahead.push(fetch(i));
          for (let i = 0; i < n; i++) {
            const data = await ahead.shift()!;
            if (i + 8 < n) ahead.push(fetch(i + 8));
            await writeStdout(data);
            bar.update((done += data.length));
          }
        }
      };
      const suppressed = (err: unknown) => ctx.logger.warn({ source, err: describeError(err) }, 'closing after the failure failed too');
      const close = async () => {
        bar.done();
        await closeAfter(async () => void (await fh?.close()), () => src.close(), suppressed);
      };
      const explained = () =>
        copy().catch(async (err) => {
          throw await src.explain(err);
        });
      await closeAfter(explained, close, suppressed);
      if (!toStdout) out(`exported ${source} (${formatSize(engine.size)}) to ${file}${src.via}`);
    });
  });

  addSettings(
    program
      .command('verify [source]')
      .description('Download and authenticate every object of VOL, VOL@SNAP or --all; exit 1 on damage')
      .option('--all', 'every volume and every snapshot')
      .option('--json', 'print JSON'),
    VAULT_SETTINGS,
  ).action(async (source: string | undefined, opts) => {
    if (!source === !opts.all) throw new VaultError('ERR_INVALID_ARGUMENT', source ? 'name a volume (VOL or VOL@SNAP) or use --all, not both' : 'verify what? name a volume (VOL or VOL@SNAP), or use --all');
    await withVault(opts, async (ctx) => {
      const specs: string[] = [];
      const report: Array<{ source: string; chunks: number; journals: number; damaged: Damage[]; damagedJournals: JournalDamage[]; error?: string }> = [];
      if (opts.all) {
        // a volume whose metadata cannot be read is damage too: its data opens no more
        const unreadable: Array<{ id: string; error: string }> = [];
        const unlisted: Array<{ source: string; error: string }> = [];
        for (const v of await ctx.vault.listVolumes({ unreadable })) {
          specs.push(v.name);
          // (a damaged root or snapshot record is this volume's damage: the others are verified)
          try {
            for (const sn of await ctx.vault.listSnapshots(v.name)) specs.push(`${v.name}@${sn.name}`);
          } catch (err) {
            if (isVaultError(err, 'ERR_NOT_FOUND')) continue; // deleted meanwhile
            unlisted.push({ source: `${v.name}@*`, error: `its snapshots cannot be listed: ${describeError(err)}` });
          }
        }
        for (const u of unlisted) report.push({ ...u, chunks: 0, journals: 0, damaged: [], damagedJournals: [] });
        for (const u of unreadable) report.push({ source: `volume id ${u.id}`, chunks: 0, journals: 0, damaged: [], damagedJournals: [], error: `its metadata cannot be read: ${u.error}` });
      } else specs.push(source!);
      const checked = new Map<string, string | null>();
      for (const spec of specs) {
        const bar = new Progress(`verify ${spec}`, 0, 'objects');
        try {
          const r = await verifySource(ctx.vault, spec, { checked, onProgress: (d, t) => bar.update(d, t) });
          report.push({ source: spec, chunks: r.chunks, journals: r.journals, damaged: r.damaged, damagedJournals: r.damagedJournals });
        } catch (err) {
          // A name that does not exist is the caller's mistake, not damage: say it as every other
          // command does ("no volume named ..."). Under --all it was deleted while verify ran.
          if (isVaultError(err, 'ERR_NOT_FOUND')) {
            if (!opts.all) throw err;
            continue;
          }
          // the manifest itself (root, a page or a snapshot record) cannot be read
          report.push({ source: spec, chunks: 0, journals: 0, damaged: [], damagedJournals: [], error: (err as Error).message });
        } finally {
          bar.done();
        }
      }
      const bad = report.filter((r) => r.error || r.damaged.length > 0 || r.damagedJournals.length > 0);
      if (opts.json) out(JSON.stringify({ ok: bad.length === 0, results: report }, null, 2));
      else {
        for (const r of report) {
          if (r.error) out(`${r.source}: DAMAGED manifest: ${r.error}`);
          else if (r.damaged.length === 0 && r.damagedJournals.length === 0) out(`${r.source}: ok (${r.chunks} chunks${r.journals > 0 ? `, ${r.journals} write journals` : ''})`);
          else {
            if (r.damaged.length > 0) out(`${r.source}: DAMAGED ${r.damaged.length} of ${r.chunks} chunks`);
            for (const d of r.damaged) out(`  bytes ${d.offset}-${d.offset + d.length - 1} (chunk ${d.chunk}): ${d.error}`);
            // a journal holds recent writes over the chunks: its byte ranges are unknown when its index is the damage
            if (r.damagedJournals.length > 0) out(`${r.source}: DAMAGED ${r.damagedJournals.length} write journal(s)`);
            for (const j of r.damagedJournals) out(`  journal ${j.journal}: ${j.error}`);
          }
        }
      }
      if (bad.length > 0) process.exitCode = 1;
    });
  });

  addSettings(
    program
      .command('diff <a> [b]')
      .description('Changed byte ranges between VOL@A and VOL@B (or the live VOL), or between a clone\'s origin snapshot and the clone (or a snapshot of it), from the manifests alone')
      .option('--json', 'print JSON: {changedBytes, ranges: [{offset, length}]}')
      .option('--format <shape>', 'text (offset<TAB>length lines), json, or nbdinfo (the JSON `nbdinfo --map --json` prints for qemu:dirty-bitmap:A on B)', 'text'),
    VAULT_SETTINGS,
  ).action(async (a: string, b: string | undefined, opts, cmd: Command) => {
    // --json is --format json: with another --format given, the user asked for two things
    if (opts.json && cmd.getOptionValueSource('format') === 'cli' && opts.format !== 'json') {
      throw new VaultError('ERR_INVALID_ARGUMENT', `--json and --format ${opts.format} ask for two shapes: --json is --format json`);
    }
    const format = opts.json ? 'json' : String(opts.format);
    if (!['text', 'json', 'nbdinfo'].includes(format)) throw new VaultError('ERR_INVALID_ARGUMENT', `--format wants text, json or nbdinfo (got "${format}")`);
    const [volA, snapA] = splitExportName(a);
    // a live volume against itself: always nothing (it printed "0 ranges" and exit 0)
    if (snapA === null && b === undefined) {
      throw new VaultError('ERR_INVALID_ARGUMENT', `diff compares two states: a snapshot and a later state (diff ${a}@SNAP [${a}@SNAP2]), or a clone's origin snapshot and the clone (diff ORIGIN@SNAP ${a})`);
    }
    await withVault(opts, async (ctx) => {
      const other = b ?? volA;
      const A = await ctx.vault.loadManifestOf(a);
      const B = await ctx.vault.loadManifestOf(other);
      // two states of one volume, or a clone's origin snapshot and a state of the clone (what
      // the clone's qemu:dirty-bitmap:ORIGIN@SNAP context shows: they share the origin's chunks)
      const fromOrigin = B.root.origin !== undefined && A.snapshotId !== undefined && B.root.origin.volumeId === A.objects.volumeId && B.root.origin.snapshotId === A.snapshotId;
      if (splitExportName(other)[0] !== volA && !fromOrigin) {
        throw new VaultError('ERR_INVALID_ARGUMENT', `diff compares two states of one volume, or a clone's origin snapshot with a state of the clone (${other} is no clone of ${a})`);
      }
      // chunks with journal blocks (a live side) count as changed, as the dirty-bitmap contexts do
      const pending = new Map([...A.journalChunks, ...B.journalChunks].map((i) => [i, true] as const));
      if (format === 'nbdinfo') {
        // Same function as the qemu:dirty-bitmap contexts: this is what a client would read.
        const map = changeMap(A.manifest, A.root.size, B.manifest, B.root.size, pending);
        return out(JSON.stringify(map.map((e) => ({ offset: e.offset, length: e.length, type: e.dirty ? 1 : 0, description: e.dirty ? 'dirty' : 'clean' }))));
      }
      const ranges = diffManifests(A.manifest, A.root.size, B.manifest, B.root.size, pending);
      const total = ranges.reduce((n, r) => n + r.length, 0);
      if (format === 'json') return out(JSON.stringify({ from: a, to: other, size: B.root.size, changedBytes: total, ranges }, null, 2));
      for (const r of ranges) out(`${r.offset}\t${r.length}`);
      process.stderr.write(`${ranges.length} ranges, ${formatSize(total)} changed between ${a} and ${other}\n`);
    });
  });

  addSettings(
    program
      .command('gc')
      .description('Remove objects that no root or snapshot references (never younger than --grace)')
      .option('--dry-run', 'only report what would be removed')
      .option('--grace <minutes>', 'keep unreferenced objects younger than this', '60')
      .option('--orphans', 'also remove the data of volumes with neither metadata nor deletion mark (kept by default: their metadata may have been lost)')
      .option('--json', 'print JSON'),
    VAULT_SETTINGS,
  ).action(async (opts) => {
    // Number('') is 0, the most aggressive grace: a `--grace "$UNSET"` in a cron line must not mean it
    const grace = /^\d+(\.\d+)?$/.test(String(opts.grace)) ? Number(opts.grace) : NaN;
    if (!Number.isFinite(grace)) throw new VaultError('ERR_INVALID_ARGUMENT', `--grace wants a number of minutes (got ${JSON.stringify(String(opts.grace))})`);
    await withVault(opts, async (ctx) => {
      const bar = new Progress('gc', 0, 'objects');
      const r = await collectGarbage(ctx.vault, { dryRun: Boolean(opts.dryRun), graceMs: grace * 60_000, orphans: Boolean(opts.orphans), onProgress: (d, t) => bar.update(d, t) }, ctx.logger);
      // a directory store also keeps the temporary files of puts cut off by a kill
      const fs = findLayer(ctx.store, FsStore);
      const temporary = fs ? await fs.sweepTemporaryFiles(TEMPORARY_FILE_AGE_MS, Boolean(opts.dryRun)) : { files: 0, bytes: 0 };
      if (temporary.files > 0) ctx.logger.info({ files: temporary.files, bytes: temporary.bytes, dryRun: Boolean(opts.dryRun) }, 'temporary files of interrupted writes swept');
      // ...and the empty directories of deleted volumes (every export open would look at them)
      const emptyVolumeDirs = fs ? await fs.removeEmptyTrees(VOLUMES_PREFIX, TEMPORARY_FILE_AGE_MS, Boolean(opts.dryRun)) : 0;
      if (emptyVolumeDirs > 0) ctx.logger.info({ volumes: emptyVolumeDirs, dryRun: Boolean(opts.dryRun) }, 'empty directories of deleted volumes removed');
      bar.done();
      if (opts.json) return out(JSON.stringify({ ...r, keys: undefined, temporaryFiles: temporary.files, temporaryBytes: temporary.bytes, emptyVolumeDirs, dryRun: Boolean(opts.dryRun) }, null, 2));
      out(`${opts.dryRun ? 'would remove' : 'removed'} ${r.garbageObjects} unreferenced objects (${formatSize(r.garbageBytes)}) of ${r.scannedObjects}; ${r.tooYoung} unreferenced objects younger than ${grace} min kept`);
      if (temporary.files > 0) out(`${opts.dryRun ? 'would remove' : 'removed'} ${temporary.files} temporary files (${formatSize(temporary.bytes)}) of writes cut off more than a day ago`);
      if (emptyVolumeDirs > 0) out(`${opts.dryRun ? 'would remove' : 'removed'} the empty directories of ${emptyVolumeDirs} volumes deleted more than a day ago`);
      if (r.heldByWriters > 0) {
        out(`kept ${r.heldByWriters} unreferenced objects that writers of ${r.writingVolumes.join(', ')} may still commit (they hold leases); a later gc takes what they leave`);
      }
      if (r.newVolumeObjects > 0) out(`kept ${r.newVolumeObjects} objects of volumes created while gc ran`);
      if (r.orphanObjects > 0) {
        out(`kept ${r.orphanObjects} objects of ${r.orphanVolumes.length} volumes that hold data but have neither metadata nor a deletion mark (ids ${r.orphanVolumes.join(', ')}): their metadata was lost (restore volumes/ID/meta from a backup or replica) or, in a replica, a sync was cut off before it copied it (sync again); gc --orphans removes them`);
      }
    });
  });
}
