// The fs store's space reserve (space-reserve.ts) on a filesystem that really fills up: a small
// tmpfs (root; skipped otherwise, failed under NBD_VAULT_REQUIRE_ALL=1).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { FsStore } from '../../src/store';
import { RESERVE_BYTES, RESERVE_NAME } from '../../src/store/space-reserve';
import { fillFilesystem, smallTmpfs } from '../helpers/small-tmpfs';

/** Fill the filesystem: volume data until a put fails, then a file for whatever room is left. */
async function fill(store: FsStore, dir: string): Promise<string[]> {
  const stored: string[] = [];
  for (let i = 0; ; i++) {
    const key = `volumes/v/chunks/c${i}`;
    try {
      await store.put(key, randomBytes(256 << 10), { data: true });
      stored.push(key);
    } catch (err) {
      assert.match((err as Error).message, /ENOSPC.*is full/, 'a full filesystem is named as such');
      break;
    }
  }
  fillFilesystem(dir); // the rest, to the last block (the failed put removed its temp file)
  return stored;
}

test('a full fs store takes a metadata put on its reserve, never volume data, and remakes it once deletes freed room', async (t) => {
  const dir = smallTmpfs(t, '6m');
  if (!dir) return;
  const store = new FsStore(dir, { fsync: false });
  await store.put('vault', Buffer.from('{}'));
  const reserve = path.join(dir, RESERVE_NAME);
  assert.equal(statSync(reserve).size, RESERVE_BYTES, 'the first put made the reserve');
  const keys: string[] = [];
  for await (const o of store.list('')) keys.push(o.key);
  assert.deepEqual(keys, ['vault'], 'no listing shows the reserve');

  const stored = await fill(store, dir);
  assert.ok(stored.length >= 10, `data filled the disk (${stored.length} objects)`);
  assert.ok(existsSync(reserve), 'volume data never spends the reserve');
  await assert.rejects(store.put('volumes/v/journal/j1', Buffer.alloc(8192), { data: true }), /ENOSPC/);
  assert.ok(existsSync(reserve));

  // a session and records, as a delete writes them first, side by side: each fails on the full
  // disk, and each has the room the first of them freed
  await Promise.all([store.put('sessions/s1', Buffer.from('session')), store.put('volumes/v/snapshots/x', randomBytes(20_000)), store.put('volumes/v/snapshots/y', randomBytes(20_000))]);
  assert.ok(!existsSync(reserve), 'the metadata put spent the reserve');
  assert.equal((await store.get('volumes/v/snapshots/x')).body.length, 20_000);
  assert.equal((await store.get('sessions/s1')).body.toString(), 'session');

  await store.deleteMany(stored.slice(0, 8)); // 2 MiB
  await store.close(); // (remakes a spent reserve, when deletes did not yet)
  assert.equal(statSync(reserve).size, RESERVE_BYTES, 'the reserve is back once there was room');
});

test('without a reserve (reserveBytes 0) a full fs store refuses the same metadata put', async (t) => {
  const dir = smallTmpfs(t, '4m');
  if (!dir) return;
  const store = new FsStore(dir, { fsync: false, reserveBytes: 0 });
  await store.put('vault', Buffer.from('{}'));
  assert.ok(!existsSync(path.join(dir, RESERVE_NAME)));
  await fill(store, dir);
  await assert.rejects(store.put('sessions/s1', Buffer.from('session')), /ENOSPC/);
  await store.close();
});
