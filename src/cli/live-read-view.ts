// A volume served to clients that may only read it (a read-only grant of the access policy):
// read-only engines over the volume's committed root, without its writer's lease. Taking the
// lease for them (as a writer does) kept a writer on another server out for as long as they
// stayed, and 60 s after; and a reader was refused while another server wrote the volume.
//
// What a reader sees: the volume as last committed when its connection opened the view, and newer
// commits after that where the writer deleted what the view read (its compaction folds journals
// into new objects and deletes the old ones): a read that finds an object gone moves the view to
// the store's newest root and reads again. A reader that needs one point in time for the whole
// read reads a snapshot (VOL@SNAP). The view stays on the volume it opened, at the size its
// clients were told: a newest root of another size, or of a volume made again under the name,
// fails the read (VolumeChanged) instead of answering from it. An engine the view leaves is
// closed once no read is under way on it.
import { VaultError, describeError, isVaultError } from '../errors';
import { isMissingObject } from '../volume/framed-reads';
import type { ContextExtent, Export, Extent, ReadOptions } from '../nbd/export';
import type { Logger } from '../util/log';
import type { EngineStats, VolumeEngine } from '../volume/volume-engine';

/** how many newer roots one request may move through (a writer replacing roots faster than a
 *  read can finish would otherwise keep it going) */
const MAX_MOVES_PER_READ = 3;

/** The volume the view reads was resized, or deleted and made again, since it opened. */
export class VolumeChanged extends VaultError {
  constructor(name: string, why: string) {
    super('ERR_IO', `volume "${name}" ${why} since this read-only client connected: reconnect to read it as it is now`);
  }
}

export class LiveReadView implements Export {
  private engine: VolumeEngine;
  private readonly volumeId: string;
  /** what its clients were told: fixed per connection */
  readonly size: number;
  private moving: Promise<void> | null = null;
  /** reads under way per engine: an engine the view left is closed when its count is 0 */
  private readonly busy = new Map<VolumeEngine, number>();
  /** the engine each read's result came from (its memory goes back there: readDone) */
  private readonly lenders = new WeakMap<Buffer, VolumeEngine>();
  private readonly retired = new WeakSet<VolumeEngine>();
  /** the final counters of the engines the view left (stats) */
  private readonly leftCounters = { hits: 0, misses: 0, reused: 0 };
  /** closes of engines the view left, still running (close() waits for them) */
  private readonly closings = new Set<Promise<void>>();
  private closed = false;
  /** set once the volume changed under the view: its reads that miss fail at once with it */
  private outdated: VolumeChanged | null = null;

  private constructor(
    first: VolumeEngine,
    private readonly openEngine: () => Promise<VolumeEngine>,
    private readonly logger: Logger,
  ) {
    this.engine = first;
    this.volumeId = first.volumeId;
    this.size = first.size;
  }

  /** `openEngine` opens a read-only engine on the volume's newest root. */
  static async open(openEngine: () => Promise<VolumeEngine>, logger: Logger): Promise<LiveReadView> {
    return new LiveReadView(await openEngine(), openEngine, logger);
  }

  get name(): string {
    return this.engine.name;
  }

  get description(): string {
    return `${this.engine.description}, read-only`;
  }

  get caps() {
    return this.engine.caps; // a read-only engine's: READ_ONLY, no flush, trim or zeroes
  }

  /** Its read figures (metrics, at scrape time): the engine it reads now, plus the counters of
   *  those it left (a counter that fell back at each move read as a reset: a spike in rate()).
   *  No journals: the ones it replays are the writer's, counted where it writes. */
  stats(): EngineStats {
    const now = this.engine.stats();
    const left = this.leftCounters;
    return { ...now, readCacheHits: now.readCacheHits + left.hits, readCacheMisses: now.readCacheMisses + left.misses, decodeBuffersReused: now.decodeBuffersReused + left.reused, journals: 0, journalBlocks: 0 };
  }

  /** The root the view reads now. */
  get currentSeq(): number {
    return this.engine.currentSeq;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** A new connection: the view moves to a newer root, if the store has one (one read of the
   *  root), so the client reads what was committed when it connected. Throws VolumeChanged when
   *  that root is of another size or volume. */
  async freshen(): Promise<void> {
    if (this.outdated) throw this.outdated;
    const e = this.engine;
    // (gone, or going: the move finds the volume of that name now, or none)
    if ((await e.storeRootSeq()) !== e.currentSeq) await this.moveOn(e);
  }

  async read(offset: number, length: number, opts?: ReadOptions): Promise<Buffer> {
    return this.withEngine(async (e) => {
      const data = await e.read(offset, length, opts);
      this.lenders.set(data, e);
      return data;
    });
  }

  readDone(data: Buffer): void {
    const e = this.lenders.get(data);
    this.lenders.delete(data);
    if (e && !this.retired.has(e)) e.readDone(data);
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.withEngine((e) => e.blockStatus(offset, length));
  }

  cache(offset: number, length: number): Promise<void> {
    return this.withEngine((e) => e.cache(offset, length));
  }

  listMetaContexts(): Promise<readonly string[]> {
    return this.withEngine((e) => e.listMetaContexts());
  }

  metaContextStatus(name: string, offset: number, length: number): Promise<ContextExtent[]> {
    return this.withEngine((e) => e.metaContextStatus(name, offset, length));
  }

  // nbd/ sends none of these to a READ_ONLY export without flush: a bug if it does.
  write(): Promise<void> {
    return this.refuse();
  }

  trim(): Promise<void> {
    return this.refuse();
  }

  writeZeroes(): Promise<void> {
    return this.refuse();
  }

  flush(): Promise<void> {
    return this.refuse();
  }

  private async refuse(): Promise<never> {
    throw new VaultError('ERR_READ_ONLY', `export "${this.name}" is read-only`);
  }

  /** Closes the engine it reads, and those it left (also one a read is still on: the view is
   *  closing), once their closes settle. */
  async close(): Promise<void> {
    this.closed = true;
    await this.moving?.catch(() => {});
    for (const e of this.busy.keys()) if (e !== this.engine) this.retire(e);
    this.retired.add(this.engine);
    await Promise.all([this.engine.close(), ...this.closings]);
  }

  /** `op` on the view's engine; again on a newer root when it found an object gone and the
   *  store has a newer root (the same root missing an object is damage: the error stands). */
  private async withEngine<T>(op: (e: VolumeEngine) => Promise<T>, movesLeft = MAX_MOVES_PER_READ): Promise<T> {
    const e = this.engine;
    this.busy.set(e, (this.busy.get(e) ?? 0) + 1);
    try {
      return await op(e);
    } catch (err) {
      if (this.closed || !isMissingObject(err) || movesLeft === 0) throw err;
      if (this.outdated) throw this.outdated;
      try {
        // (the root gone too: the volume was deleted, as the move finds out)
        if (this.engine === e && (await e.storeRootSeq().catch(() => null)) === e.currentSeq) throw err;
        this.logger.info({ volume: this.name, seq: e.currentSeq, err: describeError(err) }, 'read-only view: the writer replaced the root it reads; moving to the newest');
        await this.moveOn(e);
      } catch (moveErr) {
        if (moveErr !== err && !(moveErr instanceof VolumeChanged)) this.logger.warn({ volume: this.name, err: describeError(moveErr) }, 'read-only view could not move to the newest root');
        throw moveErr instanceof VolumeChanged ? moveErr : err;
      }
    } finally {
      this.settle(e);
    }
    return this.withEngine(op, movesLeft - 1); // (a later miss needs a newer root again)
  }

  /** One move at a time; a caller that found `from` stale waits for the move past it. */
  private moveOn(from: VolumeEngine): Promise<void> {
    if (this.engine !== from) return Promise.resolve();
    this.moving ??= (async () => {
      try {
        let next: VolumeEngine;
        try {
          next = await this.openEngine();
        } catch (err) {
          if (isVaultError(err, 'ERR_NOT_FOUND')) throw (this.outdated = new VolumeChanged(this.name, 'was deleted'));
          throw err;
        }
        const changed = next.volumeId !== this.volumeId ? 'was deleted and made again' : next.size !== this.size ? `was resized (${this.size} to ${next.size} bytes)` : null;
        if (changed || this.closed) {
          await next.close();
          if (changed) throw (this.outdated = new VolumeChanged(this.name, changed));
          return;
        }
        // (its counters from here on go on in the ones it left: a read still on it adds little)
        const last = from.stats();
        this.leftCounters.hits += last.readCacheHits;
        this.leftCounters.misses += last.readCacheMisses;
        this.leftCounters.reused += last.decodeBuffersReused;
        this.engine = next;
        if (!this.busy.has(from)) this.retire(from); // (else the last read on it does)
      } finally {
        this.moving = null;
      }
    })();
    return this.moving;
  }

  /** A read on `e` ended: close `e` if the view left it and no read is left on it. */
  private settle(e: VolumeEngine): void {
    const n = (this.busy.get(e) ?? 1) - 1;
    if (n > 0) {
      this.busy.set(e, n);
      return;
    }
    this.busy.delete(e);
    if (e !== this.engine) this.retire(e);
  }

  private retire(e: VolumeEngine): void {
    if (this.retired.has(e)) return;
    this.retired.add(e);
    const closing = e.close().catch((err) => this.logger.warn({ volume: this.name, err: describeError(err) }, 'closing an engine a read-only view left failed'));
    this.closings.add(closing);
    void closing.then(() => this.closings.delete(closing));
  }
}
