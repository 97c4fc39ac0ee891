// Files kept open between reads (src/store/open-file-cache.ts): a hot file is opened once, at
// most maxOpen stay open, a file in use is never closed under its read, a dropped disk cache
// entry's file is not held open (its blocks are freed), close() leaves nothing open, and the fs
// store never reads a replaced or deleted object through a stale descriptor. Open descriptors
// are counted from /proc/self/fd.
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readlinkSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { FsStore, MemoryStore } from '../../src/store';
import { DiskCache, DISK_CACHE_MIN_BYTES } from '../../src/store/disk-cache';
import { OpenFileCache, OpenFilesBudget } from '../../src/store/open-file-cache';
import { DiskCacheStore } from '../../src/store/disk-cache-store';
import { createLogger, setLogger } from '../../src/util/log';

setLogger(createLogger(process.env.NBD_VAULT_LOG_LEVEL ?? 'error'));
const tmp = mkdtempSync(path.join(tmpdir(), 'nbdv-dch-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const MiB = 2 ** 20;

/** Targets of this process's open descriptors under dir (" (deleted)" marks unlinked files). */
function openUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir)) out.push(target);
    } catch {
      // closed while listing
    }
  }
  return out;
}

describe('OpenFileCache', () => {
  const dir = mkdtempSync(path.join(tmp, 'files-'));
  const records = ['a', 'b', 'c'].map((name) => ({ name }));
  for (const r of records) writeFileSync(path.join(dir, r.name), `bytes of ${r.name}`);
  type Files = OpenFileCache<{ name: string }, fsp.FileHandle>;
  const files = (maxOpen: number, budget = new OpenFilesBudget(maxOpen)): Files => new OpenFileCache((r: { name: string }) => fsp.open(path.join(dir, r.name), 'r'), budget);
  const read = async (handles: Files, r: { name: string }): Promise<string> =>
    handles.use(r, async (fh) => {
      const buf = Buffer.alloc(10);
      const { bytesRead } = await fh.read(buf, 0, 10, 0);
      return buf.subarray(0, bytesRead).toString();
    });

  it('opens a hot file once, keeps at most maxOpen, closes the least recently used idle one', async () => {
    const handles = files(2);
    assert.equal(await read(handles, records[0]), 'bytes of a');
    assert.equal(await read(handles, records[0]), 'bytes of a');
    assert.deepEqual(openUnder(dir), [path.join(dir, 'a')], 'one descriptor for two reads');
    await read(handles, records[1]);
    await read(handles, records[0]); // a is now the most recent: b goes first
    await read(handles, records[2]);
    await new Promise((r) => setTimeout(r, 20)); // b's close runs in the background
    assert.deepEqual(openUnder(dir).sort(), [path.join(dir, 'a'), path.join(dir, 'c')]);
    assert.equal(handles.openCount, 2);
    await handles.closeAll();
    assert.deepEqual(openUnder(dir), []);
  });

  it('never closes a handle under a read: a retired one closes when its last read ends', async () => {
    const handles = files(1);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const slow = handles.use(records[0], async (fh) => {
      await held;
      const buf = Buffer.alloc(10);
      return (await fh.read(buf, 0, 10, 0)).bytesRead; // EBADF if it had been closed
    });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(await read(handles, records[1]), 'bytes of b', 'a busy handle does not block another file');
    handles.retire(records[0]);
    await new Promise((r) => setTimeout(r, 10));
    assert.ok(openUnder(dir).includes(path.join(dir, 'a')), 'still open while its read runs');
    release();
    assert.equal(await slow, 10);
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(!openUnder(dir).includes(path.join(dir, 'a')), 'closed once the read ended');
    await handles.closeAll();
  });

  it("caches sharing a budget stay within it together: the opening cache's idle files go first, then the others'", async () => {
    const budget = new OpenFilesBudget(2);
    const x = files(2, budget);
    const y = files(2, budget);
    await read(x, records[0]);
    await read(x, records[1]);
    await read(y, records[2]); // over by one: y has nothing idle, so x's least recent (a) goes
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(openUnder(dir).sort(), [path.join(dir, 'b'), path.join(dir, 'c')]);
    assert.equal(budget.open, 2);
    await read(y, records[0]); // y's own idle file (c) goes first
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(openUnder(dir).sort(), [path.join(dir, 'a'), path.join(dir, 'b')]);
    await x.closeAll();
    await y.closeAll();
    assert.equal(budget.open, 0);
    assert.deepEqual(openUnder(dir), []);
  });

  it('a failed open is not kept: the next use opens again', async () => {
    const handles = files(4);
    const late = { name: 'late' };
    await assert.rejects(read(handles, late), { code: 'ENOENT' });
    writeFileSync(path.join(dir, 'late'), 'now here');
    assert.equal(await read(handles, late), 'now here');
    await handles.closeAll();
    unlinkSync(path.join(dir, 'late'));
  });
});

describe('DiskCache open entry files', () => {
  it('holds no unlinked entry file open after evictions and drops, and nothing after close', async () => {
    const dir = path.join(tmp, 'cache');
    const inner = new MemoryStore();
    const store = new DiskCacheStore(inner, await DiskCache.open(dir, DISK_CACHE_MIN_BYTES), () => true);
    const keys = Array.from({ length: 12 }, (_, i) => `volumes/${'ab'.repeat(16)}/chunks/${i.toString(16).padStart(32, '0')}`);
    const bodies = keys.map((_, i) => Buffer.alloc(2 * MiB, i + 1));
    for (const [i, k] of keys.entries()) await inner.put(k, bodies[i]);
    // 24 MiB of whole objects through a 16 MiB cache: entries are evicted between their reads
    for (let round = 0; round < 3; round++) {
      for (const [i, k] of keys.entries()) {
        assert.ok((await store.get(k)).body.equals(bodies[i]), `${k} round ${round}`);
        await store.cache.settle();
        const got = await store.getRange(k, 4096 * round, 4096);
        assert.ok(got.equals(bodies[i].subarray(4096 * round, 4096 * round + 4096)), `${k} range, round ${round}`);
      }
    }
    assert.ok(store.stats().evictions > 0, 'entries were evicted');
    await store.delete(keys[11]);
    await store.cache.settle();
    await new Promise((r) => setTimeout(r, 20));
    const open = openUnder(dir);
    assert.ok(open.length > 0, 'hot entries stay open');
    assert.deepEqual(open.filter((t) => t.endsWith(' (deleted)')), [], 'no evicted or deleted entry is held open');
    await store.close();
    assert.deepEqual(openUnder(dir), [], 'close closes every entry file');
  });
});

describe('FsStore ranged reads through open files', () => {
  it('a replaced or deleted object is never read through the stale descriptor, whoever replaced it', async () => {
    const root = path.join(tmp, 'fs');
    const store = new FsStore(root, { fsync: false });
    const other = new FsStore(root, { fsync: false }); // another process sharing the directory
    const key = 'volumes/v/chunks/c1';
    await store.put(key, Buffer.alloc(64 * 1024, 1));
    assert.deepEqual(await store.getRange(key, 100, 4), Buffer.alloc(4, 1));
    assert.deepEqual(await store.getRange(key, 200, 4), Buffer.alloc(4, 1));
    assert.equal(openUnder(root).length, 1, 'kept open between reads');
    await other.put(key, Buffer.alloc(64 * 1024, 2)); // rename of a new file over it
    assert.deepEqual(await store.getRange(key, 100, 4), Buffer.alloc(4, 2), 'the new file, not the open old one');
    await other.put(key, Buffer.alloc(1000, 3)); // smaller
    assert.deepEqual(await store.getRange(key, 996, 100), Buffer.alloc(4, 3), 'clipped at the new end');
    await other.delete(key);
    await assert.rejects(store.getRange(key, 0, 4), { code: 'ERR_STORE_NOT_FOUND' });
    // the same through the path directly (a tool, a restore of the directory): rename over it
    await store.put(key, Buffer.alloc(4096, 4));
    assert.deepEqual(await store.getRange(key, 0, 2), Buffer.alloc(2, 4));
    const file = store.pathOf(key);
    const staged = path.join(tmp, 'staged');
    await other.put('volumes/v/chunks/c2', Buffer.alloc(4096, 5));
    renameSync(other.pathOf('volumes/v/chunks/c2'), staged);
    renameSync(staged, file);
    assert.deepEqual(await store.getRange(key, 0, 2), Buffer.alloc(2, 5));
    unlinkSync(file);
    await assert.rejects(store.getRange(key, 0, 4), { code: 'ERR_STORE_NOT_FOUND' });
    await store.close();
    await other.close();
    assert.deepEqual(openUnder(root), [], 'close closes every object file');
  });
});
