// `nbd-vault keys rotate` end to end, beside a running server and real clients (qemu-io): a
// rotation interrupted half-way is resumed by the next run; the running server serves a volume
// it had not opened yet without a restart (it reloads the key directory on the new key id) and
// stops cleanly; the old key file no longer opens the vault.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createInlineCodec } from '../../src/codec';
import { VaultError } from '../../src/errors';
import { createMasterKey, loadMasterKey } from '../../src/keys';
import { openStore } from '../../src/store';
import type { ObjectStore } from '../../src/store/object-store';
import { createLogger } from '../../src/util/log';
import { rewrapVolumeKeys } from '../../src/volume/key-rotation';
import { runCommand } from '../helpers/fuse-disk';
import { makeTestVault, s3Available } from '../helpers/vault-server';

const MiB = 2 ** 20;

function failAfterMetaPuts(inner: ObjectStore, allowed: number): ObjectStore {
  let n = 0;
  return {
    name: 'failing',
    props: inner.props,
    get: (k) => inner.get(k),
    getRange: (k, o, l) => inner.getRange(k, o, l),
    head: (k) => inner.head(k),
    put: async (k, b, o) => {
      if (k.endsWith('/meta') && ++n > allowed) throw new VaultError('ERR_STORE_TRANSIENT', 'injected: interrupted');
      return inner.put(k, b, o);
    },
    delete: (k) => inner.delete(k),
    deleteMany: (k) => inner.deleteMany(k),
    list: (p) => inner.list(p),
    close: () => inner.close(),
    unwrap: () => inner,
  };
}

for (const backend of ['fs', 's3'] as const) test(`keys rotate on the ${backend} store: resumed after an interruption, picked up by a running server, old key refused`, async (t) => {
  if (backend === 's3' && !s3Available(t)) return;
  const v = await makeTestVault({ s3: backend === 's3' });
  t.after(() => v.cleanup());
  const keys = join(v.dir, 'keys');
  await v.cli('volume', 'create', 'a', '--size', '64M');
  await v.cli('volume', 'create', 'b', '--size', '64M');
  const imgB = randomBytes(6 * MiB);
  writeFileSync(join(v.dir, 'b.img'), imgB);
  await v.cli('import', join(v.dir, 'b.img'), 'b');
  cpSync(keys, join(v.dir, 'old-keys'), { recursive: true });
  const oldKeyId = JSON.parse(readFileSync(join(keys, 'master-key.json'), 'utf8')).keyId;

  const srv = await v.serve();
  t.after(() => srv.kill());
  const io = (name: string, cmd: string) => runCommand('qemu-io', ['-f', 'raw', '-c', cmd, srv.uri(name)], { timeoutMs: 60_000 });
  await io('a', 'write -P 0x5a 4190000 200000'); // the server now holds volume a open, b not
  assert.doesNotMatch(srv.log(), /metrics listening/, 'metrics are off unless asked for');

  // A first run cut off after one of the two metadata objects (as a crash would leave it).
  const next = await createMasterKey(keys, { slot: 'pending' });
  const store = openStore(v.storeUrl);
  const oldKey = await loadMasterKey(keys);
  const nextKey = await loadMasterKey(keys, { slot: 'pending' });
  const vaultId = JSON.parse((await store.get('vault')).body.toString()).vaultId;
  await assert.rejects(rewrapVolumeKeys({ store: failAfterMetaPuts(store, 1), codec: createInlineCodec(), vaultId, logger: createLogger('silent') }, oldKey, nextKey), /injected/);
  await store.close();
  oldKey.wipe();
  nextKey.wipe();

  // Mid-rotation, a CLI command works with both key files present (and says the rotation is unfinished).
  const mid = await v.cli('volume', 'list', '--log-level', 'warn');
  assert.match(mid.stdout, /\ba\b[\s\S]*\bb\b/);
  assert.match(mid.stderr, /rotation is unfinished/);

  const rot = await v.cli('keys', 'rotate');
  assert.match(rot.stdout, new RegExp(`resuming the rotation from ${oldKeyId} to ${next.keyId}`));
  assert.match(rot.stdout, new RegExp(`rotated master key ${oldKeyId} -> ${next.keyId}: 1 volume key\\(s\\) rewrapped, 1 already done by an earlier run; no data object was rewritten`));
  assert.match(rot.stdout, /a server is running on this state directory: it loads the new key/);
  assert.equal(JSON.parse(readFileSync(join(keys, 'master-key.json'), 'utf8')).keyId, next.keyId);
  assert.throws(() => readFileSync(join(keys, 'master-key.next.json')), /ENOENT/);

  // The running server, started with the old key only: volume b (not open yet) and volume a.
  await io('b', `read -P 0 ${6 * MiB} ${MiB}`);
  const outB = join(v.dir, 'b.out');
  await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('b'), outB], { timeoutMs: 60_000 });
  assert.ok(readFileSync(outB).subarray(0, imgB.length).equals(imgB), 'volume b read through the running server after the rotation');
  await io('a', 'read -P 0x5a 4190000 200000');
  await io('a', 'write -P 0x6b 0 65536');
  assert.match(srv.log(), new RegExp(`"keyId":"${next.keyId}".*master key reloaded from the key directory`));
  assert.doesNotMatch(srv.log(), /cannot open volume|volume metadata cannot be read/);
  assert.equal(await srv.stop(), 0);

  // The old key file no longer opens the vault.
  const old = await v.cliResult('volume', 'list', '--keys', join(v.dir, 'old-keys'));
  assert.equal(old.code, 1);
  assert.match(old.stderr, /does not belong to the vault.*ERR_WRONG_KEY/);
});
