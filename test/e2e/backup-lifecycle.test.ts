// The backup lifecycle from the command line, with real clients: snapshot prune and keep flags,
// serve --snapshot-every --prune, sync to a replica (fs→fs, RGW→fs, fs→RGW), then serving the
// replica to nbdcopy and qemu-img and restoring from it as the README describes.
import { test } from 'node:test';
import { adminRequest } from '../../src/cli/admin-socket';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '../helpers/fuse-disk';
import { CLI, makeTestVault, s3Available, startVaultServer, testS3Url, type TestVault } from '../helpers/vault-server';
import { spawn } from 'node:child_process';

const MiB = 2 ** 20;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? files(join(dir, n)) : [join(dir, n)]));
}

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A volume `vol` with two snapshots of different data; returns their images. */
async function twoSnapshots(v: TestVault): Promise<{ s1: Buffer; s2: Buffer }> {
  await v.cli('volume', 'create', 'vol', '--size', '16M');
  const s1 = Buffer.alloc(16 * MiB);
  randomBytes(6 * MiB).copy(s1, MiB);
  writeFileSync(join(v.dir, 's1.img'), s1);
  await v.cli('import', join(v.dir, 's1.img'), 'vol');
  await v.cli('snapshot', 'create', 'vol', 's1');
  const s2 = Buffer.from(s1);
  randomBytes(3 * MiB).copy(s2, 9 * MiB);
  writeFileSync(join(v.dir, 's2.img'), s2);
  await v.cli('import', join(v.dir, 's2.img'), 'vol');
  await v.cli('snapshot', 'create', 'vol', 's2', '--keep');
  return { s1, s2 };
}

test('snapshot prune and keep flags from the command line; serve --snapshot-every --prune', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vol', '--size', '8M');
  await v.cli('snapshot', 'create', 'vol', 'a', '--keep');
  await v.cli('snapshot', 'create', 'vol', 'b');
  await v.cli('snapshot', 'create', 'vol', 'c');
  const list = async () => JSON.parse((await v.cli('snapshot', 'list', 'vol', '--json')).stdout).map((s: any) => `${s.name}${s.keep ? '+keep' : ''}`);
  assert.deepEqual(await list(), ['a+keep', 'b', 'c']);

  const dry = JSON.parse((await v.cli('snapshot', 'prune', 'vol', '--keep-last', '1', '--dry-run', '--json')).stdout);
  assert.deepEqual(dry.volumes[0].snapshots.map((d: any) => [d.name, d.keep, d.reasons]), [
    ['c', true, ['last snapshot']],
    ['b', false, []],
    ['a', true, ['keep flag']],
  ]);
  assert.deepEqual(await list(), ['a+keep', 'b', 'c'], '--dry-run changes nothing');
  const text = (await v.cli('snapshot', 'prune', '--all', '--keep-last', '1')).stdout;
  assert.match(text, /vol: did keep 2, did remove 1 snapshot/);
  assert.match(text, /remove {2}vol@b/);
  assert.deepEqual(await list(), ['a+keep', 'c']);
  const refused = await v.cliResult('snapshot', 'delete', 'vol', 'a');
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /has the keep flag/);
  await v.cli('snapshot', 'keep', 'vol', 'a', '--clear');
  assert.deepEqual(await list(), ['a', 'c']);
  const usage = await v.cliResult('snapshot', 'prune', '--keep-last', '1');
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /give one VOLUME or --all/);
  const empty = await v.cliResult('snapshot', 'prune', 'vol', '--keep-daily', '0');
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /keeps nothing/);
  const badPolicy = await v.cliResult('serve', '--snapshot-every', '1s', '--prune', 'fortnightly=2');
  assert.equal(badPolicy.code, 2);
  assert.match(badPolicy.stderr, /unknown rule "fortnightly"/);

  // a name of the schedule's form is refused by hand; one that only starts like it is the user's
  const reserved = await v.cliResult('snapshot', 'create', 'vol', 'auto-2026-01-01T00-00-00Z');
  assert.equal(reserved.code, 2);
  assert.match(reserved.stderr, /the form of the names the server's snapshot schedule gives/);
  await v.cli('snapshot', 'create', 'vol', 'auto-before-upgrade');
  const scheduled = (n: string) => /^auto-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ$/.test(n);

  // the schedule: every second, the volume a client wrote since the last round is snapshotted;
  // `auto-` ones pruned to 2
  const srv = await v.serve(['--snapshot-every', '1s', '--prune', 'last=2']);
  t.after(() => srv.kill());
  // (a client of the admin socket other than this build's CLI is refused the schedule's names too)
  const asked = await adminRequest(join(v.dir, 'state'), { op: 'snapshot', volume: 'vol', name: 'auto-2026-01-01T00-00-00Z' });
  assert.equal(asked?.ok, false);
  assert.match(asked?.ok === false ? asked.message : '', /the form of the names the server's snapshot schedule gives/);
  const write = () => runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', srv.uri('vol')]);
  await write();
  const seen = new Set<string>();
  await until('3 scheduled snapshots, pruned to 2', async () => {
    const names: string[] = (await list()).filter(scheduled);
    names.forEach((n) => seen.add(n));
    if (seen.size >= 3 && names.length === 2) return true;
    await write();
    return false;
  });
  // unchanged, the volume gets no more (it did, every period, while it was open). The loop's
  // last write may still be waiting for its round (or for one still running): let it pass first
  await new Promise((r) => setTimeout(r, 3_000));
  const before = (await list()).filter(scheduled);
  await new Promise((r) => setTimeout(r, 2_500));
  assert.deepEqual((await list()).filter(scheduled), before, 'no snapshot of an unchanged volume');
  assert.deepEqual((await list()).filter((n: string) => !scheduled(n)), ['a', 'c', 'auto-before-upgrade'], 'snapshots taken by hand are left alone');
  assert.equal(await srv.stop(), 0);
  assert.match(srv.log(), /"msg":"scheduled snapshot taken"/);
  // (read once the server stopped: a running schedule may prune a snapshot while it is read)
  const auto = (await list()).filter(scheduled).at(-1)!;
  const out = join(v.dir, 'auto.img');
  await v.cli('export', `vol@${auto}`, out);
  const img = readFileSync(out);
  assert.ok(img.subarray(0, MiB).every((b) => b === 0x5a) && img.subarray(MiB).every((b) => b === 0), 'a scheduled snapshot holds what the client wrote');
});

test('a snapshot of a clone cannot be cloned: the refusal says how to copy it, and following it keeps the clone\'s own writes', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const { s1 } = await twoSnapshots(v);
  await v.cli('clone', 'vol@s1', 'c');
  const mine = Buffer.from(s1);
  randomBytes(2 * MiB).copy(mine, 12 * MiB); // what only the clone wrote
  writeFileSync(join(v.dir, 'mine.img'), mine);
  await v.cli('import', join(v.dir, 'mine.img'), 'c');
  await v.cli('snapshot', 'create', 'c', 'cs');
  const refused = await v.cliResult('clone', 'c@cs', 'd');
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /"c" is itself a clone/);
  // the advice, run as given (FILE: a path of the user's)
  const advice = [...refused.stderr.matchAll(/`nbd-vault ([^`]+)`/g)].map((m) => m[1].replace('FILE', join(v.dir, 'copy.img')).split(' '));
  assert.equal(advice.length, 3, refused.stderr);
  for (const args of advice) await v.cli(...args);
  await v.cli('export', 'd', join(v.dir, 'd.img'));
  assert.equal(sha(readFileSync(join(v.dir, 'd.img'))), sha(mine), 'the copy holds the clone\'s snapshot, its own writes included');
});

test('a snapshot a client is restoring from is not deleted under it: snapshot delete and prune beside the server refuse, the restore completes', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const { s1 } = await twoSnapshots(v);
  const srv = await v.serve();
  t.after(() => srv.kill());
  // a slow restore: qemu-io reads vol@s1 in pieces, pausing between them (~30 s: a refused delete
  // takes up to the 5 s heartbeat period to see the reader alive)
  const args = ['-f', 'raw', '-r'];
  for (let i = 0; i < 16; i++) args.push('-c', `read -P ${s1[i * MiB]} ${i * MiB} 1`, '-c', 'sleep 2000');
  const restore = runCommand('qemu-io', [...args, srv.uri('vol@s1')], { timeoutMs: 90_000 });
  restore.catch(() => {}); // (awaited below; a failure before that must not go unhandled)
  await new Promise((r) => setTimeout(r, 1000));
  const refused = await v.cliResult('snapshot', 'delete', 'vol', 's1');
  assert.equal(refused.code, 1, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /snapshot vol@s1 is being read by nbd-vault \(serve\) \(pid \d+ on .*\): delete it once the reader is done/);
  // a dry run says what the run does (it listed vol@s1 as removed)
  const dry = await v.cliResult('snapshot', 'prune', 'vol', '--keep-last', '1', '--json', '--dry-run');
  assert.equal(dry.code, 0, dry.stderr);
  assert.deepEqual(JSON.parse(dry.stdout).volumes[0].snapshots.map((d: { name: string; keep: boolean; reasons: string[] }) => [d.name, d.keep, d.reasons]), [['s2', true, ['keep flag', 'last snapshot']], ['s1', true, ['being read']]]);
  const pruned = await v.cliResult('snapshot', 'prune', 'vol', '--keep-last', '1', '--json');
  assert.equal(pruned.code, 0, pruned.stderr);
  assert.deepEqual(JSON.parse(pruned.stdout).volumes[0].snapshots.map((d: { name: string; keep: boolean; reasons: string[] }) => [d.name, d.keep, d.reasons]), [['s2', true, ['keep flag', 'last snapshot']], ['s1', true, ['being read']]]);
  const r = await restore;
  assert.doesNotMatch(r.stdout + r.stderr, /fail|error/i, r.stdout + r.stderr);
  assert.equal((r.stdout.match(/^read 1\/1 bytes/gm) ?? []).length, 16);
  // the server stopped (its snapshot export closed): the snapshot goes
  assert.equal(await srv.stop(), 0);
  await v.cli('snapshot', 'delete', 'vol', 's1');
  assert.deepEqual((JSON.parse((await v.cli('snapshot', 'list', 'vol', '--json')).stdout) as Array<{ name: string }>).map((x) => x.name), ['s2']);
});

test('sync fs→fs: --json, incremental, verify and tampering, then serve the replica and restore from it', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const { s1, s2 } = await twoSnapshots(v);
  const replica = join(v.dir, 'replica');
  const first = await v.cli('sync', '--to', replica, '--json');
  const r1 = JSON.parse(first.stdout);
  assert.deepEqual(Object.keys(r1).slice(0, 4), ['copied', 'bytes', 'skipped', 'snapshots']);
  assert.ok(r1.copied > 0 && r1.bytes > 9 * MiB, `copied ${r1.copied} objects, ${r1.bytes} bytes`);
  assert.deepEqual(r1.snapshots.map((s: any) => [s.export, s.status]), [['vol@s1', 'copied'], ['vol@s2', 'copied']]);
  assert.doesNotMatch(first.stderr, /\[#|%/, 'no progress bar in a pipe');
  const r2 = JSON.parse((await v.cli('sync', '--to', replica, '--json')).stdout);
  assert.deepEqual([r2.copied, r2.bytes], [0, 0], 'a second sync copies nothing');
  assert.ok(r2.skipped > 0);

  // the replica is a vault of its own: its own state directory, the same keys
  const state2 = join(v.dir, 'state-replica');
  const onReplica = (...args: string[]) => v.cliResult(...args, '--store', replica, '--state', state2);
  const ok = await onReplica('verify', '--all', '--json');
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).ok, true);

  // restore as the README says: clone a snapshot into a writable volume, serve, read
  assert.equal((await onReplica('clone', 'vol@s1', 'restored')).code, 0);
  const srv = await startVaultServer(v.env, v.dir, ['--store', replica, '--state', state2]);
  t.after(() => srv.kill());
  for (const [name, want] of [['vol@s1', s1], ['vol@s2', s2], ['vol', s2], ['restored', s1]] as const) {
    const out = join(v.dir, `out-${name}.img`);
    await runCommand('nbdcopy', [srv.uri(name), out]);
    assert.equal(sha(readFileSync(out)), sha(want), `${name} served from the replica is byte-identical`);
  }
  await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', srv.uri('vol@s2'), join(v.dir, 's2.img')]);
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 64k', srv.uri('restored')]);
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'read -P 0x11 0 64k', srv.uri('restored')]);
  assert.equal(await srv.stop(), 0);

  // tampering with the replica: verify fails and names the damage
  const chunk = files(replica).find((p) => p.includes('/chunks/'))!;
  const bytes = readFileSync(chunk);
  bytes[bytes.length - 30] ^= 0x40;
  writeFileSync(chunk, bytes);
  const bad = await onReplica('verify', '--all', '--json');
  assert.equal(bad.code, 1);
  assert.equal(JSON.parse(bad.stdout).ok, false);
});

test('sync while a server writes the source (nbdcopy, qemu-io) and snapshots through it: every replica snapshot is identical', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const { s1, s2 } = await twoSnapshots(v);
  const replica = join(v.dir, 'replica');
  const srv = await v.serve();
  t.after(() => srv.kill());
  const s3 = randomBytes(16 * MiB);
  writeFileSync(join(v.dir, 's3.img'), s3);
  // a client writes the whole volume while a sync runs
  const [, during] = await Promise.all([runCommand('nbdcopy', [join(v.dir, 's3.img'), srv.uri('vol')]), v.cli('sync', '--to', replica, '--json')]);
  assert.ok(JSON.parse(during.stdout).snapshots.length >= 2);
  await v.cli('snapshot', 'create', 'vol', 's3'); // through the running server's admin socket
  // and again: writes and a sync at once, then a last sync
  await Promise.all([runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 8M', srv.uri('vol')]), v.cli('sync', '--to', replica)]);
  const last = JSON.parse((await v.cli('sync', '--to', replica, '--json')).stdout);
  assert.deepEqual(last.snapshots.map((x: any) => x.export), ['vol@s1', 'vol@s2', 'vol@s3']);
  assert.equal(await srv.stop(), 0);
  const state2 = join(v.dir, 'state-replica');
  const ok = await v.cliResult('verify', '--all', '--json', '--store', replica, '--state', state2);
  assert.equal(ok.code, 0, ok.stderr);
  for (const [name, want] of [['s1', s1], ['s2', s2], ['s3', s3]] as const) {
    const out = join(v.dir, `r-${name}.img`);
    await v.cli('export', `vol@${name}`, out, '--store', replica, '--state', state2);
    assert.equal(sha(readFileSync(out)), sha(want), `replica vol@${name}`);
  }
});

test('a sync killed midway (SIGKILL) and run again ends complete; the half-done replica verifies', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const total = 24; // chunks: enough that a 10 ms poll catches the sync well before its end
  await v.cli('volume', 'create', 'big', '--size', `${total * 4}M`);
  const img = randomBytes(total * 4 * MiB);
  writeFileSync(join(v.dir, 'big.img'), img);
  await v.cli('import', join(v.dir, 'big.img'), 'big');
  await v.cli('snapshot', 'create', 'big', 'one');
  const replica = join(v.dir, 'replica');
  const child = spawn(process.execPath, [CLI, 'sync', '--to', replica, '--parallel', '1'], { env: v.env, cwd: v.dir, stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  const chunks = () => {
    try {
      return files(replica).filter((p) => p.includes('/chunks/') && !p.includes('~tmp-')).length;
    } catch {
      return 0;
    }
  };
  const deadline = Date.now() + 120_000;
  while (chunks() < 3 && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  // freeze it first, so that what is counted below is what the kill leaves behind
  const killed = child.exitCode === null && child.kill('SIGSTOP');
  child.kill('SIGKILL');
  await exited;
  const copied = chunks();
  if (killed && copied < total) {
    assert.ok(copied >= 3, `the killed run copied some chunks (${copied})`);
    // the replica shows no volume yet (its metadata goes last), and what it shows verifies
    const half = await v.cliResult('verify', '--all', '--json', '--store', replica, '--state', join(v.dir, 'state-half'));
    assert.equal(half.code, 0, half.stderr);
    assert.deepEqual(JSON.parse(half.stdout).results, []);
  } else t.diagnostic(`the sync copied all ${copied} chunks before it could be killed: only the rerun is checked`);
  const rerun = JSON.parse((await v.cli('sync', '--to', replica, '--json')).stdout);
  if (killed) assert.ok(rerun.skipped >= copied, `the rerun skips what the killed run copied (${rerun.skipped} of ${copied})`);
  assert.deepEqual(rerun.snapshots.map((x: any) => [x.export, x.status]), [['big@one', 'copied']]);
  const out = join(v.dir, 'out.img');
  await v.cli('export', 'big@one', out, '--store', replica, '--state', join(v.dir, 'state-2'));
  assert.equal(sha(readFileSync(out)), sha(img));
});

test('sync RGW→fs and fs→RGW: the replicas verify and serve the same bytes', async (t) => {
  if (!s3Available(t)) return;
  const v = await makeTestVault({ s3: true });
  t.after(() => v.cleanup());
  const { s2 } = await twoSnapshots(v);
  const local = join(v.dir, 'local-replica');
  const r1 = JSON.parse((await v.cli('sync', '--to', local, '--json')).stdout);
  assert.equal(r1.snapshots.length, 2);
  // fs → RGW: the local replica is a source like any vault
  const u = new URL(testS3Url()!);
  u.pathname = `${u.pathname.replace(/\/$/, '')}/sync-${randomBytes(6).toString('hex')}`;
  const remote = u.toString();
  const state2 = join(v.dir, 'state-2');
  mkdirSync(state2);
  const r2 = JSON.parse((await v.cli('sync', '--store', local, '--state', state2, '--to', remote, '--json')).stdout);
  assert.deepEqual([r2.copied, r2.bytes], [r1.copied, r1.bytes], 'the same objects, the same bytes');
  const again = JSON.parse((await v.cli('sync', '--store', local, '--state', state2, '--to', remote, '--json')).stdout);
  assert.equal(again.copied, 0);
  for (const store of [local, remote]) {
    const ok = await v.cliResult('verify', '--all', '--json', '--store', store, '--state', join(v.dir, 'state-verify'));
    assert.equal(ok.code, 0, ok.stderr);
    const out = join(v.dir, 'out.img');
    await v.cli('export', 'vol@s2', out, '--store', store, '--state', join(v.dir, 'state-verify'));
    assert.equal(sha(readFileSync(out)), sha(s2), `vol@s2 from ${store.startsWith('s3') ? 'RGW' : 'fs'}`);
  }
});
