// The read path: the bytes of a range as the volume holds them now. For each 4 KiB block the
// newest source wins: the active dirty batch, the frozen ones (newest first), the journal overlay,
// then the chunk object the manifest names — read one frame (128 KiB) at a time by a ranged read,
// never the whole chunk for a small request. Decoded frames are cached (read-cache.ts, keyed by
// object id and frame: objects never change, so a cached frame is never stale), and concurrent
// misses of one frame share one fetch. Not here: writing (write-path.ts), sealing (sealer.ts).
import { LRUCache } from 'lru-cache';
import { VaultError, describeError, isVaultError } from '../errors';
import { isMissingObject } from './framed-reads';
import type { Logger } from '../util/log';
import { CHUNK_SIZE, chunkCount, splitRange, type ChunkSpan } from './chunk-math';
import type { Entry } from './manifest';
import { ReadBuffers } from './decode-buffers';
import { FetchLimiter } from './fetch-limiter';
import { FetchMemory, fetchBytes } from './fetch-memory';
import { FRAME_BYTES } from '../codec';
import { BLOCK_BYTES } from './journal-record';
import { isZeroBlock, type BlockLocation, type JournalHandle } from './journal-overlay';
import type { ReadCache } from './read-cache';
import type { VolumeObjects } from './volume-objects';
import type { VolumeState } from './volume-state';

/** frame fetches (ranged GET + open) at once, across all requests of this volume: a client at
 *  queue depth 32 gets QD / latency on cold reads (S3 serves 32 at once). It followed the store's
 *  own concurrency before, 16 on the fs store, where such a client then left a fifth of the two
 *  cores idle: 32 gave 5-15 % more random reads through a full cache (BENCHMARKS.md) */
const FETCHES_IN_FLIGHT = 32;
/** whole-chunk fetches at once (sequential reads, readahead, NBD_CMD_CACHE), each also taking a
 *  fetch slot: each holds a sealed and a decoded 4 MiB chunk until it lands in the read cache */
const WHOLE_FETCHES_IN_FLIGHT = 16;
/** journal frames compaction keeps for the next chunks it folds (4 MiB): a frame holds blocks of
 *  several chunks, and without it compaction read 2.75× as many frames (8 volumes folded: 34,365
 *  store reads against 12,503 through the read cache) */
const FOLD_MEMO_FRAMES = 32;
/** how many streams the detector follows at once (several sequential readers, or one reading
 *  with several connections) */
const RECENT_STREAMS = 16;
/** a read continues a stream when it starts at most this far after where a recent read ended */
const STREAM_GAP_BYTES = 128 * 1024;

/** What a fetch leaves in the read cache: kept (true), nothing (false: compaction, resize), or
 *  kept until the stream reading it has passed ('streamed': see read-cache.ts; 'ahead': the same,
 *  fetched by readahead, not yet used by a read). */
type Keep = boolean | 'streamed' | 'ahead';

export class ReadPath {
  private readonly fetches = new Map<string, Promise<Buffer>>();
  /** close() began: a fetch waiting for memory (other volumes may hold it) gives up, and none starts */
  private readonly closing = new AbortController();
  private readonly fetchSlots: FetchLimiter;
  private readonly wholeSlots = new FetchLimiter(WHOLE_FETCHES_IN_FLIGHT);
  /** what fetches hold while they run, across every volume of the process (fetch-memory.ts) */
  private readonly fetchMemory: FetchMemory;
  /** journal frames compaction read last (outside the read cache and its budget: at most
   *  FOLD_MEMO_FRAMES × 128 KiB per volume, and only while a compaction step runs) */
  private readonly foldMemo = new LRUCache<string, Buffer>({ max: FOLD_MEMO_FRAMES });
  /** where recent reads ended (byte offset) and how many reads in a row led there, one per
   *  stream, oldest first */
  private readonly recentEnds: Array<{ end: number; run: number }> = [];
  /** chunks recent stream reads touched, oldest first */
  private readonly streamChunks: number[] = [];
  /** what a stream's whole chunks and a random read's frames are decoded into, reused once the
   *  cache dropped them and every view is back: once the read cache is full, a miss decodes into
   *  the memory of a frame it evicted, not fresh memory that V8's collector must free
   *  (BENCHMARKS.md, "Random reads through a full read cache") */
  readonly buffers: ReadBuffers;

  constructor(
    private readonly name: string,
    private readonly state: VolumeState,
    private readonly objects: VolumeObjects,
    readonly frames: ReadCache,
    private readonly readaheadChunks: number,
    private readonly logger: Logger,
    /** EngineOptions.followsWriter: a missing object is routine (debug), not an error */
    private readonly followsWriter = false,
  ) {
    this.fetchSlots = new FetchLimiter(FETCHES_IN_FLIGHT);
    this.fetchMemory = FetchMemory.of(frames.budget);
    this.buffers = new ReadBuffers((key, buf) => frames.holds(key, buf), frames.budget);
    frames.onDrop = (key, buf) => this.buffers.dropped(buf, key);
  }

  /** The caller of read() is done with what it returned (the NBD reply is written): a view of a
   *  decoded chunk or frame no longer keeps its buffer from reuse. */
  readDone(data: Buffer): void {
    this.buffers.giveBack(data);
  }

  /** The engine closes: nothing more is reused or kept, and once this settles no fetch is in
   *  flight (readahead's included: one that landed later held budget in a cache nobody clears,
   *  or failed loudly once the process had closed its codec). */
  async close(): Promise<void> {
    this.closing.abort(new VaultError('ERR_SHUTDOWN', `volume "${this.name}" closed while a read waited for memory`));
    this.frames.onDrop = null;
    this.frames.close();
    await Promise.allSettled([...this.fetches.values()]);
    this.buffers.close();
  }

  async read(offset: number, length: number, requester?: object): Promise<Buffer> {
    const spans = splitRange(offset, length, this.state.sizeBytes);
    // noted before any await: the many reads a streaming client has in flight at once must see
    // each other as a stream (a chunk read whole), not only after the first of them returned
    // what a stream reads is kept only until it has passed (read-cache.ts: a scan must not evict
    // a guest's working set)
    const keep: Keep = this.noteRead(offset, length, spans) ? 'streamed' : true;
    if (spans.length === 1) {
      const direct = await this.plainSlice(spans[0], requester, keep);
      if (direct) {
        this.readahead(spans[0].chunkIndex);
        return direct;
      }
    }
    const out = Buffer.allocUnsafe(length);
    await Promise.all(spans.map((s) => this.readSpan(s, out, s.rangeOffset, requester, true, keep)));
    this.readahead(spans[spans.length - 1].chunkIndex);
    return out;
  }

  /** The current content of one whole chunk (resize, in an exclusive section: the chunk is about
   *  to be rewritten, so nothing fetched for it is kept, in the read cache or the fold memo). */
  async chunkContent(i: number): Promise<Buffer> {
    const len = this.state.chunkLength(i);
    const out = Buffer.allocUnsafe(len);
    try {
      await this.readSpan({ chunkIndex: i, chunkOffset: 0, length: len, rangeOffset: 0, chunkLength: len, whole: true }, out, 0, undefined, true, false);
    } finally {
      this.endFold();
    }
    return out;
  }

  /** What the store holds for chunk i now: its chunk object with the journal overlay applied,
   *  without dirty data (compaction folds exactly this). Nothing fetched for it is kept in the
   *  read cache: the chunk object and the journals are about to be replaced, and caching them
   *  evicted clients' hot frames for dead ones and made compaction the server's memory peak (8
   *  volumes folded: 2,180 MiB against 1,106). A journal frame holds blocks of several chunks,
   *  folded one after another: the last few stay in a small memo of their own. */
  async storedChunk(i: number, out: Buffer = Buffer.allocUnsafe(this.state.chunkLength(i))): Promise<Buffer> {
    const len = this.state.chunkLength(i);
    await this.readSpan({ chunkIndex: i, chunkOffset: 0, length: len, rangeOffset: 0, chunkLength: len, whole: true }, out, 0, undefined, false, false);
    return out;
  }

  /** One block's current content (a partial-block write merges into it). */
  async block(i: number, b: number): Promise<Buffer> {
    const len = Math.min(BLOCK_BYTES, this.state.chunkLength(i) - b * BLOCK_BYTES);
    const out = this.state.blocks.take();
    try {
      await this.readSpan({ chunkIndex: i, chunkOffset: b * BLOCK_BYTES, length: len, rangeOffset: 0, chunkLength: this.state.chunkLength(i), whole: false }, out, 0);
    } catch (err) {
      this.state.blocks.give(out);
      throw err;
    }
    out.fill(0, len); // past the end of a short last chunk
    return out;
  }

  /** A read of one chunk with nothing pending, without a copy (decoded chunks and frames are never
   *  modified): a slice of the chunk held or fetched whole (a stream's read of a frame or more),
   *  or of the cached frame when the read lies in one frame and is at least half of it; else null. */
  private async plainSlice(s: ChunkSpan, requester: object | undefined, keep: Keep): Promise<Buffer | null> {
    const i = s.chunkIndex;
    if (!this.state.isPlain(i)) return null;
    const entry = this.state.manifest.get(i);
    if (entry.id === null) return Buffer.alloc(s.length);
    // The NBD layer counts an unsent reply as the whole buffer it keeps alive, once however many
    // replies slice it: a stream's replies share a few chunks; small reads copy instead.
    const whole = s.length >= FRAME_BYTES ? this.wholeFor(i, entry, s.chunkOffset, s.length, requester, keep) : null;
    if (whole) return this.lent((await whole).subarray(s.chunkOffset, s.chunkOffset + s.length));
    const layout = await this.layout(i, entry);
    const f = Math.floor(s.chunkOffset / layout.frameBytes);
    if (Math.floor((s.chunkOffset + s.length - 1) / layout.frameBytes) !== f) return null;
    if (this.state.manifest.get(i).id !== entry.id) return null; // rewritten meanwhile: take the long way
    const frame = await this.chunkFrame(i, entry, f, layout.frameBytes, requester, keep);
    const at = s.chunkOffset - f * layout.frameBytes;
    // a view only when it is at least half of the memory it keeps alive (a frame may be a view of a
    // whole 4 MiB chunk): an unread reply then holds at most twice its length
    if (s.length * 2 >= frame.buffer.byteLength) return this.lent(frame.subarray(at, at + s.length));
    return Buffer.from(frame.subarray(at, at + s.length));
  }

  /** A view read() returns: its chunk's buffer is not reused until the view is given back. */
  private lent(view: Buffer): Buffer {
    this.buffers.lend(view);
    return view;
  }

  /**
   * Fill out[at, at + s.length) with the span's current content. Sources are resolved
   * synchronously first (a write that lands later is not seen, one acknowledged before is), then
   * frames are fetched in parallel. `keep` false: what is fetched is not kept in the read cache
   * (journal frames go to the fold memo).
   */
  private async readSpan(s: ChunkSpan, out: Buffer, at: number, requester?: object, includeDirty = true, keep: Keep = true): Promise<void> {
    const i = s.chunkIndex;
    const entry = this.state.manifest.get(i);
    const plain = includeDirty ? this.state.isPlain(i) : !this.state.overlay.hasChunk(i);
    if (plain) return this.readBase(i, entry, s.chunkOffset, s.length, out, at, requester, keep);
    const batches = includeDirty ? this.state.batchesNewestFirst() : [];
    const overlay = this.state.overlay;
    const work: Promise<void>[] = [];
    let baseFrom = -1; // chunk offset where a run of blocks read from the chunk object starts
    const end = s.chunkOffset + s.length;
    const flushBase = (upTo: number) => {
      if (baseFrom < 0) return;
      work.push(this.readBase(i, entry, baseFrom, upTo - baseFrom, out, at + baseFrom - s.chunkOffset, requester, keep));
      baseFrom = -1;
    };
    for (let pos = s.chunkOffset; pos < end; ) {
      const b = Math.floor(pos / BLOCK_BYTES);
      const segEnd = Math.min(end, (b + 1) * BLOCK_BYTES);
      const inBlock = pos - b * BLOCK_BYTES;
      const dst = at + pos - s.chunkOffset;
      const n = segEnd - pos;
      let found = false;
      for (const batch of batches) {
        const c = batch.chunks.get(i);
        if (!c) continue;
        const blk = c.blocks.get(b);
        if (blk !== undefined) {
          flushBase(pos);
          if (blk === null) out.fill(0, dst, dst + n);
          else blk.copy(out, dst, inBlock, inBlock + n);
          found = true;
          break;
        }
        if (c.zeroBase) {
          flushBase(pos);
          out.fill(0, dst, dst + n);
          found = true;
          break;
        }
      }
      if (!found) {
        const loc = overlay.get(i, b);
        if (loc) {
          flushBase(pos);
          if (isZeroBlock(loc)) out.fill(0, dst, dst + n);
          else work.push(this.copyJournalBlock(loc, inBlock, n, out, dst, requester, keep));
        } else if (baseFrom < 0) baseFrom = pos;
      }
      pos = segEnd;
    }
    flushBase(end);
    await Promise.all(work);
  }

  private async copyJournalBlock(loc: BlockLocation, inBlock: number, n: number, out: Buffer, dst: number, requester?: object, keep: Keep = true): Promise<void> {
    const frame = await this.journalFrame(loc.journal, loc.frame, requester, keep);
    const from = loc.frameOffset + inBlock;
    if (from + n > frame.length) {
      throw new VaultError('ERR_IO', `volume "${this.name}": journal ${loc.journal.ref.id} frame ${loc.frame} has ${frame.length} bytes, a block at ${loc.frameOffset} needs more`);
    }
    frame.copy(out, dst, from, from + n);
  }

  /** Copy [offset, offset+length) of the chunk object `entry` names into out at `at`. */
  private async readBase(i: number, entry: Entry, offset: number, length: number, out: Buffer, at: number, requester?: object, keep: Keep = true): Promise<void> {
    if (entry.id === null) {
      out.fill(0, at, at + length);
      return;
    }
    const whole = this.wholeFor(i, entry, offset, length, requester, keep);
    if (whole) {
      const data = await whole;
      data.copy(out, at, offset, offset + length);
      return;
    }
    const { frameBytes } = await this.layout(i, entry);
    const first = Math.floor(offset / frameBytes);
    const last = Math.floor((offset + length - 1) / frameBytes);
    const work: Promise<void>[] = [];
    for (let f = first; f <= last; f++) {
      work.push(
        this.chunkFrame(i, entry, f, frameBytes, requester, keep).then((frame) => {
          const from = Math.max(offset, f * frameBytes);
          const to = Math.min(offset + length, (f + 1) * frameBytes);
          frame.copy(out, at + from - offset, from - f * frameBytes, to - f * frameBytes);
        }),
      );
    }
    await Promise.all(work);
  }

  /** The whole chunk `entry` names, when it is cached whole, being fetched whole, or read
   *  sequentially or all at once: such a chunk comes in one GET, not frame by frame (a streaming
   *  reader needs all of it, and one request costs less than 32). Null: read it by frames. */
  private wholeFor(i: number, entry: Entry, offset: number, length: number, requester?: object, keep: Keep = true): Promise<Buffer> | null {
    const cached = this.cachedWhole(entry, length, keep);
    if (cached) return Promise.resolve(cached);
    const fetching = this.fetches.get(`${entry.id}/*`);
    if (fetching) return this.used(`${entry.id}/*`, fetching);
    const everyFrame = offset === 0 && length === this.state.chunkLength(i);
    return (this.sequential(i) || everyFrame) && !this.cachedAt(entry, offset) ? this.wholeChunk(i, entry, requester, keep && 'streamed') : null;
  }

  /** The whole chunk `entry` names, when the read cache holds it. One in the stream area goes
   *  once the stream has passed; a read of part of it that is no stream's keeps it like a frame
   *  it fetched (a guest's working set stays). */
  private cachedWhole(entry: Entry, length: number, keep: Keep): Buffer | undefined {
    const key = `${entry.id}/*`;
    const whole = this.frames.get(key, false);
    return whole && length < whole.length ? this.kept(key, whole, keep) : whole;
  }

  /** A read waits on a fetch another started (readahead's, say): once it lands, it counts as used. */
  private used(key: string, fetching: Promise<Buffer>): Promise<Buffer> {
    return fetching.then((data) => {
      this.frames.noteUse(key);
      return data;
    });
  }

  /** A cached entry a read hit: one in the stream area is kept from now on when the read is no
   *  stream's (`keep` true). */
  private kept(key: string, buf: Buffer, keep: Keep): Buffer {
    if (keep === true && this.frames.isStreamed(key)) this.frames.set(key, buf);
    return buf;
  }

  private layout(i: number, entry: Entry): Promise<{ frameBytes: number }> {
    return this.objects.chunkLayout(i, entry, this.state.chunkLength(i)).catch((err: unknown) => {
      throw this.readError(i, err);
    });
  }

  private chunkFrame(i: number, entry: Entry, f: number, frameBytes: number, requester?: object, keep: Keep = true): Promise<Buffer> {
    const key = `${entry.id}/${f}`;
    const frameOf = (data: Buffer) => data.subarray(f * frameBytes, Math.min(data.length, (f + 1) * frameBytes));
    const cachedWhole = this.cachedWhole(entry, frameBytes, keep);
    if (cachedWhole) return Promise.resolve(frameOf(cachedWhole));
    const cached = this.frames.get(key);
    if (cached) return Promise.resolve(this.kept(key, cached, keep));
    const whole = this.fetches.get(`${entry.id}/*`);
    if (whole) return this.used(`${entry.id}/*`, whole).then(frameOf);
    // a version-1 chunk is one frame of the whole chunk: not a 128 KiB frame to decode into reused memory
    const fetch = frameBytes === FRAME_BYTES ? () => this.readFrameInto(i, entry, f) : () => this.objects.readChunkFrame(i, entry, this.state.chunkLength(i), f);
    return this.singleFlight(key, requester, fetch, (err) => this.readError(i, err, f * frameBytes), { keep, decodedBytes: frameBytes });
  }

  /** A chunk frame decoded into a buffer a dropped frame left. Only chunk frames: journal frames
   *  may sit in the fold memo, which lends nothing and gives nothing back. */
  private readFrameInto(i: number, entry: Entry, f: number): Promise<Buffer> {
    return this.buffers.decodeInto(this.buffers.frames, (into) => this.objects.readChunkFrame(i, entry, this.state.chunkLength(i), f, into));
  }

  /** `keep` false (compaction): the frame goes to the fold memo, not the read cache. */
  private journalFrame(journal: JournalHandle, f: number, requester?: object, keep: Keep = true): Promise<Buffer> {
    const key = `j${journal.ref.id}/${f}`;
    const cached = this.frames.get(key);
    if (cached) return Promise.resolve(this.kept(key, cached, keep));
    const memo = this.foldMemo.get(key);
    if (memo) return Promise.resolve(memo);
    const fetched = this.singleFlight(key, requester, () => this.objects.readJournalFrame(journal.ref, f), (err) => {
      // (compaction's reads fail together in an outage, one line per frame: its own failure line says it)
      if (keep !== false) this.logger[this.routine(err) ? 'debug' : 'error']({ volume: this.name, journal: journal.ref.id, frame: f, err: describeError(err) }, 'journal read failed');
      return new VaultError('ERR_IO', `volume "${this.name}": cannot read journal ${journal.ref.id} frame ${f}: ${describeError(err)}`, { cause: err });
    }, { keep, decodedBytes: FRAME_BYTES });
    if (!keep) fetched.then((frame) => this.foldMemo.set(key, frame), () => {}); // the caller sees the error
    return fetched;
  }

  /** One fetch per key at a time, shared by everyone who asks meanwhile. `keep`: the fetch that
   *  starts puts its result in the read cache, or its stream area (a fetch already running keeps
   *  its own choice); `decodedBytes`: what it decodes (it holds twice that while it runs, from
   *  fetch-memory.ts, except `keep` false: compaction's reads, which the sealing share covers, and
   *  a resize's one chunk); `whole`: a whole chunk's; `held`: its memory is held already
   *  (readahead's). */
  private singleFlight(key: string, requester: object | undefined, fetch: () => Promise<Buffer>, wrap: (err: unknown) => Error, o: { keep: Keep; decodedBytes: number; whole?: boolean; held?: () => void }): Promise<Buffer> {
    const keep = o.keep;
    let p = this.fetches.get(key);
    if (!p) {
      const start = () => (this.closing.signal.aborted ? Promise.reject(this.closing.signal.reason) : fetch());
      const gated = keep === false ? fetch : () => this.fetchMemory.run(fetchBytes(o.decodedBytes), start, o.held, this.closing.signal);
      const slotted = () => this.fetchSlots.run(gated, requester);
      p = (o.whole ? this.wholeSlots.run(slotted, requester) : slotted())
        .then((data) => {
          if (keep === 'streamed' || keep === 'ahead') this.frames.setStreamed(key, data, keep === 'streamed');
          else if (keep) this.frames.set(key, data);
          // not cached (the budget is full, caching is off): decoded into a reused buffer, it
          // goes back once the reads waiting on this fetch have copied from it
          if (!this.frames.holds(key, data)) this.buffers.dropped(data, key);
          return data;
        })
        .catch((err) => {
          throw wrap(err);
        })
        .finally(() => this.fetches.delete(key));
      this.fetches.set(key, p);
    } else o.held?.(); // (readahead checks first: a fetch running already holds its own)
    return p;
  }

  /** An object gone under a read-only view of a root another writer replaces, or a read the
   *  volume's close stopped: no error to log. */
  private routine(err: unknown): boolean {
    return (this.followsWriter && isMissingObject(err)) || isVaultError(err, 'ERR_SHUTDOWN');
  }

  private readError(i: number, err: unknown, inChunk = 0): VaultError {
    const offset = i * CHUNK_SIZE + inChunk;
    this.logger[this.routine(err) ? 'debug' : 'error']({ volume: this.name, chunk: i, offset, err: describeError(err) }, 'chunk read failed');
    return new VaultError('ERR_IO', `volume "${this.name}": cannot read chunk ${i} (byte offset ${offset}): ${describeError(err)}`, { cause: err });
  }

  // --- readahead and NBD_CMD_CACHE ---------------------------------------------------------

  /** The frame holding `offset` of this chunk object is cached (a frame is at most 128 KiB: for a
   *  v1 chunk, whose one frame is the chunk, the 128 KiB-frame key is simply absent). */
  private cachedAt(entry: Entry, offset: number): boolean {
    return this.frames.has(`${entry.id}/*`) || this.frames.has(`${entry.id}/${Math.floor(offset / FRAME_BYTES)}`) || this.frames.has(`${entry.id}/0`);
  }

  /** A stream is reading chunk i (or has just read the chunk before it). */
  private sequential(i: number): boolean {
    return this.streamChunks.includes(i) || this.streamChunks.includes(i - 1);
  }

  /** A stream is the third read in a row that starts where the one before ended (or a little
   *  after). Random reads almost never are: with chunk numbers alone ("chunk i - 1 was read
   *  recently"), one random read in 16 over a 1 GiB volume looked like a stream and fetched its
   *  chunk and the 8 after it whole — 36 MiB from S3 for a 4 KiB read; one chance hit in a row
   *  (1 in 500 there) still costs that, two in a row do not happen. True: this read is a stream's. */
  private noteRead(offset: number, length: number, spans: readonly ChunkSpan[]): boolean {
    const ends = this.recentEnds;
    const at = ends.findIndex((e) => offset >= e.end && offset - e.end <= STREAM_GAP_BYTES);
    const run = at >= 0 ? ends.splice(at, 1)[0].run + 1 : 0;
    ends.push({ end: offset + length, run });
    if (ends.length > RECENT_STREAMS) ends.shift();
    if (run < 2) return false;
    const chunks = this.streamChunks;
    for (const s of spans) {
      if (chunks[chunks.length - 1] === s.chunkIndex) continue;
      const was = chunks.indexOf(s.chunkIndex);
      if (was >= 0) chunks.splice(was, 1);
      chunks.push(s.chunkIndex);
      if (chunks.length > RECENT_STREAMS) chunks.shift();
    }
    return true;
  }

  private readahead(i: number): void {
    if (!this.sequential(i) || this.readaheadChunks <= 0) return;
    const last = Math.min(chunkCount(this.state.sizeBytes) - 1, i + this.readaheadChunks);
    for (let j = i + 1; j <= last; j++) this.prefetchChunk(j);
  }

  /** Fetch a whole chunk object in one GET and cache its frames (readahead: never queues). */
  private prefetchChunk(i: number): void {
    if (!this.fetchSlots.hasFreeSlot || !this.wholeSlots.hasFreeSlot) return;
    const entry = this.state.manifest.get(i);
    if (entry.id === null) return;
    const key = `${entry.id}/*`;
    if (this.fetches.has(key) || this.frames.has(key) || this.frames.has(`${entry.id}/0`)) return;
    const held = this.fetchMemory.tryHoldAhead(fetchBytes(this.state.chunkLength(i)));
    if (!held) return; // no memory to spare for a guess
    this.wholeChunk(i, entry, undefined, 'ahead', held).catch(() => {}); // a real read of it reports the error
  }

  /** One GET of the whole chunk object (single flight), kept in the read cache as one entry
   *  (`id/*`): frames cut from it are views, and the cache counts the buffer they keep alive. A
   *  stream's (and readahead's) goes to the cache's stream area, NBD_CMD_CACHE's stays. */
  private wholeChunk(i: number, entry: Entry, requester?: object, keep: Keep = 'streamed', held?: () => void): Promise<Buffer> {
    const len = this.state.chunkLength(i);
    // a stream's chunk (or readahead's) goes to the stream area and is dropped soon: decoded into
    // a buffer a dropped one left (decode-buffers.ts); NBD_CMD_CACHE's and partial chunks' are kept
    const reuse = (keep === 'streamed' || keep === 'ahead') && len === CHUNK_SIZE;
    const fetch = reuse ? () => this.readChunkInto(i, entry, len) : () => this.objects.readChunk(i, entry, len);
    return this.singleFlight(`${entry.id}/*`, requester, fetch, (err) => this.readError(i, err), { keep, decodedBytes: len, whole: true, held });
  }

  private readChunkInto(i: number, entry: Entry, len: number): Promise<Buffer> {
    return this.buffers.decodeInto(this.buffers.chunks, (into) => this.objects.readChunk(i, entry, len, into));
  }

  /** A compaction step (or a resize's read) is over: the journal frames it kept go (a volume
   *  that is not compacting holds none). */
  endFold(): void {
    this.foldMemo.clear();
  }

  /** NBD_CMD_CACHE: bring the range's stored frames into the read cache. */
  async cache(offset: number, length: number): Promise<void> {
    const spans = splitRange(offset, length, this.state.sizeBytes);
    let next = 0;
    const worker = async () => {
      while (next < spans.length) {
        const s = spans[next++];
        const entry = this.state.manifest.get(s.chunkIndex);
        if (entry.id === null) continue;
        if (s.whole) await this.wholeChunk(s.chunkIndex, entry, undefined, true);
        else await this.readSpan(s, Buffer.allocUnsafe(s.length), 0);
        // a fetch a stream (or readahead) had running put it in the stream area: kept all the same
        const whole = this.frames.get(`${entry.id}/*`, false);
        if (whole) this.kept(`${entry.id}/*`, whole, true);
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, spans.length) }, worker));
  }
}
