// Per-volume keys: wrap/unwrap bound to vault + volume, wrong master key, subkeys.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { deriveSubkey, generateVolumeKey, masterKeyId, SecretKey, unwrapVolumeKey, WRAPPED_KEY_BYTES, wrapVolumeKey } from '../../src/keys';

const master = new SecretKey(randomBytes(32), 'master');
const place = { vaultId: randomBytes(16), volumeId: randomBytes(16) };

test('wrap/unwrap round trip; wrapped form is 88 bytes and not the key', () => {
  const volumeKey = generateVolumeKey();
  const wrapped = wrapVolumeKey(master, volumeKey, place);
  assert.equal(wrapped.length, WRAPPED_KEY_BYTES);
  assert.equal(wrapped.indexOf(volumeKey.bytes), -1);
  assert.deepEqual(unwrapVolumeKey(master, wrapped, place).bytes, volumeKey.bytes);
  assert.notDeepEqual(generateVolumeKey().bytes, volumeKey.bytes);
});

test('a wrapped key moved to another volume or vault → ERR_AUTH_FAILED', () => {
  const wrapped = wrapVolumeKey(master, generateVolumeKey(), place);
  assert.throws(() => unwrapVolumeKey(master, wrapped, { ...place, volumeId: randomBytes(16) }), { code: 'ERR_AUTH_FAILED' });
  assert.throws(() => unwrapVolumeKey(master, wrapped, { ...place, vaultId: randomBytes(16) }), { code: 'ERR_AUTH_FAILED' });
});

test('tampered, truncated or foreign wrapped keys fail with specific codes', () => {
  const wrapped = wrapVolumeKey(master, generateVolumeKey(), place);
  for (const offset of [20, 40, 60, WRAPPED_KEY_BYTES - 1]) {
    const bad = Buffer.from(wrapped);
    bad[offset] ^= 1;
    assert.throws(() => unwrapVolumeKey(master, bad, place), { code: 'ERR_AUTH_FAILED' });
  }
  assert.throws(() => unwrapVolumeKey(master, wrapped.subarray(0, 87), place), { code: 'ERR_CORRUPT' });
  const badVersion = Buffer.from(wrapped);
  badVersion[4] = 9;
  assert.throws(() => unwrapVolumeKey(master, badVersion, place), { code: 'ERR_CORRUPT' });
});

test('another master key → ERR_WRONG_KEY naming both key ids', () => {
  const wrapped = wrapVolumeKey(master, generateVolumeKey(), place);
  const other = new SecretKey(randomBytes(32), 'master');
  assert.throws(() => unwrapVolumeKey(other, wrapped, place), (err: any) => {
    assert.equal(err.code, 'ERR_WRONG_KEY');
    assert.ok(err.message.includes(masterKeyId(master).toString('hex')) && err.message.includes(masterKeyId(other).toString('hex')));
    assert.ok(!err.message.includes(master.bytes.toString('hex')));
    return true;
  });
});

test('subkeys: deterministic, distinct per purpose and per volume key, labelled', () => {
  const volumeKey = generateVolumeKey();
  const data = deriveSubkey(volumeKey, 'data');
  assert.deepEqual(deriveSubkey(volumeKey, 'data').bytes, data.bytes);
  assert.notDeepEqual(deriveSubkey(volumeKey, 'manifest').bytes, data.bytes);
  assert.notDeepEqual(deriveSubkey(volumeKey, 'meta').bytes, data.bytes);
  assert.notDeepEqual(deriveSubkey(generateVolumeKey(), 'data').bytes, data.bytes);
  assert.notDeepEqual(data.bytes, volumeKey.bytes);
  assert.equal(data.label, 'volume/data');
});

test('known answer: subkey derivation is frozen (crypto_kdf, context "nbdvvolk", id 1)', () => {
  const volumeKey = new SecretKey(Buffer.alloc(32, 7), 'volume');
  assert.equal(deriveSubkey(volumeKey, 'data').bytes.toString('hex'), KNOWN_DATA_SUBKEY);
});

const KNOWN_DATA_SUBKEY = '2317f609923489ec35b48d6086dd791b6778b0262d670055a634336e367500ae';
