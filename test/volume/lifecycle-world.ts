// The world of the randomized lifecycle test: one memory store behind injected faults and latency,
// "processes" (a Vault on a store that a crash cuts off), open engines, and a model of what every
// volume and snapshot must read. Content is made of 64 KiB blocks, each stamped with the id of the
// write that made it (0: zeros), so a read tells which write a block holds.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { SecretKey } from '../../src/keys/secret-key';
import { createInlineCodec } from '../../src/codec';
import type { Codec } from '../../src/codec/codec';
import { VaultError } from '../../src/errors';
import { MemoryStore } from '../../src/store/memory-store';
import { FaultyStore } from '../../src/store/faulty-store';
import { RetryStore } from '../../src/store/retry-store';
import type { ObjectInfo, ObjectStore, PutOptions, StoredObject } from '../../src/store/object-store';
import { Vault } from '../../src/volume/vault';
import type { VolumeEngine } from '../../src/volume/volume-engine';
import { verifyManifest } from '../../src/volume/verify';
import { logger } from './vault-fixture';
import { setLogger } from '../../src/util/log';

export const BLOCK = 64 * 1024;
export const MiB = 2 ** 20;

/** A store a crash cuts off: every call after kill() fails, as a dead process's would never run. */
export class KillableStore implements ObjectStore {
  readonly name: string;
  killed = false;
  constructor(private readonly inner: ObjectStore) {
    this.name = `killable(${inner.name})`;
  }
  get props() {
    return this.inner.props;
  }
  private check(): void {
    if (this.killed) throw new VaultError('ERR_STORE_TRANSIENT', 'this process has crashed');
  }
  async get(key: string): Promise<StoredObject> {
    this.check();
    return this.inner.get(key);
  }
  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    this.check();
    return this.inner.getRange(key, offset, length);
  }
  async head(key: string): Promise<ObjectInfo | null> {
    this.check();
    return this.inner.head(key);
  }
  async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    this.check();
    return this.inner.put(key, body, opts);
  }
  async delete(key: string): Promise<void> {
    this.check();
    return this.inner.delete(key);
  }
  async deleteMany(keys: readonly string[]): Promise<void> {
    this.check();
    return this.inner.deleteMany(keys);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.check();
    for await (const info of this.inner.list(prefix)) {
      this.check();
      yield info;
    }
  }
  async close(): Promise<void> {}
  unwrap(): ObjectStore {
    return this.inner;
  }
}

export function blockContent(writeId: number, block: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  if (writeId === 0) return b;
  b.writeUInt32LE(writeId, 0);
  b.writeUInt32LE(block, 4);
  b.copy(b, 8, 0, 8);
  for (let n = 16; n < BLOCK; n *= 2) b.copy(b, n, 0, Math.min(n, BLOCK - n));
  return b;
}

/** Which write a block read back holds (0: zeros); throws on bytes no write made. */
export function writeIdOf(data: Buffer, block: number, where: string): number {
  const id = data.readUInt32LE(0);
  if (!data.equals(blockContent(id, block))) throw new assert.AssertionError({ message: `${where}: block ${block} holds bytes no write made (torn or garbage)` });
  return id;
}

export interface VolumeModel {
  name: string;
  blocks: number;
  /** what reads must return now */
  cur: number[];
  /** what a block may hold after a crash: its durable value and every write since */
  possible: Array<Set<number>>;
  snapshots: Map<string, number[]>;
  origin: { volume: string; snapshot: string } | null;
  engine: VolumeEngine | null;
  /** an import in progress (an engine that commits only at its end) */
  importing: boolean;
  /** the engine died in a crash: the next open must check `possible` */
  crashed: boolean;
}

export class World {
  readonly base = new MemoryStore();
  readonly faulty: FaultyStore;
  readonly codec: Codec = createInlineCodec();
  readonly master = new SecretKey(randomBytes(32), 'master');
  readonly dir = mkdtempSync(join(tmpdir(), 'nbd-vault-lifecycle-'));
  readonly volumes = new Map<string, VolumeModel>();
  process!: { store: KillableStore; vault: Vault };
  private processBelow!: KillableStore;
  checker!: Vault;
  cron!: Vault;
  nextWrite = 1;
  readonly log: string[] = [];

  constructor(readonly rng: () => number) {
    this.faulty = new FaultyStore(this.base, { rules: [{ probability: 0.01, ops: ['put', 'get', 'head'] }, { probability: 0.01, ops: ['put'], phase: 'after' }], latencyMs: { min: 0, max: 2 } }, rng);
  }

  private retrying(): RetryStore {
    return new RetryStore(this.faulty, { baseDelayMs: 1, maxDelayMs: 5, budgetMs: 5_000 });
  }

  async init(): Promise<void> {
    setLogger(logger); // the store's retry warnings are expected here
    this.faulty.armed = false;
    await Vault.create(this.base, this.master, this.codec, { stateDir: join(this.dir, 'init'), logger });
    this.faulty.armed = true;
    await this.startProcess();
    // gc runs from cron on this machine (own state), the checker reads the plain store
    this.cron = await Vault.open(this.retrying(), this.master, this.codec, { stateDir: join(this.dir, 'cron'), logger });
    this.checker = await Vault.open(this.base, this.master, this.codec, { stateDir: join(this.dir, 'checker'), logger });
  }

  async startProcess(): Promise<void> {
    // killed below the retry layer too: a dead process's retries die with it
    const below = new KillableStore(this.faulty);
    const store = new KillableStore(new RetryStore(below, { baseDelayMs: 1, maxDelayMs: 5, budgetMs: 5_000 }));
    this.processBelow = below;
    const vault = await Vault.open(store, this.master, this.codec, { stateDir: join(this.dir, 'server'), logger, leaseTiming: { ttlMs: 1500, renewMs: 250 } });
    this.process = { store, vault };
  }

  /** kill -9: the process's store is cut off, its engines and timers are dropped unclosed. */
  async crash(): Promise<void> {
    this.process.store.killed = true;
    this.processBelow.killed = true;
    for (const m of this.volumes.values()) {
      if (!m.engine) continue;
      const e = m.engine as any;
      if (e.timer) clearInterval(e.timer);
      e.closed = true;
      const lease = e.opts?.lease;
      if (lease?.timer) clearInterval(lease.timer);
      if (lease) lease.released = true;
      m.engine = null;
      m.importing = false;
      m.crashed = true;
    }
    await this.startProcess();
  }

  say(line: string): void {
    this.log.push(line);
  }

  newModel(name: string, blocks: number, from?: number[]): VolumeModel {
    const cur = from ? [...from] : new Array(blocks).fill(0);
    const m: VolumeModel = { name, blocks, cur, possible: cur.map((v) => new Set([v])), snapshots: new Map(), origin: null, engine: null, importing: false, crashed: false };
    this.volumes.set(name, m);
    return m;
  }

  async engineOf(m: VolumeModel, opts: { autoCommitMs?: number } = {}): Promise<VolumeEngine> {
    if (m.engine) return m.engine;
    const e = await this.process.vault.openEngine(m.name, { dirtyLimitBytes: 12 * MiB, readCacheBytes: 8 * MiB, writebackDelayMs: 5, autoCommitMs: 20, ...opts });
    m.engine = e;
    if (m.crashed) {
      // after a crash: every block holds its durable value or a later write, nothing else
      const ids = await readIds(e, m.blocks, `${m.name} after a crash`);
      ids.forEach((v, b) => {
        assert.ok(m.possible[b].has(v), `${m.name} block ${b} after a crash holds write ${v}; expected one of ${[...m.possible[b]].join(', ')}`);
      });
      m.cur = ids;
      m.possible = ids.map((v) => new Set([v]));
      m.crashed = false;
    }
    return e;
  }

  flushed(m: VolumeModel): void {
    m.possible = m.cur.map((v) => new Set([v]));
  }

  /** Every invariant, read from the store itself (no fault injection). */
  async checkInvariants(step: string): Promise<void> {
    const names = (await this.checker.listVolumes()).map((v) => v.name).sort();
    assert.deepEqual(names, [...this.volumes.keys()].sort(), `${step}: the volumes in the store`);
    const checked = new Map<string, string | null>();
    for (const m of this.volumes.values()) {
      // loadManifestOf refuses a root older than the checker has seen: nothing silently older
      const specs = [m.name, ...[...m.snapshots.keys()].map((s) => `${m.name}@${s}`)];
      for (const spec of specs) {
        const { manifest, root, objects } = await this.checker.loadManifestOf(spec);
        const r = await verifyManifest(objects, manifest, root, { checked });
        assert.deepEqual(r.damaged, [], `${step}: every object ${spec} names exists and authenticates`);
      }
      for (const [snap, ids] of m.snapshots) {
        const e = await this.checker.openSnapshotEngine(m.name, snap, { readCacheBytes: 0 });
        try {
          assert.deepEqual(await readIds(e, m.blocks, `${m.name}@${snap}`), ids, `${step}: ${m.name}@${snap} reads as it was taken`);
        } finally {
          await e.close();
        }
      }
      if (m.engine) {
        assert.deepEqual(await readIds(m.engine, m.blocks, m.name), m.cur, `${step}: ${m.name} reads every write`);
      } else if (!m.crashed) {
        const e = await this.checker.openEngine(m.name, { readOnly: true, readCacheBytes: 0 });
        try {
          assert.deepEqual(await readIds(e, m.blocks, m.name), m.cur, `${step}: closed ${m.name} reads every flushed write`);
        } finally {
          await e.close();
        }
      }
    }
  }

  async cleanup(): Promise<void> {
    for (const m of this.volumes.values()) {
      if (m.engine) await m.engine.close().catch(() => undefined);
    }
    await this.codec.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function readIds(e: VolumeEngine, blocks: number, what: string): Promise<number[]> {
  const out: number[] = [];
  const data = await e.read(0, blocks * BLOCK);
  for (let b = 0; b < blocks; b++) out.push(writeIdOf(data.subarray(b * BLOCK, (b + 1) * BLOCK), b, what));
  return out;
}
