// The disk cache (DiskCache + DiskCacheStore + SlruPolicy): the store contract through it, hits
// and misses, write-through, deletes, mutable keys, the size bound with its metadata, eviction
// order, corrupt and torn entries, warm restarts, the directory lock and kill -9 mid-write.
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { open as openFile, readFile, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { FaultyStore, FsStore, MemoryStore, seededRandom, type ObjectStore } from '../../src/store';
import { DiskCache, DISK_CACHE_FIXED_BYTES, DISK_CACHE_MIN_BYTES } from '../../src/store/disk-cache';
import { DiskCacheStore } from '../../src/store/disk-cache-store';
import { SlruPolicy } from '../../src/store/slru-policy';
import { isImmutableObjectKey } from '../../src/volume/object-keys';
import { createLogger, setLogger } from '../../src/util/log';
import { describeObjectStore, expectCode } from './conformance';
import { S3_SKIP, makeTestS3Store } from './s3-env';

setLogger(createLogger(process.env.NBD_VAULT_LOG_LEVEL ?? 'error'));
const tmp = mkdtempSync(path.join(tmpdir(), 'nbdv-dc-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const MiB = 2 ** 20;
const VOL = 'ab'.repeat(16);
const chunk = (i: number) => `volumes/${VOL}/chunks/${i.toString(16).padStart(32, '0')}`;

async function cached(inner: ObjectStore, bytes = 64 * MiB, pred: (k: string) => boolean = isImmutableObjectKey, dir = path.join(tmp, `c${n++}`)): Promise<DiskCacheStore> {
  return new DiskCacheStore(inner, await DiskCache.open(dir, bytes), pred);
}

/** The names of the entry files under a cache directory (temp files included). */
function entryFiles(dir: string): string[] {
  return readdirSync(path.join(dir, 'entries')).flatMap((d) => readdirSync(path.join(dir, 'entries', d)));
}

/** What dir takes on disk: files in 4 KiB blocks, directories at their real size. */
function diskUse(dir: string): number {
  let total = statSync(dir).size;
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        total += statSync(p).size;
        walk(p);
      } else if (e.isFile()) total += Math.ceil(statSync(p).size / 4096) * 4096;
    }
  };
  walk(dir);
  return total;
}

// The contract holds through the cache: with every key cached (overwrites, conditional puts and
// deletes then exercise the invalidation paths), and with the real predicate over fs and RGW.
describeObjectStore('disk-cache(memory), every key cached', async () => cached(new MemoryStore(), 64 * MiB, () => true));
describeObjectStore('disk-cache(fs), immutable keys cached', async () => cached(new FsStore(path.join(tmp, `fs${n++}`), { fsync: false })));
const s3Prefixes: string[] = [];
describeObjectStore('disk-cache(s3 (RGW)), every key cached', async () => {
  const s3 = makeTestS3Store();
  s3Prefixes.push(s3.prefix);
  return cached(s3, 64 * MiB, () => true);
}, { skip: S3_SKIP, manyKeys: 300 });
after(async () => {
  for (const prefix of s3Prefixes) {
    const s3 = makeTestS3Store({ prefix });
    const keys: string[] = [];
    for await (const info of s3.list('')) keys.push(info.key);
    await s3.deleteMany(keys);
    await s3.close();
  }
});

describe('SlruPolicy', () => {
  it('evicts new entries before those used twice; a scan does not flush the hot set', () => {
    const p = new SlruPolicy<string>();
    const budget = 100;
    for (const id of ['h1', 'h2', 'h3']) p.insert(id, 10, budget);
    for (const id of ['h1', 'h2', 'h3']) p.touch(id, budget); // used twice: protected
    for (let i = 0; i < 50; i++) p.insert(`scan${i}`, 10, budget); // a one-pass scan
    assert.equal(p.victim(), 'scan0');
    const order = p.order();
    assert.deepEqual(order.slice(-3), ['h1', 'h2', 'h3'], 'the hot set is evicted last');
    assert.equal(p.bytes, 530);
    assert.ok(p.remove('scan0') && !p.remove('scan0'));
    assert.equal(p.size, 52);
  });

  it('keeps protected within its share: its coldest entries fall back to probation', () => {
    const p = new SlruPolicy<string>();
    for (let i = 0; i < 10; i++) p.insert(`e${i}`, 10, 100);
    for (let i = 0; i < 10; i++) p.touch(`e${i}`, 100); // all promoted; protected may hold 80
    assert.deepEqual(p.order(), ['e0', 'e1', 'e2', 'e3', 'e4', 'e5', 'e6', 'e7', 'e8', 'e9']);
    assert.equal(p.victim(), 'e0', 'demoted to probation: first to go');
    p.touch('e0', 100); // a hit brings it back to protected, e2 falls back
    assert.equal(p.victim(), 'e1');
    assert.equal(p.order().at(-1), 'e0');
  });
});

describe('DiskCacheStore', () => {
  it('a put keeps nothing of its body: changed at once after the call, the entry holds the bytes put and reads back as a hit', async () => {
    const s = await cached(new MemoryStore());
    const want = randomBytes(2 * MiB + 5);
    const body = Buffer.from(new SharedArrayBuffer(want.length));
    want.copy(body);
    await s.put(chunk(7), body);
    body.fill(0x5a); // the caller reuses its memory at once
    await s.cache.settle();
    assert.ok((await s.get(chunk(7))).body.equals(want));
    const st = s.stats();
    assert.deepEqual([st.hits, st.corrupt], [1, 0], 'a hit, and no entry found torn (a late write would be)');
    await s.close();
  });

  it('caches immutable objects on a miss and answers them from disk; mutable keys always go to the store', async () => {
    const faulty = new FaultyStore(new MemoryStore(), {}, seededRandom(1));
    const s = await cached(faulty);
    const body = randomBytes(3 * MiB + 17);
    await faulty.put(chunk(1), body); // behind the cache's back: not cached yet
    const root = `volumes/${VOL}/root`;
    await s.put(root, Buffer.from('root v1'));
    assert.ok((await s.get(chunk(1))).body.equals(body));
    await s.cache.settle();
    assert.equal(faulty.calls.get, 1);
    for (let i = 0; i < 3; i++) assert.ok((await s.get(chunk(1))).body.equals(body));
    assert.equal(faulty.calls.get, 1, 'hits do not reach the store');
    // a hit with memory to read into lands there (no fresh 3 MiB)
    const into = Buffer.from(new SharedArrayBuffer(4 * MiB));
    const intoHit = await s.get(chunk(1), into);
    assert.ok(intoHit.body.equals(body));
    assert.equal(intoHit.body.buffer, into.buffer, 'a hit is read into `into`');
    assert.equal(faulty.calls.get, 1);
    const st = s.stats();
    assert.equal(st.hits, 4);
    assert.equal(st.misses, 1);
    assert.equal(st.hitBytes, 4 * body.length);
    assert.equal(st.missBytes, body.length);
    // ranges of a whole cached object are hits too, clipped at its end
    assert.ok((await s.getRange(chunk(1), 1_000_000, 200_000)).equals(body.subarray(1_000_000, 1_200_000)));
    assert.ok((await s.getRange(chunk(1), body.length - 5, 100)).equals(body.subarray(body.length - 5)));
    assert.equal((await s.getRange(chunk(1), body.length + 5, 100)).length, 0);
    assert.equal(faulty.calls.get + faulty.calls.getRange, 1);
    // mutable keys: every read reaches the store, and sees the latest bytes
    await s.put(root, Buffer.from('root v2'));
    for (let i = 0; i < 2; i++) assert.equal((await s.get(root)).body.toString(), 'root v2');
    assert.equal(faulty.calls.get, 3);
    for (const k of [root, `volumes/${VOL}/meta`, `volumes/${VOL}/lease`, `volumes/${VOL}/snapshots/${'1'.repeat(32)}`, 'vault', 'sessions/abc']) assert.equal(isImmutableObjectKey(k), false, k);
    for (const k of [chunk(3), `volumes/${VOL}/pages/${'2'.repeat(32)}`, `volumes/${VOL}/journals/${'3'.repeat(32)}`]) assert.equal(isImmutableObjectKey(k), true, k);
    await s.close();
  });

  it('caches the ranges it reads (not the whole object) and shares one store read among concurrent misses', async () => {
    const faulty = new FaultyStore(new MemoryStore(), {}, seededRandom(2));
    const s = await cached(faulty);
    const body = randomBytes(4 * MiB);
    await faulty.put(chunk(2), body);
    const frame = (f: number) => s.getRange(chunk(2), 1000 + f * 131_072, 131_072);
    const got = await Promise.all(Array.from({ length: 8 }, () => frame(3)));
    for (const g of got) assert.ok(g.equals(body.subarray(1000 + 3 * 131_072, 1000 + 4 * 131_072)));
    got[0].fill(0); // each caller owns its buffer
    assert.ok(got[1].equals(body.subarray(1000 + 3 * 131_072, 1000 + 4 * 131_072)));
    assert.equal(faulty.calls.getRange, 1, 'one store read for 8 concurrent misses');
    await s.cache.settle();
    assert.ok((await frame(3)).equals(body.subarray(1000 + 3 * 131_072, 1000 + 4 * 131_072)));
    assert.ok((await s.getRange(chunk(2), 1000 + 3 * 131_072 + 5, 100)).equals(body.subarray(1000 + 3 * 131_072 + 5, 1000 + 3 * 131_072 + 105)), 'a range inside a cached range');
    assert.equal(faulty.calls.getRange, 1);
    assert.equal(s.cache.entries, 1);
    assert.ok(s.cache.usedBytes < DISK_CACHE_FIXED_BYTES + 140 * 1024, 'only the range is on disk');
    await frame(4); // another frame: a miss
    assert.equal(faulty.calls.getRange, 2);
    // a range reaching past the end is cached with that knowledge
    await s.getRange(chunk(2), 4 * MiB - 10, 131_072);
    await s.cache.settle();
    assert.ok((await s.getRange(chunk(2), 4 * MiB - 4, 50)).equals(body.subarray(4 * MiB - 4)));
    assert.equal(faulty.calls.getRange, 3);
    await expectCode(s.getRange(chunk(99), 0, 10), 'ERR_STORE_NOT_FOUND');
    await expectCode(s.get(chunk(99)), 'ERR_STORE_NOT_FOUND');
    await s.close();
  });

  it('writes puts through after the store accepted them; deletes drop entries; a failed put caches nothing', async () => {
    const faulty = new FaultyStore(new MemoryStore(), {}, seededRandom(3));
    const s = await cached(faulty);
    const body = randomBytes(MiB);
    const { etag } = await s.put(chunk(5), body);
    const got = await s.get(chunk(5));
    assert.ok(got.body.equals(body));
    assert.equal(got.etag, etag, 'the store\'s etag, kept in the entry');
    assert.ok((await s.getRange(chunk(5), 10, 10)).equals(body.subarray(10, 20)));
    assert.equal(faulty.calls.get + faulty.calls.getRange, 0, 'a read after a write never goes to the store');

    faulty.failNext('put', 1, 'ERR_STORE_IO');
    await expectCode(s.put(chunk(6), randomBytes(1000)), 'ERR_STORE_IO');
    assert.equal(s.cache.find(chunk(6), 0, 'whole'), null);
    await expectCode(s.get(chunk(6)), 'ERR_STORE_NOT_FOUND');

    await s.delete(chunk(5));
    assert.equal(s.cache.find(chunk(5), 0, 'whole'), null);
    await expectCode(s.get(chunk(5)), 'ERR_STORE_NOT_FOUND');
    await s.put(chunk(7), body);
    await s.put(chunk(8), body);
    await s.deleteMany([chunk(7), chunk(8)]);
    await expectCode(s.getRange(chunk(8), 0, 10), 'ERR_STORE_NOT_FOUND');
    await s.cache.settle();
    assert.equal(s.cache.entries, 0);
    assert.equal(readdirSync(path.join(s.cache.dir, 'entries')).flatMap((d) => readdirSync(path.join(s.cache.dir, 'entries', d))).length, 0, 'no files left');
    await s.close();
  });

  it('stays within its size, metadata and directories included, evicting the cold entries', async () => {
    const inner = new MemoryStore();
    const size = DISK_CACHE_MIN_BYTES + 4 * MiB; // ~21 MiB
    const s = await cached(inner, size);
    const hot = [0, 1];
    for (let i = 0; i < 40; i++) {
      await inner.put(chunk(i), randomBytes(MiB - 100 + i));
    }
    for (const h of hot) {
      await s.get(chunk(h));
      await s.cache.settle();
      await s.get(chunk(h)); // used twice: protected
    }
    for (let i = 2; i < 40; i++) {
      await s.get(chunk(i));
      await s.cache.settle();
      assert.ok(s.cache.usedBytes <= size, `charged ${s.cache.usedBytes} <= ${size}`);
      assert.ok(diskUse(s.cache.dir) <= size, `on disk ${diskUse(s.cache.dir)} <= ${size}`);
    }
    const st = s.stats();
    assert.ok(st.evictions >= 20, `evictions: ${st.evictions}`);
    assert.ok(st.usedBytes > size - 2 * MiB, 'the cache is used up to its bound');
    for (const h of hot) assert.ok(s.cache.find(chunk(h), 0, 'whole'), `hot chunk ${h} survived the scan`);
    assert.equal(s.cache.find(chunk(2), 0, 'whole'), null, 'the coldest went first');
    await assert.rejects(DiskCache.open(path.join(tmp, `small${n++}`), 1 * MiB), /at least/);
    await s.close();
  });

  it('a full cache under writes: every put lands in the store, the bound holds, reads stay right', async () => {
    const inner = new MemoryStore();
    const size = DISK_CACHE_MIN_BYTES + 2 * MiB;
    const s = await cached(inner, size);
    const bodies = Array.from({ length: 48 }, (_, i) => randomBytes(MiB + i * 1000));
    let next = 0;
    let peak = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let i = next++; i < bodies.length; i = next++) {
        await s.put(chunk(i), bodies[i]);
        peak = Math.max(peak, s.cache.usedBytes);
      }
    }));
    await s.cache.settle();
    assert.ok(peak <= size, `charged at most the bound while writing: ${peak} <= ${size}`);
    assert.ok(diskUse(s.cache.dir) <= size, `on disk ${diskUse(s.cache.dir)} <= ${size}`);
    assert.ok(s.stats().evictions >= 30, `evictions ${s.stats().evictions}`);
    assert.equal(inner.size, 48, 'every put reached the store');
    for (const [i, b] of bodies.entries()) assert.ok((await s.get(chunk(i))).body.equals(b), `object ${i}`);
    await s.close();
  });

  it('never caches a fill that raced with a delete or a put of its key', async () => {
    // Store reads that have read their bytes but answer only when the gate opens.
    let open!: () => void;
    let gate = Promise.resolve();
    class HeldReads extends MemoryStore {
      override async get(key: string) {
        const r = await super.get(key);
        await gate;
        return r;
      }
      override async getRange(key: string, offset: number, length: number) {
        const r = await super.getRange(key, offset, length);
        await gate;
        return r;
      }
    }
    const inner = new HeldReads();
    const s = await cached(inner);
    const hold = () => (gate = new Promise<void>((r) => (open = r)));
    await inner.put(chunk(1), randomBytes(1000));
    await inner.put(chunk(2), randomBytes(1000));
    hold();
    const reads = [s.get(chunk(1)), s.getRange(chunk(2), 0, 100)];
    await new Promise((r) => setTimeout(r, 20)); // they have read the bytes and wait at the gate
    await s.deleteMany([chunk(1), chunk(2)]);
    open();
    await Promise.all(reads); // the old bytes
    await s.cache.settle();
    assert.equal(s.cache.entries, 0, 'old bytes of deleted objects are not cached');
    await expectCode(s.get(chunk(1)), 'ERR_STORE_NOT_FOUND');
    await expectCode(s.getRange(chunk(2), 0, 100), 'ERR_STORE_NOT_FOUND');
    // a fill racing with a put that replaces the object: the put's bytes are cached, not the fill's
    const v2 = randomBytes(1000);
    await inner.put(chunk(3), randomBytes(1000));
    hold();
    const old = s.get(chunk(3));
    await new Promise((r) => setTimeout(r, 20));
    await s.put(chunk(3), v2);
    open();
    await old;
    await s.cache.settle();
    assert.ok((await s.get(chunk(3))).body.equals(v2));
    assert.equal(s.stats().hits, 1, 'from the cache');
    await s.close();
  });

  it('detects a flipped byte, a truncated file and a garbage header: dropped, re-fetched, never served', async () => {
    const faulty = new FaultyStore(new MemoryStore(), {}, seededRandom(4));
    const dir = path.join(tmp, `c${n++}`);
    let s = await cached(faulty, 64 * MiB, isImmutableObjectKey, dir);
    const bodies = [0, 1, 2, 3].map(() => randomBytes(300_000));
    for (const [i, b] of bodies.entries()) await s.put(chunk(i), b);
    const file = (i: number) => s.cache.fileOf(s.cache.find(chunk(i), 0, 'whole')!.name);

    // a flipped byte in the data
    const fh = await openFile(file(0), 'r+');
    const st = await fh.stat();
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, st.size - 1000);
    one[0] ^= 0x40;
    await fh.write(one, 0, 1, st.size - 1000);
    await fh.close();
    assert.ok((await s.get(chunk(0))).body.equals(bodies[0]), 'the right bytes, from the store');
    assert.equal(faulty.calls.get, 1);
    assert.equal(s.stats().corrupt, 1);
    await s.cache.settle();
    assert.ok((await s.get(chunk(0))).body.equals(bodies[0]));
    assert.equal(faulty.calls.get, 1, 're-cached after the re-fetch');

    // a truncated file; a range read of the lost part
    await truncate(file(1), (await readFile(file(1))).length - 70_000);
    assert.ok((await s.getRange(chunk(1), 250_000, 10_000)).equals(bodies[1].subarray(250_000, 260_000)));
    assert.equal(s.stats().corrupt, 2);
    assert.equal(faulty.calls.getRange, 1);

    // garbage in a header and a torn file: found at the next open, dropped before any read
    await s.close();
    const h = await readFile(file(2));
    h[20] ^= 1; // the data length
    await writeFile(file(2), h);
    await truncate(file(3), 5000);
    s = await cached(faulty, 64 * MiB, isImmutableObjectKey, dir);
    assert.equal(s.cache.counters.droppedAtOpen, 2);
    assert.equal(s.cache.find(chunk(2), 0, 'whole'), null);
    assert.equal(s.cache.find(chunk(3), 0, 'whole'), null);
    for (const i of [0, 1, 2, 3]) assert.ok((await s.get(chunk(i))).body.equals(bodies[i]));
    await s.close();
  });

  it('keeps its entries across a restart (warm), and one process at a time owns the directory', async () => {
    const faulty = new FaultyStore(new MemoryStore(), {}, seededRandom(5));
    const dir = path.join(tmp, `c${n++}`);
    const s1 = await cached(faulty, 64 * MiB, isImmutableObjectKey, dir);
    const bodies = Array.from({ length: 6 }, () => randomBytes(200_000));
    for (const [i, b] of bodies.entries()) await faulty.put(chunk(i), b);
    for (let i = 0; i < 6; i++) await s1.get(chunk(i));
    await s1.getRange(chunk(0), 0, 144); // a container header read
    await s1.cache.settle();
    await assert.rejects(DiskCache.open(dir, 64 * MiB), (e: { code?: string; message: string }) => e.code === 'ERR_EXISTS' && /in use/.test(e.message));
    await s1.close();
    const calls = faulty.calls.get;
    const s2 = await cached(faulty, 64 * MiB, isImmutableObjectKey, dir);
    assert.equal(s2.cache.entries, 6, 'warm: every whole object is back (the contained range was folded into it)');
    await s2.cache.settle();
    assert.equal(entryFiles(dir).length, 6, 'and no other entry file is left');
    for (let i = 0; i < 6; i++) assert.ok((await s2.get(chunk(i))).body.equals(bodies[i]));
    assert.equal(faulty.calls.get, calls, 'no store read after the restart');
    assert.equal(s2.stats().hits, 6);
    // a smaller bound at restart: trimmed at once
    await s2.close();
    const s3 = await cached(faulty, DISK_CACHE_FIXED_BYTES + 16 * MiB, isImmutableObjectKey, dir);
    assert.ok(s3.cache.usedBytes <= DISK_CACHE_FIXED_BYTES + 16 * MiB);
    await s3.close();
  });

  it('never keeps a range beside the whole object: neither one committed while the whole landed, nor a newer file at open', async () => {
    const dir = path.join(tmp, `c${n++}`);
    const body = randomBytes(300_000);
    let c = await DiskCache.open(dir, 64 * MiB);
    // a range whose commit began before the whole object landed (the race of a range miss and a
    // whole-object miss of one key): its commit passed the covered check, then the whole landed
    const range = (await c.stage(chunk(0), 0, body.subarray(0, 144), false))!;
    const whole = (await c.stage(chunk(0), 0, body, true))!;
    const rangeCommit = range.commit('');
    await whole.commit('etag-0');
    await rangeCommit;
    await c.settle();
    assert.equal(c.entries, 1);
    assert.deepEqual(entryFiles(dir), [path.basename(c.fileOf(c.find(chunk(0), 0, 'whole')!.name))]);
    // a range file newer than the whole object's (as a crash could leave): dropped at open
    const r2 = (await c.stage(chunk(1), 4096, body.subarray(4096, 8192), false))!;
    await r2.commit('');
    const rangeFile = c.fileOf(c.find(chunk(1), 4096, 4096)!.name);
    const rangeBytes = await readFile(rangeFile);
    const w2 = (await c.stage(chunk(1), 0, body, true))!;
    await w2.commit('etag-1');
    await c.close();
    await writeFile(rangeFile, rangeBytes); // back, and newer than the whole object's file
    c = await DiskCache.open(dir, 64 * MiB);
    await c.settle();
    assert.equal(c.entries, 2, 'one whole entry per object');
    assert.equal(entryFiles(dir).length, 2, 'the range file is gone');
    const r = c.find(chunk(1), 4096, 4096)!;
    assert.ok(r.offset === 0 && r.toEnd);
    assert.ok((await c.read(r, 4096, 4096))!.equals(body.subarray(4096, 8192)));
    await c.close();
  });

  it('survives kill -9 during cache writes: after a restart every entry is whole and right, or gone', async () => {
    const storeDir = path.join(tmp, `s${n++}`);
    const cacheDir = path.join(tmp, `c${n++}`);
    const store = new FsStore(storeDir, { fsync: false });
    const bodies = new Map<string, Buffer>();
    for (let i = 0; i < 60; i++) {
      const b = randomBytes(100_000 + ((i * 37_123) % 600_000));
      bodies.set(chunk(i), b);
      await store.put(chunk(i), b);
    }
    const child = path.join(__dirname, 'disk-cache-child.js');
    for (let round = 0; round < 3; round++) {
      const p = spawn(process.execPath, [child, storeDir, cacheDir, String(DISK_CACHE_MIN_BYTES + 8 * MiB)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (out += d));
      const exited = new Promise((r) => p.once('exit', r));
      const deadline = Date.now() + 60_000;
      while (!/ready/.test(out)) {
        assert.ok(p.exitCode === null, `child exited: ${out}`);
        assert.ok(Date.now() < deadline, `child not ready in 60 s: ${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 50 + round * 120)); // mid-churn: misses, evictions, puts
      p.kill('SIGKILL');
      await exited;
      const s = await cached(store, DISK_CACHE_MIN_BYTES + 8 * MiB, isImmutableObjectKey, cacheDir);
      assert.ok(s.cache.entries > 0, `round ${round}: entries survived`);
      const leftovers = readdirSync(path.join(cacheDir, 'entries')).flatMap((d) => readdirSync(path.join(cacheDir, 'entries', d))).filter((f) => f.startsWith('~'));
      assert.deepEqual(leftovers, [], 'temp files of the dead writer are gone');
      let checked = 0;
      for (const [key, body] of bodies) {
        const r = s.cache.find(key, 0, 'whole');
        if (!r) continue;
        const got = await s.cache.read(r, 0, r.length);
        assert.ok(got && got.equals(body), `round ${round}: entry of ${key} is whole and right`);
        checked++;
      }
      assert.equal(s.stats().corrupt, 0);
      assert.ok(checked > 0 || s.cache.entries > 0);
      await s.close();
    }
  });
});
