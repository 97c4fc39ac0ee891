// One client connection: owns its socket, its state machine (conn-state.ts), the handshake and
// the transmission loop. Everything that goes wrong here costs this client only: errors end in
// 'dead' (socket destroyed), never in a throw or an unhandled rejection.
//
// Transmission: requests run concurrently as they are parsed; each reply is written whole in one
// synchronous burst (so replies never interleave), batched per tick with cork/uncork
// (one writev). When parsing stops and the socket is paused (backpressure, the memory budget,
// fair turns): connection-flow.ts.
import type { Socket } from 'node:net';
import type { Export, ExportProvider } from './export';
import type { ExportAccessPolicy } from './access';
import { ClientExports } from './client-exports';
import type { RateLimitedLog } from './rate-limited-log';
import { ReplyWriter } from './reply-writer';
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
import { RequestReader, type NbdRequest } from './request-reader';
import type { SessionFacts } from './request-validation';
import { ConnectionFlow } from './connection-flow';
import { answerRequest, type AnswerContext } from './request-answer';
import type { PayloadBuffers } from './payload-buffers';

/** after a clean close, how long a client may take to read what we still send */
const CLOSE_LINGER_MS = 30_000;
/** Handshake input buffered before the socket is paused. */
const HANDSHAKE_HIGH_WATER = 256 * 1024;

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
  private readonly flow: ConnectionFlow;
  private discReceived = false;
  /** the client shut down its sending side (FIN) during transmission */
  private clientEnded = false;
  private shuttingDown = false;
  private readonly writer: ReplyWriter;
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
    this.writer = new ReplyWriter(rawSocket, () => this.die('client stopped reading replies', 'warn'), () => this.flow.othersWaitForMemory());
    this.queue = new ByteQueue(HANDSHAKE_HIGH_WATER, () => this.socket.pause(), () => this.socket.resume());
    const host = {
      socket: () => this.socket,
      reader: () => this.reader,
      ended: () => isTerminal(this.state),
      discReceived: () => this.discReceived,
      pump: () => this.pump(),
      nextTurn: () => this.parseOn(),
      drop: (why: string) => this.die(why, 'warn'),
    };
    this.flow = new ConnectionFlow(host, opts.maxInFlightBytes, opts.memoryBudget);
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
    else if (this.state === 'transmission' && this.flow.requestsInFlight === 0) this.finish('closed', 'server shutting down');
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

  /** Parses what it can; the flow control then yields the turn, pauses or resumes the socket. */
  private pump(): void {
    if (!this.reader || isTerminal(this.state)) return;
    const result = this.reader.run(() => this.flow.mustStopParsing());
    if (result === 'desync') {
      this.lostSync();
      return;
    }
    if (isTerminal(this.state)) return; // a DISC parsed just now closed it: finish() reads on to the FIN
    this.flow.afterParsing(result === 'stopped');
  }

  /** Parsing may go on (a reply or a request is done, or a new turn came): after the client's
   *  FIN, the connection closes once nothing is left to parse. */
  private parseOn(): void {
    this.pump();
    if (this.clientEnded) this.maybeCloseAfterDrain('client closed, requests drained');
  }

  /** A bad request magic: nothing after it can be parsed, so the connection ends. Requests
   *  parsed before it still get their replies first (a WRITE just before it may be applied: its
   *  client must hear so). Each of them comes back through pump() once answered. */
  private lostSync(): void {
    this.flow.pause();
    if (this.flow.requestsInFlight === 0) this.die('bad request magic: lost synchronisation', 'warn', true);
  }

  private onRequest(req: NbdRequest): void {
    const session = this.session!;
    this.flow.requestParsed();
    if (req.type === NBD_CMD_DISC) {
      this.discReceived = true; // no reply; in-flight requests finish first
      this.maybeCloseAfterDrain('client sent DISC');
      return;
    }
    // a length over MAX_PAYLOAD is refused (READ) or was dropped (WRITE): it holds nothing
    const bytes = (req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE) && req.length <= MAX_PAYLOAD ? req.length : 0;
    this.flow.requestStarted(bytes);
    answerRequest(req, session, this.answering)
      .catch((err) => {
        // executeRequest turns export errors into replies; only a bug of ours lands here.
        this.opts.logger.error({ conn: this.id, err: describeError(err) }, 'request handling failed');
        this.die('internal error', 'error');
      })
      .finally(() => {
        this.opts.payloads?.give(req.payload); // answered: the export keeps nothing of it
        this.flow.requestDone(bytes);
        if (this.discReceived || this.shuttingDown || isTerminal(this.state)) this.maybeCloseAfterDrain('requests drained');
        else this.parseOn();
      });
  }

  private maybeCloseAfterDrain(why: string): void {
    if (this.flow.requestsInFlight > 0) return;
    if (!isTerminal(this.state)) {
      // After the client's FIN, requests may still wait behind backpressure (unsent replies) or
      // for their turn: pump() parses them later, and their completion comes back here.
      if (this.clientEnded && !this.discReceived && !this.shuttingDown && this.flow.waiting && (this.reader?.pendingBytes ?? 0) > 0) return;
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
    const release = this.flow.holdReply(bufs);
    const exp = this.exp;
    this.write(bufs, (err) => {
      release();
      // the export may reuse what a read reply carried (not after an error: the socket may have
      // dropped it unsent, but nothing says it let go of it)
      if (!err && exp?.readDone) for (const b of bufs) exp.readDone(b);
      this.flow.trimBudget();
      if (this.flow.paused) this.parseOn();
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
    this.flow.readOn();
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
    this.flow.stopTimers();
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.queue.fail(new Error('connection ended'));
    this.maybeCloseAfterDrain('ended');
  }

  private async releaseExport(): Promise<void> {
    if (this.exportReleased) return;
    this.exportReleased = true;
    this.flow.closeBudget();
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
