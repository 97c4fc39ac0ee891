// Lifecycle safety, one case each (the randomized test finds them in interleavings; these pin
// them down): a replayed old root with no local state, a lost `vault` object, a flush racing a
// rewritten chunk, an uncertain root put, uploads after a store outage, gc beside a long import,
// two volumes of one name, a close whose flush fails, a flush with nothing to write, a clone racing
// a snapshot delete in the store order that let both succeed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { VaultError, isVaultError } from '../../src/errors';
import { createInlineCodec } from '../../src/codec';
import { MemoryStore } from '../../src/store/memory-store';
import { FaultyStore } from '../../src/store/faulty-store';
import { seededRandom } from '../../src/store/seeded-random';
import type { ObjectStore, PutOptions } from '../../src/store/object-store';
import { PassThroughStore } from '../helpers/pass-through-store';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { collectGarbage } from '../../src/volume/garbage-collector';
import { Vault } from '../../src/volume/vault';
import { vaultIdsOfVolumes } from '../../src/volume/volume-references';
import { verifyManifest } from '../../src/volume/verify';
import { makeVault, logger, countKeys } from './vault-fixture';

const MiB = 2 ** 20;

function freshState(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-state-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new assert.AssertionError({ message: `${what} did not finish within ${ms} ms (hung)` })), ms);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function rootKeyOf(store: ObjectStore): Promise<string> {
  for await (const info of store.list('volumes/')) if (info.key.endsWith('/root')) return info.key;
  throw new Error('no root');
}

test('a replayed root older than a snapshot is refused with no local state at all; accepted, it never deletes what the snapshot names', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 3 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v');
  const before = randomBytes(CHUNK_SIZE);
  await e.write(0, before);
  await e.flush();
  const key = await rootKeyOf(store);
  const oldRoot = (await store.get(key)).body; // the store keeps a copy of this root...
  await e.snapshot('s1');
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.close();
  await store.put(key, oldRoot); // ...and serves it again later

  // another machine (no local state): the snapshot record in the store gives the replay away
  const elsewhere = await Vault.open(store, f.master, createInlineCodec(), { stateDir: freshState(t), logger });
  await assert.rejects(elsewhere.openEngine('v'), (err: unknown) => isVaultError(err, 'ERR_ROLLBACK') && /snapshot "s1"/.test((err as Error).message));

  const accepting = await Vault.open(store, f.master, createInlineCodec(), { stateDir: freshState(t), logger, acceptRollback: true });
  const w = await accepting.openEngine('v');
  assert.ok((await w.read(0, CHUNK_SIZE)).equals(before), 'the old root reads as it was');
  await w.write(0, randomBytes(CHUNK_SIZE)); // overwrites the chunk the snapshot shares
  await w.flush();
  await w.close();
  const { manifest, root, objects } = await accepting.loadManifestOf('v@s1');
  assert.deepEqual((await verifyManifest(objects, manifest, root)).damaged, [], 'the snapshot lost nothing');
  const snap = await accepting.openSnapshotEngine('v', 's1');
  assert.ok((await snap.read(0, CHUNK_SIZE)).equals(before));
  await snap.close();
});

test('a store with volumes but no vault object: no new vault is made over them; init --recover rebuilds it', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', CHUNK_SIZE);
  const e = await f.vault.openEngine('v');
  const data = randomBytes(4096);
  await e.write(0, data);
  await e.close();
  await store.delete('vault');

  await assert.rejects(Vault.create(store, f.master, createInlineCodec(), { stateDir: f.stateDir, logger }), (err: unknown) => {
    assert.ok(isVaultError(err, 'ERR_EXISTS'));
    assert.match((err as Error).message, /holds 1 volume\(s\) but no `vault` object.*init --recover/);
    assert.match((err as Error).message, new RegExp(f.vault.vaultId));
    return true;
  });
  assert.equal(await store.head('vault'), null, 'nothing was created');

  // a wrong vault id, or another master key, is refused
  await assert.rejects(
    Vault.create(store, f.master, createInlineCodec(), { stateDir: f.stateDir, logger, recoverVaultId: randomBytes(16).toString('hex') }),
    (err: unknown) => isVaultError(err, 'ERR_WRONG_KEY') || isVaultError(err, 'ERR_AUTH_FAILED'),
  );
  assert.deepEqual(await vaultIdsOfVolumes(store), [f.vault.vaultId]);
  const rebuilt = await Vault.create(store, f.master, createInlineCodec(), { stateDir: f.stateDir, logger, recoverVaultId: f.vault.vaultId });
  assert.equal(rebuilt.vaultId, f.vault.vaultId);
  const again = await (await f.reopen()).openEngine('v', { readOnly: true });
  assert.ok((await again.read(0, 4096)).equals(data), 'the volume opens under the rebuilt vault object');
  await again.close();
});

test('a flush finishes while another client keeps rewriting one chunk', async (t) => {
  // uploads take a few ms, so the rewrites land during every one of them
  const f = await makeVault(new FaultyStore(new MemoryStore(), { latencyMs: { min: 2, max: 5 } }, seededRandom(5)));
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 2 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v', { writebackDelayMs: 0 });
  let stop = false;
  let rewrites = 0;
  const journal = (async () => {
    while (!stop) {
      await e.write(0, randomBytes(4096));
      rewrites++;
      await new Promise((r) => setImmediate(r));
    }
  })();
  await new Promise((r) => setTimeout(r, 50));
  const atFlush = rewrites;
  await within(20_000, 'a flush beside a rewritten chunk', e.flush());
  stop = true;
  await journal;
  assert.ok(rewrites > atFlush, `the rewrites went on during the flush (${rewrites - atFlush})`);
  await e.close();
});

/** A store whose root put lands but whose reply is lost, when armed (once). */
class LostRootReply extends PassThroughStore {
  armed = false;
  constructor(inner: ObjectStore) {
    super(inner, 'lost-root-reply');
  }
  override async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    const r = await this.inner.put(key, body, opts);
    if (this.armed && key.endsWith('/root')) {
      this.armed = false;
      throw new VaultError('ERR_STORE_TRANSIENT', 'reply lost (after the retries)');
    }
    return r;
  }
}

test('a root put that landed with its reply lost is adopted by the next commit (no wedged engine); close releases the lease', async (t) => {
  const base = new MemoryStore();
  const store = new LostRootReply(base);
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 2 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v');
  const a = randomBytes(8192);
  await e.write(0, a);
  store.armed = true;
  await assert.rejects(e.flush(), /reply lost/);
  const b = randomBytes(8192);
  await e.write(CHUNK_SIZE, b);
  await e.flush(); // was: ERR_LEASE "changed by another writer", forever
  await e.close();
  assert.equal(await countKeys(base, 'volumes/', '/lease'), 0, 'the lease was released');
  const r = await (await f.reopen()).openEngine('v', { readOnly: true });
  assert.ok((await r.read(0, 8192)).equals(a));
  assert.ok((await r.read(CHUNK_SIZE, 8192)).equals(b));
  await r.close();
});

test('after a store outage, writes go on without a flush: failed uploads retry in the background', async (t) => {
  const base = new MemoryStore();
  const faulty = new FaultyStore(base, {}, seededRandom(7));
  const f = await makeVault(faulty);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v', { dirtyLimitBytes: 2 * CHUNK_SIZE, writebackDelayMs: 0 });
  faulty.setRules({ rules: [{ ops: ['put'], probability: 1, code: 'ERR_STORE_TRANSIENT' }] });
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.write(CHUNK_SIZE, randomBytes(CHUNK_SIZE)); // the cache is full of failing uploads
  await new Promise((r) => setTimeout(r, 100));
  faulty.setRules({}); // the store is back
  const c = randomBytes(CHUNK_SIZE);
  await within(20_000, 'a write after the outage (no flush)', e.write(2 * CHUNK_SIZE, c));
  await e.flush();
  assert.ok((await e.read(2 * CHUNK_SIZE, CHUNK_SIZE)).equals(c));
  await e.close();
});

test('gc beside a long import (commits only at its end) takes none of its uploads', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 4 * CHUNK_SIZE);
  const imp = await f.vault.openEngine('v', { autoCommitMs: 0, writebackDelayMs: 0 });
  const image = randomBytes(3 * CHUNK_SIZE);
  await imp.write(0, image.subarray(0, 2 * CHUNK_SIZE));
  // wait until the first chunks are stored (uploaded, not yet named by any root)
  for (let k = 0; k < 3000 && (await countKeys(f.store, 'volumes/', '/chunks/')) < 2; k++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(await countKeys(f.store, 'volumes/', '/chunks/'), 2);
  const gc = await collectGarbage(await f.reopen(), { dryRun: false, graceMs: 0 }, logger);
  assert.equal(gc.deleted, 0, 'nothing of the import was taken');
  assert.equal(gc.heldByWriters, 2);
  assert.deepEqual(gc.writingVolumes, ['v']);
  await imp.write(2 * CHUNK_SIZE, image.subarray(2 * CHUNK_SIZE));
  await imp.flush();
  await imp.close();
  const { manifest, root, objects } = await f.vault.loadManifestOf('v');
  assert.deepEqual((await verifyManifest(objects, manifest, root)).damaged, []);
  // once the writer is gone, what it left unreferenced is garbage again (here: nothing)
  const after = await collectGarbage(await f.reopen(), { dryRun: false, graceMs: 0 }, logger);
  assert.equal(after.heldByWriters, 0);
  assert.equal(after.deleted, 0);
});

test('two volumes of one name (a create race) are refused by name, and gc keeps both', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  // two creates racing each see no "twin" yet, and the second is killed before its look after
  // its create (which withdraws it: vault-export-provider.test.ts): play that out deterministically
  await f.vault.createVolume('twin', CHUNK_SIZE);
  const racing = f.vault as unknown as { listVolumes: () => Promise<unknown[]>; metadata: { nameTakenBesides: () => Promise<boolean> } };
  const list = racing.listVolumes;
  racing.listVolumes = async () => [];
  racing.metadata.nameTakenBesides = async () => false;
  await f.vault.createVolume('twin', CHUNK_SIZE);
  racing.listVolumes = list;
  delete (racing.metadata as { nameTakenBesides?: unknown }).nameTakenBesides; // (back to the class's)
  assert.equal((await f.vault.listVolumes()).filter((v) => v.name === 'twin').length, 2);
  await assert.rejects(f.vault.openEngine('twin'), (err: unknown) => isVaultError(err, 'ERR_EXISTS') && /2 volumes are named "twin"/.test((err as Error).message));
  const before = await countKeys(f.store, 'volumes/', '/root');
  await collectGarbage(f.vault, { dryRun: false, graceMs: 0 }, logger);
  assert.equal(await countKeys(f.store, 'volumes/', '/root'), before);
});

test('a flush with nothing new writes no root; a close whose flush fails still releases the lease', async (t) => {
  const base = new MemoryStore();
  const faulty = new FaultyStore(base, {}, seededRandom(3));
  const f = await makeVault(faulty);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', CHUNK_SIZE);
  const e = await f.vault.openEngine('v', { autoCommitMs: 0 });
  await e.write(0, randomBytes(4096));
  await e.flush();
  const puts = faulty.calls.put;
  await e.flush();
  await e.flush();
  assert.equal(faulty.calls.put, puts, 'no store write for flushes with nothing new');
  await e.write(4096, randomBytes(4096));
  faulty.setRules({ rules: [{ ops: ['put'], probability: 1, code: 'ERR_STORE_TRANSIENT' }] });
  await assert.rejects(e.close());
  faulty.setRules({});
  assert.equal(await countKeys(base, 'volumes/', '/lease'), 0, 'the lease was released');
  void MiB;
});

/** Holds the steps of a clone ∥ snapshot delete race in the one order that slipped through when
 *  the clone read the deletion mark and the snapshot record at once: the clone passes its first
 *  check before the deleter marks, the deleter finds no clone (the clone's metadata, written
 *  last, is held back), the clone's existence read comes before the record's deletion, its mark
 *  read after the mark's removal. */
class CloneDeleteRace extends PassThroughStore {
  private cloneVisible = false;
  private releaseCloneMeta!: () => void;
  private readonly cloneMetaMayGo = new Promise<void>((r) => (this.releaseCloneMeta = r));
  private releaseRecordDelete!: () => void;
  private readonly recordDeleteMayGo = new Promise<void>((r) => (this.releaseRecordDelete = r));
  private markRemoved!: () => void;
  private readonly markGone = new Promise<void>((r) => (this.markRemoved = r));
  constructor(inner: ObjectStore, private readonly originPrefix: string, private readonly recordKey: string) {
    super(inner, 'clone-delete-race');
  }
  private cloneRootWritten!: () => void;
  private readonly cloneChecked = new Promise<void>((r) => (this.cloneRootWritten = r));
  override async put(key: string, body: Buffer, opts?: PutOptions) {
    if (key === `${this.recordKey}.deleting`) await this.cloneChecked; // the clone's first check passes before the mark
    if (key.endsWith('/root') && !key.startsWith(this.originPrefix)) {
      const r = await this.inner.put(key, body, opts);
      this.cloneRootWritten();
      return r;
    }
    if (key.endsWith('/meta') && !key.startsWith(this.originPrefix)) {
      await this.cloneMetaMayGo; // until the deleter has looked for clones
      const r = await this.inner.put(key, body, opts);
      this.cloneVisible = true;
      return r;
    }
    return this.inner.put(key, body, opts);
  }
  override async delete(key: string) {
    if (key === this.recordKey) {
      this.releaseCloneMeta(); // the deleter found no clone and deletes the record now: let the clone appear
      // held until the clone's existence read is answered (or, if it reads the mark alone first and
      // waits on it, a moment later: that is the fixed order)
      await Promise.race([this.recordDeleteMayGo, new Promise((r) => setTimeout(r, 300))]);
    }
    await this.inner.delete(key);
    if (key === `${this.recordKey}.deleting`) this.markRemoved();
  }
  override async head(key: string) {
    if (!this.cloneVisible) return this.inner.head(key);
    if (key === `${this.recordKey}.deleting`) {
      await this.markGone; // the clone's mark read lands after the deleter removed the mark
      return this.inner.head(key);
    }
    const h = await this.inner.head(key);
    if (key === this.recordKey) this.releaseRecordDelete();
    return h;
  }
}

test('clone ∥ snapshot delete: a clone never outlives its snapshot, whatever order the store answers in', async (t) => {
  const base = new MemoryStore();
  const f0 = await makeVault(base);
  t.after(() => f0.cleanup());
  const meta = await f0.vault.createVolume('v', 2 * CHUNK_SIZE);
  const e = await f0.vault.openEngine('v');
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('s');
  await e.close();
  let recordKey = '';
  for await (const o of base.list(`volumes/${meta.id}/snapshots/`)) recordKey = o.key;
  assert.ok(recordKey);
  const store = new CloneDeleteRace(base, `volumes/${meta.id}/`, recordKey);
  const vault = await f0.reopen({}, store);
  const [cloned, deleted] = await within(20_000, 'the race', Promise.allSettled([vault.cloneVolume('v@s', 'c'), vault.deleteSnapshot('v', 's')]));
  assert.equal(deleted.status, 'fulfilled', deleted.status === 'rejected' ? String(deleted.reason) : '');
  assert.equal(cloned.status, 'rejected', 'the clone withdraws: its snapshot was deleted under it');
  assert.ok(isVaultError((cloned as PromiseRejectedResult).reason, 'ERR_NOT_FOUND'), String((cloned as PromiseRejectedResult).reason));
  assert.deepEqual((await vault.listVolumes()).map((v) => v.name), ['v'], 'no clone is left naming the deleted snapshot\'s objects');
});

/** A process killed between the two objects of a new volume (its root and its metadata, in
 *  whichever order the code writes them): once armed, the second put fails. */
class KilledBetweenWrites extends PassThroughStore {
  private puts = -1;
  constructor(inner: ObjectStore) {
    super(inner, 'killed-between-writes');
  }
  arm(): void {
    this.puts = 0;
  }
  override async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    if (this.puts >= 0 && ++this.puts === 2) throw new VaultError('ERR_STORE_IO', 'killed');
    return this.inner.put(key, body, opts);
  }
}

test('a create or clone killed between its root and its metadata leaves no half volume: listings work, the name is free, gc takes the root', async (t) => {
  const store = new KilledBetweenWrites(new MemoryStore());
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('src', 2 * CHUNK_SIZE);
  const e = await f.vault.openEngine('src', { autoCommitMs: 0 });
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('s1');
  await e.close();
  store.arm();
  await assert.rejects(f.vault.createVolume('half', CHUNK_SIZE), /killed/);
  store.arm();
  await assert.rejects(f.vault.cloneVolume('src@s1', 'halfclone'), /killed/);
  // every vault-wide listing works (a volume with metadata and no root failed them all)
  assert.deepEqual((await f.vault.listVolumes({ strict: true })).map((v) => v.name), ['src']);
  assert.deepEqual(await f.vault.clonesOf((await f.vault.findVolume('src')).id), []);
  // a root without metadata may be a create under way: kept 10 minutes whatever the grace
  assert.equal((await collectGarbage(f.vault, { dryRun: true, graceMs: 0 }, logger)).keys.filter((k) => k.endsWith('/root')).length, 0);
  const later = Date.now() + 11 * 60_000;
  const gc = await collectGarbage(f.vault, { dryRun: true, graceMs: 0, now: later }, logger);
  assert.equal(gc.keys.filter((k) => k.endsWith('/root')).length, 2, 'the two roots without metadata are garbage');
  await collectGarbage(f.vault, { dryRun: false, graceMs: 0, now: later }, logger);
  assert.equal(await countKeys(f.store, 'volumes/', '/root'), 1);
  // and the names are free
  await f.vault.createVolume('half', CHUNK_SIZE);
  await f.vault.cloneVolume('src@s1', 'halfclone');
  assert.deepEqual((await f.vault.listVolumes()).map((v) => v.name).sort(), ['half', 'halfclone', 'src']);
});

/** A process killed at its first delete of a key `at` accepts (the delete does not happen). */
class KilledAtDelete extends PassThroughStore {
  private armed = true;
  /** the process is dead: nothing it would still do reaches the store (until revive(), the restart) */
  private dead = false;
  constructor(inner: ObjectStore, name: string, private readonly at: (key: string) => boolean) {
    super(inner, name);
  }
  revive(): void {
    this.dead = false;
  }
  override async delete(key: string) {
    if (this.dead) throw new VaultError('ERR_STORE_IO', 'killed');
    if (this.armed && this.at(key)) {
      this.armed = false;
      this.dead = true;
      throw new VaultError('ERR_STORE_IO', 'killed');
    }
    return this.inner.delete(key);
  }
  override async deleteMany(keys: readonly string[]) {
    if (this.dead) throw new VaultError('ERR_STORE_IO', 'killed');
    return this.inner.deleteMany(keys);
  }
  override async put(key: string, body: Buffer, opts?: PutOptions) {
    if (this.dead) throw new VaultError('ERR_STORE_IO', 'killed');
    return this.inner.put(key, body, opts);
  }
}

test('a snapshot delete killed after its mark: a clone says how to finish it, and a rerun does', async (t) => {
  const base = new MemoryStore();
  const f = await makeVault(base);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 2 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v');
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('s');
  await e.close();
  const killed = new KilledAtDelete(base, 'killed-at-record-delete', (key) => key.includes('/snapshots/') && !key.endsWith('.deleting'));
  const vault = await f.reopen({}, killed);
  await assert.rejects(vault.deleteSnapshot('v', 's'), /killed/);
  killed.revive();
  await assert.rejects(vault.cloneVolume('v@s', 'c'), (err: Error) => /the snapshot is being deleted \(if no deletion is running, one was interrupted: `nbd-vault snapshot delete v s` finishes it\)/.test(err.message));
  await vault.deleteSnapshot('v', 's');
  assert.deepEqual(await vault.listSnapshots('v'), []);
  await assert.rejects(vault.cloneVolume('v@s', 'c'), /has no snapshot named "s"/);
});

test('a deletion mark that does not open (not written by a delete of ours): refusals say so and do not advise finishing "its" delete', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('v', 2 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v');
  await e.snapshot('s');
  await e.close();
  await store.put(`volumes/${meta.id}/deleting`, Buffer.from('{"v":1,"deleting":"volume"}')); // put there by another hand
  const forged = /deletion mark volumes\/[0-9a-f]{32}\/deleting does not open \(damaged, or not written by nbd-vault\): if you started no `nbd-vault volume delete v`, remove that object/;
  await assert.rejects(f.vault.openEngine('v'), (err: VaultError) => err.code === 'ERR_EXISTS' && forged.test(err.message) && !/finishes it/.test(err.message));
  await assert.rejects(f.vault.cloneVolume('v@s', 'c'), (err: Error) => forged.test(err.message));
  assert.match((await f.vault.volumeInfo('v')).deletingAdvice ?? '', forged);
  await store.delete(`volumes/${meta.id}/deleting`);
  const again = await f.vault.openEngine('v');
  await again.close();
});

test('a volume delete killed after its mark: the volume is not opened for writing again (writes would go with it), and a rerun finishes it', async (t) => {
  const base = new MemoryStore();
  const f = await makeVault(base);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 2 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v');
  const written = randomBytes(CHUNK_SIZE);
  await e.write(0, written);
  await e.close();
  assert.equal((await f.vault.volumeInfo('v')).deleting, false);
  // killed between its mark and the erasing of the volume's key (the clone check runs there)
  const killed = new KilledAtDelete(base, 'killed-at-meta-delete', (key) => key.endsWith('/meta'));
  const vault = await f.reopen({}, killed);
  await assert.rejects(vault.deleteVolume('v'), /killed/);
  killed.revive();
  // a server would have taken the lease over and accepted writes that the finished delete then threw away
  await assert.rejects(vault.openEngine('v'), (err: VaultError) => err.code === 'ERR_EXISTS' && /volume "v" is being deleted \(if no deletion is running, one was interrupted: `nbd-vault volume delete v` finishes it\)/.test(err.message));
  // `volume list` and `volume info` say so
  assert.equal((await vault.volumeInfo('v')).deleting, true);
  // read-only, it still reads whole (its objects go only after its metadata): what it holds can be rescued
  const ro = await vault.openEngine('v', { readOnly: true });
  assert.ok((await ro.read(0, CHUNK_SIZE)).equals(written));
  await ro.close();
  await vault.deleteVolume('v');
  assert.deepEqual(await vault.listVolumes(), []);
});
