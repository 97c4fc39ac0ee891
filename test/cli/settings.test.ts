import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveSettings, envName } from '../../src/cli/settings';
import { VaultError } from '../../src/errors';

const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-settings-'));
const config = (doc: unknown) => {
  const p = join(dir, `c${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(p, typeof doc === 'string' ? doc : JSON.stringify(doc));
  return p;
};

test('flag > environment > config file > default', () => {
  const file = config({ store: 'from-file', dirtyLimit: '1G', listen: '0.0.0.0:1' });
  const env = { NBD_VAULT_STORE: 'from-env', NBD_VAULT_LISTEN: '127.0.0.1:2' };
  const s = resolveSettings({ config: file, listen: '127.0.0.1:3' }, ['store', 'dirtyLimit', 'listen', 'readCache', 'acceptRollback'], env);
  assert.equal(s.listen, '127.0.0.1:3', 'flag wins');
  assert.equal(s.store, 'from-env', 'env beats the file');
  assert.equal(s.dirtyLimit, 2 ** 30, 'the file beats the default, sizes parsed');
  assert.equal(s.readCache, 768 * 2 ** 20, 'default');
  assert.equal(s.acceptRollback, false);
  assert.equal(envName('uploadConcurrency'), 'NBD_VAULT_UPLOAD_CONCURRENCY');
});

test('malformed configuration fails with a message naming the culprit', () => {
  const fails = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: VaultError) => e.code === 'ERR_INVALID_ARGUMENT' && re.test(e.message));
  fails(() => resolveSettings({ config: config({ stroe: 'x' }) }, ['store'], {}), /unknown setting "stroe"/);
  // names every object inherits are no settings either
  for (const key of ['constructor', 'toString', 'hasOwnProperty', '__proto__']) {
    fails(() => resolveSettings({ config: config(`{"${key}": 1}`) }, ['store'], {}), new RegExp(`unknown setting "${key}"`));
  }
  fails(() => resolveSettings({ config: config('{not json') }, ['store'], {}), /cannot read config file/);
  fails(() => resolveSettings({ config: config([1, 2]) }, ['store'], {}), /must hold a JSON object/);
  fails(() => resolveSettings({ config: join(dir, 'missing.json') }, ['store'], {}), /no such file/);
  fails(() => resolveSettings({}, ['dirtyLimit'], { NBD_VAULT_DIRTY_LIMIT: 'lots' }), /\$NBD_VAULT_DIRTY_LIMIT: not a size/);
  // sizes as JSON numbers are checked like their text (a negative or fractional one started a server)
  for (const bad of [-1, 0.5, 1e30]) fails(() => resolveSettings({ config: config({ dirtyLimit: bad }) }, ['dirtyLimit'], {}), /not a size: .*a whole number of bytes/);
  assert.equal(resolveSettings({ config: config({ readCache: 4096 }) }, ['readCache'], {}).readCache, 4096);
  fails(() => resolveSettings({ logLevel: 'verbose' }, ['logLevel'], {}), /option --log-level: unknown log level "verbose" \(use fatal, error/);
  assert.equal(resolveSettings({ logLevel: 'debug' }, ['logLevel'], {}).logLevel, 'debug');
  fails(() => resolveSettings({ workers: 'two' }, ['workers'], {}), /option --workers: expected a whole number/);
  // 0 upload workers would store nothing and release the dirty data: a count is at least 1
  fails(() => resolveSettings({ uploadConcurrency: '0' }, ['uploadConcurrency'], {}), /--upload-concurrency: expected at least 1/);
  fails(() => resolveSettings({}, ['workers'], { NBD_VAULT_WORKERS: '0' }), /\$NBD_VAULT_WORKERS: expected at least 1/);
  assert.equal(resolveSettings({ uploadConcurrency: '1' }, ['uploadConcurrency'], {}).uploadConcurrency, 1);
  fails(() => resolveSettings({ config: config({ acceptRollback: 'maybe' }) }, ['acceptRollback'], {}), /expected true or false/);
});

test('sizes: parse binary units, print the largest unit that fits', async () => {
  const { parseSize, formatSize } = await import('../../src/util/size');
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('256M'), 256 * 2 ** 20);
  assert.equal(parseSize('10G'), 10 * 2 ** 30);
  assert.equal(parseSize('1TiB'), 2 ** 40);
  assert.throws(() => parseSize('ten'), (e: VaultError) => e.code === 'ERR_INVALID_ARGUMENT');
  assert.equal(parseSize('10B'), 10);
  assert.equal(parseSize('2kib'), 2048);
  for (const bad of ['10ib', '10i', '10BB', '5MiBB', '-1', '1.5G']) assert.throws(() => parseSize(bad), (e: VaultError) => e.code === 'ERR_INVALID_ARGUMENT', bad);
  assert.throws(() => parseSize('99999999P'), (e: VaultError) => e.code === 'ERR_INVALID_ARGUMENT');
  assert.equal(formatSize(2 ** 30), '1 GiB');
  assert.equal(formatSize(50_000_000), '47.7 MiB');
  assert.equal(formatSize(0), '0 B');
});

test('zstd level: negative (fast) levels are whole numbers too; progress: NBD_VAULT_NO_PROGRESS=0 does not turn it off', async () => {
  assert.equal(resolveSettings({ zstdLevel: '-5' }, ['zstdLevel'], {}).zstdLevel, -5);
  assert.equal(resolveSettings({}, ['zstdLevel'], { NBD_VAULT_ZSTD_LEVEL: '-1' }).zstdLevel, -1);
  assert.throws(() => resolveSettings({ zstdLevel: '-x' }, ['zstdLevel'], {}), /expected a whole number/);
  const { progressTurnedOff } = await import('../../src/cli/progress');
  for (const off of ['1', 'yes', 'true', 'anything']) assert.equal(progressTurnedOff(off), true, off);
  for (const on of [undefined, '', '0', 'false', 'no', ' NO ']) assert.equal(progressTurnedOff(on), false, String(on));
});
