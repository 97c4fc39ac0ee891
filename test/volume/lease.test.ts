// The writer's lease: one writer per volume across servers and CLI commands sharing a store.
// Leases name a writer session whose single heartbeat keeps them alive (writer-session.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createInlineCodec } from '../../src/codec';
import { FsStore } from '../../src/store/fs-store';
import { MemoryStore } from '../../src/store/memory-store';
import { RetryStore } from '../../src/store/retry-store';
import { PassThroughStore } from '../helpers/pass-through-store';
import type { ObjectStore, PutOptions } from '../../src/store/object-store';
import { Vault, type VaultOptions } from '../../src/volume/vault';
import { VaultError } from '../../src/errors';
import { WriterSession, observeSession, sessionKey, type Clock } from '../../src/volume/writer-session';
import { readVolumeLease, writerHorizon } from '../../src/volume/volume-lease';
import { makeVault, logger, eventually, type Fixture } from './vault-fixture';

const MiB = 2 ** 20;
// (a ttl of 600 ms failed 4 runs in 8 under load: one stall of the shared event loop ended a live
// holder's session, or let its observer find it dead; assertions are relative to the ttl)
const FAST = { ttlMs: 3000, renewMs: 100 };
const isLease = (re?: RegExp) => (err: VaultError) => err.code === 'ERR_LEASE' && (!re || re.test(err.message));

/** Polls `cond` (a session ending takes its ttl, longer on a loaded machine). */
async function untilTrue(cond: () => boolean, what: string, ms = FAST.ttlMs * 10): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The same vault opened by another machine (another state directory: another instance id). */
async function elsewhere(f: Fixture, t: { after(fn: () => void): void }, opts: Partial<VaultOptions> = {}, store: ObjectStore = f.store): Promise<Vault> {
  const stateDir = mkdtempSync(join(tmpdir(), 'nbd-vault-other-'));
  t.after(() => rmSync(stateDir, { recursive: true, force: true }));
  return Vault.open(store, f.master, createInlineCodec(), { stateDir, logger, leaseTiming: FAST, ...opts });
}

/** A SIGSTOP of the holder's process, as far as its session goes: no more heartbeats. */
async function freezeSession(v: Vault): Promise<WriterSession> {
  const s = (await (v as any).writers.session) as WriterSession;
  (s as any).clearTimer();
  (s as any).schedule = () => {};
  return s;
}

/** A vault whose volume 'v' is held by a server that stopped beating (its session frozen), after
 *  it flushed `flushed` at offset 0. */
async function withDeadHolder(t: { after(fn: () => void): void }, store?: ObjectStore): Promise<Fixture & { flushed: Buffer }> {
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const va = await f.reopen({ leaseTiming: FAST });
  const e = await va.openEngine('v');
  const flushed = randomBytes(4096);
  await e.write(0, flushed);
  await e.flush();
  await freezeSession(va);
  return { ...f, flushed };
}

for (const kind of ['memory', 'fs'] as const) {
  test(`${kind} store: a second writer elsewhere is refused while the first is alive, and gets in once it closes`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-lease-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const f = await makeVault(kind === 'memory' ? new MemoryStore() : new FsStore(dir, { fsync: false }));
    t.after(() => f.cleanup());
    await f.vault.createVolume('v', 8 * MiB);
    // A long ttl with quick beats: refused as soon as a beat is seen, never mistaken for dead on a loaded machine.
    const steady = { ttlMs: 10_000, renewMs: 100 };
    const va = await f.reopen({ leaseTiming: steady });
    const a = await va.openEngine('v');
    const other = await elsewhere(f, t, { leaseTiming: steady }, kind === 'fs' ? new FsStore(dir, { fsync: false }) : f.store);
    await assert.rejects(other.openEngine('v'), isLease(/is being written by .* \(pid \d+ on .*\), which is alive/));
    await assert.rejects(other.createSnapshot('v', 's'), isLease());
    await assert.rejects(other.deleteVolume('v'), isLease());
    const ro = await other.openEngine('v', { readOnly: true }); // readers need no lease
    await ro.close();
    await a.write(0, randomBytes(4096));
    await a.close(); // flushes, then releases the lease
    await va.close();
    const b = await other.openEngine('v');
    await b.write(4096, randomBytes(4096));
    await b.close();
    await other.close();
  });
}

test('the same instance takes its own lease over at once (a restart after a crash)', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const crashed = await f.vault.openEngine('v'); // never closed: its process "died"
  const data = randomBytes(4096);
  await crashed.write(0, data);
  await crashed.flush();
  const started = Date.now();
  const restarted = await (await f.reopen({ waitForDeadHolder: false })).openEngine('v');
  assert.ok(Date.now() - started < 2000, 'no wait for the old heartbeat');
  assert.ok((await restarted.read(0, 4096)).equals(data));
  await restarted.write(0, randomBytes(4096));
  await restarted.flush();
  await restarted.close();
});

test('a dead holder is taken over within its ttl; woken up, it can neither write nor commit', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const va = await f.reopen({ leaseTiming: FAST });
  const old = await va.openEngine('v');
  const flushed = randomBytes(4096);
  await old.write(0, flushed);
  await old.flush();
  await old.write(8192, randomBytes(4096)); // acknowledged, never flushed: lost with its server
  const session = await freezeSession(va);
  const other = await elsewhere(f, t);
  const started = Date.now();
  const b = await other.openEngine('v');
  const took = Date.now() - started;
  assert.ok(took >= FAST.ttlMs * 0.9 && took < FAST.ttlMs * 10, `takeover after ${took} ms (ttl ${FAST.ttlMs})`);
  assert.ok((await b.read(0, 4096)).equals(flushed), 'every flushed write is there');
  await session.renew(); // the old holder wakes up: its renewal lands after its own deadline
  assert.equal(session.alive, false);
  await assert.rejects(old.write(0, Buffer.alloc(10)), isLease());
  await assert.rejects(old.flush(), isLease());
  await assert.rejects(old.read(0, 10), isLease(), 'no stale reads either');
  assert.equal(old.leaseLost, true);
  await b.write(0, randomBytes(100));
  await b.close();
});

test('a server that watched the holders from its start takes a dead one\'s volume at once when asked', async (t) => {
  const f = await withDeadHolder(t);
  const other = await elsewhere(f, t);
  assert.equal(await other.watchLeaseHolders(), 1);
  await new Promise((r) => setTimeout(r, FAST.ttlMs * 1.5));
  const started = performance.now();
  const b = await other.openEngine('v');
  assert.ok(performance.now() - started < FAST.ttlMs / 2, 'no second wait');
  await b.close();
});

test('two contenders racing for a dead holder: exactly one wins, the loser names the holder', async (t) => {
  const f = await withDeadHolder(t);
  const [x, y] = await Promise.all([elsewhere(f, t, { leasePurpose: 'contender X' }), elsewhere(f, t, { leasePurpose: 'contender Y' })]);
  const results = await Promise.allSettled([x.openEngine('v'), y.openEngine('v')]);
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
  assert.equal(won.length, 1, 'exactly one winner');
  assert.equal(lost.length, 1);
  assert.match(lost[0].reason.message, /took the lease first; it is held by contender [XY] \(pid \d+ on /);
  await (won[0] as PromiseFulfilledResult<any>).value.close();
});

/** The store as a contender sees it: an If-None-Match refusal of a takeover token comes back once
 *  as a transient error (a 412 whose reply was lost); counts the takeover puts of the lease. */
class LostRefusalStore extends PassThroughStore {
  leasePuts = 0;
  private lost = false;
  override async put(key: string, body: Buffer, opts?: PutOptions) {
    if (key.endsWith('/lease') && opts?.ifMatch) this.leasePuts++; // the put that takes a lease over
    try {
      return await this.inner.put(key, body, opts);
    } catch (err) {
      if (key.includes('/takeover/') && !this.lost && (err as VaultError).code === 'ERR_STORE_PRECONDITION') {
        this.lost = true;
        throw new VaultError('ERR_STORE_TRANSIENT', 'reply lost');
      }
      throw err;
    }
  }
}

test('a contender whose takeover token was refused, the refusal lost and the put retried, does not take the rival\'s token for its own', async (t) => {
  const f = await withDeadHolder(t);
  const stores = [new LostRefusalStore(f.store), new LostRefusalStore(f.store)];
  const retried = (s: ObjectStore) => new RetryStore(s, { baseDelayMs: 1, maxDelayMs: 2, budgetMs: 5_000 });
  const [x, y] = await Promise.all(stores.map((s, i) => elsewhere(f, t, { leasePurpose: `contender ${i}` }, retried(s))));
  const results = await Promise.allSettled([x.openEngine('v'), y.openEngine('v')]);
  const won = results.findIndex((r) => r.status === 'fulfilled');
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'exactly one winner');
  const lost = 1 - won;
  assert.match((results[lost] as PromiseRejectedResult).reason.message, /took the lease first/);
  // the retry read the token back: it was the winner's, so the loser stopped at the token
  assert.equal(stores[lost].leasePuts, 0, 'the loser never got as far as putting the lease');
  await (results[won] as PromiseFulfilledResult<any>).value.close();
});

test('one heartbeat request per renewal period whatever the number of volumes; none per volume', async (t) => {
  const puts = new Map<string, number>();
  class Counting extends MemoryStore {
    override async put(key: string, body: Buffer, opts?: PutOptions) {
      const kind = key.startsWith('sessions/') ? 'session' : key.endsWith('/lease') ? 'lease' : 'other';
      puts.set(kind, (puts.get(kind) ?? 0) + 1);
      return super.put(key, body, opts);
    }
  }
  const f = await makeVault(new Counting());
  t.after(() => f.cleanup());
  const v = await f.reopen({ leaseTiming: { ttlMs: 3000, renewMs: 200 } });
  const engines = [];
  for (let i = 0; i < 6; i++) {
    await f.vault.createVolume(`v${i}`, 8 * MiB);
    engines.push(await v.openEngine(`v${i}`, { autoCommitMs: 0 }));
  }
  puts.clear();
  const started = performance.now();
  await new Promise((r) => setTimeout(r, 1100));
  const elapsed = performance.now() - started;
  const beats = puts.get('session') ?? 0;
  assert.equal(puts.get('lease') ?? 0, 0, 'leases are not renewed one by one');
  assert.ok(beats >= 2 && beats <= Math.ceil(elapsed / 200) + 1, `${beats} heartbeats in ${Math.round(elapsed)} ms for 6 volumes`);
  const sessionId = ((await (v as any).writers.session) as WriterSession).id;
  assert.ok(await f.store.head(`sessions/${sessionId}`));
  for (const e of engines) await e.close();
  await v.close();
  assert.equal(await f.store.head(`sessions/${sessionId}`), null, 'a clean stop deletes the heartbeat');
});

test('a holder whose heartbeats keep failing stops before an observer could declare it dead; it resumes if nobody took over', async (t) => {
  let failBeats = false;
  class Flaky extends MemoryStore {
    override async put(key: string, body: Buffer, opts?: PutOptions) {
      if (failBeats && key.startsWith('sessions/')) throw new VaultError('ERR_STORE_TRANSIENT', 'injected: the store is unreachable');
      return super.put(key, body, opts);
    }
  }
  const f = await makeVault(new Flaky());
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const v = await f.reopen({ leaseTiming: { ttlMs: 2000, renewMs: 50 } });
  const e = await v.openEngine('v');
  const unflushed = randomBytes(100);
  await e.write(0, unflushed);
  failBeats = true;
  const deadline = Date.now() + 10_000;
  while (!e.leaseLost && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await assert.rejects(e.write(0, randomBytes(100)), isLease(/writer session ended/));
  assert.equal(await e.regainLease(), false, 'no new session while the store is unreachable');
  failBeats = false;
  // Nobody took the lease: the next write takes it back under a new session, and the write
  // acknowledged before the hiccup is still there to commit.
  await e.write(4096, randomBytes(100));
  assert.equal(e.leaseLost, false);
  await e.flush();
  const other = await elsewhere(f, t, { waitForDeadHolder: false });
  const ro = await other.openEngine('v', { readOnly: true });
  assert.ok((await ro.read(0, 100)).equals(unflushed), 'the write acknowledged before the hiccup is durable');
  await assert.rejects(other.openEngine('v'), isLease(/which is alive/), 'and the lease is held again');
  await e.close();
});

test('a lease taken over by another server is not resumed', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const va = await f.reopen({ leaseTiming: FAST });
  const old = await va.openEngine('v');
  await old.write(0, randomBytes(100));
  await freezeSession(va);
  const b = await (await elsewhere(f, t)).openEngine('v');
  assert.equal(old.leaseLost, true);
  assert.equal(await old.regainLease(), false);
  await assert.rejects(old.flush(), isLease());
  await b.close();
});

test('clock jumps: the wall clock can only shorten a session, the monotonic clock rules', async (t) => {
  const store = new MemoryStore();
  let mono = 1000;
  let wall = Date.UTC(2030, 0, 1);
  const clock: Clock = { monotonic: () => mono, wall: () => wall };
  const s = await WriterSession.start(store, logger, { ttlMs: 10_000, renewMs: 3_600_000 }, clock);
  t.after(() => s.stop());
  wall -= 3_600_000; // an hour back: changes nothing
  mono += 7_000;
  s.check();
  mono += 2_500; // 9.5 s after the last heartbeat: past ttl - margin (9 s), though the wall clock says "an hour early"
  assert.throws(() => s.check(), isLease(/no heartbeat/));
  await s.renew(); // a late renewal does not revive it
  assert.throws(() => s.check(), isLease());

  const s2 = await WriterSession.start(store, logger, { ttlMs: 10_000, renewMs: 3_600_000 }, clock);
  t.after(() => s2.stop());
  wall += 60_000; // the wall clock jumps a minute forward: the session ends early (the safe side)
  assert.equal(s2.alive, false);
});

test('observeSession: live while the heartbeat changes, dead after a still ttl, gone when deleted', async () => {
  const store = new MemoryStore();
  const live = await WriterSession.start(store, logger, { ttlMs: 2000, renewMs: 50 });
  assert.equal(await observeSession(store, live.id), 'live');
  const frozen = await WriterSession.start(store, logger, { ttlMs: 2000, renewMs: 3_600_000 });
  const t0 = performance.now();
  assert.equal(await observeSession(store, frozen.id), 'dead');
  assert.ok(performance.now() - t0 >= 1990, 'watched a whole ttl');
  assert.equal(await observeSession(store, frozen.id, { maxWaitMs: 0 }), 'live', 'an immediate answer is conservative');
  await live.stop();
  assert.equal(await observeSession(store, live.id), 'gone');
  await frozen.stop();
});

test('a stop waits for a renewal in flight: the heartbeat is deleted and the session does not end as lost', async () => {
  let hold: (() => void) | null = null;
  const store = new (class extends PassThroughStore {
    override async put(key: string, body: Buffer, opts?: PutOptions) {
      if (hold === null && opts?.ifMatch !== undefined && key === sessionKey(s.id)) await new Promise<void>((r) => (hold = r));
      return super.put(key, body, opts);
    }
  })(new MemoryStore());
  const s = await WriterSession.start(store, logger, { ttlMs: 10_000, renewMs: 3_600_000 });
  const renewal = s.renew(); // its put waits
  await new Promise((r) => setImmediate(r));
  assert.ok(hold, 'the renewal is in flight');
  const stopping = s.stop();
  await new Promise((r) => setTimeout(r, 50)); // time for a stop that did not wait to delete the heartbeat first
  (hold as unknown as () => void)();
  await Promise.all([renewal, stopping]);
  assert.equal(await store.head(sessionKey(s.id)), null, 'the heartbeat object is deleted, not left behind by the late put');
  assert.equal((s as any).deadError, null, 'a clean stop is not a lost session');
});

test('a closing vault ends its watches of other writers at once', async (t) => {
  const store = new MemoryStore();
  const frozen = await WriterSession.start(store, logger, { ttlMs: 60_000, renewMs: 3_600_000 }); // a holder that stopped beating
  t.after(() => frozen.stop());
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  const watch = (f.vault as any).writers.observe(frozen.id) as Promise<string>;
  let heads = 0;
  const head = store.head.bind(store);
  store.head = (key: string) => {
    if (key === sessionKey(frozen.id)) heads++;
    return head(key);
  };
  await f.vault.close();
  assert.equal(await watch, 'live', 'an ended watch takes nothing over');
  const seen = heads;
  await new Promise((r) => setTimeout(r, 1500)); // its polls came every second
  assert.equal(heads, seen, 'no poll of the holder after the close');
});

test('a resume that created its takeover token and then failed to write the lease is retried, not blocked by its own token', async (t) => {
  let sessionsDown = false;
  let leaseDown = false;
  const store = new (class extends PassThroughStore {
    override put(key: string, body: Buffer, opts?: PutOptions) {
      if ((sessionsDown && key.startsWith('sessions/')) || (leaseDown && key.endsWith('/lease'))) return Promise.reject(new VaultError('ERR_STORE_IO', `${key}: ENOSPC`));
      return super.put(key, body, opts);
    }
  })(new MemoryStore());
  const f = await makeVault(store);
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const v = await f.reopen({ leaseTiming: FAST });
  const e = await v.openEngine('v');
  await e.write(0, Buffer.alloc(4096, 7));
  sessionsDown = true;
  await untilTrue(() => e.leaseLost, 'the session to end (past its ttl)');
  assert.equal(e.leaseLost, true);
  sessionsDown = false;
  leaseDown = true; // the token goes in, the lease put fails
  assert.equal(await e.regainLease(), false);
  assert.equal(e.leaseLostForGood, false, 'nobody else took it: still ours to take back');
  leaseDown = false;
  assert.equal(await e.regainLease(), true, 'taken back on the next attempt');
  await e.flush();
  await e.close();
  const r = await (await f.reopen()).openEngine('v', { readOnly: true });
  assert.ok((await r.read(0, 4096)).equals(Buffer.alloc(4096, 7)));
  await r.close();
});

for (const lost of ['its takeover token', 'its new lease'] as const) {
  test(`a resume whose put of ${lost} landed with its reply lost is completed by the next attempt, not taken for a rival's takeover`, async (t) => {
    let sessionsDown = false;
    let replyLost: string | null = null;
    const store = new (class extends PassThroughStore {
      override async put(key: string, body: Buffer, opts?: PutOptions) {
        if (sessionsDown && key.startsWith('sessions/')) throw new VaultError('ERR_STORE_TRANSIENT', 'the store is down');
        const landed = await super.put(key, body, opts);
        if (replyLost !== null && key.includes(replyLost)) {
          replyLost = null;
          throw new VaultError('ERR_STORE_TRANSIENT', 'no reply before the retry budget ran out');
        }
        return landed;
      }
    })(new MemoryStore());
    const f = await makeVault(store);
    t.after(() => f.cleanup());
    await f.vault.createVolume('v', 8 * MiB);
    const v = await f.reopen({ leaseTiming: FAST });
    const e = await v.openEngine('v');
    await e.write(0, Buffer.alloc(4096, 7)); // acknowledged, not flushed
    sessionsDown = true;
    await untilTrue(() => e.leaseLost, 'the session to end (past its ttl)');
    assert.equal(e.leaseLost, true);
    sessionsDown = false;
    replyLost = lost === 'its takeover token' ? '/takeover/' : '/lease';
    assert.equal(await e.regainLease(), false, 'the first attempt fails');
    assert.equal(e.leaseLostForGood, false, 'what landed is ours, not a rival\'s');
    assert.equal(await e.regainLease(), true, 'the next attempt takes it back');
    await e.close(); // flushes the write
    const r = await (await f.reopen()).openEngine('v', { readOnly: true });
    assert.ok((await r.read(0, 4096)).equals(Buffer.alloc(4096, 7)), 'the acknowledged write survived');
    await r.close();
  });
}

/** The put that takes a lease over (If-Match), as a test needs it: failing (`failLease`: a full
 *  disk, a machine that died right after its token), or, with `holdLease`, as the fs store looks
 *  from two processes: If-Match is checked, and the rename lands later, not serialised with the
 *  other process's (If-Match on fs is atomic within one process only). */
class LeasePutHooks extends PassThroughStore {
  failLease = false;
  holdLease: Promise<void> | null = null;
  leaseChecked = false;
  override async put(key: string, body: Buffer, opts?: PutOptions) {
    if (key.endsWith('/lease') && opts?.ifMatch) {
      if (this.failLease) throw new VaultError('ERR_STORE_IO', 'the put failed');
      if (this.holdLease) {
        if ((await this.inner.head(key))?.etag !== opts.ifMatch) throw new VaultError('ERR_STORE_PRECONDITION', 'changed');
        this.leaseChecked = true;
        await this.holdLease;
        return super.put(key, body, {});
      }
    }
    return super.put(key, body, opts);
  }
}

test('a takeover whose lease put failed after its token can be tried again (its own token does not stop it)', async (t) => {
  const store = new LeasePutHooks(new MemoryStore());
  const f = await withDeadHolder(t, store);
  const vb = await f.reopen({ leaseTiming: FAST }); // same state directory: takes its own dead lease over
  store.failLease = true;
  await assert.rejects(vb.openEngine('v'), (err: VaultError) => err.code === 'ERR_STORE_IO');
  store.failLease = false;
  const e = await vb.openEngine('v');
  await e.close();
});

test('a contender that died between its takeover token and the lease put does not block the volume: the next one passes its token', async (t) => {
  const store = new LeasePutHooks(new MemoryStore());
  const f = await withDeadHolder(t, store);
  const flushed = f.flushed;
  store.failLease = true; // contender X's machine dies right after its token: its lease put never lands
  const x = await elsewhere(f, t, { leasePurpose: 'contender X' });
  await assert.rejects(x.openEngine('v'), (err: VaultError) => err.code === 'ERR_STORE_IO');
  await freezeSession(x); // ... and so does X, its token left behind
  const tokens = async () => {
    const keys: string[] = [];
    for await (const o of store.list('volumes/')) if (o.key.includes('/takeover/')) keys.push(o.key);
    return keys.sort();
  };
  assert.equal((await tokens()).length, 1, 'X left its token');
  store.failLease = false;
  const y = await elsewhere(f, t, { leasePurpose: 'contender Y' });
  const b = await y.openEngine('v');
  assert.ok((await b.read(0, 4096)).equals(flushed));
  assert.equal((await readVolumeLease((b as any).opts.lease.ctx))?.record?.purpose, 'contender Y');
  const after = await tokens();
  assert.equal(after.length, 2);
  assert.match(after[1], /\/takeover\/[^/]+\.1$/, 'Y claimed the next generation');
  await b.close();
});

test('a token whose maker is alive is not passed: the contender loses, whatever the wait', async (t) => {
  let holdTakeover = true;
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  const store = new (class extends PassThroughStore {
    override async put(key: string, body: Buffer, opts?: PutOptions) {
      if (holdTakeover && key.endsWith('/lease') && opts?.ifMatch) await held; // X's lease put is slow, X alive
      return super.put(key, body, opts);
    }
  })(new MemoryStore());
  const f = await withDeadHolder(t, store);
  const x = await elsewhere(f, t, { leasePurpose: 'contender X' });
  const xOpen = x.openEngine('v');
  await eventually(async () => {
    for await (const o of store.list('volumes/')) if (o.key.includes('/takeover/')) return true;
    return false;
  }, 'X made its token');
  holdTakeover = false; // (Y's own lease put, if it got that far, is not held)
  const y = await elsewhere(f, t, { leasePurpose: 'contender Y' });
  const yOpen = y.openEngine('v');
  setTimeout(release, FAST.ttlMs * 1.5); // X's put lands after a ttl (its heartbeat went on), within the 5 s Y gives a winner to show
  await assert.rejects(yOpen, isLease(/took the lease first; it is held by contender X/));
  const e = await xOpen;
  await e.close();
});

test('a maker whose token was passed (its session died) does not reuse it under its next session: one winner', async (t) => {
  const mem = new MemoryStore();
  const f = await withDeadHolder(t, mem);
  const sx = new LeasePutHooks(mem);
  const x = await elsewhere(f, t, { leasePurpose: 'contender X' }, sx);
  sx.failLease = true;
  await assert.rejects(x.openEngine('v'), (e: VaultError) => e.code === 'ERR_STORE_IO'); // X made generation 0, its lease put failed
  sx.failLease = false;
  await freezeSession(x); // X's session dies; its process lives on
  const sy = new LeasePutHooks(mem);
  let release!: () => void;
  sy.holdLease = new Promise((r) => (release = r));
  const y = await elsewhere(f, t, { leasePurpose: 'contender Y' }, sy);
  const yOpen = y.openEngine('v'); // passes X's dead token, claims generation 1, checks If-Match, then is slow
  await eventually(() => sy.leaseChecked, 'Y claimed generation 1 and is writing the lease', 20_000);
  const xAgain = x.openEngine('v'); // X again, under a new session
  xAgain.catch(() => {});
  await assert.rejects(xAgain, isLease(/took the lease first/), 'X does not take its passed token for its own');
  release();
  const e = await yOpen;
  assert.equal((await readVolumeLease((e as any).opts.lease.ctx))?.record?.purpose, 'contender Y');
  await e.close();
});

test('a lease lost after a compaction step (no write since the last FLUSH) closes cleanly: nothing was lost', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const v = await f.reopen({ leaseTiming: FAST });
  const e = await v.openEngine('v', { autoCommitMs: 0 });
  await e.write(0, Buffer.alloc(4096, 7));
  await e.flush();
  assert.ok((await (e as any).sealer.compactStep()) > 0, 'the compaction step edits the manifest (uncommitted)');
  await freezeSession(v);
  await untilTrue(() => e.leaseLost, 'the session to end (past its ttl)');
  assert.equal(e.leaseLost, true);
  await e.close(); // before: "written data stored since the last FLUSH ... is given up"
  const r = await (await f.reopen()).openEngine('v', { readOnly: true });
  assert.ok((await r.read(0, 4096)).equals(Buffer.alloc(4096, 7)));
  await r.close();
});

test('gc horizon: the heartbeat publishes the oldest pending upload of the session\'s volumes', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  await f.vault.createVolume('v', 8 * MiB);
  const v = await f.reopen({ leaseTiming: { ttlMs: 5000, renewMs: 50 } });
  const e = await v.openEngine('v');
  const lease = (e as any).opts.lease;
  lease.reportPending(() => 1234);
  const leaseCtx = (lease as any).ctx;
  const deadline = Date.now() + 10_000;
  let h: number | null = null;
  while (h !== 1234 && Date.now() < deadline) {
    h = await writerHorizon(f.store, await readVolumeLease(leaseCtx), Date.now(), 60_000);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(h, 1234, 'published with a heartbeat');
  lease.reportPending(() => null);
  // (a heartbeat may land between reading the clock and reading it: the clock is read around)
  let before = 0;
  let after = 0;
  while (h === 1234 && Date.now() < deadline) {
    before = Date.now();
    h = await writerHorizon(f.store, await readVolumeLease(leaseCtx), before, 60_000);
    after = Date.now();
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(h !== null && h !== 1234 && h > before - 5000 && h <= after, `nothing pending: the horizon is the last heartbeat (${h}, read between ${before} and ${after})`);
  await e.close();
  await v.close();
  assert.equal(await writerHorizon(f.store, await readVolumeLease(leaseCtx), Date.now(), 60_000), null, 'released: no writer');
});
