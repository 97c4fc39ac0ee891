// Master key file: create, refuse overwrite, mode 0600, passphrase wrap/unwrap, passwd,
// wrong passphrase, bad permissions, malformed files; no error or log line carries secret bytes.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { inspect } from 'node:util';
import { changePassphrase, createMasterKey, describeMasterKey, loadMasterKey, masterKeyPath } from '../../src/keys';

const root = mkdtempSync(path.join(os.tmpdir(), 'nbd-vault-keys-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = () => path.join(root, `k${n++}`);
const kdf = 'interactive' as const; // fast Argon2id for tests
const PASSPHRASE = 'correct horse battery staple';

/** Asserts an error's code, and that its message carries none of the given secrets. */
async function rejectsWith(promise: Promise<unknown>, code: string, secrets: string[] = []): Promise<string> {
  try {
    await promise;
  } catch (err: any) {
    assert.equal(err.code, code, err.message);
    for (const s of secrets) assert.ok(!err.message.includes(s) && !inspect(err).includes(s), 'secret in error');
    return err.message;
  }
  assert.fail(`expected ${code}`);
}

test('init creates a 0600 file in a 0700 directory; load returns the same key', async () => {
  const dir = freshDir();
  const info = await createMasterKey(dir);
  assert.equal(statSync(info.path).mode & 0o777, 0o600);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  assert.match(info.keyId, /^[0-9a-f]{16}$/);
  const a = await loadMasterKey(dir);
  const b = await loadMasterKey(dir);
  assert.deepEqual(a.bytes, b.bytes);
  assert.equal(a.label, 'master');
  assert.equal(String(a), 'SecretKey(master, redacted)');
  assert.ok(!inspect(a).includes(a.bytes.toString('hex')));
  assert.ok(!JSON.stringify({ a }).includes(a.bytes.toString('hex')));
});

test('init refuses to overwrite, and leaves the existing key intact', async () => {
  const dir = freshDir();
  await createMasterKey(dir);
  const before = readFileSync(masterKeyPath(dir));
  const message = await rejectsWith(createMasterKey(dir), 'ERR_EXISTS');
  assert.match(message, /refusing to overwrite/);
  assert.deepEqual(readFileSync(masterKeyPath(dir)), before);
});

test('passphrase wrap/unwrap; wrong or missing passphrase → ERR_WRONG_KEY without leaking it', async () => {
  const dir = freshDir();
  const info = await createMasterKey(dir, { passphrase: PASSPHRASE, kdf });
  assert.equal(info.passphraseProtected, true);
  const text = readFileSync(info.path, 'utf8');
  assert.ok(!text.includes(PASSPHRASE));
  const key = await loadMasterKey(dir, { passphrase: PASSPHRASE });
  assert.ok(!text.includes(key.bytes.toString('hex')), 'the wrapped file does not hold the key in clear');
  await rejectsWith(loadMasterKey(dir, { passphrase: 'Correct horse battery staple' }), 'ERR_WRONG_KEY', [PASSPHRASE, key.bytes.toString('hex')]);
  await rejectsWith(loadMasterKey(dir), 'ERR_WRONG_KEY');
  assert.equal((await describeMasterKey(dir)).keyId, info.keyId);
});

test('passwd: add, change and remove a passphrase; the key itself never changes', async () => {
  const dir = freshDir();
  await createMasterKey(dir);
  const original = (await loadMasterKey(dir)).bytes.toString('hex');
  await changePassphrase(dir, undefined, 'first', { kdf });
  assert.equal((await loadMasterKey(dir, { passphrase: 'first' })).bytes.toString('hex'), original);
  await changePassphrase(dir, 'first', 'second', { kdf });
  await rejectsWith(loadMasterKey(dir, { passphrase: 'first' }), 'ERR_WRONG_KEY');
  assert.equal((await loadMasterKey(dir, { passphrase: 'second' })).bytes.toString('hex'), original);
  await rejectsWith(changePassphrase(dir, 'not-the-Passphrase-42', 'third-Passphrase-43', { kdf }), 'ERR_WRONG_KEY', ['not-the-Passphrase-42', 'third-Passphrase-43']);
  const removed = await changePassphrase(dir, 'second', undefined);
  assert.equal(removed.passphraseProtected, false);
  assert.equal((await loadMasterKey(dir)).bytes.toString('hex'), original);
  assert.equal(statSync(masterKeyPath(dir)).mode & 0o777, 0o600);
});

test('group- or world-accessible key file → ERR_KEY_FILE naming the path and the fix', async () => {
  const dir = freshDir();
  const info = await createMasterKey(dir);
  for (const mode of [0o644, 0o640, 0o604]) {
    chmodSync(info.path, mode);
    const message = await rejectsWith(loadMasterKey(dir), 'ERR_KEY_FILE');
    assert.ok(message.includes(info.path) && message.includes('chmod 600'), message);
  }
});

test('missing, malformed and edited key files → ERR_KEY_FILE without the file\'s bytes', async () => {
  const missing = await rejectsWith(loadMasterKey(freshDir()), 'ERR_KEY_FILE');
  assert.match(missing, /no master key at .*keys init/);

  const dir = freshDir();
  const info = await createMasterKey(dir);
  const good = readFileSync(info.path, 'utf8');
  const keyHex = JSON.parse(good).key as string;
  // a first byte that differs from the key's own, whatever the random key starts with
  const otherFirstByte = (parseInt(keyHex.slice(0, 2), 16) ^ 0xff).toString(16).padStart(2, '0');
  const variants: [string, string][] = [
    [keyHex, 'not JSON'], // a bare hex key: JSON.parse's own message would quote it
    [good.slice(0, good.length - 5), 'not JSON'],
    [good.replace('"version": 1', '"version": 2'), 'unsupported version'],
    [good.replace(keyHex, keyHex.slice(2)), 'malformed "key"'],
    [good.replace(keyHex, otherFirstByte + keyHex.slice(2)), 'does not match its key id'],
    [good.replace('"protection": "none"', '"protection": "rot13"'), 'unknown "protection"'],
    ['{}', 'missing "format"'],
  ];
  for (const [text, expected] of variants) {
    writeFileSync(info.path, text, { mode: 0o600 });
    const message = await rejectsWith(loadMasterKey(dir), 'ERR_KEY_FILE', [keyHex, keyHex.slice(2, 40)]);
    assert.ok(message.includes(expected) && message.includes(info.path), message);
  }
});

test('wrapped file with hostile KDF parameters is refused before hashing', async () => {
  const dir = freshDir();
  const info = await createMasterKey(dir, { passphrase: PASSPHRASE, kdf });
  const json = JSON.parse(readFileSync(info.path, 'utf8'));
  json.kdf.memlimit = 2 ** 40;
  writeFileSync(info.path, JSON.stringify(json), { mode: 0o600 });
  await rejectsWith(loadMasterKey(dir, { passphrase: PASSPHRASE }), 'ERR_KEY_FILE');
  json.kdf.memlimit = 2 * 67108864; // in range but not what was used: the unwrap fails
  writeFileSync(info.path, JSON.stringify(json), { mode: 0o600 });
  await rejectsWith(loadMasterKey(dir, { passphrase: PASSPHRASE }), 'ERR_WRONG_KEY');
});
