// WriteBack: when a writable engine stores what is dirty and folds journals, without being asked.
// A 100 ms tick seals idle or pressing dirty chunks, starts compaction when journals pile up or
// the volume is idle, commits a root now and then, and says so in the log when writers wait on a
// store that keeps failing. A FLUSH does not go through here (VolumeEngine.flush seals directly).
// Owns no data: the state, the sealer, the committer and the write path do.
import { describeError } from '../errors';
import type { Logger } from '../util/log';
import type { MemoryBudget } from '../util/memory-budget';
import type { ChunkBlocks } from './dirty-blocks';
import type { VolumeState } from './volume-state';
import type { WritePath } from './write-path';
import type { Sealer } from './sealer';
import type { Committer } from './commit';

/** how often a writer stalled on a full cache of failing uploads is reported */
const STALL_LOG_MS = 10_000;
/** compaction starts when the overlay holds this many blocks (~100 bytes of memory each) ... */
const COMPACT_AT_BLOCKS = 65_536;
/** ... or the root names this many journals ... */
const COMPACT_AT_JOURNALS = 256;
/** ... or the volume has been idle (no write) this long with journals left */
const COMPACT_WHEN_IDLE_MS = 10_000;
const TICK_MS = 100;

export interface WriteBackOptions {
  readonly dirtyLimitBytes: number;
  /** seal a partly written chunk once it has been idle this long */
  readonly writebackDelayMs: number;
  /** commit a root this often when the manifest changed (0: only on flush) */
  readonly autoCommitMs: number;
  readonly memoryBudget?: MemoryBudget;
}

export interface WriteBackParts {
  readonly state: VolumeState;
  readonly writes: WritePath;
  readonly sealer: Sealer;
  readonly committer: Committer;
}

export class WriteBack {
  private timer: NodeJS.Timeout | null = null;
  /** no tick from here on (a close began); seals asked for by waiting writers still run */
  private ticking = false;
  /** nothing starts from here on (the engine closed) */
  private stopped = false;
  private lastWriteMs = 0;
  private lastStallLogMs = 0;

  constructor(
    private readonly name: string,
    private readonly parts: WriteBackParts,
    private readonly opts: WriteBackOptions,
    private readonly logger: Logger,
  ) {}

  /** Begin ticking (writable engines; read-only ones never seal). */
  start(): void {
    this.ticking = true;
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  /** A write arrived: the idle clock for compaction restarts. */
  noteWrite(nowMs: number): void {
    this.lastWriteMs = nowMs;
  }

  /** A close began: no background work starts from the timer any more. */
  stopTicking(): void {
    this.ticking = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** The engine closed: nothing starts at all. */
  stop(): void {
    this.stopTicking();
    this.stopped = true;
  }

  private tick(): void {
    const p = this.parts;
    if (!this.ticking) return;
    const { state: s, sealer, committer } = p;
    const now = Date.now();
    this.reportStall(now);
    if ((s.active.chunks.size > 0 || s.frozen.length > 0) && now >= sealer.retryAtMs) this.sealSome();
    if (!sealer.busy && s.overlay.journals.length > 0 && now >= sealer.compactRetryAtMs) {
      const due = s.overlay.entries >= COMPACT_AT_BLOCKS || s.overlay.journals.length >= COMPACT_AT_JOURNALS || now - this.lastWriteMs >= COMPACT_WHEN_IDLE_MS;
      if (due) sealer.compactStep().catch(() => {}); // logged by the sealer; retried next tick
    }
    if (this.opts.autoCommitMs > 0 && now - committer.lastCommitMs >= this.opts.autoCommitMs && committer.hasUncommittedChanges()) {
      committer.lastCommitMs = now;
      committer.commit().catch((err) => this.logger.warn({ volume: this.name, err: describeError(err) }, 'background commit failed; will retry'));
    }
  }

  /** Background write-back: whole chunks at once (on their own: Sealer.rewriteWhole), other
   *  chunks once idle, and under pressure (dirty data at half its limit, writers or the memory
   *  budget waiting) the chunks still being written too, unless the whole and idle ones hold at
   *  least half the dirty data. Sealing a chunk a writer is half-way through journals its first
   *  part, and its rest, never whole in one batch, is journaled again and folded later: a 1 MiB
   *  sequential writer at the half-limit sent 2 of every 9 chunks that way. */
  sealSome(): void {
    if (this.stopped) return;
    const { state: s, sealer, writes } = this.parts;
    const now = Date.now();
    sealer.rewriteWhole(now);
    if (sealer.busy || now < sealer.retryAtMs) return;
    const pressure = s.dirtyBytes >= this.opts.dirtyLimitBytes / 2 || writes.waiting > 0 || (this.opts.memoryBudget?.stats().waiting ?? 0) > 0;
    const idleBefore = now - this.opts.writebackDelayMs;
    const ready = (c: ChunkBlocks) => c.covered || c.lastWriteMs <= idleBefore;
    // whole chunks waiting for a rewrite slot, and those being rewritten, are on their way out
    let leaving = sealer.rewritingBlocks;
    let readyBlocks = 0;
    let hotBlocks = 0;
    for (const [i, c] of s.active.chunks) {
      if (c.covered && sealer.rewritable(i)) leaving += c.blocks.size;
      else if (ready(c)) readyBlocks += c.blocks.size;
      else hotBlocks += c.blocks.size;
    }
    const hotToo = pressure && hotBlocks > readyBlocks + leaving;
    if (!sealer.retryWaiting && readyBlocks === 0 && !hotToo) return;
    sealer.sealSome((c) => hotToo || ready(c)).catch(() => {}); // logged by the sealer; a flush reports it
  }

  /** Writers waiting for room while sealing fails: the store is down. Said in the log, not hidden. */
  private reportStall(now: number): void {
    const p = this.parts;
    if (p.writes.waiting === 0 || p.sealer.failures === 0) return;
    if (now - this.lastStallLogMs < STALL_LOG_MS) return;
    this.lastStallLogMs = now;
    this.logger.warn({ volume: this.name, waitingWriters: p.writes.waiting, dirtyBytes: p.state.dirtyBytes, err: describeError(p.sealer.lastError) }, 'writes are waiting: dirty data is at its limit and storing it keeps failing; retrying in the background');
  }
}
