// A snapshot: an immutable, encrypted record holding a copy of a committed root's page list.
// Creating one copies no chunk (O(number of pages), i.e. 256 refs for 1 TiB); the epoch bump that
// goes with it keeps every object it names alive until the snapshot is deleted.
import { VaultError } from '../errors';
import type { PageRef } from './manifest';

export const SNAPSHOT_FORMAT = 1;
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface SnapshotRecord {
  readonly v: number;
  readonly id: string;
  readonly volumeId: string;
  readonly name: string;
  readonly createdAt: string;
  /** the volume epoch the snapshot froze: every entry it names has epoch <= this */
  readonly epoch: number;
  readonly rootSeq: number;
  readonly size: number;
  readonly chunkSize: number;
  readonly pageEntries: number;
  readonly pages: Array<PageRef | null>;
  /** prune never removes a snapshot with this flag (absent in records written before it existed) */
  readonly keep?: boolean;
}

/** The name `export` gives the temporary snapshot it reads a served volume through (with the
 *  keep flag, deleted afterwards): `export-<UTC time>-<host tag>-<pid>`. */
export const TEMPORARY_EXPORT_SNAPSHOT = /^export-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ-([0-9a-f]{8})-(\d+)$/;

/** The name a server's schedule (`serve --snapshot-every`) gives its snapshots: `auto-<UTC
 *  time>`. Its `--prune` takes only these. */
export const SCHEDULED_SNAPSHOT = /^auto-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ$/;

/** A name a snapshot taken by hand may not have: the schedule's prune, and the cleanup of killed
 *  exports, would delete it as their own. Null when the name is free. */
export function reservedSnapshotName(name: string): string | null {
  if (SCHEDULED_SNAPSHOT.test(name)) return `"${name}" is the form of the names the server's snapshot schedule gives (auto-<UTC time>), and its --prune would delete it: choose another name`;
  if (TEMPORARY_EXPORT_SNAPSHOT.test(name)) return `"${name}" is the form of the names \`nbd-vault export\` gives its temporary snapshots, which are deleted as left over: choose another name`;
  return null;
}

export function checkSnapshotName(name: unknown): asserts name is string {
  // (a test of a non-string passes when its String() does: `undefined`, 12345)
  if (typeof name !== 'string' || !SNAPSHOT_NAME.test(name)) {
    throw new VaultError('ERR_INVALID_ARGUMENT', `invalid snapshot name "${name}": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

/** What NBD clients read of a snapshot export, in a listing and when they open it alike. */
export function snapshotExportDescription(volumeName: string, s: Pick<SnapshotRecord, 'name' | 'createdAt'>): string {
  return `snapshot ${s.name} of volume ${volumeName} (${s.createdAt}), read-only`;
}

export function encodeSnapshot(s: SnapshotRecord): Buffer {
  // `keep` is written only when set: a record without the flag is byte-for-byte the format-1 record.
  const { keep, ...rest } = s;
  return Buffer.from(JSON.stringify({ ...rest, ...(keep ? { keep: true } : {}), pages: s.pages.map((p) => (p ? [p.id, p.epoch] : null)) }));
}

export function decodeSnapshot(bytes: Buffer, volumeId: string, id: string): SnapshotRecord {
  let raw: any;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch {
    raw = null;
  }
  const ok =
    raw && raw.v === SNAPSHOT_FORMAT && raw.id === id && raw.volumeId === volumeId && typeof raw.name === 'string' &&
    Number.isSafeInteger(raw.epoch) && Number.isSafeInteger(raw.size) && Number.isSafeInteger(raw.chunkSize) && Array.isArray(raw.pages) &&
    Number.isSafeInteger(raw.pageEntries) && raw.pageEntries > 0 && raw.chunkSize > 0 && raw.size >= 0 &&
    (raw.keep === undefined || typeof raw.keep === 'boolean') &&
    raw.pages.length === Math.ceil(Math.ceil(raw.size / raw.chunkSize) / raw.pageEntries) &&
    raw.pages.every((p: unknown) => p === null || (Array.isArray(p) && typeof p[0] === 'string' && /^[0-9a-f]{32}$/.test(p[0]) && Number.isSafeInteger(p[1])));
  // The id inside must match the object's name: a record copied over another is refused.
  if (!ok) throw new VaultError('ERR_CORRUPT', `snapshot record ${id} of volume ${volumeId} is malformed or misplaced`);
  return { ...raw, pages: raw.pages.map((p: [string, number] | null) => (p ? { id: p[0], epoch: p[1] } : null)) };
}
