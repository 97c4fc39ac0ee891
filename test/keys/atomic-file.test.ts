// Small private files written atomically (key files, the local state's sequence numbers).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writePrivateFileAtomic } from '../../src/keys/atomic-file';
import { smallTmpfs } from '../helpers/small-tmpfs';

test('a full filesystem: the write fails, the old file stays, and no temp file is left behind', async (t) => {
  const dir = smallTmpfs(t, '1m');
  if (!dir) return;
  const target = join(dir, 'state.json');
  await writePrivateFileAtomic(target, Buffer.from('old'), 'replace');
  writeFileSync(join(dir, 'filler'), Buffer.alloc(1024 * 1024 - 64 * 1024)); // nearly full
  for (let i = 0; i < 3; i++) await assert.rejects(writePrivateFileAtomic(target, Buffer.alloc(256 * 1024, 1), 'replace'), /ENOSPC/);
  assert.equal(readFileSync(target, 'utf8'), 'old', 'the old file is intact');
  assert.deepEqual(readdirSync(dir).sort(), ['filler', 'state.json'], 'no temp file left');
});
