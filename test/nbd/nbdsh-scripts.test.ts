// Runs the python3-libnbd scripts in test/nbd/py/ (every option and command, error codes,
// simple and structured replies, out-of-range and zero-length requests, FUA/FLUSH,
// multi-connection visibility, DISC) against a real `nbd-vault serve` process: memory exports,
// then a vault volume and snapshot.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO_ROOT, SYSTEM_PYTHON, runTool, startNbdServerProcess, type NbdServerProcess } from '../helpers/nbd-server';
import { makeTestVault } from '../helpers/vault-server';

const PY = join(REPO_ROOT, 'test/nbd/py');
let srv: NbdServerProcess;

before(async () => {
  srv = await startNbdServerProcess({ memory: ['disk=64M', 'ro=1M:ro'] });
});
after(async () => {
  assert.equal(await srv.stop(), 0, 'graceful exit');
});

for (const script of ['nbd_options.py', 'nbd_commands.py']) {
  test(script, async () => {
    const r = await runTool(SYSTEM_PYTHON, [join(PY, script), String(srv.port)], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `${script} failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /^PASS \d+ checks/m);
    assert.ok(srv.alive());
  });
}

// The same scripts against a vault export: volume "disk" (64 MiB, the default volume) and the
// read-only snapshot "base@ro" of an empty 1 MiB volume, over the fs store, with the real server.
test('the libnbd scripts against vault exports (volume and snapshot)', { timeout: 300_000 }, async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'disk', '--size', '64M');
  await v.cli('volume', 'create', 'base', '--size', '1M');
  await v.cli('snapshot', 'base', 'ro');
  const vsrv = await v.serve(['--default-volume', 'disk']);
  t.after(() => vsrv.kill());
  const env = { ...process.env, NBD_TEST_RO_EXPORT: 'base@ro', NBD_TEST_EXPORTS: 'disk,base,base@ro', NBD_TEST_DESCRIPTION: 'nbd-vault volume', NBD_TEST_CHUNK_GRANULAR: '1' };
  for (const script of ['nbd_options.py', 'nbd_commands.py']) {
    const r = await runTool(SYSTEM_PYTHON, [join(PY, script), String(vsrv.port)], { timeoutMs: 240_000, env });
    assert.equal(r.code, 0, `${script} against the vault failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /^PASS \d+ checks/m);
    t.diagnostic(`${script} (vault): ${r.stdout.trim()}`);
  }
  assert.equal(await vsrv.stop(), 0, 'graceful exit');
  // what the scripts wrote is in the store: verify authenticates every object
  const verify = await v.cliResult('verify', '--all');
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});
