// What `serve` stops before its exports close (runServer's onShutdown): admin requests, cache
// warming and scheduled snapshots. Each ran on after the exports were flushed and closed: a
// snapshot of a closed engine, a warm job reading the store for minutes after "stopped".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { startAdminServer, adminRequest, adminSocketPath } from '../../src/cli/admin-socket';
import { WarmJobs } from '../../src/cli/cache-command';
import { SnapshotSchedule, parseInterval } from '../../src/cli/snapshot-schedule';
import { DiskCache, DISK_CACHE_MIN_BYTES } from '../../src/store/disk-cache';
import { DiskCacheStore } from '../../src/store/disk-cache-store';
import { isImmutableObjectKey } from '../../src/volume/object-keys';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { makeVault, logger, eventually, SettlingStore } from '../volume/vault-fixture';
import { PassThroughStore } from '../helpers/pass-through-store';
import type { StoredObject } from '../../src/store/object-store';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tempDir(t: { after(fn: () => void): void }, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('the admin socket: a stop answers the requests being handled, refuses new ones (ERR_SHUTDOWN) until the exports are closed, then stops listening', async (t) => {
  const dir = tempDir(t, 'nbd-vault-admin-');
  let release = () => {};
  const gate = new Promise<void>((r) => (release = r));
  let entered = () => {};
  const inHandler = new Promise<void>((r) => (entered = r));
  const admin = await startAdminServer(dir, 'vault-id', 'memory', async () => {
    entered();
    await gate;
    return 'taken';
  }, logger);
  const reply = adminRequest(dir, { op: 'ping' });
  await inHandler; // (a fixed sleep raced the request on a loaded machine)
  let refusing = false;
  const refused = admin.refuse().then(() => (refusing = true));
  await sleep(100);
  assert.equal(refusing, false, 'the stop waits for the request being handled');
  const late = await adminRequest(dir, { op: 'ping' });
  assert.equal(late?.ok, false);
  assert.equal(late?.ok === false && late.code, 'ERR_SHUTDOWN', 'a request during the stop: refused, not unanswered (a CLI command then says the server is stopping)');
  release();
  await refused;
  assert.deepEqual(await reply, { ok: true, vaultId: 'vault-id', store: 'memory', result: 'taken' });
  await admin.close();
  assert.equal(await adminRequest(dir, { op: 'ping' }), null, 'nobody listens after the close');
});

test('the admin socket: a failure in the server is ERR_IO and logged (it came back as ERR_INVALID_ARGUMENT, a usage error); a half-sent request is dropped after 10 s', async (t) => {
  const dir = tempDir(t, 'nbd-vault-admin-');
  const errors: string[] = [];
  const quiet = () => {};
  const seen = { info: quiet, debug: quiet, warn: quiet, error: (obj: Record<string, unknown>, msg: string) => errors.push(`${msg}: ${String(obj.err)}`) } as unknown as typeof logger;
  const admin = await startAdminServer(dir, 'vault-id', 'memory', async () => {
    throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  }, seen);
  t.after(() => admin.close());
  const reply = await adminRequest(dir, { op: 'ping' });
  assert.equal(reply?.ok, false);
  assert.equal(reply?.ok === false && reply.code, 'ERR_IO');
  assert.match(reply?.ok === false ? reply.message : '', /the server failed: .*ENOSPC/);
  assert.equal(errors.length, 1);
  assert.match(errors[0], /admin request failed: .*ENOSPC/);
  // half a request line, then nothing: the server lets the connection go
  const { createConnection } = await import('node:net');
  const sock = createConnection(adminSocketPath(dir));
  sock.on('error', () => {});
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write('{"op":"pi');
  const t0 = Date.now();
  // a byte every 3 s is no request line either (an idle timeout would never fire)
  const dribble = setInterval(() => sock.write('n'), 3_000);
  await new Promise<void>((resolve, reject) => {
    sock.once('close', () => resolve());
    setTimeout(() => reject(new Error('still open after 15 s')), 15_000).unref();
  }).finally(() => clearInterval(dribble));
  assert.ok(Date.now() - t0 >= 9_000, 'given its 10 s');
});

test('cache warming: a stop ends the jobs, and no job reads the store once it settled', async (t) => {
  let gets = 0;
  const slow = new (class extends PassThroughStore {
    override async get(key: string, into?: Buffer): Promise<StoredObject> {
      if (key.includes('/chunks/')) {
        gets++;
        await sleep(20);
      }
      return super.get(key, into);
    }
  })(new SettlingStore());
  const f = await makeVault(slow);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 64 * CHUNK_SIZE);
  const e = await f.vault.openEngine('v');
  for (let i = 0; i < 64; i++) await e.write(i * CHUNK_SIZE, Buffer.alloc(CHUNK_SIZE, i + 1));
  await e.close();
  const store = new DiskCacheStore(slow, await DiskCache.open(tempDir(t, 'nbd-vault-warm-'), 16 * DISK_CACHE_MIN_BYTES), isImmutableObjectKey);
  const jobs = new WarmJobs(f.vault, store);
  jobs.startOrReport('v');
  await eventually(() => gets > 0, 'the job reads chunks');
  await jobs.stop();
  const seen = gets;
  const report = jobs.report('v')!;
  assert.equal(report.finished, true);
  assert.match(report.error ?? '', /stopping/, 'the job says why it ended');
  assert.ok(report.done < 64, `stopped early (${report.done} of 64 objects)`);
  await sleep(200);
  assert.equal(gets, seen, 'no read of the store after the stop');
  assert.throws(() => jobs.startOrReport('v'), /stopping/, 'no job starts after the stop');
});

test('the snapshot schedule: a stop during a round lets the volume being snapshotted finish, and takes no other', async (t) => {
  const taken: string[] = [];
  let inFirst = () => {};
  const first = new Promise<void>((r) => (inFirst = r));
  const provider = {
    takeWrittenNames: () => ['a', 'b', 'c'],
    stillUnsnapshotted: () => {},
    snapshot: async (volume: string, name: string) => {
      inFirst();
      await sleep(100);
      taken.push(volume);
      return { name };
    },
  };
  const f = await makeVault();
  t.after(() => f.cleanup());
  const schedule = new SnapshotSchedule({ vault: f.vault, provider: provider as any, everyMs: 3_600_000, policy: null, logger });
  const round = schedule.tick();
  await first;
  await schedule.stop();
  await round;
  assert.deepEqual(taken, ['a'], 'the snapshot under way is taken, the other volumes wait for the next start');
  await schedule.tick();
  assert.deepEqual(taken, ['a'], 'a stopped schedule starts no round');
});

test('the snapshot schedule: a period past what a Node timer holds (24.8 days) waits, and takes no round at once', async (t) => {
  assert.equal(parseInterval('30d'), 30 * 86_400_000);
  for (const text of ['367d', '0s', '', '1x']) assert.throws(() => parseInterval(text), /from 1s to 366d/, text);
  const taken: string[] = [];
  const provider = { takeWrittenNames: () => ['a'], stillUnsnapshotted: () => {}, snapshot: async (volume: string, name: string) => (taken.push(volume), { name }) };
  const f = await makeVault();
  t.after(() => f.cleanup());
  // a 30-day interval timer used to fire every millisecond: 4 snapshots and 400 errors in 3 s
  const schedule = new SnapshotSchedule({ vault: f.vault, provider: provider as any, everyMs: 30 * 86_400_000, policy: null, logger });
  await sleep(300);
  await schedule.stop();
  assert.deepEqual(taken, []);
});

test('the snapshot schedule keeps its period: a round every everyMs', async (t) => {
  const taken: string[] = [];
  const provider = { takeWrittenNames: () => ['a'], stillUnsnapshotted: () => {}, snapshot: async (volume: string, name: string) => (taken.push(volume), { name }) };
  const f = await makeVault();
  t.after(() => f.cleanup());
  const schedule = new SnapshotSchedule({ vault: f.vault, provider: provider as any, everyMs: 200, policy: null, logger });
  await sleep(1_100);
  await schedule.stop();
  assert.ok(taken.length >= 3 && taken.length <= 6, `${taken.length} rounds in 1.1 s`);
});

test('a server that goes away while it handles an admin request: the command says so, not "malformed reply"', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-admin-gone-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // what a server killed mid-request leaves: the socket accepts, then closes with nothing said
  const server = createServer((sock) => sock.once('data', () => sock.end()));
  await new Promise<void>((r) => server.listen(adminSocketPath(dir), r));
  t.after(() => server.close());
  await assert.rejects(adminRequest(dir, { op: 'snapshot', volume: 'v', name: 's' }), (err: Error) => /the server went away before it answered \(stopped or killed\): the snapshot may or may not have been done/.test(err.message));
});
