import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { VaultExportProvider } from '../../src/cli/vault-export-provider';
import { makeVault, logger } from '../volume/vault-fixture';

const MiB = 2 ** 20;

test('export provider: volumes and VOL@SNAP listed; shared engines; a snapshot export reopens fresh', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('vol', 8 * MiB);
  const p = new VaultExportProvider(f.vault, 'vol', {}, logger);
  const a = (await p.open(''))!;
  const b = (await p.open('vol'))!;
  assert.equal(a, b, 'one engine per volume, shared by connections');
  const first = randomBytes(4096);
  await a.write(0, first);
  await p.snapshot('vol', 's');
  assert.deepEqual((await p.list()).map((e) => e.name), ['vol', 'vol@s']);
  const s1 = (await p.open('vol@s'))!;
  assert.equal(s1.caps.readOnly, true);
  assert.ok((await s1.read(0, 4096)).equals(first));
  await p.release(s1); // last connection: the snapshot engine closes
  await f.vault.deleteSnapshot('vol', 's');
  await a.write(0, randomBytes(4096));
  await p.snapshot('vol', 's'); // a new snapshot with the same name
  const s2 = (await p.open('vol@s'))!;
  assert.notEqual(s2, s1);
  assert.ok(!(await s2.read(0, 4096)).equals(first), 'the re-created snapshot, not a stale one');
  assert.equal(await p.open('nope'), null);
  assert.equal(await p.open('vol@nope'), null);
  await p.release(s2);
  await p.release(a);
  await p.release(b);
  await p.closeAll();
  assert.equal(await p.open('vol'), null, 'nothing opens after closeAll');
});
