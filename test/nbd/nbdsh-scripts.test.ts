// Runs the python3-libnbd scripts in test/nbd/py/ (every option and command, error codes,
// simple and structured replies, out-of-range and zero-length requests, FUA/FLUSH,
// multi-connection visibility, DISC) against a real `nbd-vault serve` process: over memory
// exports, and over a vault on the fs store (volumes disk and ro, snapshot ro@s read-only).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO_ROOT, SYSTEM_PYTHON, runTool, startNbdServerProcess, type NbdServerProcess } from '../helpers/nbd-server';
import { makeTestVault, type TestVault, type VaultServer } from '../helpers/vault-server';

const PY = join(REPO_ROOT, 'test/nbd/py');
const SCRIPTS = ['nbd_options.py', 'nbd_commands.py'];

async function runScript(script: string, port: number, backend: string): Promise<void> {
  const r = await runTool(SYSTEM_PYTHON, [join(PY, script), String(port), backend], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `${script} (${backend}) failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /^PASS \d+ checks/m);
}

describe('memory exports', () => {
  let srv: NbdServerProcess;
  before(async () => {
    srv = await startNbdServerProcess({ memory: ['disk=64M', 'ro=1M:ro'] });
  });
  after(async () => {
    assert.equal(await srv.stop(), 0, 'graceful exit');
  });
  for (const script of SCRIPTS) {
    test(script, async () => {
      await runScript(script, srv.port, 'memory');
      assert.ok(srv.alive());
    });
  }
});

describe('vault volumes on the fs store', () => {
  let vault: TestVault;
  let srv: VaultServer;
  before(async () => {
    vault = await makeTestVault();
    await vault.cli('volume', 'create', 'disk', '--size', '64M');
    await vault.cli('volume', 'create', 'ro', '--size', '1M');
    await vault.cli('snapshot', 'create', 'ro', 's');
    srv = await vault.serve(['--default-volume', 'disk']);
  });
  after(async () => {
    try {
      assert.equal(await srv.stop(), 0, 'graceful exit');
      assert.doesNotMatch(srv.log(), /"level":50/, 'no error-level log lines');
      // what the scripts wrote is in the store: verify authenticates every object
      const verify = await vault.cliResult('verify', '--all');
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    } finally {
      await vault.cleanup();
    }
  });
  for (const script of SCRIPTS) {
    test(script, async () => {
      await runScript(script, srv.port, 'vault');
      assert.ok(srv.process.exitCode === null, 'server alive');
    });
  }
});
