// The commit: the only writer of a volume's root. One commit at a time; it captures the state
// synchronously (dirty manifest pages, the journal list, what may be deleted), writes the pages,
// then the root (the commit point of FLUSH), and only after that root is durable deletes the
// objects it no longer names (docs/FORMAT.md, "Write ordering"). New state is installed only on
// success; on failure the same pages and deletes belong to the next commit. Not here: sealing
// dirty data or compaction (sealer.ts), which only apply edits to the state.
import { VaultError, describeError, isVaultError } from '../errors';
import type { Logger } from '../util/log';
import { CHUNK_SIZE } from './chunk-math';
import { PAGE_ENTRIES, type PageRef } from './manifest';
import { pageKey } from './object-keys';
import { ROOT_FORMAT, type RootRecord } from './root-record';
import type { VolumeLease } from './volume-lease';
import type { VolumeObjects } from './volume-objects';
import type { VolumeState } from './volume-state';
import { InFlight } from '../util/in-flight';

export class Committer {
  private chain: Promise<unknown> = Promise.resolve();
  lastCommitMs = Date.now();
  /** A root put whose outcome is unknown (the store's retries ran out): if it landed, the store
   *  holds exactly these bytes, and the next commit adopts it instead of failing If-Match. */
  private uncertainRoot: { sealed: Buffer; seq: number; pageKeys: string[] } | null = null;
  /** page objects of failed commits: garbage unless an uncertain root that names them landed */
  private orphanPages: string[] = [];

  constructor(
    private readonly name: string,
    private readonly state: VolumeState,
    private readonly objects: VolumeObjects,
    private readonly origin: RootRecord['origin'],
    private readonly lease: VolumeLease | undefined,
    private readonly onRootCommitted: ((seq: number) => Promise<void>) | undefined,
    private readonly logger: Logger,
  ) {}

  /** resolves once every commit started so far has ended */
  get idle(): Promise<unknown> {
    return this.chain;
  }

  /** deletes of objects a committed root no longer names, still running */
  private readonly deleting = new InFlight();

  /** Resolves once every commit started so far has ended, and the deletes after them (a closing
   *  engine: nothing of it may reach the store once the store closes). */
  async settled(): Promise<void> {
    await this.chain.catch(() => {}); // a commit's failure is its caller's
    await this.deleting.settled();
  }

  hasUncommittedChanges(): boolean {
    const s = this.state;
    return s.manifestChangedSinceCommit || s.manifest.dirtyPages.size > 0 || s.pendingDeletes.length > 0;
  }

  /** Commit a root after those already running. With `snapshot`, the epoch is bumped at the
   *  moment the state is captured: what it captured is frozen, never deleted by later writes. */
  commit(snapshot = false): Promise<RootRecord> {
    const run = this.chain.then(() => this.commitNow(snapshot));
    this.chain = run.catch(() => {});
    return run;
  }

  private async commitNow(snapshot: boolean): Promise<RootRecord> {
    await this.lease?.ensure(); // (resumes a lease lost only to a late heartbeat)
    const s = this.state;
    // Capture (synchronously): which pages to write and with what content, the journals, deletes.
    const dirty = [...s.manifest.dirtyPages].sort((a, b) => a - b);
    s.manifest.dirtyPages.clear();
    const pageBytes = dirty.map((p) => (s.manifest.pageIsEmpty(p) ? null : s.manifest.encodePage(p)));
    const deletes = s.pendingDeletes;
    s.pendingDeletes = [];
    const epochAtCapture = s.epoch;
    const sizeAtCapture = s.sizeBytes;
    const pages = [...s.manifest.pages];
    const journals = s.overlay.journals.map((j) => j.ref);
    s.manifestChangedSinceCommit = false;
    const writesAtCapture = s.writesSinceCommit;
    s.writesSinceCommit = false;
    if (snapshot) s.epoch++;
    // uploads this root will name; page uploads get their own tokens below
    const captured = [...s.unreferenced].filter(([, u]) => u.done).map(([t]) => t);
    const pageTokens: number[] = [];
    const writtenPages: string[] = [];
    const oldPages: PageRef[] = [];
    try {
      const refs = await Promise.all(
        dirty.map(async (p, k) => {
          if (pageBytes[k] === null) return null;
          const token = s.startUpload(Date.now());
          s.unreferenced.get(token)!.done = true;
          pageTokens.push(token);
          const ref = await this.objects.writePage(p, pageBytes[k]!, epochAtCapture);
          writtenPages.push(pageKey(this.objects.volumeId, ref.id));
          return ref;
        }),
      );
      dirty.forEach((p, k) => {
        const old = pages[p];
        if (old && old.epoch === epochAtCapture) oldPages.push(old);
        pages[p] = refs[k];
      });
      const root = {
        v: ROOT_FORMAT,
        volumeId: this.objects.volumeId,
        seq: s.seq + 1,
        size: sizeAtCapture,
        chunkSize: CHUNK_SIZE,
        pageEntries: PAGE_ENTRIES,
        epoch: s.epoch,
        pages,
        journals,
        updatedAt: new Date().toISOString(),
        ...(this.origin ? { origin: this.origin } : {}),
      } as RootRecord;
      const committed = await this.putRoot(root, writtenPages);
      s.seq = committed.seq;
      this.lastCommitMs = Date.now();
      for (const t of [...captured, ...pageTokens]) s.unreferenced.delete(t);
      // Pages may have changed while we wrote: adopt only the refs we wrote, keep later changes dirty.
      dirty.forEach((p) => {
        if (p < s.manifest.pageCount) s.manifest.pages[p] = pages[p];
      });
      await this.onRootCommitted?.(committed.seq);
      this.logger.debug({ volume: this.name, seq: committed.seq, pages: dirty.length, journals: journals.length, deletes: deletes.length }, 'root committed');
      const doomed = [...deletes, ...oldPages.map((r) => pageKey(this.objects.volumeId, r.id)), ...this.orphanPages];
      this.orphanPages = [];
      if (doomed.length > 0) {
        void this.deleting.track(this.objects.store.deleteMany(doomed).catch((err) => this.logger.warn({ volume: this.name, objects: doomed.length, err: describeError(err) }, 'deleting unreferenced objects failed; gc will remove them')));
      }
      return committed;
    } catch (err) {
      // The root was changed by another writer: the lease is not ours any more (fencing).
      if (isVaultError(err, 'ERR_LEASE')) this.lease?.markLost(err as VaultError);
      // Nothing became durable (or nothing we may count on): the same pages and deletes belong
      // to the next commit; the pages written here are garbage unless an uncertain root landed.
      for (const t of pageTokens) s.unreferenced.delete(t);
      if (this.uncertainRoot?.pageKeys !== writtenPages) this.orphanPages.push(...writtenPages);
      for (const p of dirty) if (p < s.manifest.pageCount) s.manifest.dirtyPages.add(p);
      s.pendingDeletes.unshift(...deletes);
      s.manifestChangedSinceCommit = true;
      s.writesSinceCommit ||= writesAtCapture;
      throw err;
    }
  }

  /**
   * Put the root with If-Match on the etag we last wrote. If a previous put's outcome was unknown
   * (its reply was lost after every retry) and the store now holds exactly those bytes, that put
   * landed: adopt it — its etag, its seq — and write this root after it. Anything else in the
   * store is another writer's: refuse (ERR_LEASE).
   */
  private async putRoot(root: RootRecord, writtenPages: string[]): Promise<RootRecord> {
    const s = this.state;
    const sealed = await this.objects.sealRoot(root);
    try {
      s.etag = await this.objects.putRoot(sealed, s.etag);
      // If-Match on the etag before an uncertain put succeeded: that put did not land
      if (this.uncertainRoot) this.orphanPages.push(...this.uncertainRoot.pageKeys);
      this.uncertainRoot = null;
      return root;
    } catch (err) {
      const uncertain = this.uncertainRoot;
      if (isVaultError(err, 'ERR_LEASE') && uncertain) {
        const current = await this.objects.readRootBytes();
        if (current && current.body.equals(uncertain.sealed)) {
          this.logger.warn({ volume: this.name, seq: uncertain.seq }, 'a root put whose reply was lost had landed; adopting it');
          s.etag = current.etag;
          s.seq = uncertain.seq;
          this.uncertainRoot = null;
          await this.onRootCommitted?.(uncertain.seq);
          // its pages are replaced by this commit's (the same dirty pages, written again)
          this.orphanPages.push(...uncertain.pageKeys);
          return this.putRoot({ ...root, seq: uncertain.seq + 1 }, writtenPages);
        }
      }
      if (!isVaultError(err, 'ERR_LEASE') && !isVaultError(err, 'ERR_STORE_PRECONDITION')) {
        // outcome unknown: remember the bytes, the next commit finds out
        this.uncertainRoot = { sealed, seq: root.seq, pageKeys: writtenPages };
      }
      throw err;
    }
  }
}
