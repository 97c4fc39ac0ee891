// The two engine operations that change what the volume is, not what it holds: a snapshot (a
// root that starts a new epoch, and a record of it) and a resize (the chunk count and the edge
// chunk's length). Both run inside the sealer's exclusive section, so no seal cycle or
// compaction step sees the volume half changed; volume-engine.ts checks the lease and the
// engine's state before it calls them.
import { VaultError } from '../errors';
import type { Logger } from '../util/log';
import { CHUNK_SIZE, chunkCount, chunkLength } from './chunk-math';
import { newObjectId } from './manifest';
import { chunkKey } from './object-keys';
import { SNAPSHOT_FORMAT, checkSnapshotName, type SnapshotRecord } from './snapshot-record';
import type { VolumeObjects } from './volume-objects';
import type { VolumeState } from './volume-state';
import type { VolumeContexts } from './volume-contexts';
import type { ReadPath } from './read-path';
import type { WritePath } from './write-path';
import type { Sealer } from './sealer';
import type { Committer } from './commit';

/** What the operations work on: the engine's parts. */
export interface EngineParts {
  readonly name: string;
  readonly state: VolumeState;
  readonly objects: VolumeObjects;
  readonly reads: ReadPath;
  readonly writes: WritePath;
  readonly sealer: Sealer;
  readonly committer: Committer;
  readonly contexts: VolumeContexts;
  readonly logger: Logger;
}

/**
 * Freeze the volume at one consistent point: seal what is dirty, fold every journal (snapshot
 * records never name journals), commit a root that bumps the epoch, then record that root's page
 * list. Writes go on meanwhile; those that land after the capture belong to the next epoch. A
 * crash between the root and the record only costs an epoch, never data. No chunk is copied:
 * the cost is O(pages) plus the journal blocks not yet folded. One at a time (the caller chains
 * them): the name check must see the previous snapshot's record.
 */
export async function takeSnapshot(p: EngineParts, name: string, keep: boolean): Promise<SnapshotRecord> {
  checkSnapshotName(name);
  if ((await p.objects.listSnapshots()).some((x) => x.name === name)) {
    throw new VaultError('ERR_EXISTS', `volume "${p.name}" has a snapshot named "${name}" already`);
  }
  const root = await p.sealer.exclusive(() => p.committer.commit(true));
  const record: SnapshotRecord = {
    v: SNAPSHOT_FORMAT,
    id: newObjectId(),
    volumeId: p.objects.volumeId,
    name,
    createdAt: new Date().toISOString(),
    epoch: root.epoch - 1,
    rootSeq: root.seq,
    size: root.size,
    chunkSize: root.chunkSize,
    pageEntries: root.pageEntries,
    pages: root.pages,
    ...(keep ? { keep: true } : {}),
  };
  await p.objects.writeSnapshot(record);
  p.contexts.forget(name);
  p.logger.info({ volume: p.name, snapshot: name, epoch: record.epoch, seq: root.seq }, 'snapshot created');
  return record;
}

/**
 * Change the volume's size in memory (the caller flushes: no client may be connected, since sizes
 * are fixed per connection). A short last chunk that grows is rewritten at full length; bytes cut
 * off by a shrink are zeroed first, so a later grow shows zeros there, never old data.
 */
export async function resizeVolume(p: EngineParts, newSize: number): Promise<void> {
  const s = p.state;
  if (newSize === s.sizeBytes) return;
  await p.sealer.exclusive(async () => {
    const oldSize = s.sizeBytes;
    // The chunk that holds the smaller end changes length: carry its bytes over (truncated or
    // zero-padded), since a stored chunk must have exactly its chunk's length.
    const edge = chunkCount(Math.min(oldSize, newSize)) - 1;
    let carried: Buffer | null = null;
    if (edge >= 0 && chunkLength(oldSize, edge) !== chunkLength(newSize, edge)) carried = await p.reads.chunkContent(edge);
    const newCount = chunkCount(newSize);
    s.active.dropFrom(newCount);
    s.overlay.dropFrom(newCount);
    for (const { entry } of s.manifest.resize(newCount)) {
      if (entry.id !== null && entry.epoch === s.epoch) s.pendingDeletes.push(chunkKey(p.objects.volumeId, entry.id));
    }
    s.sizeBytes = newSize;
    s.manifestChangedSinceCommit = true;
    if (carried !== null) {
      const resized = Buffer.alloc(chunkLength(newSize, edge));
      carried.copy(resized, 0, 0, Math.min(carried.length, resized.length));
      s.active.zeroChunk(edge, Date.now());
      await p.writes.write(edge * CHUNK_SIZE, resized.length, resized);
    }
  });
}
