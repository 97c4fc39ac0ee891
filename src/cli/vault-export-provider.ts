// Serves a vault's volumes as NBD exports. One VolumeEngine per volume, opened on first use and
// shared by every connection to it (multi-conn). A volume engine stays open while clients use it
// and for `idleCloseMs` after the last one leaves (warm caches for a reconnecting client), then
// it is flushed and closed, which gives its lease back: a server asked once for a volume's size
// (NBD_OPT_INFO, nbdinfo --list) no longer keeps every other server from writing it. closeAll
// flushes the rest. Snapshot engines (VOL@SNAP, read-only) close when their last connection
// ends, so a deleted or re-created snapshot is never served from a stale manifest. Unknown names
// answer null (NBD_REP_ERR_UNKNOWN), other failures throw.
import { VaultError, isVaultError, describeError } from '../errors';
import type { Logger } from '../util/log';
import type { Export, ExportProvider, OpenPurpose } from '../nbd/export';
import type { EngineOptions, EngineStats, VolumeEngine } from '../volume/volume-engine';
import { type Vault } from '../volume/vault';
import { splitExportName } from '../volume/volume-references';
import { snapshotExportDescription, type SnapshotRecord } from '../volume/snapshot-record';
import { LiveReadView, VolumeChanged } from './live-read-view';

/** how long a volume nobody uses stays open (its caches warm, its lease held) */
export const DEFAULT_IDLE_CLOSE_MS = 60_000;
/** how many times a look at a volume another server writes is read again */
const INSPECT_ATTEMPTS = 3;

export class VaultExportProvider implements ExportProvider {
  private readonly engines = new Map<string, Promise<VolumeEngine>>();
  /** the engines of `engines` that have opened (for metrics) */
  private readonly opened = new Map<string, VolumeEngine>();
  /** open connections (and admin requests) per export */
  private readonly refs = new Map<string, number>();
  /** volumes without users, closed when their timer fires */
  private readonly idleTimers = new Map<string, NodeJS.Timeout>();
  /** idle volumes being flushed, then closed */
  private readonly idleWork = new Map<string, Promise<void>>();
  /** idle volumes being closed (after their flush): an open waits for that (the lease is still ours) */
  private readonly closingIdle = new Map<string, Promise<void>>();
  /** volumes written, then closed for want of clients, since takeWrittenNames() last asked */
  private readonly writtenThenClosed = new Set<string>();
  /** each open volume's write count when takeWrittenNames() last asked */
  private readonly seenWrites = new Map<string, number>();
  private closing = false;
  /** volumes opened to be looked at (inspect), each with its read-only engine */
  private readonly inspecting = new Map<Export, VolumeEngine>();
  /** the view of each volume new clients that may only read it get (live-read-view.ts) */
  private readonly readViews = new Map<string, Promise<LiveReadView>>();
  /** every open view, with its connection count (a view replaced in readViews serves on) */
  private readonly viewRefs = new Map<LiveReadView, number>();

  constructor(
    private readonly vault: Vault,
    readonly defaultName: string,
    private readonly engineOptions: Partial<EngineOptions>,
    private readonly logger: Logger,
    private readonly idleCloseMs = DEFAULT_IDLE_CLOSE_MS,
  ) {}

  /** Every volume, and every snapshot as `VOL@SNAP` (read-only). */
  async list(): Promise<Array<{ name: string; description: string }>> {
    const out: Array<{ name: string; description: string }> = [];
    const volumes = await this.vault.listVolumes();
    const byName = new Map<string, typeof volumes>();
    for (const v of volumes) byName.set(v.name, [...(byName.get(v.name) ?? []), v]);
    for (const v of volumes) {
      // Two volumes of one name (created at once on two machines): neither can be opened by that
      // name, and they must not make the whole list fail (every client's listing did).
      const named = byName.get(v.name)!;
      if (named.length > 1) {
        if (named[0] === v) this.logger.error({ volume: v.name, ids: named.map((x) => x.id) }, 'volumes share a name: not served (delete one with `volume delete NAME --id ID`)');
        continue;
      }
      out.push({ name: v.name, description: `nbd-vault volume ${v.name}` });
      for (const s of await this.vault.listSnapshots(v.name, v)) {
        out.push({ name: `${v.name}@${s.name}`, description: snapshotExportDescription(v.name, s) });
      }
    }
    return out;
  }

  async open(name: string, purpose: OpenPurpose = 'serve'): Promise<Export | null> {
    if (this.closing) return null;
    const wanted = name === '' ? this.defaultName : name;
    if (purpose === 'inspect' && !this.engines.has(wanted)) return this.inspect(wanted);
    // (no writer's lease for a reader, whoever writes the volume: here, or on another server)
    if (purpose === 'read' && splitExportName(wanted)[1] === null) return this.openReadView(wanted);
    await this.closingIdle.get(wanted);
    let p = this.engines.get(wanted);
    const lost = await p?.then(async (e) => (e.leaseLost && !(await e.regainLease()) ? e : null), () => null);
    if (lost && !lost.leaseLostForGood) {
      // Lost in a store outage (its heartbeats failed) and not taken back yet: the engine keeps
      // the writes it acknowledged, for when the store answers again. Opening the volume afresh
      // would throw them away while later FLUSHes succeeded.
      throw new VaultError('ERR_STORE_TRANSIENT', `volume "${wanted}": this server lost its lease while the store failed and cannot take it back yet; the writes it holds wait for the store (try again)`);
    }
    if (lost) {
      // Another server has the volume now: forget the engine (what it holds unflushed cannot be
      // committed: its close says how much) and try to take the volume again.
      if (this.engines.get(wanted) === p) this.engines.delete(wanted);
      await lost.close().catch((err) => this.logger.error({ volume: wanted, err: describeError(err) }, 'unflushed writes lost with the lease'));
      this.logger.warn({ volume: wanted }, 'volume lease was lost: opening the volume again');
      p = this.engines.get(wanted);
    }
    if (!p) {
      const [volume, snap] = splitExportName(wanted);
      p = snap === null ? this.vault.openEngine(volume, this.engineOptions) : this.vault.openSnapshotEngine(volume, snap, this.engineOptions);
      this.engines.set(wanted, p);
      p.then(
        (e) => {
          this.opened.set(wanted, e);
          this.logger.info({ volume: wanted, size: e.size, seq: e.currentSeq }, 'volume opened');
        },
        () => this.engines.delete(wanted),
      );
    }
    try {
      const engine = await p;
      if (this.engines.get(wanted) !== p) return this.open(name); // released (closed) meanwhile
      this.refs.set(wanted, (this.refs.get(wanted) ?? 0) + 1);
      clearTimeout(this.idleTimers.get(wanted));
      this.idleTimers.delete(wanted);
      return engine;
    } catch (err) {
      if (isVaultError(err, 'ERR_NOT_FOUND')) return null;
      this.logger.error({ volume: wanted, err: describeError(err) }, 'cannot open volume');
      throw err;
    }
  }

  /** An open waiting out the lease of a server that stopped, or (a snapshot) the heartbeat of a
   *  delete that was cut off (Vault.leaseWaitLeftMs). */
  openWaitLeftMs(name: string): number | undefined {
    return this.vault.leaseWaitLeftMs(name === '' ? this.defaultName : name);
  }

  /**
   * A volume no client has open here, for NBD_OPT_INFO or a meta context query: read without
   * its writer's lease (which another server may hold: waiting to see whether that one is alive
   * took seconds per volume, and `nbdinfo --list` ran out of handshake time), and shown with the
   * flags a client that opens it to write gets. Closed on release. A snapshot likewise, without
   * the reader mark that serving it writes (snapshot-readers.ts: no store writes per export that
   * `nbdinfo --list` asks about).
   */
  private async inspect(name: string): Promise<Export | null> {
    const [, snap] = splitExportName(name);
    let engine: VolumeEngine;
    try {
      engine = await this.openWithoutLease(name, { readaheadChunks: 0 });
    } catch (err) {
      if (isVaultError(err, 'ERR_NOT_FOUND')) return null;
      throw err;
    }
    const refuse = async (): Promise<never> => {
      throw new VaultError('ERR_NOT_SUPPORTED', 'an export opened to be looked at serves no request');
    };
    const view: Export = {
      name: engine.name,
      description: engine.description,
      size: engine.size,
      caps: snap !== null ? engine.caps : { ...engine.caps, readOnly: false, canFlush: true, canFua: true, canTrim: true, canZero: true, canFastZero: true },
      read: refuse,
      write: refuse,
      trim: refuse,
      writeZeroes: refuse,
      flush: refuse,
      cache: refuse,
      blockStatus: refuse,
      listMetaContexts: () => engine.listMetaContexts(),
      metaContextStatus: refuse,
    };
    this.inspecting.set(view, engine);
    return view;
  }

  /** A read-only engine on `name` (a volume's newest root, or a snapshot without a reader mark:
   *  to be looked at only), without the writer's lease. */
  private async openWithoutLease(name: string, options: Partial<EngineOptions> = {}): Promise<VolumeEngine> {
    const [volume, snap] = splitExportName(name);
    for (let attempt = 1; ; attempt++) {
      try {
        const opts = { ...this.engineOptions, ...options, readOnly: true };
        return snap === null ? await this.vault.openEngine(volume, opts) : await this.vault.openSnapshotEngine(volume, snap, opts, 'inspect');
      } catch (err) {
        // a writer elsewhere committed while the root's journals were read, and deleted one: the
        // new root names what is there now
        if (!isVaultError(err, 'ERR_IO') || attempt === INSPECT_ATTEMPTS) throw err;
      }
    }
  }

  /** The volume for a client that may only read it (live-read-view.ts): one view per volume for
   *  new clients, closed when its last client leaves; a new one once the volume changed size or
   *  identity (its old clients keep theirs, and fail their reads). */
  private async openReadView(name: string): Promise<Export | null> {
    if (this.closing) return null;
    let p = this.readViews.get(name);
    if (!p) {
      const opening = LiveReadView.open(() => this.openWithoutLease(name, { followsWriter: true }), this.logger);
      opening.then(
        (v) => this.logger.info({ volume: name, seq: v.currentSeq }, 'volume opened read-only for readers'),
        () => {
          if (this.readViews.get(name) === opening) this.readViews.delete(name);
        },
      );
      this.readViews.set(name, opening);
      p = opening;
    }
    let view: LiveReadView;
    try {
      view = await p;
    } catch (err) {
      if (isVaultError(err, 'ERR_NOT_FOUND')) return null;
      this.logger.error({ volume: name, err: describeError(err) }, 'cannot open volume');
      throw err;
    }
    if (view.isClosed) {
      // its last client left meanwhile
      if (this.readViews.get(name) === p) this.readViews.delete(name);
      return this.openReadView(name);
    }
    this.viewRefs.set(view, (this.viewRefs.get(view) ?? 0) + 1);
    try {
      // this client reads what was committed when it connected
      await view.freshen();
    } catch (err) {
      if (!(err instanceof VolumeChanged)) {
        this.logger.warn({ volume: name, err: describeError(err) }, 'read-only view could not look for a newer root: it reads the one it has');
        return view;
      }
      await this.releaseView(view);
      if (this.readViews.get(name) === p) this.readViews.delete(name);
      return this.openReadView(name);
    }
    return view;
  }

  private async releaseView(view: LiveReadView): Promise<void> {
    const refs = (this.viewRefs.get(view) ?? 1) - 1;
    if (refs > 0) {
      this.viewRefs.set(view, refs);
      return;
    }
    this.viewRefs.delete(view);
    // (new clients get a new view: the closed one must not keep its manifest for them)
    const p = this.readViews.get(view.name);
    if (p) void p.then((current) => current === view && this.readViews.get(view.name) === p && this.readViews.delete(view.name), () => {});
    await view.close();
  }

  /** Snapshot a served volume at one consistent point while its clients keep writing. */
  async snapshot(volume: string, name: string, opts: { keep?: boolean } = {}): Promise<SnapshotRecord> {
    if (splitExportName(volume)[1] !== null) throw new VaultError('ERR_INVALID_ARGUMENT', `cannot snapshot a snapshot ("${volume}")`);
    const engine = (await this.open(volume)) as VolumeEngine | null;
    if (!engine) throw new VaultError('ERR_NOT_FOUND', `no volume named "${volume}"`);
    try {
      return await engine.snapshot(name, opts);
    } finally {
      await this.release(engine);
    }
  }

  /** Cache, upload and lease state of every open engine, read-only views' included (metrics, at
   *  scrape time; a volume served both ways is listed twice, and the metrics add them up). */
  engineStats(): Array<{ name: string; readOnly: boolean; stats: EngineStats }> {
    const engines = [...this.opened].map(([name, e]) => ({ name, readOnly: e.caps.readOnly, stats: e.stats() }));
    const views = [...this.viewRefs.keys()].filter((v) => !v.isClosed).map((v) => ({ name: v.name, readOnly: true, stats: v.stats() }));
    return [...engines, ...views];
  }

  /** Names of the exports with an open engine (volumes being written through this server). */
  openNames(): string[] {
    return [...this.engines.keys()];
  }

  /** The volumes clients wrote since the last call, closed since or not: what the snapshot
   *  schedule snapshots (a volume only listed, or unchanged, gets no snapshot and keeps no lease). */
  takeWrittenNames(): string[] {
    const names = new Set(this.writtenThenClosed);
    this.writtenThenClosed.clear();
    for (const [name, engine] of this.opened) {
      if (engine.caps.readOnly) continue;
      if (engine.writeCount !== (this.seenWrites.get(name) ?? 0)) names.add(name);
      this.seenWrites.set(name, engine.writeCount);
    }
    return [...names];
  }

  /** A scheduled snapshot of `name` failed: the next round tries it again. */
  stillUnsnapshotted(name: string): void {
    this.writtenThenClosed.add(name);
  }

  async release(exp: Export): Promise<void> {
    const inspected = this.inspecting.get(exp);
    if (inspected) {
      this.inspecting.delete(exp);
      return inspected.close();
    }
    if (exp instanceof LiveReadView) return this.releaseView(exp);
    const refs = this.refs.get(exp.name);
    if (refs === undefined) return;
    if (refs > 1) {
      this.refs.set(exp.name, refs - 1);
      return;
    }
    this.refs.delete(exp.name);
    if (splitExportName(exp.name)[1] === null) {
      // a volume: stays open a while for a client that comes back, then gives its lease back
      if (!this.closing) this.armIdleClose(exp.name);
      return;
    }
    const p = this.engines.get(exp.name);
    this.engines.delete(exp.name);
    this.opened.delete(exp.name);
    await (await p)?.close();
  }

  private armIdleClose(name: string): void {
    this.idleTimers.set(name, setTimeout(() => this.closeIdle(name), this.idleCloseMs).unref());
  }

  private closeIdle(name: string): void {
    this.idleTimers.delete(name);
    const p = this.engines.get(name);
    if (this.closing || this.refs.has(name) || !p || this.idleWork.has(name)) return;
    const work = p
      .then(async (engine) => {
        try {
          // Flushed first, the engine still served (a client that comes back meanwhile gets it,
          // without waiting for a flush that may retry for a minute), and kept when the flush
          // fails (a store outage), or while a lease lost in an outage cannot be taken back yet:
          // a close would give up what the clients wrote and no FLUSH covered. Only a lease
          // another server has now ends it (the close says what is lost).
          if (engine.leaseLost && !(await engine.regainLease()) && !engine.leaseLostForGood) throw new VaultError('ERR_STORE_TRANSIENT', 'the lease was lost in a store outage and is not back yet');
          if (!engine.leaseLost) await engine.flush();
        } catch (err) {
          this.logger.warn({ volume: name, err: describeError(err) }, 'a volume no client uses could not be flushed: it stays open, and is tried again later');
          if (!this.closing && !this.refs.has(name)) this.armIdleClose(name);
          return;
        }
        if (this.closing || this.refs.has(name) || this.engines.get(name) !== p) return; // a client came back, or the server stops
        this.engines.delete(name);
        this.opened.delete(name);
        if (engine.writeCount !== (this.seenWrites.get(name) ?? 0)) this.writtenThenClosed.add(name);
        this.seenWrites.delete(name);
        // (an open from here on waits for this close: the lease is still ours until it ends)
        const closed = engine.close().finally(() => this.closingIdle.delete(name));
        this.closingIdle.set(name, closed);
        await closed;
        this.logger.info({ volume: name, seq: engine.currentSeq, idleMs: this.idleCloseMs }, 'volume flushed and closed: no client used it');
      })
      .catch((err) => this.logger.error({ volume: name, err: describeError(err) }, 'closing a volume no client used failed'))
      .finally(() => this.idleWork.delete(name));
    this.idleWork.set(name, work);
  }

  async closeAll(): Promise<void> {
    this.closing = true;
    for (const [view, engine] of this.inspecting) {
      this.inspecting.delete(view);
      await engine.close().catch(() => {}); // read-only: nothing of it to store
    }
    const views = await Promise.all([...this.readViews.values()].map((p) => p.catch(() => null)));
    this.readViews.clear();
    for (const view of new Set([...this.viewRefs.keys(), ...views])) await view?.close().catch(() => {}); // read-only: nothing to store
    this.viewRefs.clear();
    for (const t of this.idleTimers.values()) clearTimeout(t);
    this.idleTimers.clear();
    await Promise.all(this.idleWork.values());
    const results = await Promise.allSettled(
      [...this.engines.entries()].map(async ([name, p]) => {
        const engine = await p;
        if (engine.leaseLost) await engine.regainLease(); // a late heartbeat must not cost the flush
        await engine.close();
        this.logger.info({ volume: name, seq: engine.currentSeq }, 'volume flushed and closed');
      }),
    );
    this.engines.clear();
    this.opened.clear();
    const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    if (failed.length > 0) throw failed[0].reason;
  }
}
