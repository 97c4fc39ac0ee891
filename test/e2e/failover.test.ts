// Reconnect and failover with a real client: qemu-io (QEMU's own NBD client) with
// reconnect-delay writes a 1 MiB pattern and flushes, again and again, while the server is
// restarted (SIGTERM), killed and replaced by a server from another state directory (SIGKILL),
// or frozen past its lease (SIGSTOP/SIGCONT). The client must see no error, every acknowledged
// write must read back, and the frozen server must not write after it wakes. Takeover times are
// printed. Run on the fs store and, when the test gateway is there, on RGW. (qemu-io runs under
// stdbuf -oL: its progress lines must arrive as they happen, not when it exits.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '../helpers/fuse-disk';
import { makeTestVault, startVaultServer, testS3Url, s3Available, type TestVault, type VaultServer } from '../helpers/vault-server';

const MiB = 2 ** 20;
const ROUNDS = 16;
const pattern = (i: number) => (i % 250) + 1;

function imageOpts(port: number, name: string, reconnectDelay = 60): string {
  return `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=${name},reconnect-delay=${reconnectDelay}`;
}

interface Writer {
  /** how many "wrote" lines so far, with the time each arrived */
  readonly wroteAt: number[];
  readonly done: Promise<{ code: number | null; out: string }>;
  kill(): void;
}

/** qemu-io: round i writes pattern(i) at i MiB (with FUA when `fua`), flushes, sleeps. */
function startWriter(port: number, name: string, opts: { fua: boolean; sleepMs: number; first?: number; rounds?: number }): Writer {
  const args: string[] = [];
  const first = opts.first ?? 0;
  for (let i = first; i < first + (opts.rounds ?? ROUNDS); i++) {
    args.push('-c', `write ${opts.fua ? '-f ' : ''}-P ${pattern(i)} ${i * MiB} ${MiB}`, '-c', 'flush', '-c', `sleep ${opts.sleepMs}`);
  }
  const child = spawn('stdbuf', ['-oL', 'qemu-io', '--image-opts', ...args, imageOpts(port, name)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const wroteAt: number[] = [];
  let out = '';
  const onData = (d: Buffer) => {
    out += d;
    const n = (out.match(/^wrote \d+\/\d+ bytes/gm) ?? []).length;
    while (wroteAt.length < n) wroteAt.push(Date.now());
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const done = new Promise<{ code: number | null; out: string }>((r) => child.once('exit', (code) => r({ code, out })));
  return { wroteAt, done, kill: () => child.kill('SIGKILL') };
}

async function waitFor(what: string, cond: () => boolean, ms = 120_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Every round's pattern reads back, through a fresh connection. */
async function verifyRounds(port: number, name: string, from: number, to: number): Promise<void> {
  const args: string[] = [];
  for (let i = from; i < to; i++) args.push('-c', `read -P ${pattern(i)} ${i * MiB} ${MiB}`);
  const r = await runCommand('qemu-io', ['-f', 'raw', ...args, `nbd://127.0.0.1:${port}/${name}`], { timeoutMs: 120_000, okCodes: [0, 1] });
  assert.doesNotMatch(r.stdout + r.stderr, /verification failed|failed/i, `read back:\n${r.stdout}${r.stderr}`);
  assert.equal((r.stdout.match(/^read \d+\/\d+ bytes/gm) ?? []).length, to - from, r.stdout);
}

function assertClean(res: { code: number | null; out: string }, rounds = ROUNDS): void {
  assert.doesNotMatch(res.out, /failed|error/i, `the client saw no error:\n${res.out}`);
  assert.equal(res.code, 0, res.out);
  assert.equal((res.out.match(/^wrote \d+\/\d+ bytes/gm) ?? []).length, rounds, res.out);
}

/** The client's pause: the longest gap between two consecutive acknowledged writes (normally
 *  ~150 ms: the disruption is the longest one). */
function longestPause(wroteAt: number[]): number {
  let gap = 0;
  for (let i = 1; i < wroteAt.length; i++) gap = Math.max(gap, wroteAt[i] - wroteAt[i - 1]);
  return gap;
}

function otherState(v: TestVault): string {
  return mkdtempSync(join(v.dir, 'state-b-'));
}


/** Skip the RGW variant only where no gateway is configured and none is required. */
function noS3(store: string): string | undefined {
  return store === 's3' && !testS3Url() && process.env.NBD_VAULT_REQUIRE_S3 !== '1' ? 'no S3 gateway' : undefined;
}

for (const store of ['fs', 's3'] as const) {
  const label = store === 'fs' ? 'fs store' : 'RGW';

  test(`${label}: SIGTERM restart (same state dir): the writing client pauses, sees no error, loses nothing`, { skip: noS3(store) }, async (t) => {
    if (store === 's3' && !s3Available(t)) return;
    const v = await makeTestVault({ s3: store === 's3' });
    t.after(() => v.cleanup());
    await v.cli('volume', 'create', 'vm', '--size', '64M');
    const a = await v.serve();
    const w = startWriter(a.port, 'vm', { fua: false, sleepMs: 150 });
    await waitFor('5 writes', () => w.wroteAt.length >= 5);
    assert.ok(w.wroteAt.length < ROUNDS - 4, 'the restart happens while the client is writing');
    assert.equal(await a.stop(), 0, a.log());
    const b = await startVaultServer(v.env, v.dir, ['--listen', `127.0.0.1:${a.port}`]);
    t.after(() => b.kill());
    const res = await w.done;
    assertClean(res);
    const pause = longestPause(w.wroteAt);
    console.log(`# ${label}: SIGTERM restart: client paused ${pause} ms`);
    assert.doesNotMatch(b.log(), /taking over the volume lease/, 'the lease was released at shutdown: taken at once');
    await verifyRounds(b.port, 'vm', 0, ROUNDS);
    assert.equal(await b.stop(), 0);
  });

  test(`${label}: SIGKILL, then a server from another state dir on the same address takes over`, { skip: noS3(store) }, async (t) => {
    if (store === 's3' && !s3Available(t)) return;
    const v = await makeTestVault({ s3: store === 's3' });
    t.after(() => v.cleanup());
    await v.cli('volume', 'create', 'vm', '--size', '64M');
    const a = await v.serve();
    // FUA: a write is acknowledged once durable, so a crash cannot lose an acknowledged write
    // (without FUA, a crash loses what was acknowledged since the last flush: docs/RECONNECT.md).
    const w = startWriter(a.port, 'vm', { fua: true, sleepMs: 150 });
    await waitFor('5 writes', () => w.wroteAt.length >= 5);

    assert.ok(w.wroteAt.length < ROUNDS - 4, 'the kill happens while the client is writing');
    await a.kill();
    const b = await startVaultServer(v.env, v.dir, ['--listen', `127.0.0.1:${a.port}`, '--state', otherState(v)]);
    t.after(() => b.kill());
    const res = await w.done;
    assertClean(res);
    const takeover = /"msg":"taking over the volume lease"/.test(b.log());
    assert.ok(takeover, `the second server took the lease over:\n${b.log()}`);
    const pause = longestPause(w.wroteAt);
    console.log(`# ${label}: SIGKILL failover to another server: client paused ${pause} ms (lease ttl 10 s, plus qemu's reconnect backoff)`);
    assert.ok(pause < 40_000, `paused ${pause} ms`);
    await verifyRounds(b.port, 'vm', 0, ROUNDS);
    assert.equal(await b.stop(), 0);
  });

  test(`${label}: SIGKILL, then a client asks another server at once: it waits out the killed server's lease instead of being refused`, { skip: noS3(store) }, async (t) => {
    if (store === 's3' && !s3Available(t)) return;
    const v = await makeTestVault({ s3: store === 's3' });
    t.after(() => v.cleanup());
    await v.cli('volume', 'create', 'vm', '--size', '16M');
    const a = await v.serve(['--lease-ttl', '6']);
    const w = startWriter(a.port, 'vm', { fua: true, sleepMs: 60_000, rounds: 1 });
    t.after(() => w.kill());
    await waitFor('the write', () => w.wroteAt.length >= 1);
    await a.kill();
    // a handshake shorter than the lease: qemu does not retry a first connection, so a refusal
    // here would fail a VM's start
    const b = await startVaultServer(v.env, v.dir, ['--state', otherState(v), '--handshake-timeout', '2']);
    t.after(() => b.kill());
    const t0 = performance.now();
    const r = await runCommand('qemu-io', ['-f', 'raw', '-c', `read -P ${pattern(0)} 0 ${MiB}`, `nbd://127.0.0.1:${b.port}/vm`], { timeoutMs: 60_000, okCodes: [0, 1] });
    const took = performance.now() - t0;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /read 1048576\/1048576 bytes/);
    assert.doesNotMatch(r.stdout + r.stderr, /fail|not ready/i);
    assert.ok(took > 2000, `served after ${Math.round(took)} ms, past the 2 s handshake: the client waited with the takeover`);
    assert.match(b.log(), /"msg":"export waits for the lease of a server that stopped to run out: the client waits with it"/);
    assert.match(b.log(), /"msg":"taking over the volume lease"/);
    assert.equal(await b.stop(), 0);
  });

  test(`${label}: SIGSTOP past the lease, another server takes over, SIGCONT: the old one writes nothing`, { skip: noS3(store) }, async (t) => {
    if (store === 's3' && !s3Available(t)) return;
    const v = await makeTestVault({ s3: store === 's3' });
    t.after(() => v.cleanup());
    await v.cli('volume', 'create', 'vm', '--size', '64M');
    // A 3 s lease keeps this quick (SIGKILL shows the default's figure); debug: every root commit is logged.
    const a = await v.serve(['--log-level', 'debug', '--lease-ttl', '3']);
    t.after(() => a.process.kill('SIGCONT'));
    // Client 1 writes and flushes rounds 0 and 1, then client 2 writes 0xee over round 0 without
    // a flush: dirty data that the frozen server would commit when it wakes up (unless its
    // auto-commit got to it before the freeze: then the new server sees it, which is fine).
    const c1 = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 1M', '-c', 'write -P 2 1M 1M', '-c', 'flush', `nbd://127.0.0.1:${a.port}/vm`], { timeoutMs: 60_000 });
    assert.equal(c1.code, 0, c1.stderr);
    assert.match(a.log(), /"msg":"root committed"/, 'commits show in the debug log');
    const dirty = spawn('stdbuf', ['-oL', 'qemu-io', '--image-opts', '-c', 'write -P 238 0 1M', '-c', 'sleep 600000', imageOpts(a.port, 'vm', 300)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let dirtyOut = '';
    dirty.stdout.on('data', (d) => (dirtyOut += d));
    t.after(() => dirty.kill('SIGKILL'));
    await waitFor('the unflushed write', () => /wrote/.test(dirtyOut));
    a.process.kill('SIGSTOP');
    const stoppedAt = Date.now();
    // (the default ttl on the servers that must keep serving: the wait is set by the frozen
    // holder's ttl, and a 3 s one ends a live session on one slow heartbeat put)
    const b = await startVaultServer(v.env, v.dir, ['--state', otherState(v)]);
    t.after(() => b.kill());
    const c2 = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 3 2M 1M', '-c', 'flush', `nbd://127.0.0.1:${b.port}/vm`], { timeoutMs: 120_000 });
    assert.equal(c2.code, 0, c2.stderr);
    console.log(`# ${label}: SIGSTOP: another server took over ${Date.now() - stoppedAt} ms after the freeze`);
    const round0 = (await runCommand('qemu-io', ['-f', 'raw', '-c', 'read -P 1 0 1M', `nbd://127.0.0.1:${b.port}/vm`], { okCodes: [0, 1] })).stdout.includes('verification failed') ? 238 : 1;
    const logBefore = a.log().length;
    a.process.kill('SIGCONT');
    // It wakes up: its heartbeat and its auto-commit fire; both must find the lease gone.
    await waitFor('the woken server to notice', () => /writer session lost|volume lease lost/.test(a.log().slice(logBefore)), 60_000);
    await new Promise((r) => setTimeout(r, 6000)); // past its auto-commit period (5 s): a wrong commit would have happened
    assert.doesNotMatch(a.log().slice(logBefore), /"msg":"root committed"/, 'the woken server committed nothing');
    // The volume is as the new writer left it, and the new writer can still commit (its root
    // If-Match still holds: nobody else wrote the root).
    const check = await runCommand('qemu-io', ['-f', 'raw', '-c', `read -P ${round0} 0 1M`, '-c', 'read -P 2 1M 1M', '-c', 'read -P 3 2M 1M', '-c', 'write -P 4 3M 1M', '-c', 'flush', `nbd://127.0.0.1:${b.port}/vm`], { timeoutMs: 60_000, okCodes: [0, 1] });
    assert.doesNotMatch(check.stdout + check.stderr, /failed/i, check.stdout + check.stderr);
    assert.equal(check.code, 0, check.stderr);
    dirty.kill('SIGKILL');
    if (round0 === 238) assert.equal(await a.stop(), 0, 'the woken server, which lost nothing (its auto-commit came first), shuts down cleanly');
    else {
      // The 0xee write it acknowledged never reached a root: the stop says it is given up.
      assert.equal(await a.stop(), 1, 'the woken server ends its stop with an error');
      assert.match(a.log(), /the lease was lost, so 1 MiB of written data no FLUSH had covered could not be made durable and is given up/);
    }
    assert.equal(await b.stop(), 0);
  });

  test(`${label}: two servers racing for a volume after a kill: exactly one wins, the loser names the holder`, { skip: noS3(store) }, async (t) => {
    if (store === 's3' && !s3Available(t)) return;
    const v = await makeTestVault({ s3: store === 's3' });
    t.after(() => v.cleanup());
    await v.cli('volume', 'create', 'vm', '--size', '64M');
    const a = await v.serve(['--lease-ttl', '3']);
    const w = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 9 0 1M', '-c', 'flush', `nbd://127.0.0.1:${a.port}/vm`], { timeoutMs: 60_000 });
    assert.equal(w.code, 0, w.stderr);
    await a.kill();
    const [x, y] = await Promise.all([
      startVaultServer(v.env, v.dir, ['--state', otherState(v)]),
      startVaultServer(v.env, v.dir, ['--state', otherState(v)]),
    ]);
    t.after(() => x.kill());
    t.after(() => y.kill());
    const clients = await Promise.all(
      [x, y].map((s) => runCommand('qemu-io', ['-f', 'raw', '-c', 'read -P 9 0 1M', '-c', 'write -P 10 1M 1M', '-c', 'flush', `nbd://127.0.0.1:${s.port}/vm`], { timeoutMs: 120_000, okCodes: [0, 1] })),
    );
    const winners = clients.filter((c) => c.code === 0 && !/failed/i.test(c.stdout + c.stderr));
    assert.equal(winners.length, 1, `exactly one server serves the volume:\n${clients.map((c) => c.stdout + c.stderr).join('\n---\n')}`);
    const loser: VaultServer = clients[0] === winners[0] ? y : x;
    const loserClient = clients[0] === winners[0] ? clients[1] : clients[0];
    assert.match(loserClient.stderr + loserClient.stdout, /being written by another server/, 'the client is told why');
    const winner = loser === x ? y : x;
    // It lost the race for the takeover, or came later and found the winner alive: either way it
    // names the winner.
    const holder = `nbd-vault \\(serve\\) \\(pid ${winner.process.pid} on [^)]+\\)`;
    assert.match(loser.log(), new RegExp(`"holder":"${holder}","msg":"another writer took the volume lease first"|is being written by ${holder}, which is alive`), loser.log());
    assert.equal(await x.stop(), 0);
    assert.equal(await y.stop(), 0);
  });
}

test('SIGHUP re-reads the config file: the log level changes at once, a restart-only change is named, clients stay', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vm', '--size', '16M');
  const config = join(v.dir, 'config.json');
  writeFileSync(config, JSON.stringify({ logLevel: 'info' }));
  const env = { ...v.env, NBD_VAULT_LOG_LEVEL: '' };
  const a = await startVaultServer(env, v.dir, ['--config', config]);
  t.after(() => a.kill());
  // a client connected across the reload
  const w = startWriter(a.port, 'vm', { fua: false, sleepMs: 300, rounds: 8 });
  await waitFor('2 writes', () => w.wroteAt.length >= 2);
  writeFileSync(config, JSON.stringify({ logLevel: 'debug', readCache: '64M' }));
  a.process.kill('SIGHUP');
  await waitFor('the reload', () => /"msg":"configuration reloaded; some changes need a restart"/.test(a.log()));
  assert.match(a.log(), /"logLevel":"debug","needRestart":\["readCache"\]/);
  assertClean(await w.done, 8);
  assert.match(a.log(), /"level":20,/, 'debug lines from now on');
  writeFileSync(config, '{ not json');
  a.process.kill('SIGHUP');
  await waitFor('the refusal', () => /configuration not reloaded; the running one stays/.test(a.log()));
  assert.equal(await a.stop(), 0);
});
