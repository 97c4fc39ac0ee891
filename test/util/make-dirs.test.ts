// makeDirs: mkdir -p, but a path under /proc or /sys fails at once (Node's recursive mkdir loops
// there forever: `--state /proc/x` hung a command at 100 % CPU).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDirs } from '../../src/util/make-dirs';

test('makeDirs makes every missing level with its mode, and fails at once under /proc and /sys', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-dirs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await makeDirs(join(dir, 'a', 'b', 'c'), 0o700);
  assert.equal(statSync(join(dir, 'a', 'b', 'c')).mode & 0o777, 0o700);
  await makeDirs(join(dir, 'a', 'b', 'c')); // there already: fine
  for (const bad of ['/proc/nbd-vault-test/state', '/sys/nbd-vault-test']) {
    const failed = await Promise.race([
      makeDirs(bad).then(() => 'made', (err: NodeJS.ErrnoException) => err.code),
      new Promise((r) => setTimeout(() => r('still running after 5 s'), 5000)),
    ]);
    assert.equal(failed, 'ENOENT', bad);
  }
});
