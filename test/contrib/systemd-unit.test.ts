// contrib/systemd: the service unit passes `systemd-analyze verify` without a single warning, its
// sandbox scores as well exposed as the unit promises (`systemd-analyze security`), and the
// sysusers file creates the dedicated user. systemd need not be running for any of this.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commandExists, runCommand } from '../helpers/fuse-disk';
import { CLI, REPO } from '../helpers/vault-server';

const UNIT = join(REPO, 'contrib/systemd/nbd-vault.service');
const SYSUSERS = join(REPO, 'contrib/systemd/nbd-vault.sysusers.conf');

async function available(t: { skip(m: string): void }): Promise<boolean> {
  for (const tool of ['systemd-analyze', 'systemd-sysusers']) {
    if (await commandExists(tool)) continue;
    if (process.env.NBD_VAULT_REQUIRE_ALL === '1') assert.fail(`${tool} is not installed (Debian package systemd)`);
    t.skip(`${tool} is not installed (Debian package systemd)`);
    return false;
  }
  return true;
}

/** The unit with ExecStart pointing at this checkout's command (verify checks it is executable). */
function unitCopy(dir: string, name: string, edit: (text: string) => string = (s) => s): string {
  const text = readFileSync(UNIT, 'utf8');
  assert.match(text, /^ExecStart=\/usr\/local\/bin\/nbd-vault serve$/m);
  const path = join(dir, name);
  writeFileSync(path, edit(text.replace(/^ExecStart=\/usr\/local\/bin\/nbd-vault /m, `ExecStart=${CLI} `)));
  return path;
}

test('systemd-analyze verify accepts the unit without a warning, and catches a broken copy', async (t) => {
  if (!(await available(t))) return;
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-systemd-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ok = await runCommand('systemd-analyze', ['verify', '--man=no', unitCopy(dir, 'nbd-vault.service')], { cwd: dir });
  assert.equal(ok.stderr + ok.stdout, '', 'no warning at all');
  // The same check on a unit with a misspelt directive and a bad value: it must not stay silent.
  const bad = unitCopy(dir, 'broken.service', (s) => s.replace('ProtectSystem=strict', 'ProtectSystem=stricter\nProtectHomes=yes'));
  const r = await runCommand('systemd-analyze', ['verify', '--man=no', bad], { cwd: dir, okCodes: [0, 1] });
  assert.match(r.stderr, /Failed to parse protect system value, ignoring: stricter/);
  assert.match(r.stderr, /Unknown key 'ProtectHomes'/);
});

test('the sandbox: exposure at most 2.0 by systemd-analyze security, with the promised settings', async (t) => {
  if (!(await available(t))) return;
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-systemd-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const unit = unitCopy(dir, 'nbd-vault.service');
  const r = await runCommand('systemd-analyze', ['security', '--offline=true', '--no-pager', unit], { cwd: dir });
  const level = Number(/Overall exposure level for nbd-vault\.service: ([\d.]+)/.exec(r.stdout)?.[1]);
  assert.ok(level <= 2.0, `exposure ${level} (0 best, 10 worst):\n${r.stdout}`);
  for (const setting of ['User=/DynamicUser=', 'ProtectSystem=', 'PrivateTmp=', 'ProtectHome=', 'NoNewPrivileges=', 'PrivateDevices=']) {
    assert.match(r.stdout, new RegExp(`^✓ ${setting.replace(/[/=]/g, '\\$&')}`, 'm'), `${setting} is set`);
  }
});

test('the sysusers file creates the dedicated system user nbd-vault', async (t) => {
  if (!(await available(t))) return;
  const root = mkdtempSync(join(tmpdir(), 'nbd-vault-sysusers-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'etc'));
  await runCommand('systemd-sysusers', [`--root=${root}`, SYSUSERS]);
  const user = readFileSync(join(root, 'etc/passwd'), 'utf8').split('\n').find((l) => l.startsWith('nbd-vault:'));
  assert.ok(user, 'a passwd entry');
  const [, , uid, , , home, shell] = user.split(':');
  assert.ok(Number(uid) > 0 && Number(uid) < 1000, `a system uid, got ${uid}`);
  assert.equal(home, '/var/lib/nbd-vault');
  assert.equal(shell, '/usr/sbin/nologin');
  assert.match(readFileSync(UNIT, 'utf8'), /^User=nbd-vault$/m, 'the unit runs as that user');
});
