// Small private files written atomically (key files, the local state's sequence numbers).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writePrivateFileAtomic } from '../../src/keys/atomic-file';

test('a full filesystem: the write fails, the old file stays, and no temp file is left behind', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root to mount a small tmpfs');
  const dir = mkdtempSync(join(tmpdir(), 'nbdv-atomic-'));
  t.after(() => {
    spawnSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { encoding: 'utf8' });
  if (mounted.status !== 0) {
    if (process.env.NBD_VAULT_REQUIRE_ALL === '1') assert.fail(`mount tmpfs: ${mounted.stderr}`);
    return t.skip(`cannot mount a tmpfs: ${mounted.stderr.trim()}`);
  }
  const target = join(dir, 'state.json');
  await writePrivateFileAtomic(target, Buffer.from('old'), 'replace');
  writeFileSync(join(dir, 'filler'), Buffer.alloc(1024 * 1024 - 64 * 1024)); // nearly full
  for (let i = 0; i < 3; i++) await assert.rejects(writePrivateFileAtomic(target, Buffer.alloc(256 * 1024, 1), 'replace'), /ENOSPC/);
  assert.equal(readFileSync(target, 'utf8'), 'old', 'the old file is intact');
  assert.deepEqual(readdirSync(dir).sort(), ['filler', 'state.json'], 'no temp file left');
});
