// Format 2 reachability: a live root's write journals are kept by gc and opened by verify (every
// frame); an unreferenced journal is garbage after the grace; snapshots never name journals, so
// snapshot delete, clone and sync never touch or need one. Damaged v2 chunk frames are caught.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createInlineCodec, parseFramedHeader } from '../../src/codec';
import { MemoryStore } from '../../src/store/memory-store';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { collectGarbage } from '../../src/volume/garbage-collector';
import type { JournalExtent } from '../../src/volume/journal-record';
import { chunkKey, journalKey, journalPrefix } from '../../src/volume/object-keys';
import { Vault } from '../../src/volume/vault';
import { referencedKeys, snapshotAsRoot } from '../../src/volume/volume-references';
import { VaultSync } from '../../src/volume/vault-sync';
import { verifyManifest, verifySource } from '../../src/volume/verify';
import { countKeys, logger, makeVault, SettlingStore } from './vault-fixture';

const extents: JournalExtent[] = [
  { chunkIndex: 1, firstBlock: 3, blockCount: 2, zero: false, frame: 1, frameOffset: 0 },
  { chunkIndex: 0, firstBlock: 0, blockCount: 8, zero: true, frame: 0, frameOffset: 0 },
];
const journalData = () => [Buffer.alloc(8192, 0x5a)];

/** A volume with data in chunks 0..2, snapshot s1, and a live root naming one journal. */
async function volumeWithJournal(t: { after(fn: () => unknown): void }, store = new SettlingStore()) {
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('vol', 8 * CHUNK_SIZE);
  const engine = await f.vault.openEngine('vol');
  await engine.write(0, Buffer.alloc(3 * CHUNK_SIZE, 0x11));
  await engine.snapshot('s1');
  await engine.close();
  const { objects, root, etag } = await f.vault.loadVolume('vol');
  const named = await objects.writeJournal(extents, journalData());
  const stale = await objects.writeJournal(extents, journalData()); // folded into chunks long ago: no root names it
  await objects.writeRoot({ ...root, seq: root.seq + 1, journals: [named] }, etag);
  return { f, meta, store, objects, named, stale };
}

test('gc keeps the journals the live root names and deletes an unreferenced one after the grace', async (t) => {
  const { f, meta, store, named, stale } = await volumeWithJournal(t);
  const young = await collectGarbage(f.vault, { dryRun: false, graceMs: 60_000 }, logger);
  assert.ok(!young.keys.includes(journalKey(meta.id, stale.id)), 'an unreferenced journal younger than the grace is kept');
  assert.ok(young.tooYoung >= 1);
  const gc = await collectGarbage(f.vault, { dryRun: false, graceMs: 60_000, now: Date.now() + 120_000 }, logger);
  assert.ok(gc.keys.includes(journalKey(meta.id, stale.id)), 'the unreferenced journal is garbage after the grace');
  assert.ok(!gc.keys.includes(journalKey(meta.id, named.id)), 'the journal the root names is kept');
  assert.equal(await store.head(journalKey(meta.id, stale.id)), null);
  assert.notEqual(await store.head(journalKey(meta.id, named.id)), null);
  assert.equal(await countKeys(store, journalPrefix(meta.id), '/journals/'), 1);
  // nothing else a root or snapshot names went
  const { manifest, root, objects } = await f.vault.loadManifestOf('vol');
  const r = await verifyManifest(objects, manifest, root);
  assert.deepEqual(r.damaged, []);
  assert.deepEqual(r.damagedJournals, []);
  assert.equal(r.journals, 1);
});

test('verify opens every journal frame and every v2 chunk frame: a damaged one is reported', async (t) => {
  const { f, meta, store, named } = await volumeWithJournal(t);
  const { manifest, root, objects } = await f.vault.loadManifestOf('vol');
  const clean = await verifyManifest(objects, manifest, root);
  assert.deepEqual([clean.damaged, clean.damagedJournals, clean.chunks, clean.journals], [[], [], 3, 1]);

  // flip one byte inside the last frame of the journal (a data frame, not the index)
  const jKey = journalKey(meta.id, named.id);
  const jBody = Buffer.from((await store.get(jKey)).body);
  const jh = parseFramedHeader(jBody, 'journal', jKey, jBody.length);
  jBody[jh.frameOffsets[1] + 40] ^= 1;
  await store.put(jKey, jBody);
  // and one byte in frame 17 of chunk 2 (a v2 container)
  const entry = manifest.get(2);
  const cKey = chunkKey(meta.id, entry.id!);
  const cBody = Buffer.from((await store.get(cKey)).body);
  assert.equal(cBody.subarray(0, 4).toString('latin1'), 'NBVC');
  const ch = parseFramedHeader(cBody, 'chunk', cKey, cBody.length);
  cBody[ch.frameOffsets[17] + ch.frameLengths[17] - 5] ^= 1;
  await store.put(cKey, cBody);

  const r = await verifyManifest(objects, manifest, root);
  assert.deepEqual(r.damaged.map((d) => d.chunk), [2]);
  assert.match(r.damaged[0].error, /frame 17.*ERR_AUTH_FAILED|ERR_AUTH_FAILED/);
  assert.equal(r.damagedJournals.length, 1);
  assert.equal(r.damagedJournals[0].journal, named.id);
  assert.match(r.damagedJournals[0].error, /ERR_AUTH_FAILED/);
  // the snapshot names neither the journal nor (since it was taken before) anything damaged
  const snap = await f.vault.loadManifestOf('vol@s1');
  const s = await verifyManifest(snap.objects, snap.manifest, snap.root);
  assert.equal(s.journals, 0);
  assert.deepEqual(s.damagedJournals, []);
});

test('snapshots never name journals: snapshot delete, clone and sync neither need nor touch them', async (t) => {
  const { f, meta, store, objects, named } = await volumeWithJournal(t);
  const snaps = await f.vault.listSnapshots('vol');
  for (const s of snaps) {
    const keys = await referencedKeys(objects, snapshotAsRoot(s));
    assert.ok(keys.every((k) => !k.includes('/journals/')), 'a snapshot names no journal');
  }
  // clone from the snapshot: the clone's root names no journal and reads the snapshot's bytes
  await f.vault.cloneVolume('vol@s1', 'copy');
  const clone = await f.vault.loadVolume('copy');
  assert.deepEqual(clone.root.journals, []);
  const ce = await f.vault.openEngine('copy', { readOnly: true });
  assert.ok((await ce.read(0, 3 * CHUNK_SIZE)).equals(Buffer.alloc(3 * CHUNK_SIZE, 0x11)));
  await ce.close();

  // sync: the replica gets snapshots (and roots made from them), never a journal
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-journal-sync-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const dest = new MemoryStore();
  const replica = () => Vault.open(dest, f.master, createInlineCodec(), { stateDir: mkdtempSync(join(dir, 'state-')), logger });
  await new VaultSync(f.vault, dest, replica, { concurrency: 2 }, logger).run();
  assert.equal(await countKeys(dest, 'volumes/', '/journals/'), 0, 'no journal reaches the replica');
  assert.ok((await countKeys(dest, 'volumes/', '/chunks/')) >= 3);

  // deleting the clone, then the snapshot, leaves the live root's journal alone
  await f.vault.deleteVolume('copy');
  await f.vault.deleteSnapshot('vol', 's1');
  await store.settled();
  assert.notEqual(await store.head(journalKey(meta.id, named.id)), null);
  const { root } = await f.vault.loadVolume('vol');
  assert.deepEqual(root.journals, [named]);
  // volume delete removes its journals with everything else under its prefix
  await f.vault.deleteVolume('vol');
  assert.equal(await countKeys(store, `volumes/${meta.id}/`, ''), 0);
});

/** A store that runs `hook` once, the first time a journal object is read: a server's commit landing mid-read. */
class CommitMidReadStore extends SettlingStore {
  hook: (() => Promise<void>) | null = null;
  private async maybeHook(key: string): Promise<void> {
    if (!key.includes('/journals/') || !this.hook) return;
    const h = this.hook;
    this.hook = null;
    await h();
  }
  override async get(key: string) {
    await this.maybeHook(key);
    return super.get(key);
  }
  override async getRange(key: string, offset: number, length: number) {
    await this.maybeHook(key);
    return super.getRange(key, offset, length);
  }
}

test('verify and diff beside a writer that folds its journals mid-read: no false damage; real damage still found', async (t) => {
  const store = new CommitMidReadStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('vol', 4 * CHUNK_SIZE);
  const engine = await f.vault.openEngine('vol');
  t.after(() => engine.close());
  await engine.write(0, Buffer.alloc(CHUNK_SIZE, 0x33));
  await engine.snapshot('s1');
  await engine.write(4096, Buffer.alloc(8192, 0x44)); // a journal block of chunk 0
  await engine.write(2 * CHUNK_SIZE, Buffer.alloc(4096, 0x55)); // and of chunk 2
  await engine.flush();
  const journalsBefore = await countKeys(store, journalPrefix(meta.id), '/journals/');
  assert.equal(journalsBefore, 1);

  // the writer compacts (new root, journal deleted) while verify reads the journal of the old root
  let folded = 0;
  const fold = async () => {
    folded++;
    await engine.compact();
    await store.settled();
  };
  // verifyManifest alone, on the root it loaded before the fold, sees the journal gone: the race
  const stale = await f.vault.loadManifestOf('vol');
  store.hook = fold;
  const raced = await verifyManifest(stale.objects, stale.manifest, stale.root);
  assert.equal(folded, 1, 'the fold ran during the read');
  assert.equal(raced.damagedJournals.length, 1, 'under the replaced root the journal is gone (what verify used to report)');

  // verifySource follows the new root: clean
  await engine.write(8192, Buffer.alloc(4096, 0x66));
  await engine.flush();
  store.hook = fold;
  const r = await verifySource(f.vault, 'vol');
  assert.equal(folded, 2);
  assert.deepEqual([r.damaged, r.damagedJournals, r.journals], [[], [], 0], 'checked again under the new root, which names no journal');

  // diff reads the live journals too: a fold while it reads them is followed, not an error
  await engine.write(12288, Buffer.alloc(4096, 0x77));
  await engine.flush();
  store.hook = fold;
  const live = await f.vault.loadManifestOf('vol');
  assert.equal(folded, 3);
  assert.equal(live.root.journals?.length ?? 0, 0);
  assert.equal(live.journalChunks.size, 0);

  // damage under an unchanged root is still damage: delete a chunk object the root names
  const entry = live.manifest.get(0);
  await store.delete(chunkKey(meta.id, entry.id!));
  const damaged = await verifySource(f.vault, 'vol');
  assert.deepEqual(damaged.damaged.map((d) => d.chunk), [0]);
  assert.match(damaged.damaged[0].error, /missing from the store/);
});

test('volume info counts what only journals hold: allocated chunks and stored bytes', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('vol', 8 * CHUNK_SIZE);
  const engine = await f.vault.openEngine('vol', { autoCommitMs: 0 });
  t.after(() => engine.close());
  await engine.write(0, Buffer.alloc(CHUNK_SIZE, 0x11)); // chunk 0: a chunk object
  await engine.write(3 * CHUNK_SIZE + 4096, randomBytes(4096)); // chunk 3: one journal block
  await engine.write(5 * CHUNK_SIZE, randomBytes(8192)); // chunk 5: two (incompressible)
  await engine.flush();
  const info = await f.vault.volumeInfo('vol');
  assert.equal(info.journals.count, 1);
  assert.ok(info.journals.storedBytes > 12_288, 'the journal holds its blocks (sealed)');
  assert.equal(info.allocatedChunks, 3, 'chunk 0 from the manifest, chunks 3 and 5 from the journal');
  assert.equal(info.allocated, 3 * CHUNK_SIZE);
  await engine.compact();
  const folded = await f.vault.volumeInfo('vol');
  assert.equal(folded.journals.count, 0);
  assert.equal(folded.allocatedChunks, 3, 'the same chunks once folded into chunk objects');
  assert.ok(folded.storedBytes > 0);
});
