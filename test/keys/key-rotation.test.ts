// Master key rotation in the volume layer: interrupted half-way (a store error), the vault stays
// readable with both keys; a rerun finishes it; afterwards only the new key opens the vault, and
// no object other than the metadata and the vault object was rewritten.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { createInlineCodec } from '../../src/codec';
import { VaultError } from '../../src/errors';
import { MasterKeyRing } from '../../src/keys';
import { SecretKey } from '../../src/keys/secret-key';
import type { ObjectStore } from '../../src/store/object-store';
import { rewrapVolumeKeys, rewriteKeyCheck } from '../../src/volume/key-rotation';
import { Vault } from '../../src/volume/vault';
import { logger, makeVault } from '../volume/vault-fixture';

/** Fails every metadata put after the first `allowed` ones: a rotation cut off half-way. */
function failingMetaPuts(inner: ObjectStore, allowed: number): ObjectStore {
  let n = 0;
  return {
    name: `failing(${inner.name})`,
    props: inner.props,
    get: (k) => inner.get(k),
    getRange: (k, o, l) => inner.getRange(k, o, l),
    head: (k) => inner.head(k),
    put: async (k, b, o) => {
      if (k.endsWith('/meta') && ++n > allowed) throw new VaultError('ERR_STORE_TRANSIENT', 'injected: store went away');
      return inner.put(k, b, o);
    },
    delete: (k) => inner.delete(k),
    deleteMany: (k) => inner.deleteMany(k),
    list: (p) => inner.list(p),
    close: async () => {},
    unwrap: () => inner,
  };
}

async function snapshotObjects(store: ObjectStore): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  for await (const info of store.list('')) m.set(info.key, info.etag);
  return m;
}

test('an interrupted rotation leaves every volume readable, a rerun finishes it, then the old key is refused', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const codec = createInlineCodec();
  const patterns = new Map<string, Buffer>();
  for (const name of ['a', 'b', 'c']) {
    await f.vault.createVolume(name, 16 * 2 ** 20);
    const e = await f.vault.openEngine(name);
    const data = randomBytes(100_000);
    await e.write(4 * 2 ** 20 - 1000, data, { fua: true });
    await e.snapshot('s1');
    await e.close();
    patterns.set(name, data);
  }
  const before = await snapshotObjects(f.store);
  const old = f.master;
  const next = new SecretKey(randomBytes(32), 'master');
  const target = (store: ObjectStore) => ({ store, codec, vaultId: f.vault.vaultId, logger });

  await assert.rejects(rewrapVolumeKeys(target(failingMetaPuts(f.store, 1)), old, next), /injected/);

  // Mixed state: one volume on the new key, two on the old. With both keys everything reads.
  const both = await Vault.open(f.store, next, codec, { stateDir: f.stateDir, logger, keyRing: MasterKeyRing.of(next, old) });
  assert.deepEqual((await both.listVolumes()).map((v) => v.name), ['a', 'b', 'c']);
  const onlyNew = await Vault.open(f.store, old, codec, { stateDir: f.stateDir, logger, keyRing: MasterKeyRing.of(next) }).catch((e) => e);
  assert.match(String(onlyNew), /ERR_WRONG_KEY|does not belong/, 'the key check is still the old key\'s until the end');
  for (const [name, data] of patterns) {
    const e = await both.openEngine(name, { readOnly: true });
    assert.ok((await e.read(4 * 2 ** 20 - 1000, data.length)).equals(data), `volume ${name} mid-rotation`);
    await e.close();
  }

  // The rerun skips what is done and finishes.
  const rerun = await rewrapVolumeKeys(target(f.store), old, next);
  assert.deepEqual(rerun, { rewrapped: 2, already: 1 });
  assert.equal(await rewriteKeyCheck(target(f.store), old, next), true);
  assert.equal(await rewriteKeyCheck(target(f.store), old, next), false, 'idempotent');
  assert.deepEqual(await rewrapVolumeKeys(target(f.store), old, next), { rewrapped: 0, already: 3 });

  await assert.rejects(Vault.open(f.store, old, codec, { stateDir: f.stateDir, logger }), (e: VaultError) => e.code === 'ERR_WRONG_KEY');
  const fresh = await Vault.open(f.store, next, codec, { stateDir: f.stateDir, logger });
  for (const [name, data] of patterns) {
    const e = await fresh.openEngine(name, { readOnly: true });
    assert.ok((await e.read(4 * 2 ** 20 - 1000, data.length)).equals(data), `volume ${name} after rotation`);
    await e.close();
    const snap = await fresh.openSnapshotEngine(name, 's1');
    assert.ok((await snap.read(4 * 2 ** 20 - 1000, data.length)).equals(data), `snapshot ${name}@s1 after rotation`);
    await snap.close();
  }

  // Only metadata and the vault object changed (leases, reader marks and writer sessions come and
  // go with the engines and vaults above).
  await both.close();
  await fresh.close();
  const after = await snapshotObjects(f.store);
  const changed = [...before].filter(([k, etag]) => after.get(k) !== etag).map(([k]) => k.replace(/[0-9a-f]{32}/, 'ID'));
  assert.deepEqual(changed.sort(), ['vault', 'volumes/ID/meta', 'volumes/ID/meta', 'volumes/ID/meta']);
  assert.deepEqual([...after.keys()].filter((k) => !before.has(k)), [], 'no object added');
  next.wipe();
});

test('a volume wrapped by a third key stops the rotation with a clear error', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('a', 2 ** 20);
  const stranger = new SecretKey(randomBytes(32), 'master');
  const codec = createInlineCodec();
  await assert.rejects(
    rewrapVolumeKeys({ store: f.store, codec, vaultId: f.vault.vaultId, logger }, stranger, new SecretKey(randomBytes(32), 'master')),
    /is wrapped by master key [0-9a-f]{16}, which is neither the old key/,
  );
});
