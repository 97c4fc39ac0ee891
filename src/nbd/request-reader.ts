// Resumable parser for the transmission phase: fed socket chunks of any size, it yields whole
// requests. States (STYLE.md §4): 'header' (collecting 28 bytes), 'payload' (collecting a WRITE
// payload), 'discard' (skipping a WRITE payload too large to hold, to stay in sync — nbdkit's
// skip_over_write_buffer). A state short of bytes simply waits for the next chunk.
//
// Guarantees: at most one payload (<= maxPayload bytes) is buffered by the reader itself; the
// caller can stop parsing between requests (backpressure, DISC) and resume later without losing
// bytes; a bad request magic means synchronisation is lost, and the reader stops for good.
//
// Payloads are copied into memory from `memory.take` (payload-buffers.ts), never kept as views
// of the input: input may be a socket's recycled read buffer (socket-reads.ts), overwritten by the
// next read. What stays unparsed of such input is copied by detach() before it is reused, into
// memory from the same place, given back once parsed: a reader stopped for its turn or for
// backpressure leaves whole reads unparsed (a 1M sequential write: every read), and fresh memory
// for each was 1 GiB of allocations per GiB written, a full marking every ~20 MB (BENCHMARKS.md).
import { NBD_CMD_READ, NBD_CMD_WRITE, NBD_REQUEST_MAGIC, NBD_REQUEST_SIZE } from './constants';

export interface NbdRequest {
  readonly flags: number;
  readonly type: number;
  /** The client's opaque 8-byte handle, copied (echoed in the reply). */
  readonly handle: Buffer;
  /** Byte offset; above 2^53 it is approximate but still larger than any export. */
  readonly offset: number;
  readonly length: number;
  /** The WRITE payload (exactly `length` bytes, from `takePayload`); null for other commands and
   *  dropped payloads. */
  readonly payload: Buffer | null;
  /** A WRITE whose payload exceeded maxPayload: the bytes were read and thrown away. */
  readonly payloadDropped: boolean;
}

export type ReaderState = 'header' | 'payload' | 'discard' | 'desync';

export type ReaderResult = 'need-more' | 'stopped' | 'desync';

/** Where the reader's memory comes from: payloads, and copies of unparsed input (detach). */
export interface ReaderMemory {
  /** `length` bytes, content undefined (the reader fills them all before reading them) */
  take(length: number): Buffer;
  /** a buffer from take() the reader no longer reads (payloads are the caller's to give back) */
  give(buf: Buffer): void;
}

const freshMemory: ReaderMemory = { take: (n) => Buffer.allocUnsafe(n), give: () => {} };

export class RequestReader {
  private state: ReaderState = 'header';
  private readonly header = Buffer.alloc(NBD_REQUEST_SIZE);
  private headerFill = 0;
  private current: Omit<NbdRequest, 'payload' | 'payloadDropped'> | null = null;
  private payload: Buffer | null = null;
  private payloadLength = 0;
  private payloadFill = 0;
  private discardLeft = 0;
  private pending: Buffer[] = [];
  private pendingTotal = 0;
  /** copies detach() made, by backing store: each goes back once no pending input views it */
  private readonly detached = new Map<ArrayBufferLike, Buffer>();
  /** the connection closed: nothing more is parsed */
  private closed = false;

  constructor(
    private readonly maxPayload: number,
    private readonly onRequest: (req: NbdRequest) => void,
    /** payloads (filled whole before their request is emitted) and detached input */
    private readonly memory: ReaderMemory = freshMemory,
  ) {}

  get readerState(): ReaderState {
    return this.state;
  }

  /** Bytes received but not yet parsed (held while the caller has parsing stopped). */
  get pendingBytes(): number {
    return this.pendingTotal;
  }

  /** The length of the WRITE payload being collected (0 between requests): its memory was
   *  budgeted when its header was peeked, and stays budgeted until the request is done. */
  get payloadInProgress(): number {
    return this.state === 'payload' ? this.payloadLength : 0;
  }

  /** Bytes of the WRITE payload being collected that have arrived (0 between requests). */
  get payloadReceived(): number {
    return this.state === 'payload' ? this.payloadFill : 0;
  }

  /** The READ/WRITE length of the next request once its whole header is here (null before, or
   *  for other commands): what the caller must budget before parsing it. Lengths over
   *  maxPayload are refused or dropped, never held: they count 0. */
  peekLength(): number | null {
    if (this.state !== 'header') return null;
    const need = NBD_REQUEST_SIZE - this.headerFill;
    let h: Buffer;
    if (this.headerFill === 0 && this.pending.length > 0 && this.pending[0].length >= NBD_REQUEST_SIZE) h = this.pending[0];
    else {
      if (this.pendingTotal < need) return null;
      h = Buffer.allocUnsafe(NBD_REQUEST_SIZE);
      this.header.copy(h, 0, 0, this.headerFill);
      let at = this.headerFill;
      for (const c of this.pending) {
        at += c.copy(h, at, 0, Math.min(c.length, NBD_REQUEST_SIZE - at));
        if (at === NBD_REQUEST_SIZE) break;
      }
    }
    const type = h.readUInt16BE(6);
    if (type !== NBD_CMD_READ && type !== NBD_CMD_WRITE) return null;
    const length = h.readUInt32BE(24);
    return length <= this.maxPayload ? length : 0;
  }

  push(chunk: Buffer): void {
    if (chunk.length > 0 && this.state !== 'desync' && !this.closed) {
      this.pending.push(chunk);
      this.pendingTotal += chunk.length;
    }
  }

  /** Input in `backing` is about to be overwritten: copy what of it is still unparsed. */
  detach(backing: ArrayBufferLike): void {
    for (let k = 0; k < this.pending.length; k++) {
      const view = this.pending[k];
      if (view.buffer !== backing) continue;
      const copy = this.memory.take(view.length);
      view.copy(copy);
      this.detached.set(copy.buffer, copy);
      this.pending[k] = copy;
    }
  }

  /** The reader is done (its connection closed): detached copies and a payload half read go
   *  back, and input from now on is dropped. */
  close(): void {
    this.closed = true;
    this.dropPending();
    // a payload half read is nobody's request: its memory goes back too
    if (this.state === 'payload' && this.payload) this.memory.give(this.payload);
    this.payload = null;
  }

  /** `chunk` left the pending input: its detached copy goes back unless a later view shares it. */
  private parsed(chunk: Buffer): void {
    const copy = this.detached.get(chunk.buffer);
    if (!copy || this.pending.some((c) => c.buffer === chunk.buffer)) return;
    this.detached.delete(chunk.buffer);
    this.memory.give(copy);
  }

  private dropPending(): void {
    this.pending = [];
    this.pendingTotal = 0;
    for (const copy of this.detached.values()) this.memory.give(copy);
    this.detached.clear();
  }

  /** Parses pending bytes, emitting requests, until they run out ('need-more'), `stop()` says
   *  stop after a request ('stopped'), or a bad magic arrives ('desync'). */
  run(stop: () => boolean): ReaderResult {
    while (this.pending.length > 0) {
      if (this.state === 'desync') return 'desync';
      if (this.closed || stop()) return 'stopped';
      const chunk = this.pending[0];
      const used = this.consume(chunk);
      if ((this.state as ReaderState) === 'desync') return 'desync';
      if (this.closed) return 'stopped'; // closed by the request just emitted
      this.pendingTotal -= Math.min(used, chunk.length);
      if (used >= chunk.length) {
        this.pending.shift();
        this.parsed(chunk);
      } else this.pending[0] = chunk.subarray(used);
    }
    return this.state === 'desync' ? 'desync' : this.closed ? 'stopped' : 'need-more';
  }

  /** Consumes a prefix of `chunk`; returns how many bytes it used (emitting at most one request). */
  private consume(chunk: Buffer): number {
    switch (this.state) {
      case 'header':
        return this.consumeHeader(chunk);
      case 'payload': {
        const n = Math.min(chunk.length, this.payloadLength - this.payloadFill);
        chunk.copy(this.payload!, this.payloadFill, 0, n);
        this.payloadFill += n;
        if (this.payloadFill === this.payloadLength) this.finish(this.payload, false);
        return n;
      }
      case 'discard': {
        const n = Math.min(chunk.length, this.discardLeft);
        this.discardLeft -= n;
        if (this.discardLeft === 0) this.finish(null, true);
        return n;
      }
      default:
        return chunk.length;
    }
  }

  private consumeHeader(chunk: Buffer): number {
    let src: Buffer;
    let used: number;
    if (this.headerFill === 0 && chunk.length >= NBD_REQUEST_SIZE) {
      src = chunk; // fast path: the whole header is in this chunk
      used = NBD_REQUEST_SIZE;
    } else {
      const n = Math.min(chunk.length, NBD_REQUEST_SIZE - this.headerFill);
      chunk.copy(this.header, this.headerFill, 0, n);
      this.headerFill += n;
      if (this.headerFill < NBD_REQUEST_SIZE) return n;
      this.headerFill = 0;
      src = this.header;
      used = n;
    }
    if (src.readUInt32BE(0) !== NBD_REQUEST_MAGIC) {
      this.state = 'desync';
      this.dropPending();
      return chunk.length;
    }
    const flags = src.readUInt16BE(4);
    const type = src.readUInt16BE(6);
    const handle = Buffer.from(src.subarray(8, 16));
    const offset = src.readUInt32BE(16) * 0x1_0000_0000 + src.readUInt32BE(20);
    const length = src.readUInt32BE(24);
    this.current = { flags, type, handle, offset, length };
    if (type !== NBD_CMD_WRITE || length === 0) {
      this.finish(null, false);
      return used;
    }
    if (length > this.maxPayload) {
      this.state = 'discard';
      this.discardLeft = length;
      return used;
    }
    const payload = this.memory.take(length);
    const rest = chunk.length - used;
    if (rest >= length) {
      chunk.copy(payload, 0, used, used + length); // the whole payload is in this chunk
      this.finish(payload, false);
      return used + length;
    }
    this.state = 'payload';
    this.payloadLength = length;
    this.payloadFill = 0;
    this.payload = payload;
    return used;
  }

  private finish(payload: Buffer | null, payloadDropped: boolean): void {
    const req: NbdRequest = { ...this.current!, payload, payloadDropped };
    this.current = null;
    this.payload = null;
    this.state = 'header';
    this.onRequest(req);
  }
}
