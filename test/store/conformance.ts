// describeObjectStore: the one conformance suite every ObjectStore (base or decorated) must pass.
//
// makeStore() returns a fresh, empty store for each test (a new directory, memory map or S3 prefix);
// the suite closes it after the test. `big` enables the >1,000-key cases (S3 pagination and
// DeleteObjects batching); smaller stores run the same cases with fewer keys to stay fast.
import { describe, it, afterEach } from 'node:test';
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { ObjectStore } from '../../src/store';
import { childSegments } from '../../src/store/object-store';

export interface ConformanceOptions {
  /** Keys to use in the pagination/batch cases (S3: > 1,000). */
  readonly manyKeys?: number;
  /** Skip the whole suite with this message. */
  readonly skip?: string;
}

export async function expectCode(p: Promise<unknown>, code: string): Promise<Error & { code: string }> {
  try {
    await p;
  } catch (err) {
    assert.equal((err as { code?: string }).code, code, `expected ${code}, got ${String(err)}`);
    return err as Error & { code: string };
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

async function collect(store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of store.list(prefix)) keys.push(info.key);
  return keys;
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

async function inParallel<T>(items: readonly T[], width: number, fn: (x: T) => Promise<void>): Promise<void> {
  const q = [...items];
  await Promise.all(Array.from({ length: width }, async () => {
    for (let x = q.shift(); x !== undefined; x = q.shift()) await fn(x);
  }));
}

export function describeObjectStore(name: string, makeStore: () => Promise<ObjectStore>, opts: ConformanceOptions = {}): void {
  const many = opts.manyKeys ?? 250;
  describe(`ObjectStore conformance: ${name}`, { skip: opts.skip }, () => {
    let store: ObjectStore | null = null;
    const open = async (): Promise<ObjectStore> => (store = await makeStore());
    afterEach(async () => {
      if (store) await store.close();
      store = null;
    });

    it('round-trips 0 bytes, 1 byte and 4 MiB, with a name', async () => {
      const s = await open();
      assert.equal(typeof s.name, 'string');
      for (const size of [0, 1, 4 * 1024 * 1024]) {
        const body = randomBytes(size);
        const { etag } = await s.put(`obj/size-${size}`, body);
        assert.ok(etag.length > 0 && !etag.includes('"'), 'etag is unquoted and non-empty');
        const got = await s.get(`obj/size-${size}`);
        assert.equal(got.body.length, size);
        assert.ok(got.body.equals(body));
        assert.equal(got.etag, etag);
      }
    });

    it('get(key, into): the object whether read into the memory or not, never a write to it after the call', async () => {
      const s = await open();
      const small = randomBytes(1000);
      const big = randomBytes(70_000);
      await s.put('into/small', small);
      await s.put('into/big', big);
      for (const shared of [false, true]) {
        const into = shared ? Buffer.from(new SharedArrayBuffer(4096)) : Buffer.alloc(4096);
        into.fill(0xa5);
        const got = await s.get('into/small', into);
        assert.ok(got.body.equals(small), 'the body is the object');
        if (got.body.buffer === into.buffer) {
          // read into it: only where the body lies, and the rest is not the store's to use
          assert.ok(got.body.byteOffset >= into.byteOffset && got.body.byteOffset + got.body.length <= into.byteOffset + into.length);
        }
        const after = Buffer.from(into);
        // an object that does not fit is read into fresh memory, whole
        const bigGot = await s.get('into/big', into);
        assert.ok(bigGot.body.equals(big), 'an object bigger than `into` is read whole');
        assert.notEqual(bigGot.body.buffer, into.buffer);
        await new Promise((r) => setTimeout(r, 20));
        assert.ok(into.equals(after), 'nothing is written to `into` after the call that got it, nor by a get it did not fit');
        assert.ok(got.body.equals(small), 'the body read into `into` is unchanged');
        await expectCode(s.get('into/missing', into), 'ERR_STORE_NOT_FOUND');
      }
    });

    it('put keeps nothing of the caller\'s memory: the body changed after the call is not what is stored', async () => {
      const s = await open();
      const want = randomBytes(300_000);
      for (const shared of [false, true]) {
        const body = shared ? Buffer.from(new SharedArrayBuffer(want.length)) : Buffer.alloc(want.length);
        want.copy(body);
        await s.put(`kept/${shared}`, body);
        body.fill(0x5a); // the caller reuses its memory at once
        await new Promise((r) => setTimeout(r, 20));
        assert.ok((await s.get(`kept/${shared}`)).body.equals(want), 'stored as it was when put');
        assert.ok((await s.getRange(`kept/${shared}`, 1000, 5000)).equals(want.subarray(1000, 6000)));
      }
    });

    it('get of a missing key is ERR_STORE_NOT_FOUND; head is null', async () => {
      const s = await open();
      await expectCode(s.get('missing/key'), 'ERR_STORE_NOT_FOUND');
      assert.equal(await s.head('missing/key'), null);
    });

    it('head reports size and etag', async () => {
      const s = await open();
      const { etag } = await s.put('h/one', Buffer.from('12345'));
      const info = await s.head('h/one');
      assert.ok(info);
      assert.equal(info.key, 'h/one');
      assert.equal(info.size, 5);
      assert.equal(info.etag, etag);
      assert.ok(info.lastModified instanceof Date);
    });

    it('overwrites, and the etag changes with the content', async () => {
      const s = await open();
      const a = await s.put('ow/k', Buffer.from('first'));
      const b = await s.put('ow/k', Buffer.from('second, longer'));
      assert.notEqual(a.etag, b.etag);
      assert.equal((await s.get('ow/k')).body.toString(), 'second, longer');
      assert.equal((await s.head('ow/k'))?.size, 14);
    });

    it('getRange: inside, at the end, past the end, empty object, missing key, after an overwrite', async () => {
      const s = await open();
      const body = randomBytes(300_000);
      await s.put('rg/obj', body);
      const slice = (a: number, b: number): Buffer => body.subarray(a, Math.min(b, body.length));
      const cases: Array<[number, number]> = [
        [0, 1], [0, 4096], [131_072, 131_072], [12_345, 6_789], // inside
        [299_000, 1_000], [299_999, 1], // ending exactly at the end
        [299_000, 5_000], [0, 1_000_000], // reaching past the end: what exists
        [300_000, 10], [300_001, 10], [10_000_000, 4096], // starting at/after the end: empty
        [0, 0], [150_000, 0], [300_000, 0], // zero length
      ];
      for (const [off, len] of cases) {
        const got = await s.getRange('rg/obj', off, len);
        assert.ok(Buffer.isBuffer(got), `getRange(${off}, ${len}) returns a Buffer`);
        assert.equal(got.length, slice(off, off + len).length, `getRange(${off}, ${len}) length`);
        assert.ok(got.equals(slice(off, off + len)), `getRange(${off}, ${len}) bytes`);
      }
      const all = await Promise.all(Array.from({ length: 8 }, (_, i) => s.getRange('rg/obj', i * 37_500, 37_500)));
      assert.ok(Buffer.concat(all).equals(body), '8 parallel ranges cover the object');

      await s.put('rg/empty', Buffer.alloc(0));
      for (const [off, len] of [[0, 0], [0, 10], [5, 10]]) assert.equal((await s.getRange('rg/empty', off, len)).length, 0);

      await expectCode(s.getRange('rg/missing', 0, 10), 'ERR_STORE_NOT_FOUND');
      await expectCode(s.getRange('rg/missing', 0, 0), 'ERR_STORE_NOT_FOUND');
      await expectCode(s.getRange('rg/missing', 1_000, 10), 'ERR_STORE_NOT_FOUND');
      for (const [off, len] of [[-1, 10], [0, -1], [1.5, 10], [0, Number.NaN]]) {
        await expectCode(s.getRange('rg/obj', off, len), 'ERR_INVALID_ARGUMENT');
      }

      const next = randomBytes(1_000);
      await s.put('rg/obj', next);
      assert.ok((await s.getRange('rg/obj', 500, 100)).equals(next.subarray(500, 600)), 'an overwrite is seen');
      assert.ok((await s.getRange('rg/obj', 900, 4096)).equals(next.subarray(900)), 'the new, shorter end');
      assert.equal((await s.getRange('rg/obj', 1_000, 10)).length, 0);
      await s.delete('rg/obj');
      await expectCode(s.getRange('rg/obj', 0, 10), 'ERR_STORE_NOT_FOUND');
    });

    it('delete is idempotent', async () => {
      const s = await open();
      await s.put('del/k', Buffer.from('x'));
      await s.delete('del/k');
      await s.delete('del/k');
      await s.delete('del/never-existed');
      assert.equal(await s.head('del/k'), null);
    });

    it(`deleteMany removes ${many} keys, tolerates missing ones, leaves others`, async () => {
      const s = await open();
      const keys = Array.from({ length: many }, (_, i) => `dm/k${String(i).padStart(5, '0')}`);
      await inParallel(keys, 16, (k) => s.put(k, Buffer.from(k)).then(() => undefined));
      await s.put('dm-keep/x', Buffer.from('keep'));
      await s.deleteMany([...keys, 'dm/does-not-exist', 'dm/also-not']);
      assert.deepEqual(await collect(s, 'dm/'), []);
      assert.equal((await s.get('dm-keep/x')).body.toString(), 'keep');
      await s.deleteMany([]);
    });

    it(`lists ${many} keys by prefix, in order, once each`, async () => {
      const s = await open();
      const keys = Array.from({ length: many }, (_, i) => `ls/a/${randomBytes(6).toString('hex')}-${i}`);
      await inParallel(keys, 16, (k) => s.put(k, Buffer.from('v')).then(() => undefined));
      await s.put('ls/b/other', Buffer.from('x'));
      await s.put('ls/a', Buffer.from('x'));
      await s.put('lsz', Buffer.from('x'));
      const listed = await collect(s, 'ls/a/');
      assert.equal(new Set(listed).size, listed.length, 'no duplicates');
      assert.deepEqual(listed, [...keys].sort(byteOrder));
      const all = await collect(s, 'ls');
      assert.deepEqual(all, [...keys, 'ls/b/other', 'ls/a', 'lsz'].sort(byteOrder));
      assert.deepEqual(await collect(s, 'ls/b'), ['ls/b/other']);
      assert.deepEqual(await collect(s, 'nothing/'), []);
      for await (const info of s.list('ls/b/')) {
        assert.equal(info.size, 1);
        assert.ok(info.etag.length > 0);
      }
    });

    it('keys with nested paths and unusual characters round-trip and list in byte order', async () => {
      const s = await open();
      const keys = ['n/a', 'n/a/b', 'n/a/b/c/d/e', 'n/a!', 'n/a b', 'n/a~x', 'n/A', 'n/é', 'n/a-1', 'n/a.b', 'n/%41'];
      for (const k of keys) await s.put(k, Buffer.from(k));
      for (const k of keys) assert.equal((await s.get(k)).body.toString(), k);
      assert.deepEqual(await collect(s, 'n/'), [...keys].sort(byteOrder));
      assert.deepEqual(await collect(s, 'n/a/'), ['n/a/b', 'n/a/b/c/d/e']);
    });

    it('listChildren names the segments below a prefix, as a full listing would, without the objects below them', async () => {
      const s = await open();
      const keys = ['ch/v1/meta', 'ch/v1/chunks/aa', 'ch/v2/root', 'ch/v2/x/y/z', 'ch/top', 'ch/v%20 é/meta', 'chx/v9/meta'];
      for (const k of keys) await s.put(k, Buffer.from('x'));
      assert.ok(s.listChildren, `${name} answers listChildren itself (not a full listing)`);
      const viaList = new Set<string>();
      for await (const info of s.list('ch/')) {
        const slash = info.key.indexOf('/', 3);
        if (slash > 3) viaList.add(info.key.slice(3, slash));
      }
      assert.deepEqual(await childSegments(s, 'ch/'), [...viaList].sort());
      assert.deepEqual(await childSegments(s, 'ch/'), ['v%20 é', 'v1', 'v2'].sort());
      assert.deepEqual(await childSegments(s, 'ch/v2/'), ['x']);
      assert.deepEqual(await childSegments(s, 'nothing/'), []);
    });

    it('ifNoneMatch "*": creates once; 16 racing creators, exactly one wins', async (t) => {
      const s = await open();
      if (!s.props.conditionalPut) return t.skip('store has no conditional put');
      await s.put('cond/once', Buffer.from('a'), { ifNoneMatch: '*' });
      await expectCode(s.put('cond/once', Buffer.from('b'), { ifNoneMatch: '*' }), 'ERR_STORE_PRECONDITION');
      assert.equal((await s.get('cond/once')).body.toString(), 'a');
      const results = await Promise.allSettled(
        Array.from({ length: 16 }, (_, i) => s.put('cond/race', Buffer.from(`writer-${i}`), { ifNoneMatch: '*' })),
      );
      const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
      const lost = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
      assert.equal(won.length, 1, 'exactly one creator wins');
      assert.equal(lost.length, 15);
      for (const r of lost) assert.equal((r.reason as { code?: string }).code, 'ERR_STORE_PRECONDITION', String(r.reason));
      assert.equal((await s.get('cond/race')).body.toString(), `writer-${won[0]}`);
    });

    it('ifMatch: replaces at the right etag, refuses a wrong or missing one', async (t) => {
      const s = await open();
      if (!s.props.conditionalPut) return t.skip('store has no conditional put');
      const v1 = await s.put('cond/root', Buffer.from('v1'));
      const v2 = await s.put('cond/root', Buffer.from('v2'), { ifMatch: v1.etag });
      assert.equal((await s.get('cond/root')).body.toString(), 'v2');
      await expectCode(s.put('cond/root', Buffer.from('v3'), { ifMatch: v1.etag }), 'ERR_STORE_PRECONDITION');
      await expectCode(s.put('cond/root', Buffer.from('v3'), { ifMatch: 'ffffffffffffffffffffffffffffffff' }), 'ERR_STORE_PRECONDITION');
      assert.equal((await s.get('cond/root')).body.toString(), 'v2');
      await expectCode(s.put('cond/absent', Buffer.from('x'), { ifMatch: v2.etag }), 'ERR_STORE_PRECONDITION');
      assert.equal(await s.head('cond/absent'), null);
      const info = await s.head('cond/root');
      const v3 = await s.put('cond/root', Buffer.from('v3'), { ifMatch: info!.etag });
      assert.equal((await s.get('cond/root')).etag, v3.etag);
    });

    it('rejects invalid keys with ERR_INVALID_ARGUMENT', async () => {
      const s = await open();
      for (const k of ['', '/abs', 'a//b', 'a/../b', 'a/./b', 'a\nb']) {
        await expectCode(s.put(k, Buffer.from('x')), 'ERR_INVALID_ARGUMENT');
      }
    });
  });
}
