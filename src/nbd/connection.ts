// One client connection: owns its socket, its state machine (conn-state.ts), the handshake and
// the transmission loop. Everything that goes wrong here costs this client only: errors end in
// 'dead' (socket destroyed), never in a throw or an unhandled rejection.
//
// Transmission: requests run concurrently as they are parsed; each reply is written whole in one
// synchronous burst (so replies never interleave), batched per tick with cork/uncork
// (one writev). Backpressure: parsing stops and the socket is paused while this connection's
// requests in flight plus what its unsent replies keep alive (reply-memory.ts) reach
// maxInFlightBytes (its budget), or its unsent replies alone reach MAX_UNSENT_REPLY_BYTES (a
// client that does not read its replies costs at most that, plus the kernel's buffers), or
// its requests in flight plus unsent replies reach MAX_IN_FLIGHT_REQUESTS; it resumes as
// requests finish and replies reach the kernel. With a process memory budget (serve
// --memory-limit), what the connection holds (requests in flight, unsent replies, the WRITE
// payload being read) plus the next request must also be covered by its share of that budget
// (budget-share.ts), checked between requests: while the budget has no room the connection
// waits its turn (FIFO with every other holder) without reading. Fairness between connections:
// fair-turns.ts.
import type { Socket } from 'node:net';
import type { Export, ExportProvider } from './export';
import type { ExportAccessPolicy } from './access';
import { ClientExports } from './client-exports';
import type { RateLimitedLog } from './rate-limited-log';
import { CONTENDED_MIN_PROGRESS_BYTES, CONTENDED_STALL_MS, ReplyWriter } from './reply-writer';
import { safeTlsReason, upgradeSocket, type TlsServerConfig } from './tls';
import { revokedBecause, type SessionGrant } from './session-grant';
import type { Logger } from '../util/log';
import { describeError } from '../errors';
import { ByteQueue } from './byte-queue';
import { ConnStateMachine, isTerminal, type ConnState } from './conn-state';
import { NBD_CMD_DISC, NBD_CMD_READ, NBD_CMD_WRITE } from './constants';
import type { ExecutionSession } from './command-executor';
import type { MetricsSink } from '../util/metrics';
import { encodeGreeting, negotiateOptions, ProtocolViolation, readClientFlags, type Negotiated } from './negotiation';
import { MAX_PAYLOAD } from './limits';
import type { MemoryBudget } from '../util/memory-budget';
import { BudgetShare } from './budget-share';
import { ReplyMemory } from './reply-memory';
import { RequestReader, type NbdRequest } from './request-reader';
import type { SessionFacts } from './request-validation';
import { FairTurns } from './fair-turns';
import { answerRequest, type AnswerContext } from './request-answer';
import type { PayloadBuffers } from './payload-buffers';

/** Requests in flight plus unsent replies per connection, whatever their size (bounds floods
 *  of tiny requests and of replies that share one buffer). */
const MAX_IN_FLIGHT_REQUESTS = 1024;
/** Parsing stops while the replies waiting for the socket (beyond what the kernel took) hold
 *  this much: a client that does not read its replies costs this, not its whole in-flight
 *  budget, and a client that floods and reconnects makes us do that much work per round, not
 *  64 MiB of it. A client that reads keeps its pipeline: the kernel buffers and the requests
 *  in flight still hold up to maxInFlightBytes. */
const MAX_UNSENT_REPLY_BYTES = 8 * 1024 * 1024;
/** after a clean close, how long a client may take to read what we still send */
const CLOSE_LINGER_MS = 30_000;
/** Handshake input buffered before the socket is paused. */
const HANDSHAKE_HIGH_WATER = 256 * 1024;
/** Input left unparsed at the end of a turn above which the socket is paused until the next. */
const TURN_PAUSE_BYTES = 1024 * 1024;

export interface ConnectionOptions {
  readonly provider: ExportProvider;
  readonly logger: Logger;
  readonly maxInFlightBytes: number;
  readonly handshakeTimeoutMs: number;
  /** absent: TLS off (STARTTLS not offered). The server replaces both on a reload. */
  tls?: TlsServerConfig;
  access?: ExportAccessPolicy;
  /** Called as the client enters transmission; false: no room for another established
   *  connection (the client is dropped). */
  readonly onEstablished?: (conn: NbdConnection) => boolean;
  /** for warnings a stranger can cause during negotiation (timeouts, failed TLS handshakes) */
  readonly negotiationLog?: RateLimitedLog;
  readonly metrics?: MetricsSink;
  /** the process memory budget this connection's requests and replies also draw from */
  readonly memoryBudget?: MemoryBudget;
  /** recycled memory for WRITE payloads (the server's; absent: a fresh allocation each) */
  readonly payloads?: PayloadBuffers;
}

export class NbdConnection {
  private readonly fsm: ConnStateMachine;
  private readonly queue: ByteQueue;
  private reader: RequestReader | null = null;
  private session: (SessionFacts & ExecutionSession) | null = null;
  private exp: Export | null = null;
  private exportReleased = false;
  /** who the client authenticated as, with which PSK, and what it was let in to */
  private identity: string | null = null;
  private pskKey: Buffer | null = null;
  private grant: SessionGrant | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  /** when the handshake timer fires (performance.now() time): negotiation answers before it */
  private handshakeDeadline = Infinity;
  private inFlightBytes = 0;
  private inFlightRequests = 0;
  private readonly replyMemory = new ReplyMemory();
  private readonly budget: BudgetShare;
  private discReceived = false;
  /** the client shut down its sending side (FIN) during transmission */
  private clientEnded = false;
  private shuttingDown = false;
  private readPaused = false;
  private readonly writer: ReplyWriter;
  /** requests parsed whole so far (a payload watch tells a new payload from a stuck one) */
  private requestsParsed = 0;
  private payloadTimer: NodeJS.Timeout | null = null;
  /** requests and their bytes started in this turn; reset by the scheduled next turn */
  private readonly turns = new FairTurns();
  private readonly answering: AnswerContext;
  private socketClosed = false;
  private detachRaw: (() => void) | null = null;
  /** The socket we speak NBD on: the accepted one, or the TLS socket wrapping it after STARTTLS. */
  private socket: Socket;
  /** the client's address, kept for logs (a TLS socket may not know it once closed) */
  readonly remote: string;
  private resolveDone!: () => void;
  /** Resolves once the socket is closed and the export released. */
  readonly done: Promise<void>;

  constructor(
    private readonly rawSocket: Socket,
    private readonly opts: ConnectionOptions,
    readonly id: number,
  ) {
    this.socket = rawSocket;
    this.remote = rawSocket.remoteAddress ?? 'unix socket';
    this.fsm = new ConnStateMachine(opts.logger.child({ conn: id }));
    this.done = new Promise((r) => (this.resolveDone = r));
    this.writer = new ReplyWriter(rawSocket, () => this.die('client stopped reading replies', 'warn'), () => this.othersWaitForMemory());
    this.queue = new ByteQueue(HANDSHAKE_HIGH_WATER, () => this.socket.pause(), () => this.socket.resume());
    this.budget = new BudgetShare(opts.memoryBudget, () => this.pump());
    this.answering = {
      connId: id,
      logger: opts.logger,
      metrics: opts.metrics,
      shuttingDown: () => this.shuttingDown,
      writeReply: (bufs) => this.writeReply(bufs),
      drop: (why) => this.die(why, 'warn'),
    };
  }

  get state(): ConnState {
    return this.fsm.state;
  }

  start(): void {
    this.rawSocket.setNoDelay(true);
    this.detachRaw = this.listen(this.rawSocket);
    this.armHandshakeTimer(this.opts.handshakeTimeoutMs);
    this.write([encodeGreeting()]);
    this.handshake().catch((err) => {
      if (err instanceof ProtocolViolation) this.die(err.message, 'warn', true);
      else this.die(`handshake failed: ${describeError(err)}`, isTerminal(this.state) ? 'debug' : 'error');
    });
  }

  /** (Re)starts the handshake timer: the connection is dropped `ms` from now unless it is done. */
  private armHandshakeTimer(ms: number): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = setTimeout(() => this.die('handshake timeout', 'warn'), ms);
    this.handshakeDeadline = performance.now() + ms;
    this.handshakeTimer.unref();
  }

  /** Graceful shutdown: a negotiating client is cut off; a transmitting one gets its in-flight
   *  requests answered (later ones left unanswered, for a reconnecting client to replay) and
   *  then a clean close. */
  beginShutdown(): void {
    this.shuttingDown = true;
    if (this.state === 'greeting' || this.state === 'options') this.finish('closed', 'server shutting down');
    else if (this.state === 'transmission' && this.inFlightRequests === 0) this.finish('closed', 'server shutting down');
  }

  /** The server reloaded its PSK file or access policy: a session they no longer allow ends. */
  recheckGrant(): void {
    let revoked: string | null = null;
    if (this.state === 'transmission' && this.grant) revoked = revokedBecause(this.grant, this.opts.tls, this.opts.access);
    // still negotiating, over TLS with a PSK: its key must still be there (it could LIST and INFO)
    else if (this.state === 'options' && this.pskKey) revoked = revokedBecause({ identity: this.identity, pskKey: this.pskKey, exportName: '', writable: false }, this.opts.tls, undefined);
    if (revoked) this.die(`${revoked} (configuration reloaded)`, 'warn');
  }

  /** Admission gave this connection's handshake slot to a newer one. */
  evict(why: string): void {
    this.die(why, 'debug');
  }

  /** Last resort after the grace period: drop the socket whatever state we are in (a closed
   *  connection whose client stopped reading would otherwise never finish closing). */
  destroy(): void {
    this.die('shutdown grace period over', 'warn');
    if (!this.socket.destroyed) this.socket.destroy();
  }

  /** Our handlers on `socket`; returns what removes them again (Node's own stay). */
  private listen(socket: Socket): () => void {
    const handlers = {
      data: (chunk: Buffer) => this.onData(chunk),
      end: () => this.onEnd(),
      error: (err: Error & { code?: string }) => {
        // TLS failures (garbage inside TLS, a bad record) are worth a warning; resets are routine.
        if (err.code?.startsWith('ERR_SSL')) this.die(`TLS error: ${safeTlsReason(err)}`, 'warn');
        else this.die(`socket error: ${err.message}`, 'debug');
      },
      close: () => this.onClose(),
      drain: () => this.pump(),
    };
    for (const [event, fn] of Object.entries(handlers)) socket.on(event, fn);
    return () => {
      for (const [event, fn] of Object.entries(handlers)) socket.off(event, fn);
    };
  }

  // ---- handshake ----

  private async handshake(): Promise<void> {
    const ctx = {
      queue: this.queue,
      exports: new ClientExports(this.opts.provider, this.opts.logger, () => this.opts.access),
      logger: this.opts.logger,
      tls: this.opts.tls?.mode ?? ('off' as const),
      write: (buf: Buffer) => this.write([buf]),
      startTls: (ack: Buffer) => this.startTls(ack),
      isShuttingDown: () => this.shuttingDown,
      msLeft: () => this.handshakeDeadline - performance.now(),
      extendHandshake: (ms: number) => {
        if (this.handshakeTimer) this.armHandshakeTimer(this.handshakeDeadline - performance.now() + ms);
      },
    };
    const noZeroes = await readClientFlags(ctx);
    this.fsm.enter('options');
    const negotiated = await negotiateOptions(ctx, noZeroes);
    if (isTerminal(this.state)) {
      // The socket died while the export was being opened: give it back.
      if (negotiated) await this.opts.provider.release(negotiated.exp);
      return;
    }
    if (!negotiated) {
      this.finish('closed', 'client ended negotiation');
      return;
    }
    this.enterTransmission(negotiated);
  }

  /** STARTTLS: the ACK leaves in plaintext and the socket is wrapped in the same tick, so no
   *  byte of the client's TLS handshake can be read as plaintext. */
  private async startTls(ack: Buffer): Promise<string | null> {
    const raw = this.rawSocket;
    const config = this.opts.tls!;
    this.detachRaw?.(); // the TLS socket reports everything from here on (server.ts keeps a no-op 'error' handler on raw)
    this.writer.writeNow(ack);
    const { socket, secure } = upgradeSocket(raw, config);
    this.writer.switchTo(socket);
    this.socket = socket;
    socket.once('close', () => raw.destroy());
    this.listen(socket);
    try {
      const identity = await secure;
      this.identity = identity;
      this.pskKey = identity !== null ? (config.pskKeys?.get(identity) ?? null) : null;
      this.opts.logger.debug({ conn: this.id, remote: this.remote, identity, protocol: socket.getProtocol(), cipher: socket.getCipher()?.name }, 'TLS established');
      return identity;
    } catch (err) {
      this.die((err as Error).message, 'warn');
      throw err;
    }
  }

  private enterTransmission(n: Negotiated): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.exp = n.exp;
    this.grant = { identity: this.identity, pskKey: this.pskKey, exportName: n.exp.name, writable: !n.caps.readOnly };
    // the keys or the policy may have been reloaded while this client negotiated
    const revoked = revokedBecause(this.grant, this.opts.tls, this.opts.access);
    if (revoked) {
      this.die(`${revoked} (configuration reloaded)`, 'warn');
      return;
    }
    if (this.opts.onEstablished && !this.opts.onEstablished(this)) {
      this.die('connection limit reached', 'warn');
      return;
    }
    this.session = {
      exp: n.exp,
      size: n.exp.size,
      caps: n.caps,
      transmissionFlags: n.transmissionFlags,
      structuredReplies: n.structuredReplies,
      hasMetaContexts: n.metaContexts.length > 0,
      metaContexts: n.metaContexts,
      maxPayload: MAX_PAYLOAD,
      logger: this.opts.logger,
    };
    this.fsm.enter('transmission');
    this.opts.logger.debug({ conn: this.id, exportName: n.exp.name, structured: n.structuredReplies }, 'transmission');
    const payloads = this.opts.payloads;
    this.reader = new RequestReader(MAX_PAYLOAD, (req) => this.onRequest(req), payloads);
    for (const chunk of this.queue.takeAll()) this.reader.push(chunk);
    if (this.shuttingDown) this.finish('closed', 'server shutting down');
    else this.pump();
  }

  // ---- transmission ----

  private onData(chunk: Buffer): void {
    if (isTerminal(this.state)) return; // closed or dropped: nothing more is parsed
    if (this.reader) {
      this.reader.push(chunk);
      this.pump();
    } else this.queue.push(chunk);
  }

  /** A read into the server's shared buffer (socket-reads.ts): nothing may keep a view of it. */
  onTransientData(view: Buffer): void {
    if (isTerminal(this.state)) return;
    if (this.reader) {
      this.reader.push(view);
      this.pump();
      this.reader?.detach(view.buffer);
    } else this.queue.push(Buffer.from(view));
  }

  private mustStopParsing(): boolean {
    return this.mustPause() || this.turnUsedUp();
  }

  /** Stop reading from the socket: done, or over the budget. */
  private mustPause(): boolean {
    return (
      this.discReceived ||
      isTerminal(this.state) ||
      this.inFlightBytes + this.replyMemory.heldBytes >= this.opts.maxInFlightBytes ||
      this.replyMemory.heldBytes >= MAX_UNSENT_REPLY_BYTES ||
      this.inFlightRequests + this.replyMemory.unsentReplies >= MAX_IN_FLIGHT_REQUESTS ||
      !this.budgetCoversNext()
    );
  }

  /** The process budget covers what this connection holds plus the next request (checked
   *  between requests only: a WRITE payload was covered whole when its header was peeked, so a
   *  connection never waits for budget holding half a payload that only more reading frees). */
  private budgetCoversNext(): boolean {
    if (!this.reader || this.reader.payloadInProgress > 0) return true;
    return this.budget.cover(this.memoryHeld() + (this.reader.peekLength() ?? 0));
  }

  /** What this connection's budget share covers: requests in flight, what its unsent replies
   *  keep alive, and the WRITE payload being read. (Input not yet parsed is socket buffering,
   *  bounded apart: a connection waiting for the budget must hold nothing it cannot give back
   *  by itself, or waiters could deadlock.) */
  private memoryHeld(): number {
    return this.inFlightBytes + this.replyMemory.heldBytes + (this.reader?.payloadInProgress ?? 0);
  }

  /** Other holders of the process memory budget wait for room (this connection's among it). */
  private othersWaitForMemory(): boolean {
    return (this.opts.memoryBudget?.stats().waiting ?? 0) > 0;
  }

  /** A WRITE payload being read holds its whole length of the budget until it is in: one that
   *  stops coming (a client sending 1 KiB every 2 s) is given CONTENDED_STALL_MS to move
   *  CONTENDED_MIN_PROGRESS_BYTES while others wait for that memory, as unread replies are (it
   *  locked every client out, for good). A slow payload that moves goes on. */
  private watchPayload(): void {
    const reading = (this.reader?.payloadInProgress ?? 0) > 0;
    if (!reading) {
      this.stopPayloadWatch();
      return;
    }
    if (this.payloadTimer) return;
    const parsed = this.requestsParsed;
    const received = this.reader!.payloadReceived;
    const check = () => {
      this.payloadTimer = null;
      if ((this.reader?.payloadInProgress ?? 0) === 0 || isTerminal(this.state)) return;
      // (not while we hold its socket paused: its requests in flight waiting on the store, say)
      const stuck = !this.readPaused && this.requestsParsed === parsed && this.reader!.payloadReceived - received < CONTENDED_MIN_PROGRESS_BYTES;
      if (stuck && this.othersWaitForMemory()) return this.die("client stopped sending a request's payload", 'warn');
      this.watchPayload(); // it moved, or nobody waits: watch on from here
    };
    this.payloadTimer = setTimeout(check, CONTENDED_STALL_MS).unref();
  }

  private stopPayloadWatch(): void {
    if (this.payloadTimer) clearTimeout(this.payloadTimer);
    this.payloadTimer = null;
  }

  /** Something was given back: return what the budget share no longer needs. */
  private trimBudget(): void {
    this.budget.trim(this.memoryHeld());
  }

  private turnUsedUp(): boolean {
    return this.turns.usedUp;
  }

  /** This turn's share is used up: go on in a later turn, after other connections and I/O. */
  private yieldTurn(): void {
    this.turns.yield(() => {
      this.pump();
      if (this.clientEnded) this.maybeCloseAfterDrain('client closed, requests drained');
    });
  }

  /** Parses what it can; pauses the socket when it must stop, resumes it when it may go on. */
  private pump(): void {
    if (!this.reader || isTerminal(this.state)) return;
    const result = this.reader.run(() => this.mustStopParsing());
    if (result === 'desync') {
      this.lostSync();
      return;
    }
    if (isTerminal(this.state)) return; // a DISC parsed just now closed it: finish() reads on to the FIN
    let stop = result === 'stopped' || this.mustStopParsing();
    if (this.turnUsedUp()) {
      this.yieldTurn();
      // Stopped only for the turn: the socket keeps flowing (no pause/resume per turn) while
      // what waits unparsed stays small.
      if (!this.mustPause() && this.reader.pendingBytes < TURN_PAUSE_BYTES) stop = false;
    }
    if (stop && !this.readPaused) {
      this.readPaused = true;
      this.socket.pause();
    } else if (!stop && this.readPaused) {
      this.readPaused = false;
      this.socket.resume();
    }
    this.watchPayload();
  }

  /** A bad request magic: nothing after it can be parsed, so the connection ends. Requests
   *  parsed before it still get their replies first (a WRITE just before it may be applied: its
   *  client must hear so). Each of them comes back through pump() once answered. */
  private lostSync(): void {
    if (!this.readPaused) {
      this.readPaused = true;
      this.socket.pause();
    }
    if (this.inFlightRequests === 0) this.die('bad request magic: lost synchronisation', 'warn', true);
  }

  private onRequest(req: NbdRequest): void {
    const session = this.session!;
    this.requestsParsed++;
    if (req.type === NBD_CMD_DISC) {
      this.discReceived = true; // no reply; in-flight requests finish first
      this.maybeCloseAfterDrain('client sent DISC');
      return;
    }
    // a length over MAX_PAYLOAD is refused (READ) or was dropped (WRITE): it holds nothing
    const bytes = (req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE) && req.length <= MAX_PAYLOAD ? req.length : 0;
    this.inFlightBytes += bytes;
    this.inFlightRequests++;
    this.turns.count(bytes);
    answerRequest(req, session, this.answering)
      .catch((err) => {
        // executeRequest turns export errors into replies; only a bug of ours lands here.
        this.opts.logger.error({ conn: this.id, err: describeError(err) }, 'request handling failed');
        this.die('internal error', 'error');
      })
      .finally(() => {
        this.opts.payloads?.give(req.payload); // answered: the export keeps nothing of it
        this.inFlightBytes -= bytes;
        this.inFlightRequests--;
        this.trimBudget();
        if (this.discReceived || this.shuttingDown || isTerminal(this.state)) this.maybeCloseAfterDrain('requests drained');
        else {
          this.pump();
          if (this.clientEnded) this.maybeCloseAfterDrain('client closed, requests drained');
        }
      });
  }

  private maybeCloseAfterDrain(why: string): void {
    if (this.inFlightRequests > 0) return;
    if (!isTerminal(this.state)) {
      // After the client's FIN, requests may still wait behind backpressure (unsent replies) or
      // for their turn: pump() parses them later, and their completion comes back here.
      const waiting = this.readPaused || this.turns.waiting;
      if (this.clientEnded && !this.discReceived && !this.shuttingDown && waiting && (this.reader?.pendingBytes ?? 0) > 0) return;
      // Otherwise, with nothing in flight, every whole request has been parsed: what is left is
      // an incomplete request that can never finish.
      if (this.discReceived || this.shuttingDown || this.clientEnded) this.finish('closed', why);
      return;
    }
    void this.releaseExport();
  }

  // ---- output ----

  private write(bufs: Buffer[], onWritten?: (err?: Error | null) => void): void {
    this.writer.write(bufs, onWritten);
  }

  /** A transmission reply: counted against the budget until the socket has written it out. */
  private writeReply(bufs: Buffer[]): void {
    const s = this.socket;
    if (s.destroyed || s.writableEnded) return;
    const release = this.replyMemory.hold(bufs);
    const exp = this.exp;
    this.write(bufs, (err) => {
      release();
      // the export may reuse what a read reply carried (not after an error: the socket may have
      // dropped it unsent, but nothing says it let go of it)
      if (!err && exp?.readDone) for (const b of bufs) exp.readDone(b);
      this.trimBudget();
      if (!this.readPaused) return;
      this.pump();
      if (this.clientEnded) this.maybeCloseAfterDrain('client closed, requests drained');
    });
  }


  // ---- ending ----

  private onEnd(): void {
    // EOF from the client: nothing more will come. Mid-handshake or mid-request it is an abrupt
    // disconnect; otherwise a plain close once in-flight requests are done.
    // In transmission, requests that arrived before the FIN still get their replies (a client may
    // shut down its sending side after pipelining): parse what is buffered, close once drained.
    if (this.state === 'transmission' && this.reader) {
      this.clientEnded = true;
      this.pump();
      this.maybeCloseAfterDrain('client closed');
      return;
    }
    if (!isTerminal(this.state)) this.die('client disconnected', 'debug');
  }

  private onClose(): void {
    this.socketClosed = true;
    this.reader?.close(); // what it holds unparsed will never be parsed
    if (!isTerminal(this.state)) this.die('socket closed', 'debug');
    this.maybeCloseAfterDrain('socket closed');
  }

  /** Clean end: flush what we wrote, then close. */
  private finish(state: 'closed', why: string): void {
    if (isTerminal(this.state)) return;
    this.fsm.enter(state, why);
    this.opts.logger.debug({ conn: this.id, why }, 'connection closed');
    this.teardown();
    this.socket.end();
    // Read on (and drop what comes): the client's FIN is what closes the socket, and a socket
    // reading into our own buffer (socket-reads.ts) stops reading the moment it is paused.
    this.readPaused = false;
    this.socket.resume();
    // A client that never reads what we still have to send must not hold the socket forever.
    setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  /** Unrecoverable: stop reading and drop the socket. With `flushFirst`, replies already
   *  written (e.g. the ACKs before a 33rd option) still go out, then the socket closes. */
  private die(why: string, level: 'debug' | 'warn' | 'error', flushFirst = false): void {
    if (isTerminal(this.state)) return;
    const negotiating = this.state === 'greeting' || this.state === 'options';
    this.fsm.enter('dead', why);
    const fields = { conn: this.id, why, remote: this.remote };
    if (level === 'warn' && negotiating && this.opts.negotiationLog) this.opts.negotiationLog.warn(fields, 'connection dropped');
    else this.opts.logger[level](fields, 'connection dropped');
    this.teardown();
    if (flushFirst && !this.socket.destroyed) {
      this.socket.pause();
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 2000).unref();
    } else {
      this.socket.destroy();
      if (this.socket !== this.rawSocket) this.rawSocket.destroy();
    }
  }

  private teardown(): void {
    this.writer.stopStallTimer();
    this.stopPayloadWatch();
    this.turns.cancel();
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.queue.fail(new Error('connection ended'));
    this.maybeCloseAfterDrain('ended');
  }

  private async releaseExport(): Promise<void> {
    if (this.exportReleased) return;
    this.exportReleased = true;
    this.budget.close();
    if (this.exp) {
      try {
        await this.opts.provider.release(this.exp);
      } catch (err) {
        this.opts.logger.error({ conn: this.id, err: describeError(err) }, 'export release failed');
      }
    }
    if (this.socketClosed || this.socket.destroyed) this.resolveDone();
    else this.socket.once('close', () => this.resolveDone());
  }
}
