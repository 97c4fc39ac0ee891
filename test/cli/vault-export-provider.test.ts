import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Writable } from 'node:stream';
import pino from 'pino';
import { join } from 'node:path';
import { VaultExportProvider } from '../../src/cli/vault-export-provider';
import { PromMetrics } from '../../src/cli/metrics';
import { makeVault, logger, eventually, SettlingStore } from '../volume/vault-fixture';
import { PassThroughStore } from '../helpers/pass-through-store';
import { VaultError } from '../../src/errors';
import type { PutOptions } from '../../src/store/object-store';
import type { VolumeEngine } from '../../src/volume/volume-engine';

const MiB = 2 ** 20;

test('export provider: volumes and VOL@SNAP listed; shared engines; a snapshot export reopens fresh', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('vol', 8 * MiB);
  const p = new VaultExportProvider(f.vault, 'vol', {}, logger);
  const a = (await p.open(''))!;
  const b = (await p.open('vol'))!;
  assert.equal(a, b, 'one engine per volume, shared by connections');
  const first = randomBytes(4096);
  await a.write(0, first);
  await p.snapshot('vol', 's');
  assert.deepEqual((await p.list()).map((e) => e.name), ['vol', 'vol@s']);
  const s1 = (await p.open('vol@s'))!;
  assert.equal(s1.caps.readOnly, true);
  // a client reads one description of it, listed (NBD_OPT_LIST) or opened (INFO/GO)
  const listed = (await p.list()).find((e) => e.name === 'vol@s')!.description;
  assert.match(listed, /^snapshot s of volume vol \(.+\), read-only$/);
  assert.equal(s1.description, listed);
  assert.ok((await s1.read(0, 4096)).equals(first));
  await p.release(s1); // last connection: the snapshot engine closes
  await f.vault.deleteSnapshot('vol', 's');
  await a.write(0, randomBytes(4096));
  await p.snapshot('vol', 's'); // a new snapshot with the same name
  const s2 = (await p.open('vol@s'))!;
  assert.notEqual(s2, s1);
  assert.ok(!(await s2.read(0, 4096)).equals(first), 'the re-created snapshot, not a stale one');
  assert.equal(await p.open('nope'), null);
  assert.equal(await p.open('vol@nope'), null);
  await p.release(s2);
  await p.release(a);
  await p.release(b);
  await p.closeAll();
  assert.equal(await p.open('vol'), null, 'nothing opens after closeAll');
});

/** A store whose puts fail while `down` (a full disk, a read-only mount). */
class DownStore extends PassThroughStore {
  down = false;
  override put(key: string, body: Buffer, opts?: PutOptions) {
    if (this.down) return Promise.reject(new VaultError('ERR_STORE_IO', `${key}: ENOSPC: no space left on device`));
    return super.put(key, body, opts);
  }
}

async function leaseLostInOutage(t: { after(fn: () => void): void }) {
  const store = new DownStore(new SettlingStore());
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('vol', 8 * MiB);
  const v = await f.reopen({ leaseTiming: { ttlMs: 600, renewMs: 100 } });
  const p = new VaultExportProvider(v, 'vol', {}, logger);
  const e = (await p.open('vol'))! as unknown as VolumeEngine;
  const data = randomBytes(64 * 1024);
  await e.write(0, data); // acknowledged, not flushed
  store.down = true;
  await eventually(() => e.leaseLost, 'the lease is lost: its heartbeats fail');
  return { f, store, p, e, data };
}

test('a lease lost while the store fails: the engine keeps its unflushed writes, opens are refused as transient, and once the store answers the lease is taken back and the writes are flushed', async (t) => {
  const { f, store, p, e, data } = await leaseLostInOutage(t);
  await assert.rejects(p.open('vol'), (err: any) => err.code === 'ERR_STORE_TRANSIENT', 'a client connecting now is told to retry');
  await assert.rejects(p.open('vol'), (err: any) => err.code === 'ERR_STORE_TRANSIENT', 'also the next time (the failed resume is retried)');
  store.down = false;
  const again = await p.open('vol');
  assert.equal(again, e, 'the same engine, holding the writes it acknowledged');
  await e.flush();
  await p.closeAll();
  const r = await (await f.reopen()).openEngine('vol', { readOnly: true, readCacheBytes: 0 });
  assert.ok((await r.read(0, data.length)).equals(data), 'the writes acknowledged before the outage are durable');
  await r.close();
});

test('a stop while the store still fails: closing says the unflushed writes are lost, never "flushed and closed"', async (t) => {
  const { p } = await leaseLostInOutage(t);
  await assert.rejects(p.closeAll(), (err: any) => err.code === 'ERR_LEASE' && /64 KiB of written data no FLUSH had covered could not be made durable/.test(err.message));
});

test('two volumes of one name (created at once on two machines): the export list skips them instead of failing, and one can be deleted by id', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('other', 4 * 2 ** 20);
  await f.vault.createVolume('dup', 4 * 2 ** 20);
  // the second machine's name check ran before the first one's create landed, and it was killed
  // before its look after the create (or it ran a build from before that look)
  const list = f.vault.listVolumes.bind(f.vault);
  const metadata = (f.vault as any).metadata;
  const taken = metadata.nameTakenBesides.bind(metadata);
  (f.vault as any).listVolumes = async () => [];
  metadata.nameTakenBesides = async () => false;
  await f.vault.createVolume('dup', 8 * 2 ** 20);
  (f.vault as any).listVolumes = list;
  metadata.nameTakenBesides = taken;
  const twins = (await f.vault.listVolumes()).filter((v) => v.name === 'dup');
  assert.equal(twins.length, 2);
  const p = new VaultExportProvider(f.vault, 'other', {}, logger);
  assert.deepEqual((await p.list()).map((e) => e.name), ['other'], 'listed, without the twins (it threw for every client)');
  await assert.rejects(f.vault.volumeInfo('dup'), /2 volumes are named "dup" .*volume delete dup --id ID/);
  assert.equal((await f.vault.volumeInfo('dup', twins[0])).id, twins[0].id, 'each one still shows by its meta');
  await f.vault.deleteVolume('dup', undefined, twins[1].id);
  assert.equal((await f.vault.volumeInfo('dup')).id, twins[0].id);
  assert.deepEqual((await p.list()).map((e) => e.name).sort(), ['dup', 'other']);
  await p.closeAll();
});

test('a volume no client uses is flushed, closed and its lease given back after the idle time; a client back before that gets the warm engine', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('vol', 8 * MiB);
  const p = new VaultExportProvider(f.vault, 'vol', {}, logger, 300);
  t.after(() => p.closeAll());
  const data = randomBytes(4096);
  const a = (await p.open('vol'))!;
  await a.write(0, data); // no FLUSH: the idle close stores it
  await p.release(a);
  const back = (await p.open('vol'))!;
  assert.equal(back, a, 'back within the idle time: the same engine');
  await p.release(back);
  await eventually(async () => (await f.store.head(`volumes/${meta.id}/lease`)) === null, 'the lease is given back', 5_000);
  assert.deepEqual(p.openNames(), []);
  assert.deepEqual(p.takeWrittenNames(), ['vol'], 'the schedule still snapshots a volume written before it closed');
  assert.deepEqual(p.takeWrittenNames(), []);
  // another writer (another server) may take it now, and reads what the idle close stored
  const otherState = mkdtempSync(join(tmpdir(), 'nbd-vault-other-'));
  t.after(() => rmSync(otherState, { recursive: true, force: true }));
  const other = await f.reopen({ stateDir: otherState });
  const e = await other.openEngine('vol');
  assert.ok((await e.read(0, 4096)).equals(data));
  await e.close();
  // and this provider opens it afresh; opened and read, not written: nothing for the schedule
  const again = (await p.open('vol'))!;
  assert.notEqual(again, a);
  assert.ok((await again.read(0, 4096)).equals(data));
  assert.deepEqual(p.takeWrittenNames(), []);
  await again.write(4096, data);
  assert.deepEqual(p.takeWrittenNames(), ['vol'], 'written while open');
  assert.deepEqual(p.takeWrittenNames(), [], 'and not again until written again');
  await p.release(again);
});

test('an idle volume whose flush fails stays open (nothing given up) and closes once the store takes the data', async (t) => {
  class FailingData extends PassThroughStore {
    failing = false;
    override async put(key: string, body: Buffer, opts?: PutOptions) {
      if (this.failing && /\/(chunks|journals)\//.test(key)) throw new VaultError('ERR_STORE_IO', 'test: the store refuses data');
      return this.inner.put(key, body, opts);
    }
  }
  const store = new FailingData(new SettlingStore(), 'failing-data');
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('vol', 8 * MiB);
  const p = new VaultExportProvider(f.vault, 'vol', {}, logger, 200);
  t.after(() => p.closeAll());
  const data = randomBytes(4096);
  const a = (await p.open('vol'))!;
  await a.write(0, data);
  store.failing = true;
  await p.release(a);
  await new Promise((r) => setTimeout(r, 700));
  assert.deepEqual(p.openNames(), ['vol'], 'kept open while its data cannot be stored');
  assert.ok(await f.store.head(`volumes/${meta.id}/lease`), 'and its lease held');
  store.failing = false;
  await eventually(async () => (await f.store.head(`volumes/${meta.id}/lease`)) === null, 'closed once the store answers', 10_000);
  const e = await f.vault.openEngine('vol', { readOnly: true });
  assert.ok((await e.read(0, 4096)).equals(data), 'what the client wrote was stored');
  await e.close();
});

test('NBD_OPT_INFO on a volume another server writes answers at once, without its lease, with the flags a writer gets', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('vol', 8 * MiB);
  const writer = await f.vault.openEngine('vol'); // "server A", holding the lease
  t.after(() => writer.close());
  const otherState = mkdtempSync(join(tmpdir(), 'nbd-vault-other-'));
  t.after(() => rmSync(otherState, { recursive: true, force: true }));
  const other = await f.reopen({ stateDir: otherState }); // "server B"
  const p = new VaultExportProvider(other, 'vol', {}, logger);
  t.after(() => p.closeAll());
  const started = Date.now();
  const seen = (await p.open('vol', 'inspect'))!;
  assert.ok(Date.now() - started < 2_000, `answered in ${Date.now() - started} ms`);
  assert.equal(seen.size, 8 * MiB);
  assert.equal(seen.caps.readOnly, false, 'the flags a client that opens it to write gets');
  assert.deepEqual(p.openNames(), [], 'no engine kept, no lease taken');
  await p.release(seen);
  assert.equal(await p.open('nope', 'inspect'), null);
});

test('a client that may only read takes no lease, also beside an idle engine here; a volume resized or made again under it fails its reads, never answers from the other volume', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('vol', 8 * MiB);
  const p = new VaultExportProvider(f.vault, 'vol', {}, logger);
  t.after(() => p.closeAll());
  // a writer here came and went: its engine stays open, idle, for a reconnecting client
  const rw = (await p.open('vol'))!;
  const before = Buffer.alloc(8 * MiB, 0xaa);
  await rw.write(0, before);
  await rw.flush();
  assert.ok((await rw.read(4 * MiB, 4096)).equals(before.subarray(0, 4096))); // (something in its read cache)
  await p.release(rw);
  const ro = (await p.open('vol', 'read'))!;
  assert.notEqual(ro, rw, 'not the writable engine');
  assert.equal(ro.caps.readOnly, true);
  assert.ok((await ro.read(0, 4096)).equals(before.subarray(0, 4096)));
  // metrics see the view beside the writer's engine, and add the two up per volume
  const stats = p.engineStats().filter((e) => e.name === 'vol');
  assert.deepEqual(stats.map((e) => e.readOnly).sort(), [false, true], 'the view is listed beside the engine');
  for (const e of stats) assert.ok(e.stats.readCacheMisses >= 1 && e.stats.readCacheBytes > 0, 'each counts its own reads');
  const text = await new PromMetrics(() => p.engineStats()).registry.metrics();
  const metric = (name: string) => Number(new RegExp(`^${name}\\{volume="vol"\\} (\\S+)$`, 'm').exec(text)?.[1]);
  assert.equal(metric('nbd_vault_read_cache_bytes'), stats[0].stats.readCacheBytes + stats[1].stats.readCacheBytes);
  assert.equal(metric('nbd_vault_read_cache_misses_total'), stats[0].stats.readCacheMisses + stats[1].stats.readCacheMisses);
  // the writer's engine closes (idle): another server now writes the volume, the reader stays
  await p.closeAll().catch(() => {});
  // (its log, to see that an object gone under the reader is routine, not an error)
  const lines: Array<{ level: number; msg: string }> = [];
  const capture = pino({ level: 'debug' }, new Writable({ write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk))), done()) }));
  const readerState = mkdtempSync(join(tmpdir(), 'nbd-vault-reader-'));
  t.after(() => rmSync(readerState, { recursive: true, force: true }));
  const p2 = new VaultExportProvider(await f.reopen({ stateDir: readerState, logger: capture }), 'vol', {}, capture);
  t.after(() => p2.closeAll());
  const reader = (await p2.open('vol', 'read'))!;
  const otherState = mkdtempSync(join(tmpdir(), 'nbd-vault-other-'));
  t.after(() => rmSync(otherState, { recursive: true, force: true }));
  const other = await f.reopen({ stateDir: otherState }); // "server B"
  const writer = await other.openEngine('vol'); // the lease is free: the reader took none
  await writer.write(0, Buffer.alloc(8 * MiB, 0xbb));
  await writer.close();
  const moved = await reader.read(0, 4096);
  assert.ok(moved.equals(Buffer.alloc(4096, 0xbb)), 'the chunk it read was replaced: the view moved to the newest root');
  assert.ok(lines.some((l) => /moving to the newest/.test(l.msg)), 'the move is logged');
  assert.deepEqual(lines.filter((l) => l.level >= 40).map((l) => l.msg), [], 'an object gone under a view is no error');

  // deleted: a new reader finds no volume (not the old one's view, nor its cached data)
  await other.deleteVolume('vol');
  assert.equal(await p2.open('vol', 'read'), null, 'a deleted volume is no export');
  // made again under its name: a new reader reads the new volume; the old reader's next read that
  // misses fails, never reads the new one
  await other.createVolume('vol', 8 * MiB);
  const again = await other.openEngine('vol');
  await again.write(0, Buffer.alloc(8 * MiB, 0xcc));
  await again.close();
  const fresh = (await p2.open('vol', 'read'))!;
  assert.notEqual(fresh, reader);
  assert.ok((await fresh.read(0, 4096)).equals(Buffer.alloc(4096, 0xcc)), 'the new volume, not the cached old one');
  await assert.rejects(reader.read(4 * MiB, 4096), /was deleted( and made again)? since this read-only client connected/);

  // shrunk under a reader: its read past the new end fails (before: the read path spun forever)
  const shrink = await other.openEngine('vol');
  await shrink.resize(4 * MiB);
  await shrink.close();
  await assert.rejects(fresh.read(6 * MiB, 4096), /was resized \(8388608 to 4194304 bytes\)/);
  await p2.release(reader);
  await p2.release(fresh);
});

test('two creates (or a clone) of one name racing on two machines: never both stay; the one that sees the other withdraws', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  /** Runs `race` once, just before the next put of a volume's metadata lands. */
  class Racing extends PassThroughStore {
    race: (() => Promise<unknown>) | null = null;
    override async put(key: string, body: Buffer, opts?: PutOptions) {
      const race = key.endsWith('/meta') ? this.race : null;
      if (race) {
        this.race = null;
        await race();
      }
      return super.put(key, body, opts);
    }
  }
  const racing = new Racing(f.store);
  const mine = await f.reopen({}, racing);
  // the other machine creates "dup" from start to end between our name check and our metadata
  let theirs: unknown;
  racing.race = async () => (theirs = await f.vault.createVolume('dup', 4 * MiB));
  await assert.rejects(mine.createVolume('dup', 8 * MiB), /a volume named "dup" was created elsewhere at the same moment; this create was withdrawn/);
  const dups = (await f.vault.listVolumes()).filter((v) => v.name === 'dup');
  assert.deepEqual(dups.map((v) => v.id), [(theirs as { id: string }).id], 'one volume of the name: theirs');
  assert.equal((await f.vault.volumeInfo('dup')).size, 4 * MiB);
  for await (const o of f.store.list('volumes/')) assert.ok(o.key.startsWith(`volumes/${dups[0].id}/`), `nothing of the withdrawn create is left: ${o.key}`);

  // a clone racing a create of its name likewise
  await f.vault.createVolume('src', 4 * MiB);
  await f.vault.createSnapshot('src', 's1');
  racing.race = async () => f.vault.createVolume('copy', 4 * MiB);
  await assert.rejects(mine.cloneVolume('src@s1', 'copy'), /this clone was withdrawn/);
  assert.equal((await f.vault.listVolumes()).filter((v) => v.name === 'copy').length, 1);
  assert.equal((await f.vault.volumeInfo('copy')).origin, null, 'the one left is the created volume, not the clone');
});
