// Changed-block tracking from manifests: the pure runs (page shortcut included), and the contexts
// a volume engine offers — dirty bitmaps on snapshots, on the live volume with writes still in
// the write-back cache, a clone's origin snapshot, allocation depth — agreeing with diff.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { Manifest, PAGE_ENTRIES, newObjectId } from '../../src/volume/manifest';
import { chunkRuns, diffManifests, dirtyState, allocationDepthState } from '../../src/volume/changed-blocks';
import { makeVault } from './vault-fixture';

function entry(): { id: string; epoch: number; storedSize: number } {
  return { id: newObjectId(), epoch: 1, storedSize: 100 };
}

/** Chunk indexes flagged (non-zero) in runs starting at byte 0. */
function flagged(runs: Array<{ length: number; flags: number }>, flag = 1): number[] {
  const out: number[] = [];
  let at = 0;
  for (const r of runs) {
    if (r.flags === flag) for (let i = at / CHUNK_SIZE; i < (at + r.length) / CHUNK_SIZE; i++) out.push(i);
    at += r.length;
  }
  return out;
}

test('dirty runs: rewritten, trimmed and new chunks across pages; untouched pages skipped whole; pending chunks', () => {
  const chunks = 3 * PAGE_ENTRIES + 7;
  const size = chunks * CHUNK_SIZE - 1000; // a short last chunk
  const a = new Manifest(chunks);
  for (const i of [0, 1, 5, PAGE_ENTRIES + 3, chunks - 1]) a.set(i, entry());
  const b = new Manifest(chunks);
  for (let i = 0; i < chunks; i++) if (!a.isZero(i)) b.set(i, a.get(i));
  b.set(1, entry()); // rewritten
  b.set(5, { id: null, epoch: 2, storedSize: 0 }); // trimmed
  b.set(2 * PAGE_ENTRIES + 10, entry()); // new, in a page that was empty
  b.set(chunks - 1, entry()); // the short last chunk rewritten
  const runs = chunkRuns(dirtyState(a, b), 0, size, size);
  assert.deepEqual(flagged(runs), [1, 5, 2 * PAGE_ENTRIES + 10, chunks - 1]);
  assert.equal(runs.reduce((n, r) => n + r.length, 0), size, 'the runs cover the volume exactly');
  assert.deepEqual(
    diffManifests(a, size, b, size).map((r) => r.offset / CHUNK_SIZE),
    [1, 5, 2 * PAGE_ENTRIES + 10, chunks - 1],
    'diff names the same chunks',
  );
  // pending: data always dirty; zeros dirty only where the base had data
  const pending = new Map([
    [7, true],
    [0, false],
    [9, false],
  ]);
  assert.deepEqual(flagged(chunkRuns(dirtyState(a, b, pending), 0, size, size)), [0, 1, 5, 7, 2 * PAGE_ENTRIES + 10, chunks - 1]);
  // a range starting mid-chunk, and the extent cap
  const mid = chunkRuns(dirtyState(a, b), CHUNK_SIZE + 7, 10, size);
  assert.deepEqual(mid, [{ length: 10, flags: 1 }]);
  assert.equal(chunkRuns(dirtyState(a, b), 0, size, size, 2).length, 2);
  // the same manifest against itself: one clean run over the whole volume
  assert.deepEqual(chunkRuns(dirtyState(b, b), 0, size, size), [{ length: size, flags: 0 }]);
  // allocation depth over pages, empty spans skipped whole: exactly b's non-zero chunks
  assert.deepEqual(flagged(chunkRuns(allocationDepthState(b, false), 0, size, size)), [0, 1, PAGE_ENTRIES + 3, 2 * PAGE_ENTRIES + 10, chunks - 1]);
  assert.deepEqual(flagged(chunkRuns(allocationDepthState(b, false, new Map([[40, true]])), 0, size, size)), [0, 1, 40, PAGE_ENTRIES + 3, 2 * PAGE_ENTRIES + 10, chunks - 1]);
  // allocation depth: 0 zero, 1 own, 2 origin's (epoch 0 in a clone)
  const c = new Manifest(4);
  c.set(1, { ...entry(), epoch: 0 });
  c.set(2, entry());
  assert.deepEqual(chunkRuns(allocationDepthState(c, true), 0, 4 * CHUNK_SIZE, 4 * CHUNK_SIZE), [
    { length: CHUNK_SIZE, flags: 0 },
    { length: CHUNK_SIZE, flags: 2 },
    { length: CHUNK_SIZE, flags: 1 },
    { length: CHUNK_SIZE, flags: 0 },
  ]);
});

test('engine contexts: snapshots, the live volume with unflushed writes, a clone and its snapshot', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('vol', 16 * CHUNK_SIZE);
  // no background upload or commit: written data stays in the write-back cache until flush
  const live = await f.vault.openEngine('vol', { writebackDelayMs: 3_600_000, autoCommitMs: 0 });
  t.after(() => live.close());
  await live.write(0, randomBytes(8 * CHUNK_SIZE));
  await live.snapshot('s1');
  await live.write(2 * CHUNK_SIZE + 100, Buffer.from('rewritten')); // partial rewrite
  await live.trim(3 * CHUNK_SIZE, CHUNK_SIZE);
  await live.writeZeroes(4 * CHUNK_SIZE, CHUNK_SIZE);
  await live.write(12 * CHUNK_SIZE, randomBytes(CHUNK_SIZE)); // new data
  await live.snapshot('s2');
  await live.write(14 * CHUNK_SIZE, randomBytes(100)); // not flushed
  await live.writeZeroes(5 * CHUNK_SIZE, CHUNK_SIZE); // not flushed either
  const size = live.size;

  assert.deepEqual(await live.listMetaContexts(), ['qemu:allocation-depth', 'qemu:dirty-bitmap:s1', 'qemu:dirty-bitmap:s2']);
  assert.deepEqual(flagged(await live.metaContextStatus('qemu:dirty-bitmap:s2', 0, size)), [5, 14], 'unflushed writes count');
  assert.deepEqual(flagged(await live.metaContextStatus('qemu:dirty-bitmap:s1', 0, size)), [2, 3, 4, 5, 12, 14]);
  await assert.rejects(live.metaContextStatus('qemu:dirty-bitmap:nope', 0, size), /no metadata context/);

  const s2 = await f.vault.openSnapshotEngine('vol', 's2');
  t.after(() => s2.close());
  assert.deepEqual(await s2.listMetaContexts(), ['qemu:allocation-depth', 'qemu:dirty-bitmap:s1'], 'only older snapshots');
  const s2map = await s2.metaContextStatus('qemu:dirty-bitmap:s1', 0, size);
  assert.deepEqual(flagged(s2map), [2, 3, 4, 12]);
  const a = await f.vault.loadManifestOf('vol@s1');
  const b = await f.vault.loadManifestOf('vol@s2');
  assert.deepEqual(
    diffManifests(a.manifest, a.root.size, b.manifest, b.root.size),
    [
      { offset: 2 * CHUNK_SIZE, length: 3 * CHUNK_SIZE },
      { offset: 12 * CHUNK_SIZE, length: CHUNK_SIZE },
    ],
    'diff agrees with the context',
  );

  // a clone of vol@s2: its origin snapshot is a context; allocation depth tells shared from own
  await live.flush();
  await f.vault.cloneVolume('vol@s2', 'cl');
  const clone = await f.vault.openEngine('cl', { autoCommitMs: 0 });
  t.after(() => clone.close());
  await clone.write(0, randomBytes(10)); // chunk 0: now the clone's own
  await clone.trim(1 * CHUNK_SIZE, CHUNK_SIZE); // chunk 1: zero
  await clone.snapshot('c1');
  await clone.write(6 * CHUNK_SIZE, randomBytes(CHUNK_SIZE));
  assert.deepEqual(await clone.listMetaContexts(), ['qemu:allocation-depth', 'qemu:dirty-bitmap:vol@s2', 'qemu:dirty-bitmap:c1']);
  assert.deepEqual(flagged(await clone.metaContextStatus('qemu:dirty-bitmap:vol@s2', 0, size)), [0, 1, 6]);
  const depth = await clone.metaContextStatus('qemu:allocation-depth', 0, size);
  assert.deepEqual(flagged(depth, 1), [0, 6]);
  assert.deepEqual(flagged(depth, 2), [2, 5, 7, 12], 'shared with the origin');
  const c1 = await f.vault.openSnapshotEngine('cl', 'c1');
  t.after(() => c1.close());
  assert.deepEqual(await c1.listMetaContexts(), ['qemu:allocation-depth', 'qemu:dirty-bitmap:vol@s2']);
  assert.deepEqual(flagged(await c1.metaContextStatus('qemu:dirty-bitmap:vol@s2', 0, size)), [0, 1]);
  const c1depth = await c1.metaContextStatus('qemu:allocation-depth', 0, size);
  assert.deepEqual(flagged(c1depth, 1), [0]);
  assert.deepEqual(flagged(c1depth, 2), [2, 5, 6, 7, 12]);
});

test('diff after a shrink names no byte past the newer end, as the dirty-bitmap context of that export does', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 3 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v');
  await e.write(0, randomBytes(3 * CHUNK_SIZE));
  await e.close();
  await f.vault.createSnapshot('v', 'a');
  const small = CHUNK_SIZE + CHUNK_SIZE / 2;
  await f.vault.resizeVolume('v', small, true);
  await f.vault.createSnapshot('v', 'b');
  const a = await f.vault.loadManifestOf('v@a');
  const b = await f.vault.loadManifestOf('v@b');
  const ranges = diffManifests(a.manifest, a.root.size, b.manifest, b.root.size);
  assert.ok(ranges.every((r) => r.offset + r.length <= small), `within the ${small}-byte export: ${JSON.stringify(ranges)}`);
  const exp = await f.vault.openSnapshotEngine('v', 'b');
  t.after(() => exp.close());
  const map = await exp.metaContextStatus('qemu:dirty-bitmap:a', 0, small);
  let offset = 0;
  const dirty = map.flatMap((x) => {
    const r = { offset, length: x.length };
    offset += x.length;
    return x.flags === 1 ? [r] : [];
  });
  assert.deepEqual(ranges, dirty, 'diff agrees with the context');
});
