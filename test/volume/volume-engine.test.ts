import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { MemoryStore } from '../../src/store/memory-store';
import type { ObjectStore, PutOptions } from '../../src/store/object-store';
import { VaultError } from '../../src/errors';
import { MemoryBudget } from '../../src/util/memory-budget';
import { makeVault, countKeys, SettlingStore } from './vault-fixture';

const MiB = 2 ** 20;

/** A store whose puts can be made to fail or wait, counting every operation. */
class ControlledStore extends MemoryStore {
  failPuts = false;
  putDelayMs = 0;
  ops = { get: 0, put: 0, delete: 0 };
  override async put(key: string, body: Buffer, opts?: PutOptions) {
    this.ops.put++;
    if (this.putDelayMs) await new Promise((r) => setTimeout(r, this.putDelayMs));
    if (this.failPuts && key.includes('/chunks/')) throw new VaultError('ERR_STORE_IO', 'injected put failure');
    return super.put(key, body, opts);
  }
  override async get(key: string) {
    this.ops.get++;
    return super.get(key);
  }
  override async deleteMany(keys: readonly string[]) {
    this.ops.delete += keys.length;
    return super.deleteMany(keys);
  }
}

test('writes across chunk boundaries read back, before and after flush and reopen', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('disk', 64 * MiB + 12345);
  const e = await f.vault.openEngine('disk');
  const model = Buffer.alloc(64 * MiB + 12345);
  const writes: Array<[number, number]> = [
    [0, 4096],
    [CHUNK_SIZE - 100, 300], // straddles chunk 0/1
    [3 * CHUNK_SIZE, 2 * CHUNK_SIZE], // two whole chunks
    [5 * CHUNK_SIZE + 7, 9 * MiB], // unaligned, several chunks
    [64 * MiB + 12345 - 1000, 1000], // the short last chunk
  ];
  for (const [off, len] of writes) {
    const data = randomBytes(len);
    data.copy(model, off);
    await e.write(off, data);
  }
  assert.ok((await e.read(0, model.length)).equals(model), 'read from the write cache');
  await e.flush();
  assert.ok((await e.read(0, model.length)).equals(model), 'read after flush');
  await e.close();
  const v2 = await f.reopen();
  const e2 = await v2.openEngine('disk');
  assert.ok((await e2.read(0, model.length)).equals(model), 'read after reopen');
  assert.ok((await e2.read(CHUNK_SIZE - 100, 300)).equals(model.subarray(CHUNK_SIZE - 100, CHUNK_SIZE + 200)));
  await e2.close();
});

test('zero chunks are stored as no object and block status reports them as holes', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('z', 16 * MiB);
  const e = await f.vault.openEngine('z');
  await e.write(0, randomBytes(CHUNK_SIZE));
  await e.write(CHUNK_SIZE, Buffer.alloc(CHUNK_SIZE)); // explicit zeros
  await e.write(2 * CHUNK_SIZE + 10, Buffer.from('x'));
  await e.flush();
  // the whole chunk is a chunk object, the one-byte write a journal block; folded: two chunks
  assert.equal(await countKeys(f.store, `volumes/${meta.id}/`, '/chunks/'), 1);
  assert.equal(await countKeys(f.store, `volumes/${meta.id}/`, '/journals/'), 1);
  await e.compact();
  await (f.store as SettlingStore).settled();
  assert.equal(await countKeys(f.store, `volumes/${meta.id}/`, '/chunks/'), 2);
  assert.equal(await countKeys(f.store, `volumes/${meta.id}/`, '/journals/'), 0);
  const extents = await e.blockStatus(0, 16 * MiB);
  assert.deepEqual(extents.map((x) => [x.length, x.zero, x.hole]), [
    [CHUNK_SIZE, false, false],
    [CHUNK_SIZE, true, true],
    [CHUNK_SIZE, false, false],
    [CHUNK_SIZE, true, true],
  ]);
  await e.close();
});

test('TRIM turns whole chunks into zero entries and deletes their objects after a durable root', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('t', 32 * MiB);
  const e = await f.vault.openEngine('t');
  const data = randomBytes(4 * CHUNK_SIZE);
  await e.write(0, data);
  await e.flush();
  assert.equal(await countKeys(f.store, `volumes/${meta.id}/`, '/chunks/'), 4);
  await e.trim(CHUNK_SIZE, 2 * CHUNK_SIZE + 4096); // chunks 1, 2 whole, 4 KiB of chunk 3
  const back = await e.read(0, 4 * CHUNK_SIZE);
  assert.ok(back.subarray(0, CHUNK_SIZE).equals(data.subarray(0, CHUNK_SIZE)));
  assert.ok(back.subarray(CHUNK_SIZE, 3 * CHUNK_SIZE + 4096).equals(Buffer.alloc(2 * CHUNK_SIZE + 4096)));
  assert.ok(back.subarray(3 * CHUNK_SIZE + 4096).equals(data.subarray(3 * CHUNK_SIZE + 4096)));
  await e.flush();
  await (f.store as SettlingStore).settled(); // deletes run after the root, in the background
  // chunk 0 and the rewritten chunk 3 remain; the old chunk 3 object and chunks 1, 2 are gone
  assert.equal(await countKeys(f.store, `volumes/${meta.id}/`, '/chunks/'), 2);
  await e.close();
});

test('a full-device TRIM of an empty 1 TiB volume touches no object', async (t) => {
  const store = new ControlledStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('big', 2 ** 40);
  const e = await f.vault.openEngine('big');
  const before = { ...store.ops };
  await e.trim(0, 2 ** 40);
  await e.writeZeroes(0, 2 ** 40, { fastZero: true });
  assert.deepEqual(store.ops, before);
  assert.deepEqual(await e.blockStatus(0, 2 ** 40), [{ length: 2 ** 40, hole: true, zero: true }]);
  await e.close();
});

test('a missing or altered chunk object fails that read with ERR_IO, never zeros', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const meta = await f.vault.createVolume('m', 12 * MiB);
  const e = await f.vault.openEngine('m', { readCacheBytes: 0 });
  await e.write(0, randomBytes(3 * CHUNK_SIZE));
  await e.flush();
  const keys: string[] = [];
  for await (const info of store.list(`volumes/${meta.id}/chunks/`)) keys.push(info.key);
  assert.equal(keys.length, 3);
  await store.delete(keys[0]);
  const obj = await store.get(keys[1]);
  const bad = Buffer.from(obj.body);
  bad[200] ^= 1; // inside frame 0 (after the 144-byte container header), which the read below needs
  await store.put(keys[1], bad);
  const results = await Promise.allSettled([0, 1, 2].map((i) => e.read(i * CHUNK_SIZE, 4096)));
  const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
  assert.equal(failed.length, 2, 'two damaged chunks fail');
  for (const r of failed) assert.equal((r.reason as VaultError).code, 'ERR_IO');
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'the intact chunk still reads');
  await e.close();
});

test('an older root offered by the store is refused unless rollback is accepted', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  // Two manifest pages (4 GiB each), so the old root's page survives the second flush.
  const meta = await f.vault.createVolume('r', 8 * 2 ** 30);
  const e = await f.vault.openEngine('r');
  const first = randomBytes(4096);
  await e.write(0, first);
  await e.flush();
  const oldRoot = await store.get(`volumes/${meta.id}/root`);
  await e.write(5 * 2 ** 30, randomBytes(4096));
  await e.flush();
  await e.close();
  await store.put(`volumes/${meta.id}/root`, oldRoot.body); // the store replays an old root
  const v = await f.reopen();
  await assert.rejects(v.openEngine('r'), (err: VaultError) => err.code === 'ERR_ROLLBACK');
  const v2 = await f.reopen({ acceptRollback: true });
  const e2 = await v2.openEngine('r', { readOnly: true });
  assert.ok((await e2.read(0, 4096)).equals(first));
  assert.ok((await e2.read(5 * 2 ** 30, 4096)).equals(Buffer.alloc(4096)), 'the rolled-back state is served');
  await e2.close();
  // once accepted, the older root is the new reference: no flag needed next time
  const e3 = await (await f.reopen()).openEngine('r', { readOnly: true });
  await e3.close();
});

test('a failing store fails FLUSH with ERR_IO and loses nothing; the next flush succeeds', async (t) => {
  const store = new ControlledStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('f', 16 * MiB);
  const e = await f.vault.openEngine('f');
  const data = randomBytes(6 * MiB);
  store.failPuts = true;
  await e.write(1000, data); // acknowledged into the write cache
  await assert.rejects(e.flush(), (err: VaultError) => err.code === 'ERR_IO');
  assert.ok((await e.read(1000, data.length)).equals(data), 'still readable from the cache');
  store.failPuts = false;
  await e.flush();
  await e.close();
  const e2 = await (await f.reopen()).openEngine('f');
  assert.ok((await e2.read(1000, data.length)).equals(data));
  await e2.close();
});

test('closing an engine whose dirty data cannot be stored gives its budget share back', async (t) => {
  const store = new ControlledStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('g', 16 * MiB);
  const budget = new MemoryBudget(64 * MiB);
  const e = await f.vault.openEngine('g', { memoryBudget: budget });
  store.failPuts = true;
  await e.write(1000, randomBytes(6 * MiB));
  assert.ok(budget.usedBytes >= 6 * MiB, 'the dirty data holds its share');
  // ...and says how much it gives up (a stop during an outage exits 1 with this line)
  await assert.rejects(e.close(), (err: VaultError) => err.code === 'ERR_IO' && /volume "g": 6(\.\d)? MiB of written data could not be stored and is given up: /.test(err.message), 'close reports that its flush failed');
  assert.equal(budget.usedBytes, 0, 'the share of the data given up is back');
});

test('a full write cache makes writers wait, never fail', async (t) => {
  const store = new ControlledStore();
  store.putDelayMs = 20;
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('bp', 64 * MiB);
  const e = await f.vault.openEngine('bp', { dirtyLimitBytes: 2 * CHUNK_SIZE, uploadConcurrency: 2 });
  const data = randomBytes(64 * MiB);
  // Sample the dirty bytes whenever a block lands, and writers that had to wait for room.
  const state = (e as any).state;
  const writes = (e as any).writes;
  let peak = 0;
  let waited = 0;
  const batchProto = Object.getPrototypeOf(state.active);
  const setBlock = batchProto.setBlock;
  batchProto.setBlock = function (this: unknown, ...args: unknown[]) {
    const r = setBlock.apply(this, args);
    peak = Math.max(peak, state.dirtyBytes);
    waited = Math.max(waited, writes.waiting);
    return r;
  };
  t.after(() => (batchProto.setBlock = setBlock));
  await Promise.all(Array.from({ length: 16 }, (_, i) => e.write(i * CHUNK_SIZE, data.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE))));
  // 16 writers arrive at once at an empty cache: admitted together they would all fit in at once
  assert.equal(peak, 2 * CHUNK_SIZE, `the cache filled up to its limit and no further (peak ${peak})`);
  assert.ok(waited > 0, 'writers waited for room');
  await e.flush();
  assert.ok((await e.read(0, data.length)).equals(data));
  await e.close();
});

test('a sequential writer past the half-limit has whole chunks sealed, not its half-written ones journaled', async (t) => {
  const store = new ControlledStore();
  store.putDelayMs = 20; // a seal cycle takes a while: the writer gets a few chunks ahead of it
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('seq', 64 * MiB);
  const e = await f.vault.openEngine('seq', { dirtyLimitBytes: 16 * MiB, uploadConcurrency: 4 });
  const puts = { journal: 0, chunk: 0 };
  const put = store.put.bind(store);
  store.put = async (key: string, body: Buffer, opts?: PutOptions) => {
    if (key.includes('/journals/')) puts.journal++;
    if (key.includes('/chunks/')) puts.chunk++;
    return put(key, body, opts);
  };
  const data = randomBytes(64 * MiB);
  const state = (e as any).state;
  let pressure = false;
  // 1 MiB writes in order, arriving over time as from a socket (before the fix: 4-6 journals of
  // chunks caught half-written, 13-14 chunks sealed whole)
  for (let k = 0; k < 64; k++) {
    await new Promise((r) => setTimeout(r, 1));
    await e.write(k * MiB, data.subarray(k * MiB, (k + 1) * MiB));
    if (state.dirtyBytes >= 8 * MiB) pressure = true;
  }
  assert.ok(pressure, 'dirty data reached half the limit while writing');
  await e.flush();
  assert.deepEqual(puts, { journal: 0, chunk: 16 }, 'every chunk sealed whole, none journaled half-written');
  assert.ok((await e.read(0, data.length)).equals(data));
  await e.close();
});

test('a second writer of the same volume fails loudly instead of forking it', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('w', 8 * MiB);
  const a = await f.vault.openEngine('w');
  const b = await (await f.reopen()).openEngine('w');
  await a.write(0, randomBytes(4096));
  await a.flush();
  await b.write(4096, randomBytes(4096));
  await assert.rejects(b.flush(), (err: VaultError) => err.code === 'ERR_LEASE');
  await a.close();
});

test('resize grows an odd-sized volume and a forced shrink zeroes what it cuts off', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const size = CHUNK_SIZE + 1000;
  await f.vault.createVolume('rs', size);
  let e = await f.vault.openEngine('rs');
  const data = randomBytes(size);
  await e.write(0, data);
  await e.close();
  await f.vault.resizeVolume('rs', 3 * CHUNK_SIZE, false);
  e = await f.vault.openEngine('rs');
  assert.equal(e.size, 3 * CHUNK_SIZE);
  const grown = await e.read(0, 3 * CHUNK_SIZE);
  assert.ok(grown.subarray(0, size).equals(data));
  assert.ok(grown.subarray(size).equals(Buffer.alloc(3 * CHUNK_SIZE - size)));
  await e.close();
  await assert.rejects(f.vault.resizeVolume('rs', 100, false), (err: VaultError) => err.code === 'ERR_INVALID_ARGUMENT');
  await f.vault.resizeVolume('rs', 100, true);
  await f.vault.resizeVolume('rs', CHUNK_SIZE, false);
  e = await f.vault.openEngine('rs');
  const back = await e.read(0, CHUNK_SIZE);
  assert.ok(back.subarray(0, 100).equals(data.subarray(0, 100)));
  assert.ok(back.subarray(100).equals(Buffer.alloc(CHUNK_SIZE - 100)), 'no old bytes reappear after shrink + grow');
  await e.close();
});

test('a wrong master key is reported as such', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const { Vault } = await import('../../src/volume/vault');
  const { SecretKey } = await import('../../src/keys/secret-key');
  const { createInlineCodec } = await import('../../src/codec');
  const { logger } = await import('./vault-fixture');
  await assert.rejects(
    Vault.open(f.store, new SecretKey(randomBytes(32), 'master'), createInlineCodec(), { stateDir: f.stateDir, logger }),
    (err: VaultError) => err.code === 'ERR_WRONG_KEY',
  );
});

test('volumes: create, list, names never in object keys, delete erases key then objects', async (t) => {
  const store: ObjectStore = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('alpha', 8 * MiB);
  const beta = await f.vault.createVolume('beta', 8 * MiB);
  await assert.rejects(f.vault.createVolume('alpha', MiB), (err: VaultError) => err.code === 'ERR_EXISTS');
  await assert.rejects(f.vault.createVolume('bad name', MiB), (err: VaultError) => err.code === 'ERR_INVALID_ARGUMENT');
  assert.deepEqual((await f.vault.listVolumes()).map((v) => v.name), ['alpha', 'beta']);
  const e = await f.vault.openEngine('beta');
  await e.write(0, randomBytes(2 * CHUNK_SIZE));
  await e.close();
  for await (const info of store.list('')) {
    assert.ok(!info.key.includes('alpha') && !info.key.includes('beta'), info.key);
    const body = (await store.get(info.key)).body.toString('latin1');
    assert.ok(!body.includes('alpha') && !body.includes('beta'), `${info.key} leaks a volume name`);
  }
  let progress = 0;
  const n = await f.vault.deleteVolume('beta', (done) => (progress = done));
  assert.ok(n >= 4 && progress === n);
  assert.equal(await countKeys(store, `volumes/${beta.id}/`, ''), 0);
  assert.deepEqual((await f.vault.listVolumes()).map((v) => v.name), ['alpha']);
});

test('a damaged volume metadata object hides only that volume', async (t) => {
  const store = new MemoryStore();
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const a = await f.vault.createVolume('a', MiB);
  await f.vault.createVolume('b', MiB);
  const meta = await store.get(`volumes/${a.id}/meta`);
  const bad = Buffer.from(meta.body.toString().replace(/"info":"(.)/, (_m, c) => `"info":"${c === 'A' ? 'B' : 'A'}`));
  await store.put(`volumes/${a.id}/meta`, bad);
  assert.deepEqual((await f.vault.listVolumes()).map((v) => v.name), ['b']);
  await assert.rejects(f.vault.openEngine('a'), (err: VaultError) => err.code === 'ERR_NOT_FOUND');
});

test('a write that fails in one chunk reads nothing of its data after it returns (nbd/ reuses that memory)', async (t) => {
  // a probe's finding: one span's failed block read rejected the write while another span still
  // waited, and that span later copied whatever the recycled payload held by then
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 16 * MiB);
  const e = await f.vault.openEngine('v', { readCacheBytes: 0 });
  t.after(() => e.close());
  await e.write(0, Buffer.alloc(8 * MiB, 0x11));
  await e.flush();
  const reads = (e as unknown as { reads: { block(i: number, b: number): Promise<Buffer> } }).reads;
  const block = reads.block.bind(reads);
  reads.block = async (i, b) => {
    if (i === 0) {
      await new Promise((r) => setTimeout(r, 1));
      throw new VaultError('ERR_IO', 'store read failed (injected)');
    }
    await new Promise((r) => setTimeout(r, 100));
    return block(i, b);
  };
  const payload = Buffer.alloc(64 * 1024, 0xaa); // partial blocks at both ends, across chunks 0 and 1
  await assert.rejects(e.write(4 * MiB - 32 * 1024 + 100, payload), /injected/);
  payload.fill(0xbb); // what nbd/ does with it next: another request's bytes
  await new Promise((r) => setTimeout(r, 300));
  reads.block = block;
  const back = await e.read(4 * MiB, 32 * 1024);
  assert.ok(!back.includes(0xbb), 'no byte of what the memory held after the write returned');
});
