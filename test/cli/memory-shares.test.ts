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

test('serve replaces itself with a 16 MiB semi-space, two malloc arenas and huge pages for malloc, same pid; what the user chose wins', async (t) => {
  if (typeof (process as { execve?: unknown }).execve !== 'function') return t.skip('this Node has no process.execve: serve keeps the defaults');
  const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const environ = (pid: number) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
  const serveWith = async (env: Record<string, string>) => {
    const v = await makeTestVault();
    t.after(() => v.cleanup());
    delete v.env.MALLOC_ARENA_MAX;
    delete v.env.NODE_OPTIONS;
    delete v.env.GLIBC_TUNABLES;
    Object.assign(v.env, env);
    const srv = await v.serve();
    const pid = srv.process.pid!;
    const seen = { args: cmdline(pid), env: environ(pid) };
    assert.ok(seen.args.includes('serve'), 'it still serves');
    assert.equal(await srv.stop(), 0, 'a clean stop: SIGTERM reached the replaced process');
    return seen;
  };
  const plain = await serveWith({});
  assert.ok(plain.args.includes('--max-semi-space-size=16'), `runs with the flag: ${plain.args.join(' ')}`);
  assert.ok(plain.env.includes('MALLOC_ARENA_MAX=2'), 'and two arenas');
  assert.ok(plain.env.includes('GLIBC_TUNABLES=glibc.malloc.hugetlb=1'), 'and transparent huge pages for malloc');

  const own = await serveWith({ NODE_OPTIONS: '--max_semi_space_size=32', MALLOC_ARENA_MAX: '4', GLIBC_TUNABLES: 'glibc.malloc.tcache_count=0' });
  assert.ok(!own.args.includes('--max-semi-space-size=16'), "NODE_OPTIONS' semi-space (either spelling) is kept");
  assert.ok(own.env.includes('MALLOC_ARENA_MAX=4'), "the user's arena count is kept");
  assert.ok(own.env.includes('GLIBC_TUNABLES=glibc.malloc.tcache_count=0'), "the user's glibc tunables are kept");

  const off = await serveWith({ NBD_VAULT_REEXEC: '0' });
  assert.ok(!off.args.includes('--max-semi-space-size=16') && !off.env.includes('MALLOC_ARENA_MAX=2') && !off.env.some((e) => e.startsWith('GLIBC_TUNABLES=')), 'NBD_VAULT_REEXEC=0: as started');
});
