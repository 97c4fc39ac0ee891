// --memory-limit bounds the process: a share of it is left to the runtime (V8, code, allocator)
// and never lent to caches or requests; serve runs V8 with a small young generation (replacing
// itself in place, same pid), unless the user chose a semi-space.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { MIN_MEMORY_LIMIT, runtimeShareOf } from '../../src/cli/serve-command';
import { sealShareOf } from '../../src/volume/seal-memory';
import { makeTestVault } from '../helpers/vault-server';

const MiB = 2 ** 20;

test("the runtime's share: a quarter, at most 512 MiB, never leaving the rest below the minimum", () => {
  const share = (limit: number) => runtimeShareOf(limit, sealShareOf(limit));
  assert.equal(share(1024 * MiB), 256 * MiB, 'the default 1 GiB: 256 MiB');
  assert.equal(share(256 * MiB), 64 * MiB);
  assert.equal(share(8192 * MiB), 512 * MiB, 'capped');
  assert.equal(share(MIN_MEMORY_LIMIT), 0, 'the minimum limit: nothing (one request must still fit)');
  assert.equal(share(160 * MiB), 16 * MiB, '160M: only what leaves 128M besides the 16M sealing share');
  for (const limit of [128, 129, 150, 200, 300, 1000, 5000].map((m) => m * MiB)) {
    const rest = limit - sealShareOf(limit) - share(limit);
    assert.ok(rest >= MIN_MEMORY_LIMIT - sealShareOf(limit) && share(limit) >= 0, `${limit / MiB} MiB: ${rest / MiB} MiB left for data`);
  }
});

test('serve replaces itself with a 16 MiB semi-space, same pid; a semi-space of the user wins', async (t) => {
  if (typeof (process as { execve?: unknown }).execve !== 'function') return t.skip('this Node has no process.execve: serve keeps the default');
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const srv = await v.serve();
  const args = cmdline(srv.process.pid!);
  assert.ok(args.includes('--max-semi-space-size=16'), `the serve process runs with the flag: ${args.join(' ')}`);
  assert.ok(args.includes('serve'), 'and still serves');
  assert.equal(await srv.stop(), 0, 'a clean stop: SIGTERM reached the replaced process');

  const own = await makeTestVault();
  t.after(() => own.cleanup());
  own.env.NODE_OPTIONS = '--max-semi-space-size=32';
  const srv2 = await own.serve();
  assert.ok(!cmdline(srv2.process.pid!).includes('--max-semi-space-size=16'), "NODE_OPTIONS' semi-space is kept");
  assert.equal(await srv2.stop(), 0);
});
