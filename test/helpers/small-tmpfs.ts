// A small tmpfs for tests of a full or read-only filesystem (needs root, as the suite's loop
// devices and FUSE do).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

interface TestLike {
  skip(message: string): void;
  after(fn: () => void): void;
}

/** Mounts a tmpfs of `size` ("8m") on `dir` (default: a fresh temporary directory), unmounted
 *  and removed after the test. Null, with the test skipped, where no tmpfs can be mounted
 *  (unless NBD_VAULT_REQUIRE_ALL=1: then the test fails). */
export function smallTmpfs(t: TestLike, size: string, dir?: string): string | null {
  const where = dir ?? mkdtempSync(join(tmpdir(), 'nbdv-tmpfs-'));
  mkdirSync(where, { recursive: true });
  const cleanup = () => {
    spawnSync('umount', [where]);
    if (!dir) rmSync(where, { recursive: true, force: true });
  };
  const mounted = process.getuid?.() === 0 ? spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', where], { encoding: 'utf8' }) : null;
  if (mounted?.status !== 0) {
    cleanup();
    const why = mounted ? `cannot mount a tmpfs: ${mounted.stderr.trim()}` : 'needs root to mount a tmpfs';
    if (process.env.NBD_VAULT_REQUIRE_ALL === '1') assert.fail(why);
    t.skip(why);
    return null;
  }
  t.after(cleanup);
  return where;
}

/** Fill the filesystem of `dir` to its last block with files named `filler-*` (which no store
 *  listing shows): big ones first, then single blocks. */
export function fillFilesystem(dir: string): void {
  for (const size of [64 << 10, 4096]) {
    for (let k = 0; ; k++) {
      try {
        writeFileSync(join(dir, `filler-${size}-${k}`), Buffer.alloc(size));
      } catch {
        break;
      }
    }
  }
}
