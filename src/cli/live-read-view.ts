// A volume served to clients that may only read it (a read-only grant of the access policy),
// when no client writes it through this server: read-only engines over the volume's committed
// root, without its writer's lease. Taking the lease for them (as a writer does) kept a writer on
// another server out for as long as they stayed, and 60 s after; and a reader was refused while
// another server wrote the volume.
//
// What a reader sees: the volume as last committed when its connection opened the view, and newer
// commits after that where the writer elsewhere deleted what the view read (its compaction folds
// journals into new objects and deletes the old ones): a read that finds an object gone moves the
// view to the store's newest root and reads again. A reader that needs one point in time for the
// whole read reads a snapshot (VOL@SNAP). The engine a view leaves is closed once no read is under
// way on it.
import { VaultError, describeError, isVaultError } from '../errors';
import type { ContextExtent, Export, Extent, ReadOptions } from '../nbd/export';
import type { Logger } from '../util/log';
import type { VolumeEngine } from '../volume/volume-engine';

/** reads of one request, each after moving to a newer root */
const READ_ATTEMPTS = 3;
/** a view older than this is moved to the newest root when a new connection opens it */
export const VIEW_FRESH_MS = 1000;

/** An object the view's root named is gone: the writer elsewhere replaced that root. */
function missingObject(err: unknown): boolean {
  return isVaultError(err, 'ERR_IO') && /is missing from the store/.test((err as Error).message);
}

export class LiveReadView implements Export {
  private engine: VolumeEngine;
  private openedAt = performance.now();
  private moving: Promise<void> | null = null;
  /** reads under way per engine: an engine the view left is closed when its count is 0 */
  private readonly busy = new Map<VolumeEngine, number>();
  private closed = false;

  private constructor(
    first: VolumeEngine,
    private readonly openEngine: () => Promise<VolumeEngine>,
    private readonly logger: Logger,
  ) {
    this.engine = first;
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

  get size(): number {
    return this.engine.size;
  }

  get caps() {
    return this.engine.caps; // a read-only engine's: READ_ONLY, no flush, trim or zeroes
  }

  /** The root the view reads now. */
  get currentSeq(): number {
    return this.engine.currentSeq;
  }

  /** A new connection: a view opened a while ago moves to the newest root first. */
  async freshen(): Promise<void> {
    if (performance.now() - this.openedAt >= VIEW_FRESH_MS) await this.moveOn(this.engine);
  }

  read(offset: number, length: number, opts?: ReadOptions): Promise<Buffer> {
    return this.withEngine((e) => e.read(offset, length, opts));
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

  /** Closes the engine it reads (and one it left whose reads are still under way, once they end). */
  async close(): Promise<void> {
    this.closed = true;
    await this.moving?.catch(() => {});
    await this.engine.close();
  }

  private async withEngine<T>(op: (e: VolumeEngine) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const e = this.engine;
      this.busy.set(e, (this.busy.get(e) ?? 0) + 1);
      try {
        return await op(e);
      } catch (err) {
        if (attempt >= READ_ATTEMPTS || this.closed || !missingObject(err)) throw err;
        this.logger.info({ volume: this.name, seq: e.currentSeq, err: describeError(err) }, 'read-only view: the writer elsewhere replaced the root it reads; moving to the newest');
        await this.moveOn(e);
      } finally {
        this.settle(e);
      }
    }
  }

  /** One move at a time; a caller that found `from` stale waits for the move past it. */
  private moveOn(from: VolumeEngine): Promise<void> {
    if (this.engine !== from) return Promise.resolve();
    this.moving ??= (async () => {
      try {
        const next = await this.openEngine();
        if (this.closed) {
          await next.close();
          return;
        }
        this.engine = next;
        this.openedAt = performance.now();
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
    void e.close().catch((err) => this.logger.warn({ volume: this.name, err: describeError(err) }, 'closing an engine a read-only view left failed'));
  }
}
