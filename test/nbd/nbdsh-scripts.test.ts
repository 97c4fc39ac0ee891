// Runs the python3-libnbd scripts in test/nbd/py/ (every option and command, error codes,
// simple and structured replies, out-of-range and zero-length requests, FUA/FLUSH,
// multi-connection visibility, DISC) against a real `nbd-vault serve` process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO_ROOT, SYSTEM_PYTHON, runTool, startNbdServerProcess, type NbdServerProcess } from '../helpers/nbd-server';

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
