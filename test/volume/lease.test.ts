// The writer's lease: one writer per volume across servers and CLI commands sharing a store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createInlineCodec } from '../../src/codec';
import { FsStore } from '../../src/store/fs-store';
import { MemoryStore } from '../../src/store/memory-store';
import type { ObjectStore } from '../../src/store/object-store';
import { Vault, type VaultOptions } from '../../src/volume/vault';
import { VaultError } from '../../src/errors';
import { SecretKey } from '../../src/keys/secret-key';
import { VolumeLease } from '../../src/volume/volume-lease';
import { makeVault, logger, type Fixture } from './vault-fixture';

const MiB = 2 ** 20;
const isLease = (re?: RegExp) => (err: VaultError) => err.code === 'ERR_LEASE' && (!re || re.test(err.message));

/** The same vault opened by another machine (another state directory: another instance id). */
async function elsewhere(f: Fixture, t: { after(fn: () => void): void }, opts: Partial<VaultOptions> = {}, store: ObjectStore = f.store): Promise<Vault> {
  const stateDir = mkdtempSync(join(tmpdir(), 'nbd-vault-other-'));
  t.after(() => rmSync(stateDir, { recursive: true, force: true }));
  return Vault.open(store, f.master, createInlineCodec(), { stateDir, logger, ...opts });
}

for (const kind of ['memory', 'fs'] as const) {
  test(`${kind} store: a second writer elsewhere is refused until the first closes`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-lease-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const f = await makeVault(kind === 'memory' ? new MemoryStore() : new FsStore(dir, { fsync: false }));
    t.after(() => f.cleanup());
    await f.vault.createVolume('v', 8 * MiB);
    const a = await f.vault.openEngine('v');
    const other = await elsewhere(f, t, {}, kind === 'fs' ? new FsStore(dir, { fsync: false }) : f.store);
    await assert.rejects(other.openEngine('v'), isLease(/is being written by .* \(pid \d+ on .*\) until at least/));
    await assert.rejects(other.createSnapshot('v', 's'), isLease());
    await assert.rejects(other.resizeVolume('v', 16 * MiB, false), isLease());
    await assert.rejects(other.deleteVolume('v'), isLease());
    const ro = await other.openEngine('v', { readOnly: true }); // readers need no lease
    await ro.close();
    await a.write(0, randomBytes(4096));
    await a.close(); // flushes, then releases the lease
    const b = await other.openEngine('v');
    await b.write(4096, randomBytes(4096));
    await b.close();
  });
}

test('the same instance takes its own lease over at once (a restart after a crash)', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const crashed = await f.vault.openEngine('v'); // never closed: its process "died"
  const data = randomBytes(4096);
  await crashed.write(0, data);
  await crashed.flush();
  const restarted = await (await f.reopen()).openEngine('v');
  assert.ok((await restarted.read(0, 4096)).equals(data));
  await restarted.write(0, randomBytes(4096));
  await restarted.flush();
  await restarted.close();
});

test('an expired lease is taken over; the old holder then finds it lost and refuses to write', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const slow = await (await f.reopen({ leaseTiming: { ttlMs: 50, renewMs: 3_600_000 } })).openEngine('v');
  await new Promise((r) => setTimeout(r, 80)); // it stopped renewing: expired
  const other = await elsewhere(f, t);
  const b = await other.openEngine('v');
  await (slow as any).opts.lease.renew(); // the old holder wakes up
  await assert.rejects(slow.write(0, Buffer.alloc(10)), isLease(/taken by someone else/));
  await assert.rejects(slow.flush(), isLease());
  await b.write(0, randomBytes(100));
  await b.close();
});

test('a writer whose lease renewals keep failing stops writing before the lease can expire', async (t) => {
  let failLease = false;
  class FlakyLease extends MemoryStore {
    override async put(key: string, body: Buffer, opts?: import('../../src/store/object-store').PutOptions) {
      if (failLease && key.endsWith('/lease')) throw new VaultError('ERR_STORE_TRANSIENT', 'injected: the store is unreachable');
      return super.put(key, body, opts);
    }
  }
  const f = await makeVault(new FlakyLease());
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const e = await (await f.reopen({ leaseTiming: { ttlMs: 400, renewMs: 50 } })).openEngine('v');
  await e.write(0, randomBytes(100));
  failLease = true;
  await new Promise((r) => setTimeout(r, 450));
  await assert.rejects(e.write(0, randomBytes(100)), isLease(/could not be renewed/));
  failLease = false;
  // a renewal gets through again (every 50 ms; allow a loaded machine time)
  const until = Date.now() + 10_000;
  for (;;) {
    try {
      await e.write(0, randomBytes(100));
      break;
    } catch (err) {
      if (Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await e.close();
});

test('the writer stops exactly at the safety margin before its lease expires (injected clock)', async () => {
  let failPuts = false;
  class Flaky extends MemoryStore {
    override async put(key: string, body: Buffer, opts?: import('../../src/store/object-store').PutOptions) {
      if (failPuts) throw new VaultError('ERR_STORE_TRANSIENT', 'injected: the store is unreachable');
      return super.put(key, body, opts);
    }
  }
  const store = new Flaky();
  const codec = createInlineCodec();
  const key = new SecretKey(randomBytes(32), 'meta');
  const place = { vaultId: randomBytes(16), volumeId: randomBytes(16), kind: 'lease' as const, index: 0, generation: 0 };
  let clock = 1_000_000;
  const ttlMs = 60_000;
  const lease = await VolumeLease.acquire(
    { store, codec, key, place, objectKey: 'volumes/x/lease', volumeName: 'v', instance: 'i1', logger, now: () => clock },
    'test',
    { ttlMs, renewMs: 3_600_000 },
  );
  try {
    // What other writers see: the lease expires at acquire + ttl.
    const stored = JSON.parse((await codec.open(key, (await store.get('volumes/x/lease')).body, place)).toString('utf8'));
    assert.equal(stored.expiresAt, 1_000_000 + ttlMs);
    const margin = 5_000;
    clock = stored.expiresAt - margin;
    lease.check(); // still inside the safe window
    clock += 1;
    assert.throws(() => lease.check(), isLease(/could not be renewed for 55 s/), 'stops 5 s before the expiry others see');
    // a failed renewal changes nothing; a successful one moves the window from its own time
    failPuts = true;
    await lease.renew();
    assert.throws(() => lease.check(), isLease());
    failPuts = false;
    clock = stored.expiresAt + 1_000; // expired, but nobody took it: the renewal gets it back
    await lease.renew();
    lease.check();
    const renewed = JSON.parse((await codec.open(key, (await store.get('volumes/x/lease')).body, place)).toString('utf8'));
    assert.equal(renewed.expiresAt, clock + ttlMs);
    clock = renewed.expiresAt - margin;
    lease.check();
    clock += 1;
    assert.throws(() => lease.check(), isLease());
  } finally {
    await lease.release();
  }
  // A short lease keeps a quarter of its life as margin.
  clock = 0;
  const short = await VolumeLease.acquire(
    { store, codec, key, place, objectKey: 'volumes/y/lease', volumeName: 'v', instance: 'i1', logger, now: () => clock },
    'test',
    { ttlMs: 400, renewMs: 3_600_000 },
  );
  clock = 300;
  short.check();
  clock = 301;
  assert.throws(() => short.check(), isLease());
  await short.release();
});
