// verify: download and authenticate every object a manifest names: every chunk (every frame of a
// format 2 chunk) and every write journal of a live root (every frame: index and data). Reports
// each damaged chunk with its byte range and each damaged journal; never stops at the first.
// Objects shared by several manifests (a volume and its snapshots) are checked once per run when
// the caller passes the same `checked` set.
import { describeError } from '../errors';
import { CHUNK_SIZE, chunkLength } from './chunk-math';
import type { Manifest } from './manifest';
import { journalsOf, type RootRecord } from './root-record';
import { type Vault } from './vault';
import { LIVE_READ_ATTEMPTS, splitExportName } from './volume-references';
import type { VolumeObjects } from './volume-objects';

export interface Damage {
  readonly chunk: number;
  readonly offset: number;
  readonly length: number;
  readonly error: string;
}

export interface JournalDamage {
  readonly journal: string;
  readonly error: string;
}

export interface VerifyResult {
  readonly chunks: number;
  readonly checkedObjects: number;
  readonly damaged: Damage[];
  /** journals the root names */
  readonly journals: number;
  readonly damagedJournals: JournalDamage[];
}

export async function verifyManifest(
  objects: VolumeObjects,
  manifest: Manifest,
  root: RootRecord,
  opts: { concurrency?: number; checked?: Map<string, string | null>; onProgress?: (done: number, total: number) => void } = {},
): Promise<VerifyResult> {
  const checked = opts.checked ?? new Map<string, string | null>();
  const todo: number[] = [];
  for (let i = 0; i < manifest.chunkCount; i++) if (!manifest.isZero(i)) todo.push(i);
  const damaged: Damage[] = [];
  let next = 0;
  let done = 0;
  let fetched = 0;
  const worker = async () => {
    while (next < todo.length) {
      const i = todo[next++];
      const entry = manifest.get(i);
      let verdict = checked.get(entry.id!);
      if (verdict === undefined) {
        try {
          await objects.readChunk(i, entry, chunkLength(root.size, i));
          verdict = null;
        } catch (err) {
          verdict = describeError(err);
        }
        fetched++;
        checked.set(entry.id!, verdict);
      }
      if (verdict !== null) damaged.push({ chunk: i, offset: i * CHUNK_SIZE, length: chunkLength(root.size, i), error: verdict });
      opts.onProgress?.(++done, todo.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 8, Math.max(1, todo.length)) }, worker));
  damaged.sort((a, b) => a.chunk - b.chunk);
  // Journals (a live root's only): small, few, each opened whole, frame by frame.
  const damagedJournals: JournalDamage[] = [];
  const journals = journalsOf(root);
  for (const ref of journals) {
    let verdict = checked.get(`journal:${ref.id}`);
    if (verdict === undefined) {
      try {
        await objects.readJournal(ref);
        verdict = null;
      } catch (err) {
        verdict = describeError(err);
      }
      fetched++;
      checked.set(`journal:${ref.id}`, verdict);
    }
    if (verdict !== null) damagedJournals.push({ journal: ref.id, error: verdict });
  }
  return { chunks: todo.length, checkedObjects: fetched, damaged, journals: journals.length, damagedJournals };
}

/**
 * Verify `VOL` or `VOL@SNAP`. A live volume may be served while we read it: the server folds
 * journals into chunks and deletes what its new root no longer names. Damage found under a root
 * that has since moved is checked again under the new root (objects already found good are not
 * fetched again); damage under an unchanged root, or in a snapshot, is damage.
 */
export async function verifySource(
  vault: Vault,
  spec: string,
  opts: { checked?: Map<string, string | null>; onProgress?: (done: number, total: number) => void } = {},
): Promise<VerifyResult> {
  const [volumeName, snapName] = splitExportName(spec);
  const checked = opts.checked ?? new Map<string, string | null>();
  for (let attempt = 1; ; attempt++) {
    const { manifest, root, objects } = await vault.loadManifestOf(spec);
    const r = await verifyManifest(objects, manifest, root, { checked, onProgress: opts.onProgress });
    const clean = r.damaged.length === 0 && r.damagedJournals.length === 0;
    if (clean || snapName !== null || attempt === LIVE_READ_ATTEMPTS) return r;
    if ((await vault.rootSeqOf(volumeName)) === root.seq) return r;
    for (const [key, verdict] of checked) if (verdict !== null) checked.delete(key);
  }
}
