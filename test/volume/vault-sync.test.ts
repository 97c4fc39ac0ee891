// sync: a replica that is a complete vault, copied sealed, incremental, resumable, consistent at
// every moment, and safe while the source is written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VaultError } from '../../src/errors';
import { createInlineCodec } from '../../src/codec';
import { FsStore } from '../../src/store/fs-store';
import { MemoryStore } from '../../src/store/memory-store';
import type { ObjectStore, PutOptions } from '../../src/store/object-store';
import type { VolumeEngine } from '../../src/volume/volume-engine';
import { PassThroughStore } from '../helpers/pass-through-store';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { Vault } from '../../src/volume/vault';
import { VaultSync, type SyncResult } from '../../src/volume/vault-sync';
import { verifyManifest } from '../../src/volume/verify';
import { rewrapVolumeKeys, rewriteKeyCheck } from '../../src/volume/key-rotation';
import { SecretKey } from '../../src/keys/secret-key';
import { logger, makeVault, type Fixture } from './vault-fixture';

const SIZE = 6 * CHUNK_SIZE;

/** A destination that fails every put after the first `okPuts`: an interrupted sync. */
class BreakingStore extends PassThroughStore {
  puts = 0;
  constructor(inner: ObjectStore, private readonly okPuts: number) {
    super(inner, `breaking(${inner.name})`);
  }
  override async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    if (++this.puts > this.okPuts) throw new VaultError('ERR_STORE_TRANSIENT', 'test: connection lost');
    return this.inner.put(key, body, opts);
  }
}

interface World {
  f: Fixture;
  dir: string;
  destDir: string;
  dest: FsStore;
  sync(opts?: { prune?: boolean; volumes?: string[]; store?: ObjectStore }): Promise<SyncResult>;
  replica(): Promise<Vault>;
}

async function world(t: { after(fn: () => unknown): void }, source: 'fs' | 'memory' = 'fs'): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-sync-'));
  const f = await makeVault(source === 'fs' ? new FsStore(join(dir, 'src')) : new MemoryStore());
  const destDir = join(dir, 'dst');
  const dest = new FsStore(destDir);
  const codec = createInlineCodec();
  const replica = () => Vault.open(dest, f.master, codec, { stateDir: mkdtempSync(join(dir, 'replica-state-')), logger });
  t.after(() => {
    f.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    f,
    dir,
    destDir,
    dest,
    replica,
    sync: (o = {}) => new VaultSync(f.vault, o.store ?? dest, replica, { prune: o.prune, volumes: o.volumes, concurrency: 4 }, logger).run(),
  };
}

async function readAll(vault: Vault, spec: string): Promise<Buffer> {
  const [vol, snap] = spec.split('@');
  const e = snap ? await vault.openSnapshotEngine(vol, snap) : await vault.openEngine(vol, { readOnly: true });
  try {
    return await e.read(0, e.size);
  } finally {
    await e.close();
  }
}

/** Every volume and snapshot the replica shows opens and authenticates completely. */
async function verifyVault(vault: Vault): Promise<string[]> {
  const checked: string[] = [];
  for (const v of await vault.listVolumes({ strict: true })) {
    const specs = [v.name, ...(await vault.listSnapshots(v.name)).map((s) => `${v.name}@${s.name}`)];
    for (const spec of specs) {
      const { manifest, root, objects } = await vault.loadManifestOf(spec);
      const r = await verifyManifest(objects, manifest, root);
      assert.deepEqual(r.damaged, [], `${spec} verifies`);
      checked.push(spec);
    }
  }
  return checked;
}

/** Volume `vol` with one chunk written and snapshot `snap` taken, synced once; its engine stays open. */
async function syncedVolume(w: World, snap: string): Promise<VolumeEngine> {
  await w.f.vault.createVolume('vol', SIZE);
  const e = await w.f.vault.openEngine('vol', { autoCommitMs: 0 });
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot(snap);
  await w.sync();
  return e;
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? files(join(dir, n)) : [join(dir, n)]));
}

test('sync fs→fs: a complete replica (clones and their origins too), then incremental, keep flags and --prune', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  await vault.createVolume('vol', SIZE);
  await vault.createVolume('idle', SIZE);
  const e = await vault.openEngine('vol', { autoCommitMs: 0 });
  await e.write(0, randomBytes(4 * CHUNK_SIZE));
  await e.snapshot('s1');
  await e.write(CHUNK_SIZE, randomBytes(CHUNK_SIZE));
  await e.snapshot('s2', { keep: true });
  await vault.cloneVolume('vol@s1', 'child');
  const c = await vault.openEngine('child', { autoCommitMs: 0 });
  await c.write(5 * CHUNK_SIZE, randomBytes(1000));
  await c.snapshot('c1');
  await c.close();

  const first = await w.sync();
  assert.deepEqual(first.snapshots.map((s) => [s.export, s.status]), [['vol@s1', 'copied'], ['vol@s2', 'copied'], ['child@c1', 'copied']]);
  assert.deepEqual(first.withoutSnapshots, ['idle']);
  assert.equal(first.skipped > 0, true, 'the shared chunks are copied once');
  const replica = await w.replica();
  assert.deepEqual((await replica.listVolumes()).map((v) => v.name), ['child', 'vol']);
  for (const spec of ['vol@s1', 'vol@s2', 'child@c1']) assert.ok((await readAll(replica, spec)).equals(await readAll(vault, spec)), `${spec} is identical`);
  assert.ok((await readAll(replica, 'vol')).equals(await readAll(vault, 'vol@s2')), "the replica's volume is its newest snapshot");
  assert.ok((await readAll(replica, 'child')).equals(await readAll(vault, 'child@c1')));
  assert.equal((await replica.listSnapshots('vol')).find((s) => s.name === 's2')!.keep, true, 'the keep flag travels');
  assert.equal((await verifyVault(replica)).length, 5);
  // sealed bytes, not re-encrypted: every replica object equals the source's (past the fs
  // store's 24-byte file header, whose etag each put draws afresh)
  const srcDir = join(w.dir, 'src');
  const body = (file: string) => readFileSync(file).subarray(24);
  for (const file of files(w.destDir).filter((p) => p.includes('chunks'))) {
    assert.ok(body(file).equals(body(file.replace(w.destDir, srcDir))), file);
  }

  const second = await w.sync();
  assert.deepEqual([second.copied, second.bytes], [0, 0], 'a second sync copies nothing');
  assert.ok(second.snapshots.every((s) => s.status === 'present'));

  // one more snapshot with one changed chunk: only what is new goes
  await e.write(3 * CHUNK_SIZE, randomBytes(CHUNK_SIZE));
  await e.snapshot('s3');
  const { objects } = await vault.loadVolume('vol');
  await objects.setSnapshotKeep((await objects.listSnapshots()).find((s) => s.name === 's2')!.id, false);
  const destBefore = new Set(files(w.destDir));
  const third = await w.sync();
  const added = files(w.destDir).filter((p) => !destBefore.has(p));
  // a keep flag on the off-site copy protects it from the source: clearing it there does not
  // travel (it used to, and --prune then removed the snapshot)
  assert.deepEqual(third.snapshots.filter((s) => s.status !== 'present').map((s) => [s.export, s.status]), [['vol@s3', 'copied']]);
  assert.deepEqual(added.map((p) => p.split('/').at(-3)).sort(), ['chunks', 'pages', 'snapshots'], 'one chunk, one page, one record');
  assert.equal(third.copied, 3, 'chunk, page, new record');
  const replica2 = await w.replica();
  assert.equal((await replica2.listSnapshots('vol')).find((s) => s.name === 's2')!.keep, true, 'the replica keeps its flag');
  assert.ok((await readAll(replica2, 'vol')).equals(await readAll(vault, 'vol@s3')));

  // --prune mirrors deletions, but not of a snapshot with the keep flag on the replica; without
  // --prune the replica keeps what it has
  await vault.deleteSnapshot('vol', 's2');
  assert.equal((await w.sync()).pruned.length, 0);
  assert.equal((await replica2.listSnapshots('vol')).length, 3);
  assert.deepEqual((await w.sync({ prune: true })).pruned, [], 'kept: it has the keep flag on the replica');
  assert.equal((await replica2.listSnapshots('vol')).length, 3);
  const { objects: onReplica } = await replica2.loadVolume('vol');
  await onReplica.setSnapshotKeep((await onReplica.listSnapshots()).find((s) => s.name === 's2')!.id, false);
  const pruned = await w.sync({ prune: true });
  assert.deepEqual(pruned.pruned, ['vol@s2']);
  const replica3 = await w.replica();
  assert.deepEqual((await replica3.listSnapshots('vol')).map((s) => s.name), ['s1', 's3']);
  await verifyVault(replica3);
  await e.close();

  // a destination holding another vault is refused
  const other = await makeVault(new FsStore(join(w.dir, 'other')));
  t.after(() => other.cleanup());
  await assert.rejects(new VaultSync(other.vault, w.dest, w.replica, {}, logger).run(), (err: VaultError) => err.code === 'ERR_EXISTS' && /another vault/.test(err.message));
  // and so is one that is no vault but not empty (a mistyped path or bucket): nothing written
  const unrelated = new FsStore(join(w.dir, 'unrelated'));
  await unrelated.put('photos/2026/beach.jpg', Buffer.from('not ours'));
  await assert.rejects(new VaultSync(vault, unrelated, w.replica, {}, logger).run(), (err: VaultError) => err.code === 'ERR_EXISTS' && /is not empty \(it holds "photos\/2026\/beach.jpg"/.test(err.message));
  assert.equal(files(join(w.dir, 'unrelated')).length, 1, 'nothing written');
});

test('an interrupted sync leaves a consistent replica at every point; rerun, it ends complete; tampering is caught', async (t) => {
  const w = await world(t, 'memory');
  const { vault } = w.f;
  await vault.createVolume('vol', SIZE);
  const e = await vault.openEngine('vol', { autoCommitMs: 0 });
  for (const name of ['a', 'b', 'c']) {
    await e.write(0, randomBytes(3 * CHUNK_SIZE));
    await e.snapshot(name);
  }
  await e.close();
  let complete: SyncResult | null = null;
  for (let okPuts = 1; complete === null; okPuts += 2) {
    const breaking = new BreakingStore(w.dest, okPuts);
    try {
      complete = await w.sync({ store: breaking });
    } catch (err) {
      assert.match(String((err as Error).message), /connection lost/);
      // interrupted after okPuts objects: whatever the replica shows is whole
      if (await w.dest.head('vault')) await verifyVault(await w.replica());
    }
  }
  const replica = await w.replica();
  assert.deepEqual((await replica.listSnapshots('vol')).map((s) => s.name), ['a', 'b', 'c']);
  for (const spec of ['vol@a', 'vol@b', 'vol@c']) assert.ok((await readAll(replica, spec)).equals(await readAll(vault, spec)));
  assert.equal((await w.sync()).copied, 0);
  // the replica's root holds the state of the source's root the newest snapshot was taken from,
  // with its seq: never ahead of the source (it ran ahead by one per snapshot copied)
  const newest = (await vault.listSnapshots('vol')).find((s) => s.name === 'c')!;
  assert.equal((await replica.loadVolume('vol')).root.seq, newest.rootSeq);
  // so the source's state directory may read the replica, and still opens the source
  const sameState = await w.f.reopen({}, w.dest);
  await verifyVault(sameState);
  const reopened = await w.f.reopen();
  assert.ok((await readAll(reopened, 'vol@c')).equals(await readAll(vault, 'vol@c')));

  // an incremental sync interrupted anywhere: the replica shows its old snapshots or the new one,
  // and opens (a record copied before the root read as a rollback there)
  const again = await vault.openEngine('vol', { autoCommitMs: 0 });
  await again.write(CHUNK_SIZE, randomBytes(CHUNK_SIZE));
  await again.snapshot('d');
  await again.close();
  let incremental: SyncResult | null = null;
  for (let okPuts = 0; incremental === null; okPuts++) {
    try {
      incremental = await w.sync({ store: new BreakingStore(w.dest, okPuts) });
    } catch (err) {
      assert.match(String((err as Error).message), /connection lost/);
      const shown = await w.replica();
      await verifyVault(shown);
      // its live root: the newest snapshot's state (d's once the root is written, before d's record)
      const live = await readAll(shown, 'vol');
      assert.ok(live.equals(await readAll(vault, 'vol@d')) || ((await shown.listSnapshots('vol')).length === 3 && live.equals(await readAll(vault, 'vol@c'))));
    }
  }
  assert.deepEqual((await w.replica().then((r) => r.listSnapshots('vol'))).map((s) => s.name), ['a', 'b', 'c', 'd']);

  // flip one byte of one stored chunk in the replica (any: d's own too): verify names it
  const chunk = files(w.destDir).find((p) => p.includes('/chunks/'))!;
  const bytes = readFileSync(chunk);
  bytes[bytes.length - 20] ^= 1;
  writeFileSync(chunk, bytes);
  const damaged: string[] = [];
  for (const spec of ['vol@a', 'vol@b', 'vol@c', 'vol@d']) {
    const { manifest, root, objects } = await replica.loadManifestOf(spec);
    if ((await verifyManifest(objects, manifest, root)).damaged.length > 0) damaged.push(spec);
  }
  assert.ok(damaged.length >= 1, 'the tampered chunk is reported');
});

test('an object damaged in the source: its snapshot is not copied (never reaches the replica as good), the other snapshots and volumes are; once repaired, the next sync copies it', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  await vault.createVolume('vol', SIZE);
  const e = await vault.openEngine('vol', { autoCommitMs: 0 });
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('s1');
  const chunksBefore = new Set(files(join(w.dir, 'src')).filter((p) => p.includes('/chunks/')));
  await e.write(CHUNK_SIZE, randomBytes(CHUNK_SIZE));
  await e.snapshot('s2');
  await e.close();
  await vault.createVolume('other', SIZE);
  const o = await vault.openEngine('other', { autoCommitMs: 0 });
  await o.write(0, randomBytes(CHUNK_SIZE));
  await o.snapshot('o');
  await o.close();
  // the chunk only vol@s2 names
  const vid = (await vault.findVolume('vol')).id;
  const chunk = files(join(w.dir, 'src')).find((p) => p.includes(vid) && p.includes('/chunks/') && !chunksBefore.has(p))!;
  const good = readFileSync(chunk);
  const bad = Buffer.from(good);
  bad[bad.length - 20] ^= 1; // a flipped byte: the object no longer opens at its place
  writeFileSync(chunk, bad);
  const r = await w.sync();
  const status = (x: SyncResult) => Object.fromEntries(x.snapshots.map((s) => [s.export, s.status]));
  assert.deepEqual(status(r), { 'vol@s1': 'copied', 'vol@s2': 'damaged', 'other@o': 'copied' });
  assert.match(r.snapshots.find((s) => s.export === 'vol@s2')!.reason!, /damaged in the source, so not copied .*verify vol@s2.*authentication failed/);
  const rel = chunk.slice(join(w.dir, 'src').length);
  assert.ok(!existsSync(join(w.destDir, rel)), 'the damaged object is not in the replica');
  const replica = await w.replica();
  assert.deepEqual((await replica.listVolumes()).map((v) => v.name).sort(), ['other', 'vol'], 'the volume whose first snapshot was copied is there');
  assert.deepEqual((await replica.listSnapshots('vol')).map((s) => s.name), ['s1']);
  await verifyVault(replica);
  writeFileSync(chunk, good); // repaired (from a backup)
  const again = await w.sync();
  assert.deepEqual(status(again), { 'vol@s1': 'present', 'vol@s2': 'copied', 'other@o': 'present' });
  const key = rel.split('/').filter((seg) => seg !== '' && !seg.endsWith('~')).join('/');
  assert.ok((await w.dest.get(key)).body.equals((await new FsStore(join(w.dir, 'src')).get(key)).body), 'the good bytes, as stored');
  await verifyVault(await w.replica());
});

test('a damaged manifest page fails only its snapshot; a clone whose origin snapshot is damaged is held (the replica never shows a clone without its origin); a volume deleted during the sync is vanished, not damaged', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  const src = join(w.dir, 'src');
  const flip = (file: string) => {
    const bytes = readFileSync(file);
    bytes[bytes.length - 20] ^= 1;
    writeFileSync(file, bytes);
    return () => writeFileSync(file, (bytes[bytes.length - 20] ^= 1, bytes));
  };
  const make = async (name: string, snap: string) => {
    await vault.createVolume(name, SIZE);
    const e = await vault.openEngine(name, { autoCommitMs: 0 });
    await e.write(0, randomBytes(CHUNK_SIZE));
    await e.snapshot(snap);
    await e.close();
    return (await vault.findVolume(name)).id;
  };
  const vid = await make('vol', 's1');
  await vault.cloneVolume('vol@s1', 'kid');
  const kid = await vault.openEngine('kid', { autoCommitMs: 0 });
  await kid.write(CHUNK_SIZE, randomBytes(4096));
  await kid.snapshot('ks');
  await kid.close();
  const pid = await make('pg', 'p');
  await make('other', 'o');
  const repairChunk = flip(files(src).find((f) => f.includes(vid) && f.includes('/chunks/'))!);
  const repairPage = flip(files(src).find((f) => f.includes(pid) && f.includes('/pages/'))!);
  const r = await w.sync();
  const status = (x: SyncResult) => Object.fromEntries(x.snapshots.map((s) => [s.export, s.status]));
  assert.deepEqual(status(r), { 'vol@s1': 'damaged', 'kid@ks': 'held', 'pg@p': 'damaged', 'other@o': 'copied' });
  assert.match(r.snapshots.find((s) => s.export === 'kid@ks')!.reason!, /its origin snapshot is not in the replica/);
  assert.match(r.snapshots.find((s) => s.export === 'pg@p')!.reason!, /manifest page/);
  const replica = await w.replica();
  assert.deepEqual((await replica.listVolumes()).map((v) => v.name), ['other'], 'no clone without its origin, nothing damaged');
  await verifyVault(replica);
  repairChunk();
  repairPage();
  assert.deepEqual(status(await w.sync()), { 'vol@s1': 'copied', 'kid@ks': 'copied', 'pg@p': 'copied', 'other@o': 'present' });
  await verifyVault(await w.replica());

  // a volume deleted while its objects are copied (its metadata goes first, its snapshot
  // records after its objects): vanished (exit 0), not "damaged"
  const gone = await make('gone', 'g');
  const store = vault.store;
  const get = store.get.bind(store);
  t.after(() => (store.get = get));
  store.get = async (key: string, into?: Buffer) => {
    if (key.includes(`${gone}/chunks/`)) {
      await store.delete(`volumes/${gone}/meta`);
      await store.delete(key);
    }
    return get(key, into);
  };
  const during = await w.sync({ volumes: ['gone'] });
  assert.deepEqual(status(during), { 'gone@g': 'vanished' });
});

test('sync while a writer changes the source and takes snapshots: every copied snapshot is identical', async (t) => {
  const w = await world(t, 'memory');
  const { vault } = w.f;
  await vault.createVolume('vol', SIZE);
  const e = await vault.openEngine('vol', { autoCommitMs: 20 });
  await e.write(0, randomBytes(SIZE));
  await e.snapshot('base');
  // the writer: 12 writes, a snapshot after every 4th, while syncs run back to back
  let writing = true;
  const writer = (async () => {
    for (let n = 1; n <= 12; n++) {
      await e.write((n % 6) * CHUNK_SIZE + 4096 * (n % 7), randomBytes(64 * 1024));
      if (n % 4 === 0) await e.snapshot(`w${n}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  })().finally(() => (writing = false));
  let syncs = 0;
  while (writing || syncs < 2) {
    await w.sync();
    syncs++;
  }
  await writer;
  await e.flush();
  await w.sync();
  const replica = await w.replica();
  const snaps = await vault.listSnapshots('vol');
  assert.ok(snaps.length >= 4);
  assert.deepEqual((await replica.listSnapshots('vol')).map((s) => s.name), snaps.map((s) => s.name));
  for (const s of snaps) assert.ok((await readAll(replica, `vol@${s.name}`)).equals(await readAll(vault, `vol@${s.name}`)), s.name);
  await e.close();
  await verifyVault(replica);
});

test('a replica follows a master key rotation of its source: after the next sync the new key opens it, the old one does not', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  await vault.createVolume('vol', SIZE);
  await vault.createVolume('quiet', SIZE); // in the replica, not in the next run's selection
  for (const name of ['vol', 'quiet']) {
    const e = await vault.openEngine(name, { autoCommitMs: 0 });
    await e.write(0, randomBytes(CHUNK_SIZE + 77));
    await e.snapshot('s1');
    await e.close();
  }
  await w.sync();
  // Rotate the source's master key (what `keys rotate` does to the store).
  const next = new SecretKey(randomBytes(32), 'master');
  const target = { store: w.f.store, codec: createInlineCodec(), vaultId: vault.vaultId, logger };
  assert.equal((await rewrapVolumeKeys(target, w.f.master, next)).rewrapped, 2);
  assert.equal(await rewriteKeyCheck(target, w.f.master, next), true);
  const rotated = await Vault.open(w.f.store, next, createInlineCodec(), { stateDir: mkdtempSync(join(w.dir, 'rotated-state-')), logger });
  const r = await new VaultSync(rotated, w.dest, async () => Vault.open(w.dest, next, createInlineCodec(), { stateDir: mkdtempSync(join(w.dir, 'r-')), logger }), { volumes: ['vol'], prune: true }, logger).run();
  assert.ok(r.copied >= 3, 'the metas and the vault object were copied again');
  const replica = await Vault.open(w.dest, next, createInlineCodec(), { stateDir: mkdtempSync(join(w.dir, 'replica-new-')), logger });
  assert.deepEqual((await replica.listVolumes({ strict: true })).map((v) => v.name), ['quiet', 'vol'], 'the new key opens every volume of the replica');
  for (const spec of ['vol@s1', 'quiet@s1']) assert.ok((await readAll(replica, spec)).equals(await readAll(rotated, spec)), `${spec} reads back with the new key`);
  await assert.rejects(Vault.open(w.dest, w.f.master, createInlineCodec(), { stateDir: mkdtempSync(join(w.dir, 'replica-old-')), logger }), (err: VaultError) => err.code === 'ERR_WRONG_KEY');
  const again = await new VaultSync(rotated, w.dest, async () => replica, {}, logger).run();
  assert.equal(again.copied, 0, 'nothing more to copy');
});

/** A new volume `name` holding `data` at 0, snapshotted as s1. */
async function withSnapshot(vault: Vault, name: string, data: Buffer): Promise<void> {
  await vault.createVolume(name, SIZE);
  const e = await vault.openEngine(name, { autoCommitMs: 0 });
  await e.write(0, data);
  await e.snapshot('s1');
  await e.close();
}

test('the first sync after a rotation checks the replica for names taken twice (it follows the rotation first); a replica it cannot list gets no snapshot', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  await withSnapshot(vault, 'vol', randomBytes(CHUNK_SIZE));
  await w.sync();
  const next = new SecretKey(randomBytes(32), 'master');
  const target = { store: w.f.store, codec: createInlineCodec(), vaultId: vault.vaultId, logger };
  await rewrapVolumeKeys(target, w.f.master, next);
  await rewriteKeyCheck(target, w.f.master, next);
  const rotated = await Vault.open(w.f.store, next, createInlineCodec(), { stateDir: mkdtempSync(join(w.dir, 'rotated-state-')), logger });
  await withSnapshot(rotated, 'late', randomBytes(4096));
  // the replica as only the new key opens it: before, it could not be listed (the replica's key
  // check still named the old key), and the run copied 'late' unchecked
  let listed = 0;
  const opener = async () => {
    listed++;
    return Vault.open(w.dest, next, createInlineCodec(), { stateDir: mkdtempSync(join(w.dir, 'r-')), logger });
  };
  const r = await new VaultSync(rotated, w.dest, opener, {}, logger).run();
  assert.ok(listed >= 1, 'the replica was opened for the check');
  assert.deepEqual(r.nameTaken, []);
  assert.ok(r.snapshots.some((x) => x.export === 'late@s1' && x.status === 'copied'), JSON.stringify(r.snapshots));

  // a replica that cannot be listed: no new volume is copied unchecked
  await withSnapshot(rotated, 'later', randomBytes(4096));
  const broken = async (): Promise<Vault> => {
    throw new VaultError('ERR_STORE_TRANSIENT', 'the replica store does not answer');
  };
  await assert.rejects(new VaultSync(rotated, w.dest, broken, {}, logger).run(), /cannot list the replica's volumes to check that none has the name of a volume new to it, so no snapshot was copied: the replica store does not answer/);
  const replica = await opener();
  assert.deepEqual((await replica.listVolumes({ strict: true })).map((v) => v.name), ['late', 'vol'], 'later was not copied');
});

test('sync to the source store under another name (a symlink) changes nothing: the live root is not rolled back to the newest snapshot', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  await vault.createVolume('vol', SIZE);
  const e = await vault.openEngine('vol', { autoCommitMs: 0 });
  await e.write(0, randomBytes(2 * CHUNK_SIZE));
  await e.snapshot('s1');
  const after = randomBytes(CHUNK_SIZE);
  await e.write(4 * CHUNK_SIZE, after);
  await e.flush();
  const before = await e.read(0, e.size);
  await e.close();
  const link = join(w.dir, 'src-link');
  symlinkSync(join(w.dir, 'src'), link);
  const self = new FsStore(link);
  const r = await new VaultSync(vault, self, () => w.f.reopen({}, self), { prune: true, concurrency: 4 }, logger).run();
  assert.deepEqual(r.pruned, []);
  const reopened = await w.f.reopen();
  assert.ok((await readAll(reopened, 'vol')).equals(before), 'the writes after the snapshot are still there');
  assert.deepEqual((await reopened.listSnapshots('vol')).map((s) => s.name), ['s1']);
});


test('a source volume deleted and made again under its name is not copied beside the replica\'s old one; once that is gone, it is', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  const snapshotOf = async (name: string) => {
    const e = await vault.openEngine(name, { autoCommitMs: 0 });
    await e.write(0, randomBytes(CHUNK_SIZE));
    await e.snapshot('s');
    await e.close();
  };
  const old = await vault.createVolume('sched', SIZE);
  await snapshotOf('sched');
  await w.sync();
  await vault.deleteVolume('sched');
  const made = await vault.createVolume('sched', SIZE);
  await snapshotOf('sched');
  // a clone of it needs its objects: held back with it
  const clone = await vault.cloneVolume('sched@s', 'kid');
  await snapshotOf('kid');
  // export's temporary snapshot (keep flag) is no backup: never copied
  const e = await vault.openEngine('sched', { autoCommitMs: 0 });
  await e.snapshot('export-2026-12-05T10-00-00Z-abcdef12-4242', { keep: true });
  await e.close();
  const r = await w.sync({ prune: true });
  assert.deepEqual(r.nameTaken, [
    { volume: 'sched', sourceId: made.id, replicaId: old.id },
    { volume: 'kid', sourceId: clone.id, replicaId: old.id, origin: 'sched' },
  ]);
  const replica = await w.replica();
  assert.deepEqual((await replica.listVolumes()).map((v) => [v.name, v.id]), [['sched', old.id]], 'one volume of that name, the old one');
  await replica.deleteVolume('sched', undefined, old.id);
  const again = await w.sync();
  assert.deepEqual(again.nameTaken, []);
  const replica2 = await w.replica();
  assert.deepEqual((await replica2.listVolumes()).map((v) => [v.name, v.id]).sort(), [['kid', clone.id], ['sched', made.id]]);
  assert.ok((await readAll(replica2, 'sched@s')).equals(await readAll(vault, 'sched@s')));
  assert.ok((await readAll(replica2, 'kid@s')).equals(await readAll(vault, 'kid@s')));
  assert.deepEqual((await replica2.listSnapshots('sched')).map((s) => s.name), ['s'], 'no temporary export snapshot');
});

test('a replica volume written since sync set its root keeps its writes at the next sync (a later snapshot no longer wipes them)', async (t) => {
  const w = await world(t);
  const e = await syncedVolume(w, 's1');
  // a VM booted from the replica's VOL writes there
  const replica = await w.replica();
  const onReplica = await replica.openEngine('vol', { autoCommitMs: 0 });
  const written = randomBytes(CHUNK_SIZE);
  await onReplica.write(CHUNK_SIZE, written);
  await onReplica.flush();
  await onReplica.close();
  const before = await readAll(replica, 'vol');
  // a newer snapshot at the source, synced
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('s2');
  await e.close();
  const r = await w.sync();
  assert.deepEqual(r.snapshots.filter((s) => s.status !== 'present').map((s) => [s.export, s.status]), [['vol@s2', 'held']]);
  const after = await w.replica();
  assert.ok((await readAll(after, 'vol')).equals(before), 'the replica\'s writes are still there');
  // a record newer than the replica's own root would read as a rollback there: not copied
  assert.deepEqual((await after.listSnapshots('vol')).map((s) => s.name), ['s1']);
  await verifyVault(after);
});

test('--prune mirrors every deletion, the newest snapshot and a volume\'s last one too; later snapshots still arrive', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  await vault.createVolume('vol', SIZE);
  const e = await vault.openEngine('vol', { autoCommitMs: 0 });
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('s1');
  await e.write(CHUNK_SIZE, randomBytes(CHUNK_SIZE));
  await e.snapshot('s2');
  const s2 = await readAll(vault, 'vol@s2');
  await w.sync();
  // the source deletes its newest snapshot: the replica's VOL keeps its state (its root names
  // those pages), and the record goes
  await vault.deleteSnapshot('vol', 's2');
  const r1 = await w.sync({ prune: true });
  assert.deepEqual(r1.pruned, ['vol@s2']);
  assert.deepEqual((await (await w.replica()).listSnapshots('vol')).map((s) => s.name), ['s1']);
  assert.ok((await readAll(await w.replica(), 'vol')).equals(s2));
  // then its last one: a volume with no snapshot left at the source is pruned too
  await vault.deleteSnapshot('vol', 's1');
  const r2 = await w.sync({ prune: true });
  assert.deepEqual([r2.withoutSnapshots, r2.pruned], [['vol'], ['vol@s1']]);
  // a new snapshot at the source arrives: the replica's root is still known for sync's own (it
  // used to be taken for a writer's once its snapshot was pruned, and every later one was held)
  await e.write(2 * CHUNK_SIZE, randomBytes(CHUNK_SIZE));
  await e.snapshot('s3');
  await e.close();
  const r3 = await w.sync({ prune: true });
  assert.deepEqual([r3.snapshots.map((s) => [s.export, s.status]), r3.pruned], [[['vol@s3', 'copied']], []]);
  const replica = await w.replica();
  assert.deepEqual((await replica.listSnapshots('vol')).map((s) => s.name), ['s3']);
  assert.ok((await readAll(replica, 'vol')).equals(await readAll(vault, 'vol@s3')));
  await verifyVault(replica);
});

test('a replica root from before roots were marked: --prune keeps the snapshot it holds until a newer one is synced', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  const { id } = await vault.createVolume('vol', SIZE);
  const e = await vault.openEngine('vol', { autoCommitMs: 0 });
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('s1');
  await w.sync();
  // what an older sync wrote: the same root without its mark
  const { objects } = await (await w.replica()).loadVolume('vol');
  const { root, etag } = await objects.readRoot();
  assert.equal(root.syncedFrom, (await vault.listSnapshots('vol'))[0].id, 'sync marks its roots');
  const { syncedFrom: _, ...unmarked } = root;
  await objects.writeRoot({ ...unmarked, seq: root.seq + 1 }, etag);
  assert.equal(id, objects.volumeId);
  await vault.deleteSnapshot('vol', 's1');
  assert.deepEqual((await w.sync({ prune: true })).pruned, [], 'kept: without it nothing tells that root from a writer\'s');
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('s2');
  await e.close();
  const r = await w.sync({ prune: true });
  assert.deepEqual([r.snapshots.map((s) => [s.export, s.status]), r.pruned], [[['vol@s2', 'copied']], ['vol@s1']]);
  assert.ok((await readAll(await w.replica(), 'vol')).equals(await readAll(vault, 'vol@s2')));
});

test('a run cut off between the replica root and its record, whose snapshot is then deleted at the source: later snapshots still arrive', async (t) => {
  const w = await world(t, 'memory');
  const { vault } = w.f;
  const e = await syncedVolume(w, 's1');
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('s2');
  // every put of the next run lands except the record's: it stops after the root
  const s2 = (await vault.listSnapshots('vol')).find((s) => s.name === 's2')!;
  const cut = new (class extends PassThroughStore {
    override async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
      if (key.endsWith(s2.id)) throw new VaultError('ERR_STORE_TRANSIENT', 'test: connection lost');
      return this.inner.put(key, body, opts);
    }
  })(w.dest, 'cut');
  await assert.rejects(w.sync({ store: cut }), /connection lost/);
  await vault.deleteSnapshot('vol', 's2');
  await e.write(CHUNK_SIZE, randomBytes(CHUNK_SIZE));
  await e.snapshot('s3');
  await e.close();
  const r = await w.sync({ prune: true });
  assert.deepEqual(r.snapshots.map((s) => [s.export, s.status]), [['vol@s1', 'present'], ['vol@s3', 'copied']]);
  const replica = await w.replica();
  assert.deepEqual((await replica.listSnapshots('vol')).map((s) => s.name), ['s1', 's3']);
  assert.ok((await readAll(replica, 'vol')).equals(await readAll(vault, 'vol@s3')));
});

test('a snapshot name taken again at the source: not copied beside the replica\'s old one (exit 1); --prune replaces it', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  await vault.createVolume('vol', SIZE);
  const e = await vault.openEngine('vol', { autoCommitMs: 0 });
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('daily');
  const oldDaily = await readAll(vault, 'vol@daily');
  await w.sync();
  await vault.deleteSnapshot('vol', 'daily');
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('daily');
  await e.close();
  const newDaily = await readAll(vault, 'vol@daily');
  const r1 = await w.sync();
  assert.deepEqual(r1.snapshots.map((s) => [s.export, s.status]), [['vol@daily', 'name-taken']]);
  const replica = await w.replica();
  assert.deepEqual((await replica.listSnapshots('vol')).map((s) => s.name), ['daily'], 'one snapshot of that name');
  assert.ok((await readAll(replica, 'vol@daily')).equals(oldDaily), 'the old one, whole');
  // a keep flag on the replica's one protects it from --prune too
  const { objects: onReplica } = await replica.loadVolume('vol');
  const old = (await onReplica.listSnapshots())[0];
  await onReplica.setSnapshotKeep(old.id, true);
  const r2 = await w.sync({ prune: true });
  assert.deepEqual([r2.snapshots.map((s) => s.status), r2.pruned], [['name-taken'], []]);
  await onReplica.setSnapshotKeep(old.id, false);
  const r3 = await w.sync({ prune: true });
  assert.deepEqual([r3.snapshots.map((s) => [s.export, s.status]), r3.pruned], [[['vol@daily', 'copied']], ['vol@daily']]);
  const after = await w.replica();
  assert.deepEqual((await after.listSnapshots('vol')).map((s) => s.name), ['daily']);
  assert.ok((await readAll(after, 'vol@daily')).equals(newDaily), 'the new one');
  assert.ok((await readAll(after, 'vol')).equals(newDaily));
  await verifyVault(after);
});

test('a snapshot name taken again: a replica clone of the old one keeps it (its root stays put); a first run cut short is checked too', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  await vault.createVolume('vol', SIZE);
  const e = await vault.openEngine('vol', { autoCommitMs: 0 });
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('n');
  const oldN = await readAll(vault, 'vol@n');
  await w.sync();
  const replica = await w.replica();
  await replica.cloneVolume('vol@n', 'kid');
  await vault.deleteSnapshot('vol', 'n');
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('n');
  const r1 = await w.sync({ prune: true });
  assert.deepEqual(r1.snapshots.map((s) => s.status), ['name-taken']);
  assert.match(r1.snapshots[0].reason!, /clones on the replica .*\(kid\)/);
  assert.ok((await readAll(await w.replica(), 'vol')).equals(oldN), "the replica's VOL did not move to a state whose record could not follow");
  await (await w.replica()).deleteVolume('kid');
  const r2 = await w.sync({ prune: true });
  assert.deepEqual([r2.snapshots.map((s) => s.status), r2.pruned], [['copied'], ['vol@n']]);
  assert.ok((await readAll(await w.replica(), 'vol@n')).equals(await readAll(vault, 'vol@n')));

  // a first run cut short after a record, before the volume's meta: the next run still sees it
  await vault.createVolume('fresh', SIZE);
  const f = await vault.openEngine('fresh', { autoCommitMs: 0 });
  await f.write(0, randomBytes(CHUNK_SIZE));
  await f.snapshot('a');
  const cut = new (class extends PassThroughStore {
    override async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
      if (key.endsWith('/meta')) throw new VaultError('ERR_STORE_TRANSIENT', 'test: connection lost');
      return this.inner.put(key, body, opts);
    }
  })(w.dest, 'cut');
  await assert.rejects(w.sync({ store: cut, volumes: ['fresh'] }), /connection lost/);
  await vault.deleteSnapshot('fresh', 'a');
  await f.write(0, randomBytes(CHUNK_SIZE));
  await f.snapshot('a');
  await f.close();
  const r3 = await w.sync({ volumes: ['fresh'] });
  assert.deepEqual(r3.snapshots.map((s) => s.status), ['name-taken']);
  const r4 = await w.sync({ volumes: ['fresh'], prune: true });
  assert.deepEqual([r4.snapshots.map((s) => s.status), r4.pruned], [['copied'], ['fresh@a']]);
  const after = await w.replica();
  assert.deepEqual((await after.listSnapshots('fresh')).map((s) => s.name), ['a']);
  assert.ok((await readAll(after, 'fresh@a')).equals(await readAll(vault, 'fresh@a')));
  await e.close();
  await verifyVault(after);
});

test('a replica volume a server holds (a client reads it): its newer snapshot is held with that reason, and arrives once the server is gone', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  const e = await syncedVolume(w, 's1');
  const served = await (await w.replica()).openEngine('vol', { autoCommitMs: 0 });
  await served.read(0, 4096);
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('s2');
  await e.close();
  const r1 = await w.sync();
  assert.deepEqual(r1.snapshots.filter((s) => s.status !== 'present').map((s) => s.status), ['held']);
  assert.match(r1.snapshots[1].reason!, /a server holds the replica volume/);
  await served.close();
  const r2 = await w.sync();
  assert.deepEqual(r2.snapshots.map((s) => [s.export, s.status]), [['vol@s1', 'present'], ['vol@s2', 'copied']]);
  assert.ok((await readAll(await w.replica(), 'vol')).equals(await readAll(vault, 'vol@s2')));
});

test('a snapshot name taken again, replaced by --prune while the replica root names a newer one: the objects the old and new share stay', async (t) => {
  const w = await world(t);
  const { vault } = w.f;
  await vault.createVolume('vol', SIZE);
  const e = await vault.openEngine('vol', { autoCommitMs: 0 });
  await e.write(0, randomBytes(2 * CHUNK_SIZE));
  await e.snapshot('weekly'); // A: chunks 0 and 1
  await w.sync();
  await vault.deleteSnapshot('vol', 'weekly');
  await e.write(CHUNK_SIZE, randomBytes(CHUNK_SIZE));
  await e.snapshot('weekly'); // D2: A's chunk 0, a new chunk 1
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.snapshot('later'); // E: neither of A's chunks
  await e.close();
  const r1 = await w.sync();
  assert.deepEqual(r1.snapshots.map((s) => [s.export, s.status]), [['vol@weekly', 'name-taken'], ['vol@later', 'copied']]);
  const r2 = await w.sync({ prune: true });
  assert.deepEqual([r2.snapshots.map((s) => [s.export, s.status]), r2.pruned], [[['vol@weekly', 'copied'], ['vol@later', 'present']], ['vol@weekly']]);
  const replica = await w.replica();
  assert.deepEqual((await replica.listSnapshots('vol')).map((s) => s.name).sort(), ['later', 'weekly']);
  assert.ok((await readAll(replica, 'vol@weekly')).equals(await readAll(vault, 'vol@weekly')), 'the new weekly reads whole (its chunk 0 was deleted with the old one)');
  await verifyVault(replica);
});
