// One client connection: owns its socket, its state machine (conn-state.ts), the handshake and
// the transmission loop. Everything that goes wrong here costs this client only: errors end in
// 'dead' (socket destroyed), never in a throw or an unhandled rejection.
//
// Transmission: requests run concurrently as they are parsed; each reply is written whole in one
// synchronous burst (so replies never interleave), batched per tick with cork/uncork
// (one writev). Backpressure: parsing stops and the socket is paused while this connection holds
// more than maxInFlightBytes of request/reply data, more than MAX_IN_FLIGHT_REQUESTS requests, or
// a socket write buffer above maxInFlightBytes; it resumes as requests finish or the socket drains.
import type { Socket } from 'node:net';
import type { Export, ExportProvider } from '../volume/export';
import type { Logger } from '../util/log';
import { describeError } from '../errors';
import { ByteQueue } from './byte-queue';
import { ConnStateMachine, isTerminal, type ConnState } from './conn-state';
import { NBD_CMD_DISC, NBD_CMD_READ, NBD_CMD_WRITE } from './constants';
import { errorReply, executeRequest, mustDropConnection, type ExecutionSession } from './command-executor';
import { BASE_ALLOCATION_CONTEXT_ID, encodeGreeting, negotiateOptions, ProtocolViolation, readClientFlags, type Negotiated } from './negotiation';
import { MAX_PAYLOAD } from './limits';
import { RequestReader, type NbdRequest } from './request-reader';
import { validateRequest, type SessionFacts } from './request-validation';

/** Requests in flight per connection, whatever their size (bounds floods of tiny requests). */
const MAX_IN_FLIGHT_REQUESTS = 1024;
/** drop a client whose socket has not drained our replies for this long */
const WRITE_STALL_MS = 60_000;
/** after a clean close, how long a client may take to read what we still send */
const CLOSE_LINGER_MS = 30_000;
/** Handshake input buffered before the socket is paused. */
const HANDSHAKE_HIGH_WATER = 256 * 1024;

export interface ConnectionOptions {
  readonly provider: ExportProvider;
  readonly logger: Logger;
  readonly maxInFlightBytes: number;
  readonly handshakeTimeoutMs: number;
}

export class NbdConnection {
  private readonly fsm: ConnStateMachine;
  private readonly queue: ByteQueue;
  private reader: RequestReader | null = null;
  private session: (SessionFacts & ExecutionSession) | null = null;
  private exp: Export | null = null;
  private exportReleased = false;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private inFlightBytes = 0;
  private inFlightRequests = 0;
  private discReceived = false;
  /** the client shut down its sending side (FIN) during transmission */
  private clientEnded = false;
  private shuttingDown = false;
  private readPaused = false;
  private corked = false;
  private socketClosed = false;
  private stallTimer: NodeJS.Timeout | null = null;
  private resolveDone!: () => void;
  /** Resolves once the socket is closed and the export released. */
  readonly done: Promise<void>;

  constructor(
    private readonly socket: Socket,
    private readonly opts: ConnectionOptions,
    readonly id: number,
  ) {
    this.fsm = new ConnStateMachine(opts.logger);
    this.done = new Promise((r) => (this.resolveDone = r));
    this.queue = new ByteQueue(HANDSHAKE_HIGH_WATER, () => socket.pause(), () => socket.resume());
  }

  get state(): ConnState {
    return this.fsm.state;
  }

  start(): void {
    const { socket } = this;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', (err) => this.die(`socket error: ${err.message}`, 'debug'));
    socket.on('close', () => this.onClose());
    socket.on('drain', () => this.pump());
    this.handshakeTimer = setTimeout(() => this.die('handshake timeout', 'warn'), this.opts.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.write([encodeGreeting()]);
    this.handshake().catch((err) => {
      if (err instanceof ProtocolViolation) this.die(err.message, 'warn', true);
      else this.die(`handshake failed: ${describeError(err)}`, isTerminal(this.state) ? 'debug' : 'error');
    });
  }

  /** Graceful shutdown: a negotiating client is cut off; a transmitting one gets its in-flight
   *  requests answered (later ones left unanswered, for a reconnecting client to replay) and
   *  then a clean close. */
  beginShutdown(): void {
    this.shuttingDown = true;
    if (this.state === 'greeting' || this.state === 'options') this.finish('closed', 'server shutting down');
    else if (this.state === 'transmission' && this.inFlightRequests === 0) this.finish('closed', 'server shutting down');
  }

  /** Last resort after the grace period: drop the socket whatever state we are in (a closed
   *  connection whose client stopped reading would otherwise never finish closing). */
  destroy(): void {
    this.die('shutdown grace period over', 'warn');
    if (!this.socket.destroyed) this.socket.destroy();
  }

  // ---- handshake ----

  private async handshake(): Promise<void> {
    const ctx = {
      queue: this.queue,
      provider: this.opts.provider,
      logger: this.opts.logger,
      write: (buf: Buffer) => this.write([buf]),
      isShuttingDown: () => this.shuttingDown,
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

  private enterTransmission(n: Negotiated): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.exp = n.exp;
    this.session = {
      exp: n.exp,
      size: n.exp.size,
      caps: n.exp.caps,
      transmissionFlags: n.transmissionFlags,
      structuredReplies: n.structuredReplies,
      allocationContext: n.allocationContext,
      allocationContextId: BASE_ALLOCATION_CONTEXT_ID,
      maxPayload: MAX_PAYLOAD,
      logger: this.opts.logger,
    };
    this.fsm.enter('transmission');
    this.opts.logger.debug({ conn: this.id, exportName: n.exp.name, structured: n.structuredReplies }, 'transmission');
    this.reader = new RequestReader(MAX_PAYLOAD, (req) => this.onRequest(req));
    for (const chunk of this.queue.takeAll()) this.reader.push(chunk);
    if (this.shuttingDown) this.finish('closed', 'server shutting down');
    else this.pump();
  }

  // ---- transmission ----

  private onData(chunk: Buffer): void {
    if (this.reader) {
      this.reader.push(chunk);
      this.pump();
    } else if (!isTerminal(this.state)) {
      this.queue.push(chunk);
    }
  }

  private mustStopParsing(): boolean {
    return (
      this.discReceived ||
      isTerminal(this.state) ||
      this.inFlightBytes >= this.opts.maxInFlightBytes ||
      this.inFlightRequests >= MAX_IN_FLIGHT_REQUESTS ||
      this.socket.writableLength >= this.opts.maxInFlightBytes
    );
  }

  /** Parses what it can; pauses the socket when it must stop, resumes it when it may go on. */
  private pump(): void {
    if (!this.reader || isTerminal(this.state)) return;
    const result = this.reader.run(() => this.mustStopParsing());
    if (result === 'desync') {
      this.die('bad request magic: lost synchronisation', 'warn', true);
      return;
    }
    const stop = result === 'stopped' || this.mustStopParsing();
    if (stop && !this.readPaused) {
      this.readPaused = true;
      this.socket.pause();
    } else if (!stop && this.readPaused) {
      this.readPaused = false;
      this.socket.resume();
    }
  }

  private onRequest(req: NbdRequest): void {
    const session = this.session!;
    if (req.type === NBD_CMD_DISC) {
      this.discReceived = true; // no reply; in-flight requests finish first
      this.maybeCloseAfterDrain('client sent DISC');
      return;
    }
    const bytes = req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE ? req.length : 0;
    this.inFlightBytes += bytes;
    this.inFlightRequests++;
    this.process(req, session)
      .catch((err) => {
        // executeRequest turns export errors into replies; only a bug of ours lands here.
        this.opts.logger.error({ conn: this.id, err: describeError(err) }, 'request handling failed');
        this.die('internal error', 'error');
      })
      .finally(() => {
        this.inFlightBytes -= bytes;
        this.inFlightRequests--;
        if (this.discReceived || this.shuttingDown || isTerminal(this.state)) this.maybeCloseAfterDrain('requests drained');
        else {
          this.pump();
          if (this.clientEnded) this.maybeCloseAfterDrain('client closed, requests drained');
        }
      });
  }

  private async process(req: NbdRequest, session: SessionFacts & ExecutionSession): Promise<void> {
    if (this.shuttingDown) {
      // Not answered: the connection closes once what started before the shutdown is answered,
      // and a reconnecting client replays this request to the next server (an ESHUTDOWN reply
      // would be an I/O error in the guest).
      return;
    }
    const errno = validateRequest(req, session);
    if (errno !== 0) {
      this.opts.logger.debug({ conn: this.id, cmd: req.type, flags: req.flags, offset: req.offset, length: req.length, errno }, 'request refused');
      this.write(errorReply(req, session.structuredReplies, errno, 'request refused'));
      return;
    }
    let reply: Buffer[];
    try {
      reply = await executeRequest(req, session);
    } catch (err) {
      if (!mustDropConnection(err)) throw err;
      this.die(`export cannot serve here any more: ${describeError(err)}`, 'warn');
      return;
    }
    this.write(reply);
  }

  private maybeCloseAfterDrain(why: string): void {
    if (this.inFlightRequests > 0) return;
    if (!isTerminal(this.state)) {
      // After the client's FIN, with nothing in flight, every whole request has been parsed
      // (backpressure is off): whatever is left is an incomplete request that can never finish.
      if (this.discReceived || this.shuttingDown || this.clientEnded) this.finish('closed', why);
      return;
    }
    void this.releaseExport();
  }

  // ---- output ----

  /** Writes one whole message. Corks until the end of the current tick (process.nextTick), so
   *  replies finished together leave in one writev; uncorking on setImmediate instead batched
   *  more but halved sequential read throughput (measured with nbdcopy). Output for a closed
   *  socket is dropped. */
  private write(bufs: Buffer[]): void {
    const s = this.socket;
    if (s.destroyed || s.writableEnded) return;
    if (!this.corked) {
      this.corked = true;
      s.cork();
      process.nextTick(() => {
        this.corked = false;
        s.uncork();
      });
    }
    for (const b of bufs) s.write(b);
    // A client that stops reading its replies is dropped once nothing has drained for a while:
    // its unread replies and the requests parked behind them are memory held on its behalf.
    if (s.writableNeedDrain && !this.stallTimer) {
      this.stallTimer = setTimeout(() => this.die('client stopped reading replies', 'warn'), WRITE_STALL_MS);
      this.stallTimer.unref();
      s.once('drain', () => {
        if (this.stallTimer) clearTimeout(this.stallTimer);
        this.stallTimer = null;
      });
    }
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
    // A client that never reads what we still have to send must not hold the socket forever.
    setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  /** Unrecoverable: stop reading and drop the socket. With `flushFirst`, replies already
   *  written (e.g. the ACKs before a 33rd option) still go out, then the socket closes. */
  private die(why: string, level: 'debug' | 'warn' | 'error', flushFirst = false): void {
    if (isTerminal(this.state)) return;
    this.fsm.enter('dead', why);
    this.opts.logger[level]({ conn: this.id, why, remote: this.socket.remoteAddress }, 'connection dropped');
    this.teardown();
    if (flushFirst && !this.socket.destroyed) {
      this.socket.pause();
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 2000).unref();
    } else {
      this.socket.destroy();
    }
  }

  private teardown(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.queue.fail(new Error('connection ended'));
    this.maybeCloseAfterDrain('ended');
  }

  private async releaseExport(): Promise<void> {
    if (this.exportReleased) return;
    this.exportReleased = true;
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
