// Crash safety: SIGKILL the server in the middle of an import. Every range acknowledged before a
// completed FLUSH reads back exactly after a restart, and the volume opens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { runCommand } from '../helpers/fuse-disk';
import { makeTestVault } from '../helpers/vault-server';

// Writes 1 MiB blocks of a seeded pattern (block i = bytes of sha256 chain from i), FLUSHes every
// 8 MiB and prints "flushed <bytes>" after each completed flush. Runs until killed or done.
const WRITER = `
import nbd, sys, hashlib
h = nbd.NBD()
h.connect_uri(sys.argv[1])
def block(i):
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (1048576 // 32))
total = int(sys.argv[2])
for i in range(total):
    h.pwrite(block(i), i * 1048576)
    if (i + 1) % 8 == 0:
        h.flush()
        print("flushed", (i + 1) * 1048576, flush=True)
h.shutdown()
`;

const CHECKER = `
import nbd, sys, hashlib
h = nbd.NBD()
h.connect_uri(sys.argv[1])
n = int(sys.argv[2]) // 1048576
for i in range(n):
    seed = hashlib.sha256(str(i).encode()).digest()
    if h.pread(1048576, i * 1048576) != seed * (1048576 // 32):
        print("MISMATCH", i); sys.exit(1)
print("ok", n)
`;

test('SIGKILL mid-import loses nothing that a completed FLUSH acknowledged', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'crash', '--size', '256M');
  const srv = await v.serve();
  t.after(() => srv.kill());
  const writer = spawn('/usr/bin/python3', ['-c', WRITER, srv.uri('crash'), '256'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let flushed = 0;
  let out = '';
  writer.stdout.on('data', (d) => {
    out += d;
    for (const m of out.matchAll(/flushed (\d+)/g)) flushed = Math.max(flushed, Number(m[1]));
  });
  const writerDone = new Promise((r) => writer.once('exit', r));
  const started = Date.now();
  while (flushed < 48 * 2 ** 20 && Date.now() - started < 120_000 && writer.exitCode === null) await new Promise((r) => setTimeout(r, 20));
  assert.ok(flushed >= 48 * 2 ** 20, `the writer got going (flushed ${flushed} bytes)`);
  await srv.kill(); // in the middle of the import: writes after the last flush are in flight
  await writerDone;
  assert.ok(flushed < 256 * 2 ** 20, 'the server died before the import finished');

  const srv2 = await v.serve();
  t.after(() => srv2.kill());
  const info = JSON.parse((await runCommand('qemu-img', ['info', '--output=json', srv2.uri('crash')])).stdout);
  assert.equal(info['virtual-size'], 256 * 2 ** 20, 'the volume opens');
  const check = await runCommand('/usr/bin/python3', ['-c', CHECKER, srv2.uri('crash'), String(flushed)], { okCodes: [0, 1], timeoutMs: 120_000 });
  assert.equal(check.code, 0, check.stdout + check.stderr);
  assert.match(check.stdout, new RegExp(`ok ${flushed / 2 ** 20}`));
  assert.equal(await srv2.stop(), 0);
});
