// gc: remove objects that no root and no snapshot names. Safe beside a running server because it
// never removes an object younger than the grace period: a server's uploads become referenced by
// a root within seconds (background commits), and it never re-references an old object.
// Objects of a volume whose metadata is gone (a crypto-erased, half-deleted volume) are garbage too.
import type { Logger } from '../util/log';
import { VOLUMES_PREFIX, leaseKey, metaKey, rootKey, snapshotPrefix, volumeIdOfKey } from './object-keys';
import type { Vault } from './vault';
import { referencedKeys, snapshotAsRoot } from './vault';

export interface GcOptions {
  readonly dryRun: boolean;
  readonly graceMs: number;
  readonly now?: number;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface GcResult {
  readonly scannedObjects: number;
  readonly garbageObjects: number;
  readonly garbageBytes: number;
  readonly tooYoung: number;
  readonly deleted: number;
  readonly keys: string[];
}

export async function collectGarbage(vault: Vault, opts: GcOptions, logger: Logger): Promise<GcResult> {
  const now = opts.now ?? Date.now();
  // Strict: a volume whose metadata cannot be read right now must not look like an erased one.
  const volumes = await vault.listVolumes({ strict: true });
  const live = new Set(volumes.map((v) => v.id));
  const keep = new Set<string>();
  for (const v of volumes) {
    const { objects, root } = await vault.loadVolume(v.name);
    for (const k of await referencedKeys(objects, root)) keep.add(k);
    for (const s of await objects.listSnapshots()) {
      for (const k of await referencedKeys(objects, snapshotAsRoot(s))) keep.add(k);
    }
  }
  const garbage: string[] = [];
  let scanned = 0;
  let bytes = 0;
  let tooYoung = 0;
  for await (const info of vault.store.list(VOLUMES_PREFIX)) {
    scanned++;
    const id = volumeIdOfKey(info.key);
    if (id === null) continue;
    if (live.has(id)) {
      // a volume's own records are never garbage while the volume exists
      if (info.key === metaKey(id) || info.key === rootKey(id) || info.key === leaseKey(id) || info.key.startsWith(snapshotPrefix(id))) continue;
      if (keep.has(info.key)) continue;
    }
    if (now - info.lastModified.getTime() < opts.graceMs) {
      tooYoung++;
      continue;
    }
    garbage.push(info.key);
    bytes += info.size;
  }
  let deleted = 0;
  if (!opts.dryRun) {
    for (let k = 0; k < garbage.length; k += 1000) {
      const batch = garbage.slice(k, k + 1000);
      await vault.store.deleteMany(batch);
      deleted += batch.length;
      opts.onProgress?.(deleted, garbage.length);
    }
  }
  logger.info({ scanned, garbage: garbage.length, bytes, tooYoung, deleted, dryRun: opts.dryRun }, 'gc finished');
  return { scannedObjects: scanned, garbageObjects: garbage.length, garbageBytes: bytes, tooYoung, deleted, keys: garbage };
}
