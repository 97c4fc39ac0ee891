// The manifest root of a volume: small, encrypted, the only mutable object of a volume.
// Replacing it is the commit point of a flush (docs/FORMAT.md, "Write ordering").
// Format 2 adds the write journals: the live state is the chunks by manifest, then each journal
// of the root applied in order. Format 1 roots (no journals) are still read; roots are written
// as format 2.
import { VaultError } from '../errors';
import type { PageRef } from './manifest';

export const ROOT_FORMAT = 2;
/** Root formats this build reads. */
export const ROOT_FORMATS_READ: readonly number[] = [1, 2];

/** A write journal a root names: its object id and its stored size (the container's length). */
export interface JournalRef {
  readonly id: string;
  readonly storedSize: number;
}

export interface RootRecord {
  readonly v: number;
  readonly volumeId: string;
  /** strictly increasing with every root written; guards against rollback */
  readonly seq: number;
  readonly size: number;
  readonly chunkSize: number;
  readonly pageEntries: number;
  /** bumped by every snapshot: entries of older epochs may be shared with snapshots */
  readonly epoch: number;
  readonly pages: Array<PageRef | null>;
  readonly updatedAt: string;
  /** A clone's origin: entries and page refs of epoch 0 name objects of this volume, frozen by
   *  this snapshot (which cannot be deleted while the clone exists). */
  readonly origin?: { readonly volumeId: string; readonly snapshotId: string };
  /** Format 2: the write journals applied over the manifest, oldest first. decodeRoot always
   *  sets it ([] for format 1); optional only so roots built without journals need not say so. */
  readonly journals?: readonly JournalRef[];
  /** A replica's root as sync wrote it: the id of the snapshot whose state it holds. A writer's
   *  commit drops it, so it tells sync's roots from a writer's even once that snapshot's record
   *  is gone (pruned, or never written: an interrupted run). */
  readonly syncedFrom?: string;
}

/** The journals of a root, oldest first ([] for none). */
export function journalsOf(root: RootRecord): readonly JournalRef[] {
  return root.journals ?? [];
}

const ID_PATTERN = /^[0-9a-f]{32}$/;

export function encodeRoot(root: RootRecord): Buffer {
  return Buffer.from(
    JSON.stringify({
      ...root,
      v: ROOT_FORMAT,
      pages: root.pages.map((p) => (p ? [p.id, p.epoch] : null)),
      journals: journalsOf(root).map((j) => [j.id, j.storedSize]),
    }),
  );
}

export function decodeRoot(bytes: Buffer, volumeId: string): RootRecord & { journals: readonly JournalRef[] } {
  let raw: any;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new VaultError('ERR_CORRUPT', `root of volume ${volumeId} is not valid JSON`);
  }
  // The root is authenticated: a format number above ours is a newer writer, not damage.
  if (Number.isSafeInteger(raw?.v) && raw.v > Math.max(...ROOT_FORMATS_READ)) {
    throw new VaultError('ERR_NOT_SUPPORTED', `root of volume ${volumeId} has format ${raw.v}, newer than this build reads (${ROOT_FORMATS_READ.join(', ')}): upgrade nbd-vault`);
  }
  const ok =
    raw && ROOT_FORMATS_READ.includes(raw.v) && raw.volumeId === volumeId && Number.isSafeInteger(raw.seq) && Number.isSafeInteger(raw.size) &&
    raw.size >= 0 && Number.isSafeInteger(raw.chunkSize) && raw.chunkSize > 0 && Number.isSafeInteger(raw.pageEntries) &&
    Number.isSafeInteger(raw.epoch) && Array.isArray(raw.pages) &&
    raw.pages.length === Math.ceil(Math.ceil(raw.size / raw.chunkSize) / raw.pageEntries) &&
    raw.pages.every((p: unknown) => p === null || (Array.isArray(p) && typeof p[0] === 'string' && ID_PATTERN.test(p[0]) && Number.isSafeInteger(p[1]))) &&
    (raw.origin === undefined || (ID_PATTERN.test(raw.origin?.volumeId) && ID_PATTERN.test(raw.origin?.snapshotId))) &&
    (raw.syncedFrom === undefined || (typeof raw.syncedFrom === 'string' && ID_PATTERN.test(raw.syncedFrom))) &&
    (raw.v === 1 ? raw.journals === undefined : validJournals(raw.journals));
  if (!ok) throw new VaultError('ERR_CORRUPT', `root of volume ${volumeId} is malformed`);
  return {
    ...raw,
    pages: raw.pages.map((p: [string, number] | null) => (p ? { id: p[0], epoch: p[1] } : null)),
    journals: raw.v === 1 ? [] : raw.journals.map((j: [string, number]) => ({ id: j[0], storedSize: j[1] })),
  };
}

/** [[id, storedSize], …]: ids of 16 bytes hex, once each; sizes positive safe integers. */
function validJournals(journals: unknown): boolean {
  if (!Array.isArray(journals)) return false;
  const ids = new Set<string>();
  for (const j of journals) {
    if (!Array.isArray(j) || j.length !== 2 || typeof j[0] !== 'string' || !ID_PATTERN.test(j[0]) || ids.has(j[0])) return false;
    if (!Number.isSafeInteger(j[1]) || j[1] <= 0) return false;
    ids.add(j[0]);
  }
  return true;
}
