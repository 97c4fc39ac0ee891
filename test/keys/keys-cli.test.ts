// `nbd-vault keys init|passwd` end to end through bin/nbd-vault.js: exit codes, one-line errors,
// and no key or passphrase bytes in stdout or stderr.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';

const repo = path.resolve(__dirname, '../../..');
const bin = path.join(repo, 'bin/nbd-vault.js');
const root = mkdtempSync(path.join(os.tmpdir(), 'nbd-vault-cli-'));
after(() => rmSync(root, { recursive: true, force: true }));

const OLD = 'cli-old-passphrase-3141';
const NEW = 'cli-new-passphrase-2718';

function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: root, ...env },
    input: '', // not a terminal: passphrases must come from the environment
    encoding: 'utf8',
    timeout: 60_000,
  });
  const output = `${r.stdout}${r.stderr}`;
  for (const secret of [OLD, NEW]) assert.ok(!output.includes(secret), `passphrase leaked: ${output}`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, output };
}

test('keys init, passwd and their errors', (t) => {
  if (!existsSync(path.join(repo, 'dist/src/cli/main.js')) || run(['--help']).status !== 0) {
    if (process.env.NBD_VAULT_REQUIRE_ALL === '1') assert.fail('NBD_VAULT_REQUIRE_ALL=1 but the CLI does not load (dist/src/cli/main.js)');
    t.skip('the CLI does not load yet (another part of the tree is mid-change)');
    return;
  }
  const dir = path.join(root, 'keys');
  const file = path.join(dir, 'master-key.json');

  const init = run(['keys', 'init', '--keys', dir]);
  assert.equal(init.status, 0, init.output);
  assert.match(init.stdout, /created master key [0-9a-f]{16} at /);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  const keyHex = JSON.parse(readFileSync(file, 'utf8')).key;
  assert.ok(!init.output.includes(keyHex));

  const again = run(['keys', 'init', '--keys', dir]);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /^nbd-vault: a master key already exists at .*\[ERR_EXISTS\]\n$/);

  const add = run(['keys', 'passwd'], { NBD_VAULT_KEYS: dir, NBD_VAULT_NEW_PASSPHRASE: OLD });
  assert.equal(add.status, 0, add.output);
  assert.equal(JSON.parse(readFileSync(file, 'utf8')).protection, 'passphrase');

  const wrong = run(['keys', 'passwd', '--keys', dir], { NBD_VAULT_PASSPHRASE: NEW, NBD_VAULT_NEW_PASSPHRASE: OLD });
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /wrong passphrase .*\[ERR_WRONG_KEY\]/);

  const noTty = run(['keys', 'passwd', '--keys', dir]);
  assert.equal(noTty.status, 2);
  assert.match(noTty.stderr, /NBD_VAULT_PASSPHRASE/);

  const change = run(['keys', 'passwd', '--keys', dir], { NBD_VAULT_PASSPHRASE: OLD, NBD_VAULT_NEW_PASSPHRASE: NEW });
  assert.equal(change.status, 0, change.output);
  const remove = run(['keys', 'passwd', '--keys', dir, '--remove'], { NBD_VAULT_PASSPHRASE: NEW });
  assert.equal(remove.status, 0, remove.output);
  assert.equal(JSON.parse(readFileSync(file, 'utf8')).key, keyHex, 'the master key is unchanged');
  const removeAgain = run(['keys', 'passwd', '--keys', dir, '--remove']);
  assert.equal(removeAgain.status, 0, removeAgain.output);
  assert.match(removeAgain.output, /has no passphrase: nothing to remove/, 'not "passphrase removed" for a key that had none');

  const withPass = run(['keys', 'init', '--keys', path.join(root, 'k2'), '--passphrase'], { NBD_VAULT_PASSPHRASE: OLD });
  assert.equal(withPass.status, 0, withPass.output);
  assert.equal(JSON.parse(readFileSync(path.join(root, 'k2/master-key.json'), 'utf8')).protection, 'passphrase');
});
