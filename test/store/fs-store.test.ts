// FsStore specifics: fan-out, crash leftovers, file layout.
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { FsStore } from '../../src/store';
import { expectCode } from './conformance';
import { smallTmpfs } from '../helpers/small-tmpfs';

const tmp = mkdtempSync(path.join(tmpdir(), 'nbdv-fs-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function maxEntriesPerDir(dir: string): { max: number; where: string } {
  let best = { max: readdirSync(dir).length, where: dir };
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) {
      const sub = maxEntriesPerDir(p);
      if (sub.max > best.max) best = sub;
    }
  }
  return best;
}

describe('FsStore', () => {
  it('fans out: 5,000 chunk keys leave no directory with more than a few hundred entries', async () => {
    const store = new FsStore(path.join(tmp, 'fanout'), { fsync: false });
    const keys = Array.from({ length: 5_000 }, () => `volumes/v1/chunks/${randomBytes(12).toString('hex')}`);
    const q = [...keys];
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let k = q.shift(); k; k = q.shift()) await store.put(k, Buffer.from('c'));
    }));
    const { max, where } = maxEntriesPerDir(store.root);
    assert.ok(max <= 300, `${where} has ${max} entries`);
    const listed: string[] = [];
    for await (const info of store.list('volumes/v1/chunks/')) listed.push(info.key);
    assert.deepEqual(listed, [...keys].sort());
  });

  it('ignores crash leftovers (temp files) in list, and overwrites past them', async () => {
    const store = new FsStore(path.join(tmp, 'leftovers'));
    await store.put('volumes/v/chunks/aa', Buffer.from('one'));
    const file = store.pathOf('volumes/v/chunks/aa');
    writeFileSync(path.join(path.dirname(file), '~tmp-999-deadbeef0000'), 'half a chunk');
    writeFileSync(path.join(store.root, '~tmp-1-x'), 'junk');
    writeFileSync(path.join(store.root, 'volumes', 'not~an~object'), 'junk');
    const listed: string[] = [];
    for await (const info of store.list('')) listed.push(info.key);
    assert.deepEqual(listed, ['volumes/v/chunks/aa']);
    await store.put('volumes/v/chunks/aa', Buffer.from('two'));
    assert.equal((await store.get('volumes/v/chunks/aa')).body.toString(), 'two');
  });

  it('a put leaves no temp file behind, also when it loses a condition', async () => {
    const store = new FsStore(path.join(tmp, 'clean'));
    await store.put('k', Buffer.from('a'), { ifNoneMatch: '*' });
    await expectCode(store.put('k', Buffer.from('b'), { ifNoneMatch: '*' }), 'ERR_STORE_PRECONDITION');
    await expectCode(store.put('k', Buffer.from('b'), { ifMatch: 'nope' }), 'ERR_STORE_PRECONDITION');
    const dir = path.dirname(store.pathOf('k'));
    assert.deepEqual(readdirSync(dir), ['k']);
  });

  it('get(key, into) reads a fitting object file into the caller\'s memory, header and all, and nothing past it', async () => {
    const store = new FsStore(path.join(tmp, 'into'), { fsync: false });
    const body = randomBytes(300_000);
    await store.put('volumes/v/chunks/bb', body);
    const into = Buffer.from(new SharedArrayBuffer(400_000)).fill(7);
    const got = await store.get('volumes/v/chunks/bb', into);
    assert.ok(got.body.equals(body));
    assert.equal(got.body.buffer, into.buffer, 'the body is a view of `into`, not fresh memory');
    const end = got.body.byteOffset + got.body.length;
    assert.equal(end, statSync(store.pathOf('volumes/v/chunks/bb')).size, 'the file lies at the start of `into`');
    assert.ok(into.subarray(end).every((b) => b === 7), 'nothing written past the file');
    assert.equal(got.etag, (await store.get('volumes/v/chunks/bb')).etag);
    // a file cut short is an error, not a shorter body
    await fsp.writeFile(store.pathOf('volumes/v/chunks/bb'), (await fsp.readFile(store.pathOf('volumes/v/chunks/bb'))).subarray(0, 20));
    await expectCode(store.get('volumes/v/chunks/bb', into), 'ERR_STORE_IO');
  });

  it('every put is a version of its own: the same bytes put again get a new etag, and an If-Match on the old one loses', async () => {
    const store = new FsStore(path.join(tmp, 'versions'), { fsync: false });
    const first = await store.put('volumes/v/lease', Buffer.from('same'));
    const second = await store.put('volumes/v/lease', Buffer.from('same'));
    assert.notEqual(first.etag, second.etag);
    assert.equal((await store.head('volumes/v/lease'))!.etag, second.etag);
    await expectCode(store.put('volumes/v/lease', Buffer.from('same'), { ifMatch: first.etag }), 'ERR_STORE_PRECONDITION');
    assert.match(second.etag, /^[0-9a-f]{32}$/);
  });

  it('a file without the object header is ERR_STORE_IO, not data', async () => {
    const store = new FsStore(path.join(tmp, 'corrupt'));
    await store.put('x/y', Buffer.from('good'));
    await fsp.writeFile(store.pathOf('x/y'), 'garbage');
    await expectCode(store.get('x/y'), 'ERR_STORE_IO');
  });

  it('an object file larger than any object is refused unread; a FIFO where an object was is refused at once, not waited on', async () => {
    const store = new FsStore(path.join(tmp, 'lying'));
    await store.put('v/root', Buffer.from('small'));
    const file = store.pathOf('v/root');
    const header = (await fsp.readFile(file)).subarray(0, (await fsp.readFile(file)).length - 5);
    await fsp.writeFile(file, header);
    await fsp.truncate(file, 2 * 2 ** 30); // a sparse 2 GiB "root" with a valid header
    const before = process.memoryUsage().rss;
    const big = await expectCode(store.get('v/root'), 'ERR_STORE_IO');
    assert.match(big.message, /larger than any object nbd-vault writes .*not read/);
    assert.ok(process.memoryUsage().rss - before < 256 * 2 ** 20, 'not read into memory');
    await fsp.rm(file);
    assert.equal(spawnSync('mkfifo', [file]).status, 0);
    for (const read of [() => store.get('v/root'), () => store.getRange('v/root', 0, 10), () => store.head('v/root')]) {
      const err = await expectCode(Promise.race([read(), new Promise((_, reject) => setTimeout(() => reject(new Error('still waiting after 5 s')), 5000))]), 'ERR_STORE_IO');
      assert.match(err.message, /not a regular file/);
    }
  });

  it('a full filesystem: a put that does not fit fails, and leaves neither a truncated object nor a temp file', async (t) => {
    // A put larger than the free space: write(2) writes what fits and returns that count without
    // an error. Unchecked, the fs store renamed the truncated file into place and reported success.
    const dir = smallTmpfs(t, '8m');
    if (!dir) return;
    const store = new FsStore(dir);
    const small = randomBytes(2 << 20);
    await store.put('a/small', small);
    await expectCode(store.put('a/big', randomBytes(12 << 20)), 'ERR_STORE_IO');
    assert.equal(await store.head('a/big'), null, 'no object for the put that failed');
    const leftovers: string[] = [];
    const walk = (d: string) => readdirSync(d, { withFileTypes: true }).forEach((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : e.name.startsWith('~') && leftovers.push(e.name)));
    walk(dir);
    assert.deepEqual(leftovers, [], 'no temp file left');
    assert.ok((await store.get('a/small')).body.equals(small), 'what was there is intact');
    await store.put('a/next', randomBytes(1 << 20)); // what fits still goes in
  });

  it('a read-only filesystem: a put into a new directory says EROFS, not ENOENT', async (t) => {
    const dir = smallTmpfs(t, '4m');
    if (!dir) return;
    const store = new FsStore(dir);
    await store.put('a/b', Buffer.from('x'));
    assert.equal(spawnSync('mount', ['-o', 'remount,ro', dir]).status, 0);
    const err = await store.put('volumes/v/chunks/c', Buffer.from('x')).then(() => null, (e) => e);
    assert.equal(err?.code, 'ERR_STORE_DENIED');
    assert.match(err.message, /EROFS|read-only/);
    assert.ok((await store.get('a/b')).body.equals(Buffer.from('x')), 'reads go on');
  });

  it('an unwritable directory is ERR_STORE_DENIED', async () => {
    if (process.getuid?.() !== 0) {
      const dir = path.join(tmp, 'ro');
      const store = new FsStore(dir);
      await store.put('a', Buffer.from('x'));
      await fsp.chmod(dir, 0o500);
      try {
        await expectCode(store.put('b/c', Buffer.from('x')), 'ERR_STORE_DENIED');
      } finally {
        await fsp.chmod(dir, 0o700);
      }
      return;
    }
    // As root permissions are not enforced: a child process running as `nobody` tries instead.
    const outer = mkdtempSync(path.join(tmpdir(), 'nbdv-fs-denied-'));
    try {
      chmodSync(outer, 0o755);
      const dir = path.join(outer, 'store');
      await new FsStore(dir).put('a', Buffer.from('x'));
      chmodSync(dir, 0o755); // readable, not writable by others
      const before = readdirSync(dir).sort();
      const script = `
        const { FsStore } = require(${JSON.stringify(path.resolve(__dirname, '../../src/store'))});
        new FsStore(${JSON.stringify(dir)}).put('b/c', Buffer.from('x')).then(
          () => { console.log('put succeeded'); },
          (err) => { console.log(JSON.stringify({ code: err.code, message: err.message })); });`;
      const r = spawnSync(process.execPath, ['-e', script], { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
      const got = JSON.parse(r.stdout.trim());
      assert.equal(got.code, 'ERR_STORE_DENIED', r.stdout);
      assert.match(got.message, /permission denied/);
      assert.deepEqual(readdirSync(dir).sort(), before, 'nothing was written');
    } finally {
      rmSync(outer, { recursive: true, force: true });
    }
  });

  it('two handles on one directory see each other and race ifNoneMatch safely', async () => {
    const dir = path.join(tmp, 'shared');
    const a = new FsStore(dir);
    const b = new FsStore(dir);
    const r = await Promise.allSettled([a.put('lease', Buffer.from('a'), { ifNoneMatch: '*' }), b.put('lease', Buffer.from('b'), { ifNoneMatch: '*' })]);
    assert.equal(r.filter((x) => x.status === 'fulfilled').length, 1);
    assert.equal((await a.get('lease')).etag, (await b.get('lease')).etag);
  });
});
