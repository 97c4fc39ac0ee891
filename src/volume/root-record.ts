// The manifest root of a volume: small, encrypted, the only mutable object of a volume.
// Replacing it is the commit point of a flush (docs/FORMAT.md, "Write ordering").
import { VaultError } from '../errors';
import type { PageRef } from './manifest';

export const ROOT_FORMAT = 1;

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
}

export function encodeRoot(root: RootRecord): Buffer {
  return Buffer.from(JSON.stringify({ ...root, pages: root.pages.map((p) => (p ? [p.id, p.epoch] : null)) }));
}

export function decodeRoot(bytes: Buffer, volumeId: string): RootRecord {
  let raw: any;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new VaultError('ERR_CORRUPT', `root of volume ${volumeId} is not valid JSON`);
  }
  const ok =
    raw && raw.v === ROOT_FORMAT && raw.volumeId === volumeId && Number.isSafeInteger(raw.seq) && Number.isSafeInteger(raw.size) &&
    raw.size >= 0 && Number.isSafeInteger(raw.chunkSize) && raw.chunkSize > 0 && Number.isSafeInteger(raw.pageEntries) &&
    Number.isSafeInteger(raw.epoch) && Array.isArray(raw.pages) &&
    raw.pages.length === Math.ceil(Math.ceil(raw.size / raw.chunkSize) / raw.pageEntries) &&
    raw.pages.every((p: unknown) => p === null || (Array.isArray(p) && typeof p[0] === 'string' && /^[0-9a-f]{32}$/.test(p[0]) && Number.isSafeInteger(p[1]))) &&
    (raw.origin === undefined || (/^[0-9a-f]{32}$/.test(raw.origin?.volumeId) && /^[0-9a-f]{32}$/.test(raw.origin?.snapshotId)));
  if (!ok) throw new VaultError('ERR_CORRUPT', `root of volume ${volumeId} is malformed`);
  return { ...raw, pages: raw.pages.map((p: [string, number] | null) => (p ? { id: p[0], epoch: p[1] } : null)) };
}
