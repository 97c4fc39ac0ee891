// local-state.ts: the instance id and the newest root seen per volume, in the state directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalState } from '../../src/volume/local-state';
import type { Logger } from '../../src/util/log';
import { smallTmpfs } from '../helpers/small-tmpfs';

function stateDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-state-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('an instance-id file that holds no id (a write cut short by a full disk) is replaced, not re-read forever', async (t) => {
  const dir = stateDir(t);
  writeFileSync(join(dir, 'instance-id'), '');
  const id = await Promise.race([
    new LocalState(dir, 'v').instanceId(),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('instanceId() did not return within 5 s (it spun at 100 % CPU)')), 5_000).unref()),
  ]);
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.equal(readFileSync(join(dir, 'instance-id'), 'utf8').trim(), id, 'the file now holds it');
  assert.equal(await new LocalState(dir, 'v').instanceId(), id, 'and the next process reads the same id');
  // two processes creating it at once end with one id
  const fresh = stateDir(t);
  const [a, b] = await Promise.all([new LocalState(fresh, 'v').instanceId(), new LocalState(fresh, 'v').instanceId()]);
  assert.equal(a, b);
});

test('a state directory that cannot take the newest root logs a warning and fails nothing: the root is durable already', async (t) => {
  const dir = smallTmpfs(t, '64k');
  if (!dir) return;
  const warnings: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  const logger = { warn: (obj: Record<string, unknown>, msg: string) => warnings.push({ obj, msg }) } as unknown as Logger;
  const state = new LocalState(dir, 'vault1', logger);
  await state.recordSeq('vol', 6);
  assert.equal(await state.highestSeq('vol'), 6);
  try {
    writeFileSync(join(dir, 'filler'), Buffer.alloc(1 << 20)); // the state directory is full
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  }
  await state.recordSeq('vol', 7); // threw ENOSPC, which failed the flush that had committed seq 7
  await state.recordSeq('vol', 8);
  assert.equal(await state.highestSeq('vol'), 6, 'what it had');
  assert.equal(warnings.length, 1, 'named once (not once per commit)');
  assert.equal(warnings[0].obj.stateFile, join(dir, 'vault1', 'vol.json'));
  assert.equal(warnings[0].obj.code, 'ENOSPC');
  assert.match(warnings[0].msg, /cannot record the newest root in the state directory .*committed all the same/);
  // a readable one records as before
  const ok = new LocalState(stateDir(t), 'vault1', logger);
  await ok.recordSeq('vol', 3);
  assert.equal(await ok.highestSeq('vol'), 3);
});
