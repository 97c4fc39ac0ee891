// snapshot prune over a real vault: snapshots with distinct data, re-dated to the times the test
// sets (restic's 12-Sundays example); dry runs change nothing; the keep flag and clones protect.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { VaultError } from '../../src/errors';
import { MemoryStore } from '../../src/store/memory-store';
import type { ObjectStore } from '../../src/store/object-store';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { parseRetentionPolicy } from '../../src/volume/retention';
import { pruneSnapshots } from '../../src/volume/snapshot-prune';
import type { Vault } from '../../src/volume/vault';
import { countKeys, logger, makeVault } from './vault-fixture';

const SUNDAYS = ['2019-09-01', '2019-09-08', '2019-09-15', '2019-09-22', '2019-09-29', '2019-10-06', '2019-10-13', '2019-10-20', '2019-10-27', '2019-11-03', '2019-11-10', '2019-11-17'];
const NOW = new Date('2019-11-20T00:00:00Z');

/** One snapshot per Sunday, each after rewriting chunk 0 (so each names an object of its own). */
async function sundayVault(store: ObjectStore, vault: Vault): Promise<{ data: Map<string, Buffer>; volumeId: string }> {
  const meta = await vault.createVolume('vol', 8 * CHUNK_SIZE);
  const engine = await vault.openEngine('vol', { autoCommitMs: 0 });
  const data = new Map<string, Buffer>();
  for (const day of SUNDAYS) {
    const bytes = randomBytes(CHUNK_SIZE);
    await engine.write(0, bytes);
    const snap = await engine.snapshot(day, { keep: day === '2019-09-08' });
    data.set(day, bytes);
    // the test's clock: the record is re-dated to that Sunday, 11:00 UTC
    await engine['objects'].deleteSnapshotRecord(snap.id);
    await engine['objects'].writeSnapshot({ ...snap, createdAt: `${day}T11:00:00.000Z` });
  }
  await engine.close();
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, '/snapshots/'), 12);
  return { data, volumeId: meta.id };
}

async function snapshotBytes(vault: Vault, name: string): Promise<Buffer> {
  const e = await vault.openSnapshotEngine('vol', name);
  try {
    return await e.read(0, CHUNK_SIZE);
  } finally {
    await e.close();
  }
}

test('prune --keep-daily 4 over 12 Sundays: a dry run changes nothing; then 7 go, the keep-flagged one stays', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const { data, volumeId } = await sundayVault(store, f.vault);
  const before = await countKeys(store, `volumes/${volumeId}/`, '/');
  const policy = parseRetentionPolicy('daily=4');

  const dry = await pruneSnapshots(f.vault, 'vol', { policy, dryRun: true, now: NOW }, logger);
  assert.deepEqual(dry.snapshots.filter((d) => d.keep).map((d) => [d.name, d.reasons.join()]), [
    ['2019-11-17', 'daily snapshot'],
    ['2019-11-10', 'daily snapshot'],
    ['2019-11-03', 'daily snapshot'],
    ['2019-10-27', 'daily snapshot'],
    ['2019-09-08', 'keep flag'],
  ]);
  assert.equal(dry.removed, 7);
  assert.equal(dry.freedObjects, 0);
  assert.equal(await countKeys(store, `volumes/${volumeId}/`, '/'), before, 'a dry run deletes nothing');
  assert.equal((await f.vault.listSnapshots('vol')).length, 12);

  const real = await pruneSnapshots(f.vault, 'vol', { policy, dryRun: false, now: NOW }, logger);
  assert.deepEqual(real.snapshots.map((d) => [d.name, d.keep]), dry.snapshots.map((d) => [d.name, d.keep]), 'the run does what the dry run said');
  assert.equal(real.removed, 7);
  assert.ok(real.freedObjects >= 7, `freed ${real.freedObjects}: each removed snapshot's own chunk`);
  const left = (await f.vault.listSnapshots('vol')).map((s) => s.name).sort();
  assert.deepEqual(left, ['2019-09-08', '2019-10-27', '2019-11-03', '2019-11-10', '2019-11-17']);
  for (const name of left) assert.ok((await snapshotBytes(f.vault, name)).equals(data.get(name)!), `${name} reads as written`);

  // the keep flag survives every policy, and `snapshot delete` refuses it too
  for (const p of ['last=1', 'within=1h', 'yearly=1', 'weekly=1']) {
    await pruneSnapshots(f.vault, 'vol', { policy: parseRetentionPolicy(p), dryRun: false, now: NOW }, logger);
    assert.ok((await f.vault.listSnapshots('vol')).some((s) => s.name === '2019-09-08'), p);
  }
  assert.deepEqual((await f.vault.listSnapshots('vol')).map((s) => s.name), ['2019-09-08', '2019-11-17']);
  await assert.rejects(f.vault.deleteSnapshot('vol', '2019-09-08'), (e: VaultError) => e.code === 'ERR_EXISTS' && /keep flag/.test(e.message));
  const { objects } = await f.vault.loadVolume('vol');
  const flagged = (await objects.listSnapshots()).find((s) => s.name === '2019-09-08')!;
  assert.equal((await objects.setSnapshotKeep(flagged.id, false)).keep, false);
  assert.ok((await snapshotBytes(f.vault, '2019-09-08')).equals(data.get('2019-09-08')!), 'the rewritten record still opens');
  await pruneSnapshots(f.vault, 'vol', { policy: parseRetentionPolicy('last=1'), dryRun: false, now: NOW }, logger);
  assert.deepEqual((await f.vault.listSnapshots('vol')).map((s) => s.name), ['2019-11-17']);
});

test('prune keeps a snapshot that a clone is made from, and only the matching names when asked', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const { data } = await sundayVault(store, f.vault);
  await f.vault.cloneVolume('vol@2019-09-15', 'child');
  const r = await pruneSnapshots(f.vault, 'vol', { policy: parseRetentionPolicy('last=1'), dryRun: false, now: NOW }, logger);
  const cloned = r.snapshots.find((d) => d.name === '2019-09-15')!;
  assert.deepEqual([cloned.keep, cloned.reasons], [true, ['has clones']]);
  const child = await f.vault.openEngine('child');
  assert.ok((await child.read(0, CHUNK_SIZE)).equals(data.get('2019-09-15')!), 'the clone still reads its origin');
  await child.close();
  // match: only names it accepts are planned (serve's schedule prunes only its own `auto-` ones)
  const only = await pruneSnapshots(f.vault, 'vol', { policy: parseRetentionPolicy('last=1'), dryRun: true, now: NOW, match: (n) => n.startsWith('2019-11') }, logger);
  assert.deepEqual(only.snapshots.map((d) => d.name), ['2019-11-17']);
});

test("an export's temporary snapshot is no backup: prune neither counts it nor removes it (it took the last slot, and the real snapshots went)", async (t) => {
  const f = await makeVault(new MemoryStore());
  t.after(() => f.cleanup());
  await f.vault.createVolume('vol', 2 * CHUNK_SIZE);
  const engine = await f.vault.openEngine('vol', { autoCommitMs: 0 });
  await engine.write(0, randomBytes(CHUNK_SIZE));
  await engine.snapshot('n1');
  await engine.write(0, randomBytes(CHUNK_SIZE));
  await engine.snapshot('n2');
  const n2 = await snapshotBytes(f.vault, 'n2');
  // what `export vol` takes while a server serves the volume: newest, and with the keep flag
  await engine.snapshot('export-2026-12-05T23-40-00Z-0a1b2c3d-6324', { keep: true });
  await engine.close();
  const r = await pruneSnapshots(f.vault, 'vol', { policy: parseRetentionPolicy('last=1'), dryRun: false }, logger);
  assert.deepEqual(r.snapshots.map((d) => [d.name, d.keep]), [['n2', true], ['n1', false]]);
  assert.deepEqual((await f.vault.listSnapshots('vol')).map((s) => s.name).sort(), ['export-2026-12-05T23-40-00Z-0a1b2c3d-6324', 'n2']);
  assert.ok((await snapshotBytes(f.vault, 'n2')).equals(n2));
});
