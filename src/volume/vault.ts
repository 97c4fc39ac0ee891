// A vault: one store (bucket + prefix, or a directory) holding the public `vault` object and
// any number of volumes. Knows the object layout (docs/FORMAT.md); opens VolumeEngines.
//
// - `vault` is public JSON (format, vault id, suites) plus a key check sealed with the master
//   key, so a wrong master key is reported as such, not as corrupt data.
// - `volumes/<id>/meta` is sealed with the master key (kind 'volume'): the volume's random key
//   and its name (volume-metadata.ts). Deleting it is crypto-erase; re-keying the master key
//   reseals only these.
// - The root's sequence number is checked against local state (rollback detection).
// Not here: clone and the deletions (vault-lifecycle.ts), what roots reference
// (volume-references.ts), the leases and the writer sessions behind them (vault-writers.ts),
// what a volume holds and its manifest as a report reads them (volume-info.ts).
import { randomBytes } from 'node:crypto';
import { VaultError, describeError, isVaultError } from '../errors';
import type { Codec } from '../codec/codec';
import { SecretKey } from '../keys/secret-key';
import { deriveSubkey, generateVolumeKey, type MasterKeyRing } from '../keys';
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';
import { closeAfter } from '../util/close-after';
import { InFlight } from '../util/in-flight';
import { CHUNK_SIZE, checkVolumeSize } from './chunk-math';
import { LocalState } from './local-state';
import { PAGE_ENTRIES } from './manifest';
import { VAULT_KEY, metaKey, rootKey } from './object-keys';
import type { VolumeLease } from './volume-lease';
import { ROOT_FORMAT, type RootRecord } from './root-record';
import { VolumeEngine, DEFAULT_ENGINE_OPTIONS, type EngineOptions } from './volume-engine';
import { VolumeObjects } from './volume-objects';
import { snapshotExportDescription, type SnapshotRecord } from './snapshot-record';
import { VaultLifecycle } from './vault-lifecycle';
import { VaultWriters } from './vault-writers';
import { ReaderMarks } from './snapshot-readers';
import { VolumeMetadata, keyCheckPlace, type VolumeMeta } from './volume-metadata';
import { loadManifestOf, volumeInfo, type LoadedManifest, type VolumeInfo } from './volume-info';
import { checkVolumeName, listVolumeIds, snapshotAsRoot, vaultIdsOfVolumes } from './volume-references';

export const VAULT_FORMAT = 1;
export const KEY_CHECK_TEXT = Buffer.from('nbd-vault master key check v1');

export type { VolumeMeta } from './volume-metadata';

export interface VaultOptions {
  readonly stateDir: string;
  readonly acceptRollback?: boolean;
  readonly logger: Logger;
  /** who writes, as other writers are told (e.g. 'nbd-vault serve') */
  readonly leasePurpose?: string;
  /** Every master key this process holds (during and after a key rotation); `master` alone if absent. */
  readonly keyRing?: MasterKeyRing;
  /** the writer session's heartbeat timing (tests: shorter) */
  readonly leaseTiming?: { ttlMs?: number; renewMs?: number };
  /** a foreign lease holder: watch its heartbeat to tell dead from alive (default), or refuse at once */
  readonly waitForDeadHolder?: boolean;
}


export class Vault {
  private readonly vaultIdBytes: Buffer;
  private readonly state: LocalState;
  /** this process's writer session, its watches of other writers' and the leases (vault-writers.ts) */
  private readonly writers: VaultWriters;
  /** the volumes' metadata objects: names, keys (volume-metadata.ts) */
  private readonly metadata: VolumeMetadata;
  /** the marks of the snapshots this process reads (snapshot-readers.ts) */
  private readonly readerMarks: ReaderMarks;
  /** work started for the caller that a close waits for (watchLeaseHolders) */
  private readonly background = new InFlight();

  private constructor(
    readonly store: ObjectStore,
    master: SecretKey,
    readonly codec: Codec,
    readonly vaultId: string,
    private readonly opts: VaultOptions,
  ) {
    this.vaultIdBytes = Buffer.from(vaultId, 'hex');
    this.state = new LocalState(opts.stateDir, vaultId, opts.logger);
    this.metadata = new VolumeMetadata(store, codec, vaultId, master, opts.keyRing, opts.logger);
    this.writers = new VaultWriters({
      store,
      codec,
      vaultIdBytes: this.vaultIdBytes,
      logger: opts.logger,
      timing: opts.leaseTiming,
      waitForDeadHolder: opts.waitForDeadHolder,
      readMeta: (id) => this.readMeta(id),
      instanceId: () => this.state.instanceId(),
    });
    this.readerMarks = new ReaderMarks(() => this.writers.current(), (volume, session) => this.writers.observeDeleter(volume, session), this.purpose(), opts.logger);
  }

  /**
   * `nbd-vault init`: write the public vault object. Refuses a store that has one, and a store
   * that holds volumes without one: a new vault there would hide them (its id differs, so none
   * would open) and invite a guest to format an empty disk. `recoverVaultId` rebuilds the vault
   * object of those volumes instead (`init --recover`), checked against their metadata.
   */
  static async create(store: ObjectStore, master: SecretKey, codec: Codec, opts: VaultOptions & { recoverVaultId?: string }): Promise<Vault> {
    if (await store.head(VAULT_KEY)) throw new VaultError('ERR_EXISTS', `${store.name} already holds a vault`);
    const volumeIds = await listVolumeIds(store);
    if (volumeIds.length > 0 && opts.recoverVaultId === undefined) {
      const hints = await vaultIdsOfVolumes(store, volumeIds);
      throw new VaultError(
        'ERR_EXISTS',
        `${store.name} holds ${volumeIds.length} volume(s) but no \`vault\` object: it was deleted or cannot be read. Nothing was created. ` +
          `Restore the \`vault\` object from a backup, or rebuild it with \`nbd-vault init --recover\`` +
          (hints.length ? ` (the volumes name vault id ${hints.join(', ')})` : ' --vault-id ID (the vault id is a directory name in the server\'s --state directory)'),
      );
    }
    const vaultId = opts.recoverVaultId ?? randomBytes(16).toString('hex');
    if (!/^[0-9a-f]{32}$/.test(vaultId)) throw new VaultError('ERR_INVALID_ARGUMENT', `a vault id is 32 hex digits (got "${vaultId}")`);
    const vault = new Vault(store, master, codec, vaultId, opts);
    if (opts.recoverVaultId !== undefined) await vault.checkRecovery(volumeIds);
    const keyCheck = await codec.seal(master, KEY_CHECK_TEXT, keyCheckPlace(vault.vaultIdBytes));
    const doc = {
      format: 'nbd-vault',
      version: VAULT_FORMAT,
      vaultId,
      chunkSize: CHUNK_SIZE,
      compression: 'zstd',
      cipher: 'XChaCha20-Poly1305-IETF (libsodium)',
      kdf: 'crypto_kdf_derive_from_key (BLAKE2b)',
      keyCheck: keyCheck!.toString('base64'),
      createdAt: new Date().toISOString(),
    };
    try {
      await store.put(VAULT_KEY, Buffer.from(JSON.stringify(doc, null, 2) + '\n'), store.props.conditionalPut ? { ifNoneMatch: '*' } : undefined);
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_PRECONDITION')) throw new VaultError('ERR_EXISTS', `${store.name} already holds a vault`);
      throw err;
    }
    return vault;
  }

  static async open(store: ObjectStore, master: SecretKey, codec: Codec, opts: VaultOptions): Promise<Vault> {
    let body: Buffer;
    try {
      body = (await store.get(VAULT_KEY)).body;
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) {
        // volumes without the `vault` object: it was lost, and `init` alone would refuse
        const volumes = (await listVolumeIds(store).catch(() => [])).length;
        if (volumes > 0) throw new VaultError('ERR_NOT_FOUND', `${store.name} holds ${volumes} volume(s) but no \`vault\` object: it was deleted or cannot be read; restore it from a backup, or rebuild it with \`nbd-vault init --recover\``);
        throw new VaultError('ERR_NOT_FOUND', `${store.name} holds no vault (run \`nbd-vault init\`)`);
      }
      throw err;
    }
    let doc: any;
    try {
      doc = JSON.parse(body.toString('utf8'));
    } catch {
      throw new VaultError('ERR_CORRUPT', `the vault object in ${store.name} is not valid JSON`);
    }
    if (doc?.format !== 'nbd-vault' || typeof doc.vaultId !== 'string' || !/^[0-9a-f]{32}$/.test(doc.vaultId)) {
      throw new VaultError('ERR_CORRUPT', `the vault object in ${store.name} is not an nbd-vault vault`);
    }
    if (doc.version !== VAULT_FORMAT) throw new VaultError('ERR_CORRUPT', `vault format ${doc.version} is not supported by this version (supports ${VAULT_FORMAT})`);
    if (doc.chunkSize !== CHUNK_SIZE) throw new VaultError('ERR_CORRUPT', `vault chunk size ${doc.chunkSize} is not supported`);
    const vault = new Vault(store, master, codec, doc.vaultId, opts);
    const opensCheck = async (key: SecretKey) => {
      try {
        return (await codec.open(key, Buffer.from(String(doc.keyCheck), 'base64'), keyCheckPlace(vault.vaultIdBytes))).equals(KEY_CHECK_TEXT);
      } catch {
        return false;
      }
    };
    // During a key rotation the check is sealed with the old key or the new one.
    let opened = false;
    for (const key of opts.keyRing?.all() ?? [master]) if (!opened) opened = await opensCheck(key);
    if (!opened) {
      throw new VaultError('ERR_WRONG_KEY', `the master key does not belong to the vault in ${store.name} (wrong --keys directory?)`);
    }
    return vault;
  }

  /** Recovery: every volume's key must unwrap with this master key under this vault id. */
  private async checkRecovery(volumeIds: string[]): Promise<void> {
    if (volumeIds.length === 0) throw new VaultError('ERR_NOT_FOUND', `${this.store.name} holds no volumes: there is nothing to recover (use \`nbd-vault init\`)`);
    const results = await Promise.allSettled(volumeIds.map((id) => this.readMeta(id)));
    const opened = results.filter((r) => r.status === 'fulfilled').length;
    for (const r of results) if (r.status === 'fulfilled') r.value.key.wipe();
    if (opened === 0) {
      const reason = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      throw new VaultError('ERR_WRONG_KEY', `no volume in ${this.store.name} opens with this master key and vault id ${this.vaultId}: ${describeError(reason.reason)}`);
    }
    if (opened < volumeIds.length) this.opts.logger.warn({ opened, volumes: volumeIds.length }, 'some volumes do not open with this key and vault id');
    this.opts.logger.warn({ vaultId: this.vaultId, volumes: opened }, 'rebuilding the vault object');
  }

  // --- volumes ----------------------------------------------------------------------------

  /** Every volume whose metadata opens (VolumeMetadata.list). */
  listVolumes(opts: { strict?: boolean; unreadable?: Array<{ id: string; error: string }> } = {}): Promise<VolumeMeta[]> {
    return this.metadata.list(opts);
  }

  /** The volume called `name`; two of one name are refused (VolumeMetadata.find). */
  findVolume(name: string): Promise<VolumeMeta> {
    return this.metadata.find(name);
  }

  /** Another volume than `id` is called `name` (VolumeMetadata.nameTakenBesides). */
  nameTakenBesides(name: string, id: string): Promise<boolean> {
    return this.metadata.nameTakenBesides(name, id);
  }

  private readMeta(volumeId: string): Promise<VolumeMeta & { key: SecretKey }> {
    return this.metadata.read(volumeId);
  }

  async createVolume(name: string, size: number): Promise<VolumeMeta> {
    checkVolumeName(name);
    checkVolumeSize(size);
    if ((await this.listVolumes()).some((v) => v.name === name)) throw new VaultError('ERR_EXISTS', `a volume named "${name}" exists already`);
    const id = randomBytes(16).toString('hex');
    const key = generateVolumeKey();
    const createdAt = new Date().toISOString();
    const create = this.store.props.conditionalPut ? { ifNoneMatch: '*' as const } : undefined;
    const objects = this.volumeObjects({ id, name, createdAt }, key);
    const root: RootRecord = {
      v: ROOT_FORMAT,
      volumeId: id,
      seq: 1,
      size,
      chunkSize: CHUNK_SIZE,
      pageEntries: PAGE_ENTRIES,
      epoch: 1,
      pages: new Array(Math.ceil(Math.ceil(size / CHUNK_SIZE) / PAGE_ENTRIES)).fill(null),
      updatedAt: createdAt,
    };
    // The root first: a volume exists from its metadata on, so one killed in between leaves an
    // unreferenced root for gc, not a volume without a root that every listing fails on.
    await objects.writeRoot(root, null);
    await this.store.put(metaKey(id), await this.metadata.encode(id, key, { name, createdAt }), create);
    if (await this.metadata.nameTakenBesides(name, id)) {
      await this.store.delete(metaKey(id));
      await this.store.delete(rootKey(id));
      throw new VaultError('ERR_EXISTS', `a volume named "${name}" was created elsewhere at the same moment; this create was withdrawn (try again, or pick another name)`);
    }
    await this.state.recordSeq(id, 1);
    this.opts.logger.info({ volume: name, volumeId: id, size }, 'volume created');
    return { id, name, createdAt };
  }

  /** The objects of a clone's origin volume (which must still exist: it holds shared chunks). */
  private async originObjects(cloneName: string, originId: string): Promise<VolumeObjects> {
    let origin: VolumeMeta & { key: SecretKey };
    try {
      origin = await this.readMeta(originId);
    } catch (err) {
      throw new VaultError('ERR_IO', `the origin volume ${originId} of clone "${cloneName}" cannot be opened: ${(err as Error).message}`, { cause: err });
    }
    const { key, ...meta } = origin;
    return this.volumeObjects(meta, key);
  }

  private volumeObjects(meta: VolumeMeta, volumeKey: SecretKey): VolumeObjects {
    const keys = { data: deriveSubkey(volumeKey, 'data'), manifest: deriveSubkey(volumeKey, 'manifest') };
    return new VolumeObjects(this.store, this.codec, keys, this.vaultId, meta.id, meta.name);
  }

  /**
   * The volume's objects, its current root and its snapshots, checked against rollback twice:
   * against the highest root this machine has seen (local state), and — with no local state at
   * all — against the store's own snapshot records: every snapshot was taken from a root at
   * least as new as its `rootSeq`, and bumped the epoch past its own. A root behind either is a
   * replay. Accepted with --accept-rollback, the root's epoch is raised past every snapshot's,
   * so its writer never deletes an object a snapshot names.
   */
  async loadVolume(name: string, found?: VolumeMeta): Promise<{ meta: VolumeMeta; objects: VolumeObjects; root: RootRecord; etag: string; snapshots: SnapshotRecord[] }> {
    found ??= await this.findVolume(name);
    const { key, ...meta } = await this.readMeta(found.id);
    const objects = this.volumeObjects(meta, key);
    // What this machine had seen *before* this read: a commit racing it cannot cause a false alarm.
    const highest = await this.state.highestSeq(meta.id);
    let { root, etag } = await objects.readRoot();
    const snapshots = await objects.listSnapshots();
    if (root.origin) objects.origin = await this.originObjects(name, root.origin.volumeId);
    const newer = snapshots.filter((s) => s.rootSeq > root.seq || s.epoch >= root.epoch);
    if (root.seq < highest || newer.length > 0) {
      const why =
        newer.length > 0
          ? `its snapshot "${newer[0].name}" was taken from root ${newer[0].rootSeq} (epoch ${newer[0].epoch}), but the store's root is ${root.seq} (epoch ${root.epoch})`
          : `this machine has seen root ${highest}, but the store's root is ${root.seq}`;
      if (!this.opts.acceptRollback) {
        throw new VaultError('ERR_ROLLBACK', `volume "${name}": ${why}: the store may have been rolled back or replayed an old root (use --accept-rollback to open it anyway)`);
      }
      this.opts.logger.warn({ volume: name, seq: root.seq, highestSeen: highest, newerSnapshots: newer.length }, 'accepting an older root (--accept-rollback)');
      await this.state.resetSeq(meta.id, root.seq);
      if (newer.length > 0) root = { ...root, epoch: Math.max(...snapshots.map((s) => s.epoch)) + 1 };
    }
    if (root.seq > highest) await this.state.recordSeq(meta.id, root.seq);
    return { meta, objects, root, etag, snapshots };
  }

  /** A writable engine holds the volume's lease (see volume-lease.ts) until it is closed. */
  async openEngine(name: string, options: Partial<EngineOptions> = {}): Promise<VolumeEngine> {
    const readOnly = options.readOnly ?? false;
    const found = await this.findVolume(name); // once: it unwraps every volume's metadata
    const lease = readOnly ? undefined : await this.acquireLease(found, this.purpose());
    try {
      // Read the root only under the lease: whatever the last writer committed is in it.
      const { meta, objects, root, etag } = await this.loadVolume(name, found);
      // a `volume delete` under way or cut off: writes would be lost with it (reads are whole
      // until its metadata goes, and can rescue what it holds)
      const deleting = readOnly ? null : await objects.deletionMarkAdvice(null, `nbd-vault volume delete ${name}`);
      if (deleting !== null) throw new VaultError('ERR_EXISTS', `volume "${name}" is being deleted (${deleting})`);
      const manifest = await VolumeEngine.loadManifest(objects, root);
      const opts: EngineOptions = {
        ...DEFAULT_ENGINE_OPTIONS,
        ...options,
        lease,
        onRootCommitted: (seq) => this.state.recordSeq(meta.id, seq),
      };
      return await VolumeEngine.open(meta.name, `nbd-vault volume ${meta.name}`, objects, root, etag, manifest, opts, this.opts.logger);
    } catch (err) {
      await lease?.release();
      throw err;
    }
  }

  /** How long opening volume `name` for writing still waits, at most, for a stopped writer's
   *  lease to run out (VaultWriters.leaseWaitLeftMs); undefined when it waits on none. */
  leaseWaitLeftMs(name: string): number | undefined {
    return this.writers.leaseWaitLeftMs(name);
  }

  /** Watch the heartbeats of the other writers holding leases here (a server at startup: see
   *  VaultWriters.watchLeaseHolders). */
  watchLeaseHolders(): Promise<number> {
    // Tracked: a close waits for it, so it never reads a volume key after the master key is wiped
    // (a server refused at startup logged one false "wrong key" error per volume).
    return this.background.track((async () => this.writers.watchLeaseHolders((await this.listVolumes()).map((v) => v.id)))());
  }

  /** Stop the writer session's heartbeat and delete it (after every engine has been closed), and
   *  end the watches of other writers. */
  async close(): Promise<void> {
    await this.readerMarks.retryLeftovers();
    await this.writers.stop();
    await this.background.settled();
  }

  private acquireLease(found: VolumeMeta, purpose: string): Promise<VolumeLease> {
    return this.writers.acquireLease(found.id, purpose);
  }

  /** What gc must keep of a volume (VaultWriters.liveWriterHorizon). */
  liveWriterHorizon(found: VolumeMeta, nowMs: number, graceMs: number): Promise<number | null> {
    return this.writers.liveWriterHorizon(found.id, nowMs, graceMs);
  }

  /** What a volume holds (volume-info.ts). `found`: the volume as a listing found it (a list of
   *  N volumes read every metadata object N² times, asking by name). */
  volumeInfo(name: string, found?: VolumeMeta): Promise<VolumeInfo> {
    return volumeInfo(this, name, found);
  }

  /** `VOL@SNAP` of a clone's origin, for people. */
  async describeOrigin(origin: NonNullable<RootRecord['origin']>): Promise<string> {
    try {
      const { key, ...meta } = await this.readMeta(origin.volumeId);
      const snap = await this.volumeObjects(meta, key).readSnapshot(origin.snapshotId);
      return `${meta.name}@${snap.name}`;
    } catch {
      return `${origin.volumeId}@${origin.snapshotId} (unreadable)`;
    }
  }

  /** Grow (or with `force`, shrink) a volume that no server is serving. */
  async resizeVolume(name: string, size: number, force: boolean): Promise<{ oldSize: number; newSize: number }> {
    checkVolumeSize(size);
    // The size is read under the writer's lease, from the engine: one load, and no writer between.
    const engine = await this.openEngine(name, { autoCommitMs: 0 });
    const oldSize = engine.size;
    const resize = async () => {
      if (size < oldSize && !force) {
        throw new VaultError('ERR_INVALID_ARGUMENT', `shrinking "${name}" from ${oldSize} to ${size} bytes discards data; add --force to do it`);
      }
      await engine.resize(size);
    };
    await closeAfter(resize, () => engine.close(), (err) => this.closeFailedToo(name, err));
    return { oldSize, newSize: size };
  }

  // --- snapshots ---------------------------------------------------------------------------

  async listSnapshots(volumeName: string, found?: VolumeMeta): Promise<SnapshotRecord[]> {
    const { objects } = await this.loadVolume(volumeName, found);
    return objects.listSnapshots();
  }

  private async findSnapshot(objects: VolumeObjects, volumeName: string, snapName: string): Promise<SnapshotRecord> {
    const found = (await objects.listSnapshots()).find((s) => s.name === snapName);
    if (!found) throw new VaultError('ERR_NOT_FOUND', `volume "${volumeName}" has no snapshot named "${snapName}"`);
    return found;
  }

  /** Snapshot a volume that no server is serving (a server does it through its admin socket). */
  async createSnapshot(volumeName: string, snapName: string, opts: { keep?: boolean } = {}): Promise<SnapshotRecord> {
    const engine = await this.openEngine(volumeName, { autoCommitMs: 0 });
    return closeAfter(() => engine.snapshot(snapName, opts), () => engine.close(), (err) => this.closeFailedToo(volumeName, err));
  }

  /** A close that failed after the operation had failed: the operation's error is the one thrown. */
  private closeFailedToo(volume: string, err: unknown): void {
    this.opts.logger.warn({ volume, err: describeError(err) }, 'closing the volume after the failure failed too');
  }

  /** A read-only engine over a snapshot: the export `VOL@SNAP`. */
  /** `inspect`: only its size, flags and contexts are read (NBD_OPT_INFO): no reader mark. */
  async openSnapshotEngine(volumeName: string, snapName: string, options: Partial<EngineOptions> = {}, purpose: 'serve' | 'inspect' = 'serve'): Promise<VolumeEngine> {
    const { meta, objects, root: live } = await this.loadVolume(volumeName);
    const snap = await this.findSnapshot(objects, volumeName, snapName);
    const exportName = `${meta.name}@${snap.name}`;
    // (marked before its pages are read: a delete that began before the mark is seen by it)
    const unmark = purpose === 'inspect' ? async () => {} : await this.readerMarks.mark(objects, snap.id, exportName);
    try {
      const root = { ...snapshotAsRoot(snap), origin: live.origin }; // a clone's snapshot shares its origin
      const manifest = await VolumeEngine.loadManifest(objects, root);
      const opts: EngineOptions = { ...DEFAULT_ENGINE_OPTIONS, ...options, readOnly: true, onClosed: unmark };
      return await VolumeEngine.open(exportName, snapshotExportDescription(meta.name, snap), objects, root, null, manifest, opts, this.opts.logger);
    } catch (err) {
      await unmark();
      throw err;
    }
  }

  /** Who writes or reads, as a lease or reader mark tells others ("nbd-vault (serve)"). */
  private purpose(): string {
    return this.opts.leasePurpose ?? `nbd-vault (${process.argv.slice(2, 3).join(' ') || 'library'})`;
  }

  /** The manifest of `name` or `name@snap`, read again when a commit beside us moved the root
   *  (volume-info.ts). */
  loadManifestOf(spec: string, found?: VolumeMeta): Promise<LoadedManifest> {
    return loadManifestOf(this, spec, found);
  }

  /** The sequence number of a volume's root now (to tell a concurrent commit from damage). */
  async rootSeqOf(volumeName: string): Promise<number> {
    return (await this.loadVolume(volumeName)).root.seq;
  }

  // --- lifecycle operations (vault-lifecycle.ts) --------------------------------------------

  /** Names of the volumes cloned from `volumeId` (from any snapshot, or from `snapshotId`). */
  clonesOf(volumeId: string, snapshotId?: string): Promise<string[]> {
    return this.lifecycle().clonesOf(volumeId, snapshotId);
  }

  /** Whether some server reads the snapshot now (a delete would be refused). */
  async snapshotBeingRead(volumeName: string, snapshotId: string): Promise<boolean> {
    return (await this.lifecycle().readersOf(volumeName, snapshotId)).length > 0;
  }

  /** `clone VOL@SNAP NEW`: a writable volume sharing the snapshot's chunks (vault-lifecycle.ts). */
  cloneVolume(source: string, newName: string): Promise<VolumeMeta> {
    return this.lifecycle().cloneVolume(source, newName);
  }

  /** Delete a snapshot record, then the objects only it named (vault-lifecycle.ts). */
  deleteSnapshot(volumeName: string, snapName: string, id?: string): Promise<{ freedObjects: number }> {
    return this.lifecycle().deleteSnapshot(volumeName, snapName, id);
  }

  /** Crypto-erase the volume, then delete all of its objects (vault-lifecycle.ts). */
  deleteVolume(name: string, onProgress?: (done: number, total: number) => void, id?: string): Promise<number> {
    return this.lifecycle().deleteVolume(name, onProgress, id);
  }

  /** The lifecycle operations, with the parts of this vault they need and nobody else may use. */
  private lifecycle(): VaultLifecycle {
    return new VaultLifecycle(this, {
      logger: this.opts.logger,
      readMeta: (id) => this.readMeta(id),
      encodeMeta: (id, key, info) => this.metadata.encode(id, key, info),
      volumeObjects: (meta, key) => this.volumeObjects(meta, key),
      findSnapshot: (objects, volumeName, snapName) => this.findSnapshot(objects, volumeName, snapName),
      acquireLease: (found, purpose) => this.acquireLease(found, purpose),
      session: () => this.writers.current(),
      observeReader: async (sessionId) => (this.readerMarks.ownsSession(sessionId) ? 'live' : this.writers.observeReader(sessionId)),
      recordSeq: (id, seq) => this.state.recordSeq(id, seq),
    });
  }
}
