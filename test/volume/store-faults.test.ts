// The volume engine over faulty stores: faults inside RetryStore are absorbed (every operation
// of a workload succeeds, data intact); faults outside it surface as typed errors and lose
// nothing: after the store recovers, a flush succeeds and every acknowledged byte is there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MemoryStore } from '../../src/store/memory-store';
import { FaultyStore } from '../../src/store/faulty-store';
import { seededRandom } from '../../src/store/seeded-random';
import { RetryStore } from '../../src/store/retry-store';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { VaultError, type VaultErrorCode } from '../../src/errors';
import type { PutOptions } from '../../src/store/object-store';
import { PassThroughStore } from '../helpers/pass-through-store';
import { makeVault } from './vault-fixture';

const MiB = 2 ** 20;

test('30 % transient faults inside the retry layer: every write, read, trim and flush succeeds', async (t) => {
  const base = new MemoryStore();
  const faulty = new FaultyStore(base, { rules: [{ probability: 0.3 }, { probability: 0.1, phase: 'after' }] }, seededRandom(42));
  const store = new RetryStore(faulty, { baseDelayMs: 1, maxDelayMs: 5, budgetMs: 30_000 });
  faulty.armed = false;
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 48 * MiB);
  faulty.armed = true;
  const e = await f.vault.openEngine('v');
  const model = Buffer.alloc(48 * MiB);
  // Offsets and lengths from a printed seed (NBD_VAULT_TEST_SEED replays a failure).
  const seed = Number(process.env.NBD_VAULT_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
  t.diagnostic(`seed ${seed} (replay with NBD_VAULT_TEST_SEED=${seed})`);
  const rand = seededRandom(seed);
  for (let k = 0; k < 40; k++) {
    const off = Math.floor(rand() * (48 * MiB - 300_000));
    const data = randomBytes(1 + Math.floor(rand() * 300_000));
    data.copy(model, off);
    await e.write(off, data);
    if (k % 10 === 9) await e.flush();
  }
  await e.trim(8 * MiB, 8 * MiB);
  model.fill(0, 8 * MiB, 16 * MiB);
  await e.flush();
  await e.close();
  assert.ok(faulty.totalInjected > 10, `faults were injected (${faulty.totalInjected})`);
  const e2 = await (await f.reopen()).openEngine('v', { readCacheBytes: 0 });
  assert.ok((await e2.read(0, 48 * MiB)).equals(model), 'all data intact through the faults');
  await e2.close();
});

test('faults without a retry layer surface as typed errors; nothing acknowledged is lost', async (t) => {
  const base = new MemoryStore();
  const faulty = new FaultyStore(base, {}, seededRandom(7));
  const f = await makeVault(faulty);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 16 * MiB);
  const e = await f.vault.openEngine('v', { readCacheBytes: 0 });
  const data = randomBytes(2 * CHUNK_SIZE + 5000);
  await e.write(100, data);
  faulty.armed = true;
  faulty.setRules({ rules: [{ ops: ['put'], probability: 1, code: 'ERR_STORE_DENIED' }] });
  await assert.rejects(e.flush(), (err: VaultError) => err.code === 'ERR_IO' && /ERR_STORE_DENIED/.test(err.message));
  await assert.rejects(e.flush(), (err: VaultError) => err.code === 'ERR_IO', 'still failing while the store fails');
  faulty.setRules({}); // the store recovers
  await e.flush();
  assert.ok((await e.read(100, data.length)).equals(data));
  faulty.armed = true;
  faulty.failNext('get', 1, 'ERR_STORE_TRANSIENT');
  await assert.rejects(e.read(100, 4096), (err: VaultError) => err.code === 'ERR_IO', 'a failed fetch is EIO, never zeros');
  assert.ok((await e.read(100, 4096)).equals(data.subarray(0, 4096)), 'the next read succeeds');
  await e.close();
});

/** Root puts (commits) fail with the codes given, one per put, the last one for good. */
class RootPutsFail extends PassThroughStore {
  codes: VaultErrorCode[] = [];
  override put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    if (this.codes.length > 0 && key.endsWith('/root')) {
      const code = this.codes.length > 1 ? this.codes.shift()! : this.codes[0];
      return Promise.reject(new VaultError(code, `test: root put refused (${code})`));
    }
    return super.put(key, body, opts);
  }
}

test('a resize that fails keeps its own error when the close after it fails differently', async (t) => {
  const store = new RootPutsFail(new MemoryStore());
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', CHUNK_SIZE + MiB); // a short last chunk: growing rewrites it
  const e = await f.vault.openEngine('v');
  const data = randomBytes(MiB);
  await e.write(CHUNK_SIZE, data);
  await e.close();
  // The resize's commit meets one failure, the close's commit after it another.
  store.codes = ['ERR_STORE_DENIED', 'ERR_STORE_IO'];
  await assert.rejects(f.vault.resizeVolume('v', 3 * CHUNK_SIZE, false), (err: VaultError) => /ERR_STORE_DENIED/.test(err.message));
  assert.deepEqual(store.codes, ['ERR_STORE_IO'], 'the close tried to store again and failed differently');
  store.codes = [];
  const e2 = await (await f.reopen()).openEngine('v', { readCacheBytes: 0 });
  assert.equal(e2.size, CHUNK_SIZE + MiB, 'the failed resize committed nothing');
  assert.ok((await e2.read(CHUNK_SIZE, MiB)).equals(data));
  await e2.close();
});
