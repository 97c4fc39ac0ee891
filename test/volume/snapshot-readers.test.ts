// Reader marks (src/volume/snapshot-readers.ts): a snapshot being read is not deleted under its
// reader — by hand, by prune, from another process — and a reader that stopped does not keep it
// for good. The order of the two sides (mark, then look) is pinned down by a delete that began
// first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MemoryStore } from '../../src/store/memory-store';
import type { ObjectInfo, PutOptions, StoredObject } from '../../src/store/object-store';
import { VaultError } from '../../src/errors';
import { collectGarbage } from '../../src/volume/garbage-collector';
import { PassThroughStore } from '../helpers/pass-through-store';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import type { VolumeEngine } from '../../src/volume/volume-engine';
import { pruneSnapshots } from '../../src/volume/snapshot-prune';
import { WriterSession, sessionKey } from '../../src/volume/writer-session';
import { makeVault, logger, countKeys } from './vault-fixture';

async function readerMarks(store: MemoryStore): Promise<string[]> {
  const keys: string[] = [];
  for await (const i of store.list('volumes/')) if (i.key.includes('.reader.')) keys.push(i.key);
  return keys;
}

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

/** A vault whose volume `v` has one snapshot `s1`, with the volume's objects and its record. */
async function oneSnapshot(t: { after(fn: () => void): void }, store: MemoryStore = new MemoryStore()) {
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const [data] = await volumeWithSnapshots(f, ['s1']);
  const { objects } = await f.vault.loadVolume('v');
  const snap = (await f.vault.listSnapshots('v'))[0];
  return { store, f, objects, snap, data };
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
  const { store, f, objects, snap } = await oneSnapshot(t);
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

test('a look that writes nothing (snapshot prune --dry-run): a stopped reader is not live, and its mark stays for the delete', async (t) => {
  const { store, f, objects, snap } = await oneSnapshot(t);
  const gone = randomBytes(16).toString('hex');
  await objects.putReaderMark(snap.id, `${gone}-0123456789abcdef`, { v: 1, session: gone, purpose: 'nbd-vault serve', host: 'elsewhere', pid: 2, since: new Date().toISOString() });
  assert.equal(await f.vault.snapshotBeingRead('v', snap.id), false);
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 1, 'the dry look deleted no mark');
  await f.vault.deleteSnapshot('v', 's1');
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 0, 'the delete did');
});

test('a reader that comes while a delete is under way is refused and leaves no mark; one whose snapshot is gone likewise; a delete that was cut off does not keep it from being read', async (t) => {
  const { store, f, objects, snap } = await oneSnapshot(t);
  const deleter = await WriterSession.start(store, logger, { ttlMs: 60_000, renewMs: 1000 });
  t.after(() => deleter.stop());
  await objects.markDeleting(snap.id, deleter.id); // the deleter marked and is now looking for readers
  await assert.rejects(f.vault.openSnapshotEngine('v', 's1'), /snapshot v@s1 is being deleted \(a delete of it runs now; one that is refused lets go within seconds, so a client may retry\)/);
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 0);
  // the deleter stops (killed after its mark: its heartbeat goes, or stands still for its ttl)
  await deleter.stop();
  const reader = await f.vault.openSnapshotEngine('v', 's1');
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 1, 'read, and marked');
  await assert.rejects(f.vault.deleteSnapshot('v', 's1'), /is being read by/, 'the delete run again finds the reader');
  await reader.close();
  // the volume's mark of a delete cut off, from a build without sessions in marks: read too
  await objects.markDeleting(null);
  await (await f.vault.openSnapshotEngine('v', 's1')).close();
  await objects.unmarkDeleting(null);
  // the record deleted between the reader's look-up and its mark (the deletion mark already gone)
  const opening = f.vault.openSnapshotEngine('v', 's1');
  await objects.deleteSnapshotRecord(snap.id);
  await assert.rejects(opening, /snapshot v@s1 is being deleted|has no snapshot named "s1"/);
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 0);
});

/** Runs `after` once a put whose key contains `putKey`, or a head of a key containing `headKey`,
 *  has happened: a deleter acting between the reader's steps. */
class Between extends PassThroughStore {
  afterPut: { part: string; fn: () => Promise<void> } | null = null;
  afterHead: { part: string; fn: () => Promise<void> } | null = null;
  afterGet: { part: string; fn: () => Promise<void> } | null = null;
  override async get(key: string, into?: Buffer): Promise<StoredObject> {
    try {
      return await super.get(key, into);
    } finally {
      const hook = this.afterGet;
      if (hook && key.includes(hook.part)) {
        this.afterGet = null;
        await hook.fn();
      }
    }
  }
  failSessionPuts = false;
  override async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    if (this.failSessionPuts && key.startsWith('sessions/')) throw new VaultError('ERR_STORE_TRANSIENT', `injected: put ${key}`);
    const r = await super.put(key, body, opts);
    const hook = this.afterPut;
    if (hook && key.includes(hook.part)) {
      this.afterPut = null;
      await hook.fn();
    }
    return r;
  }
  override async head(key: string): Promise<ObjectInfo | null> {
    const r = await super.head(key);
    const hook = this.afterHead;
    if (hook && key.includes(hook.part)) {
      this.afterHead = null;
      await hook.fn();
    }
    return r;
  }
}

test('the reader writes its mark before it looks: a deletion marked right after the mark, or finished between its two looks, is seen', async (t) => {
  const base = new MemoryStore();
  const store = new Between(base);
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await volumeWithSnapshots(f, ['s1']);
  const { objects } = await f.vault.loadVolume('v');
  const snap = (await f.vault.listSnapshots('v'))[0];
  // a deleter marks just after the reader's mark landed (it then finds the mark and refuses)
  const deleter = await WriterSession.start(store, logger, { ttlMs: 60_000, renewMs: 1000 });
  t.after(() => deleter.stop());
  store.afterPut = { part: '.reader.', fn: async () => void (await objects.markDeleting(snap.id, deleter.id)) };
  await assert.rejects(f.vault.openSnapshotEngine('v', 's1'), /snapshot v@s1 is being deleted/);
  assert.equal(await countKeys(base, 'volumes/', '.reader.'), 0, 'no mark left');
  await objects.unmarkDeleting(snap.id);
  // a deleter that marked before and finished (record gone, mark removed) between the reader's
  // look at the deletion mark and its look at the record
  store.afterGet = { part: `${snap.id}.deleting`, fn: async () => void (await objects.deleteSnapshotRecord(snap.id)) };
  await assert.rejects(f.vault.openSnapshotEngine('v', 's1'), /snapshot v@s1 is being deleted/);
  assert.equal(await countKeys(base, 'volumes/', '.reader.'), 0, 'no mark left');
});

test('a reader whose writer session ended in a store outage marks the snapshot again under a new one: a delete elsewhere stays refused', async (t) => {
  const base = new MemoryStore();
  const store = new Between(base);
  const f = await makeVault(base);
  t.after(() => f.cleanup());
  const [s1] = await volumeWithSnapshots(f, ['s1']);
  const server = await f.reopen({ leaseTiming: { ttlMs: 600, renewMs: 150 } }, store);
  t.after(() => server.close());
  const reader = await server.openSnapshotEngine('v', 's1');
  const before = (await readerMarks(base))[0];
  store.failSessionPuts = true; // renewals fail: the session dies after its ttl
  await new Promise((r) => setTimeout(r, 900));
  store.failSessionPuts = false;
  // the reader renews its mark under a new session (retried every second)
  const deadline = Date.now() + 10_000;
  let after: string[] = [];
  while (Date.now() < deadline) {
    after = await readerMarks(base);
    if (after.length === 1 && after[0] !== before) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(after.length, 1, 'one mark');
  assert.notEqual(after[0], before, 'under a new session');
  await assert.rejects(f.vault.deleteSnapshot('v', 's1'), /is being read by/);
  assert.ok((await reader.read(0, CHUNK_SIZE)).equals(s1));
  await reader.close();
  assert.equal(await countKeys(base, 'volumes/', '.reader.'), 0);
});

test('a delete refused takes back only its own deletion mark: one a second deleter wrote since stays', async (t) => {
  const f = await makeVault(new MemoryStore());
  t.after(() => f.cleanup());
  await volumeWithSnapshots(f, ['s1']);
  const { objects } = await f.vault.loadVolume('v');
  const snap = (await f.vault.listSnapshots('v'))[0];
  const a = await objects.markDeleting(snap.id);
  const b = await objects.markDeleting(snap.id); // a second deleter, still at work
  await objects.unmarkDeleting(snap.id, a); // the first one refused
  assert.equal(await objects.isMarkedDeleting(snap.id), true, "the second deleter's mark stays");
  await objects.unmarkDeleting(snap.id, b);
  assert.equal(await objects.isMarkedDeleting(snap.id), false);
});

test('volume delete is refused while a snapshot of it is read; gc removes the marks of deleted snapshots, and only those', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await volumeWithSnapshots(f, ['s1', 's2']);
  const reader = await f.vault.openSnapshotEngine('v', 's1');
  await assert.rejects(f.vault.deleteVolume('v'), /snapshot v@s1 is being read by/);
  assert.deepEqual((await f.vault.listVolumes()).map((v) => v.name), ['v'], 'the volume is whole');
  assert.equal(await f.vault.volumeInfo('v').then((i) => i.deleting), false, 'its deletion mark taken back');
  await reader.close();
  // stray marks: one of a snapshot since deleted, one of a snapshot that exists
  const { objects } = await f.vault.loadVolume('v');
  const [s1, s2] = await f.vault.listSnapshots('v');
  const dead = 'ab'.repeat(16);
  await objects.putReaderMark(s1.id, `${dead}-0123456789abcdef`, { v: 1 });
  await objects.putReaderMark(s2.id, `${dead}-0123456789abcdef`, { v: 1 });
  await objects.deleteSnapshotRecord(s1.id); // (as a delete does, before it frees the objects)
  const gc = await collectGarbage(f.vault, { dryRun: false, graceMs: 0 }, logger);
  assert.deepEqual(gc.keys.filter((k) => k.includes('.reader.')), [`volumes/${objects.volumeId}/snapshots/${s1.id}.reader.${dead}-0123456789abcdef`]);
  assert.equal(await countKeys(store, 'volumes/', '.reader.'), 1, "the existing snapshot's mark stays (a delete of it decides)");
});

test('a delete whose writer session ends (a store outage) after its look for readers puts the record back: a reader that found it stopped and opened reads whole', async (t) => {
  const base = new MemoryStore();
  const { f, snap, data } = await oneSnapshot(t, base);
  const recordKey = `volumes/${(await f.vault.loadVolume('v')).objects.volumeId}/snapshots/${snap.id}`;
  const opened: { reader: Promise<VolumeEngine> | null } = { reader: null };
  const store = new (class extends PassThroughStore {
    scanned = false;
    failSessions = false;
    override list(prefix: string) {
      if (prefix.includes('.reader.')) this.scanned = true;
      return super.list(prefix);
    }
    override async get(key: string, into?: Buffer): Promise<StoredObject> {
      if (this.scanned && key === recordKey && opened.reader === null) {
        // between the deleter's look for readers and its record delete: its heartbeat stops, and
        // a reader comes, finds the deleter's session dead after its ttl, and opens
        this.failSessions = true;
        opened.reader = f.vault.openSnapshotEngine('v', 's1');
        await opened.reader.catch(() => {});
      }
      return super.get(key, into);
    }
    override async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
      if (this.failSessions && key.startsWith('sessions/')) throw new VaultError('ERR_STORE_TRANSIENT', `injected: put ${key}`);
      return super.put(key, body, opts);
    }
  })(base);
  const deleter = await f.reopen({ leaseTiming: { ttlMs: 600, renewMs: 100 } }, store);
  t.after(() => deleter.close());
  await assert.rejects(deleter.deleteSnapshot('v', 's1'), /the delete of snapshot v@s1 lost its writer session .* it is left as it was; run the delete again/);
  assert.ok(opened.reader, 'the reader came');
  const reader = await opened.reader;
  assert.ok((await reader.read(0, CHUNK_SIZE)).equals(data), 'the reader reads the snapshot whole');
  await reader.close();
  assert.deepEqual((await f.vault.listSnapshots('v')).map((s) => s.name), ['s1'], 'the record is back');
  assert.equal(await countKeys(base, 'volumes/', '.deleting'), 0);
});
