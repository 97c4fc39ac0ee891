// MasterKeyRing: both key files during a rotation (the next key wraps), and a ring loaded before a
// rotation finds the new key by reloading the directory — with the passphrase it was opened with.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createMasterKey, MasterKeyRing, promotePendingMasterKey } from '../../src/keys';

const PASS = 'ring-test-passphrase-1618';

test('a ring loaded before a rotation reloads the key directory for the new key id, once', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nbd-vault-ring-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const old = await createMasterKey(dir, { passphrase: PASS, kdf: 'interactive' });
  const ring = await MasterKeyRing.load(dir, PASS);
  assert.equal(ring.currentKeyId, old.keyId);
  assert.equal(ring.all().length, 1);
  const reloads: string[] = [];
  ring.onReload = (id) => reloads.push(id);

  // No new key on disk: an unknown id is not found, and nothing is unwrapped again.
  assert.equal(await ring.findOrReload('0123456789abcdef'), undefined);
  assert.deepEqual(reloads, []);

  const next = await createMasterKey(dir, { passphrase: PASS, kdf: 'interactive', slot: 'pending' });
  const during = await MasterKeyRing.load(dir, PASS);
  assert.equal(during.currentKeyId, next.keyId, 'during a rotation, the next key wraps new volume keys');
  assert.ok(during.find(old.keyId), 'and the old one still opens');

  await promotePendingMasterKey(dir);
  await new Promise((r) => setTimeout(r, 1100)); // past the reload interval of the first miss
  const found = await Promise.all([ring.findOrReload(next.keyId), ring.findOrReload(next.keyId)]);
  assert.ok(found[0] && found[1], 'concurrent lookups share one reload');
  assert.deepEqual(reloads, [next.keyId]);
  assert.equal(ring.currentKeyId, next.keyId);
  assert.ok(ring.find(old.keyId), 'the old key stays in memory for what is not rewrapped yet');
  ring.wipe();
  during.wipe();
});
