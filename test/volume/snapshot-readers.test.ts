// Reader marks (src/volume/snapshot-readers.ts): a snapshot being read is not deleted under its
// reader — by hand, by prune, from another process — and a reader that stopped does not keep it
// for good. The order of the two sides (mark, then look) is pinned down by a delete that began
// first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MemoryStore } from '../../src/store/memory-store';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { pruneSnapshots } from '../../src/volume/snapshot-prune';
import { sessionKey } from '../../src/volume/writer-session';
import { makeVault, logger, countKeys } from './vault-fixture';

async function volumeWithSnapshots(f: Awaited<ReturnType<typeof makeVault>>, names: string[]): Promise<Buffer[]> {
  await f.vault.createVolume('v', 2 * CHUNK_SIZE);
  const images: Buffer[] = [];
  for (const name of names) {
    const data = randomBytes(CHUNK_SIZE);
    const e = await f.vault.openEngine('v');
    await e.write(0, data);
    await e.close();
    await f.vault.createSnapshot('v', name);
    images.push(data);
  }
  // the live volume moves on: what only the snapshots name is theirs to free
  const e = await f.vault.openEngine('v');
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.close();
  return images;
}

test('a snapshot read by another process is not deleted (by hand or by prune) until its reader closes; the reader reads whole throughout', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const [s1] = await volumeWithSnapshots(f, ['s1', 's2']);
  const server = await f.reopen(); // a server elsewhere, serving v@s1 to a restore
  t.after(() => server.close());
  const reader = await server.openSnapshotEngine('v', 's1');
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 1);

  await assert.rejects(f.vault.deleteSnapshot('v', 's1'), /snapshot v@s1 is being read by .*\(pid \d+ on .*since .*\): delete it once the reader is done/);
  const pruned = await pruneSnapshots(f.vault, 'v', { policy: { counts: { last: 1 } }, dryRun: false }, logger);
  assert.deepEqual(
    pruned.snapshots.map((d) => [d.name, d.keep, d.reasons.join(', ')]),
    [
      ['s2', true, 'last snapshot'],
      ['s1', true, 'being read'],
    ],
  );
  assert.equal(await countKeys(store, 'volumes/', '.deleting'), 0, 'the refused deletes took their marks back');
  assert.ok((await reader.read(0, CHUNK_SIZE)).equals(s1), 'the reader reads the snapshot whole');

  await reader.close();
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 0, 'the close removed the mark');
  await f.vault.deleteSnapshot('v', 's1');
  assert.deepEqual((await f.vault.listSnapshots('v')).map((s) => s.name), ['s2']);
});

test('a snapshot read by this very process (a server whose schedule prunes) is refused too', async (t) => {
  const f = await makeVault(new MemoryStore());
  t.after(() => f.cleanup());
  await volumeWithSnapshots(f, ['s1']);
  const reader = await f.vault.openSnapshotEngine('v', 's1');
  const t0 = performance.now();
  await assert.rejects(f.vault.deleteSnapshot('v', 's1'), /is being read by/);
  assert.ok(performance.now() - t0 < 2000, 'its own reader is known at once, not watched');
  await reader.close();
  await f.vault.deleteSnapshot('v', 's1');
});

test('the mark of a reader that was killed (its heartbeat stands still) is removed once the heartbeat is found dead, and the delete goes on', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await volumeWithSnapshots(f, ['s1']);
  const { objects } = await f.vault.loadVolume('v');
  const snap = (await f.vault.listSnapshots('v'))[0];
  // what a killed reader leaves: its mark, and a heartbeat (ttl 400 ms) nobody renews
  const dead = randomBytes(16).toString('hex');
  await store.put(sessionKey(dead), Buffer.from(JSON.stringify({ v: 1, ttlMs: 400, renewMs: 200, beat: 7, writtenAt: Date.now(), pendingSince: null })));
  await objects.putReaderMark(snap.id, `${dead}-0123456789abcdef`, { v: 1, session: dead, purpose: 'nbd-vault export', host: 'elsewhere', pid: 1, since: new Date().toISOString() });
  // and one whose heartbeat is gone already (a reader that stopped between the two deletes)
  const gone = randomBytes(16).toString('hex');
  await objects.putReaderMark(snap.id, `${gone}-0123456789abcdef`, { v: 1, session: gone, purpose: 'nbd-vault serve', host: 'elsewhere', pid: 2, since: new Date().toISOString() });
  const t0 = performance.now();
  await f.vault.deleteSnapshot('v', 's1');
  assert.ok(performance.now() - t0 >= 350, 'the standing heartbeat was watched for its ttl');
  assert.deepEqual(await f.vault.listSnapshots('v'), []);
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 0, 'both stale marks removed');
});

test('a reader that comes while a delete is under way is refused and leaves no mark; one whose snapshot is gone likewise', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await volumeWithSnapshots(f, ['s1']);
  const { objects } = await f.vault.loadVolume('v');
  const snap = (await f.vault.listSnapshots('v'))[0];
  await objects.markDeleting(snap.id); // the deleter marked and is now looking for readers
  await assert.rejects(f.vault.openSnapshotEngine('v', 's1'), /snapshot v@s1 is being deleted/);
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 0);
  await objects.unmarkDeleting(snap.id);
  // the record deleted between the reader's look-up and its mark (the deletion mark already gone)
  const opening = f.vault.openSnapshotEngine('v', 's1');
  await objects.deleteSnapshotRecord(snap.id);
  await assert.rejects(opening, /snapshot v@s1 is being deleted|has no snapshot named "s1"/);
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 0);
});
