// Crash safety under a random-write workload: `kill -9` of `nbd-vault serve` (fs store) at a random
// moment loses nothing a FLUSH acknowledged. A real client (python3-libnbd, test/e2e/py/
// crash_workload.py) writes 4 KiB-64 KiB blocks of known patterns at random offsets, up to 8 in
// flight (in the first test over 2 connections: the server advertises CAN_MULTI_CONN, so a FLUSH
// on either covers both), with periodic FLUSHes; after the kill and a restart it reads everything
// back: each 4 KiB block holds its state as of the last acknowledged FLUSH, or the content of a
// request sent after it (old or new data, never anything else, never zeros unless trimmed or
// never written). Several rounds on the same volume, each starting from what the previous one
// read back. The second test mixes in TRIM and `snapshot create` (taken while the writer is
// paused right after a FLUSH): every snapshot must hold exactly that flushed state, also after
// the crashes.
//
// Replay: each test prints its seed (`seed=N`); `CRASH_SEED=N node test/run.mjs flush-crash` runs
// the same operations (the kill moments are drawn from the seed too, but land on whatever the
// loaded machine has reached by then).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import { runCommand } from '../helpers/fuse-disk';
import { seededRandom } from '../../src/store/seeded-random';
import { SYSTEM_PYTHON } from '../helpers/nbd-server';
import { makeTestVault, REPO, type TestVault, type VaultServer } from '../helpers/vault-server';

const WORKLOAD = join(REPO, 'test/e2e/py/crash_workload.py');
const SIZE = 32 * 2 ** 20; // 8 chunks of 4 MiB: random writes hit each chunk many times
const ROUNDS = 3;

/** the kill moments come from a seeded PRNG (mulberry32), so a failing round replays */
const prng = seededRandom;

interface Snapshot {
  name: string;
  /** operations < at are in it, nothing later */
  at: number;
  roundSeed: number;
  base: string;
}

interface RoundResult {
  flushed: number;
  issued: number;
  snapshots: Snapshot[];
}

/**
 * Runs the writer against `srv` until it has acknowledged `minFlushes` FLUSHes, waits a seeded
 * random 0-1.5 s more, then SIGKILLs the server. With `pauseEvery`, takes a snapshot at every
 * pause (the writer waits right after an acknowledged FLUSH).
 */
async function crashRound(v: TestVault, srv: VaultServer, roundSeed: number, trim: boolean, delayMs: number, base: string, pauseEvery: number, conns: number): Promise<RoundResult> {
  const writer = spawn(SYSTEM_PYTHON, [WORKLOAD, 'write', srv.uri('vm'), String(roundSeed), String(SIZE), trim ? '1' : '0', String(pauseEvery), String(conns)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const writerExit = new Promise<number | null>((r) => writer.once('exit', (code) => r(code)));
  writer.stdin.on('error', () => undefined); // EPIPE once the writer has died with the server
  let flushed = 0;
  let flushes = 0;
  let issued = 0;
  let done = false;
  let pending = '';
  let err = '';
  let snapshotting: Promise<void> = Promise.resolve();
  let snapshotError: Error | null = null;
  const snapshots: Snapshot[] = [];
  writer.stderr.on('data', (d) => (err += d));
  writer.stdout.on('data', (d) => {
    pending += d;
    let nl;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const [what, n] = pending.slice(0, nl).split(' ');
      pending = pending.slice(nl + 1);
      if (what === 'issued') issued = Number(n);
      else if (what === 'flushed') (flushed = Number(n)), flushes++;
      else if (what === 'done') done = true;
      else if (what === 'paused') {
        const name = `r${roundSeed}-at${n}`;
        snapshotting = v
          .cli('snapshot', 'create', 'vm', name)
          .then(() => {
            snapshots.push({ name, at: Number(n), roundSeed, base });
            writer.stdin.write('go\n');
          })
          .catch((e: Error) => {
            snapshotError = e;
            writer.kill('SIGKILL');
          });
      }
    }
  });
  const deadline = Date.now() + 30_000;
  while (flushes < 2 && !done && writer.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.ok(flushes >= 2, `the writer acknowledged 2 flushes within 30 s (got ${flushes}, exit ${writer.exitCode}): ${err}`);
  await new Promise((r) => setTimeout(r, delayMs));
  await snapshotting; // not in the middle of `snapshot create`: that is not the point here
  if (snapshotError) throw snapshotError;
  assert.ok(!done, 'the server was killed before the writer finished');
  await srv.kill();
  writer.stdin.end();
  const code = await writerExit;
  assert.notEqual(code, 0, 'the writer saw the server die');
  return { flushed, issued, snapshots };
}

async function check(uri: string, roundSeed: number, trim: boolean, base: string, flushed: number, issued: number, out: string): Promise<string> {
  const r = await runCommand(SYSTEM_PYTHON, [WORKLOAD, 'check', uri, String(roundSeed), String(SIZE), trim ? '1' : '0', base, String(flushed), String(issued), out], { timeoutMs: 60_000, okCodes: [0, 1] });
  assert.equal(r.code, 0, `${uri} after round seed ${roundSeed}:\n${r.stdout}${r.stderr}`);
  return r.stdout.trim();
}

async function crashRounds(t: TestContext, trim: boolean, pauseEvery: number, conns: number): Promise<void> {
  const seed = Number(process.env.CRASH_SEED ?? randomInt(2 ** 31));
  t.diagnostic(`seed=${seed} (replay: CRASH_SEED=${seed} node test/run.mjs flush-crash)`);
  const rng = prng(seed);
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vm', '--size', String(SIZE));
  let srv = await v.serve();
  let base = '-';
  const snapshots: Snapshot[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const roundSeed = seed + round;
    const delayMs = Math.floor(rng() * 1500);
    const r = await crashRound(v, srv, roundSeed, trim, delayMs, base, pauseEvery, conns);
    srv = await v.serve();
    const out = join(v.dir, `round${round}.img`);
    const line = await check(srv.uri('vm'), roundSeed, trim, base, r.flushed, r.issued, out);
    t.diagnostic(`round ${round} seed=${roundSeed} killed after ${delayMs} ms: ${line}`);
    snapshots.push(...r.snapshots);
    base = out;
  }
  if (pauseEvery) {
    assert.ok(snapshots.length > 0, 'the writer paused for at least one snapshot');
    for (const s of snapshots) {
      const line = await check(srv.uri(`vm@${s.name}`), s.roundSeed, trim, s.base, s.at, s.at, '-');
      t.diagnostic(`snapshot ${s.name}: ${line}`);
    }
  }
  assert.equal(await srv.stop(), 0, srv.log());
}

test('kill -9 during random writes on 2 connections with flushes loses nothing that was flushed (fs store)', { timeout: 120_000 }, async (t) => {
  await crashRounds(t, false, 0, 2);
});

test('kill -9 during random writes, trims and snapshots: trimmed ranges read as zeros, snapshots hold the flushed state', { timeout: 120_000 }, async (t) => {
  await crashRounds(t, true, 2, 1);
});
