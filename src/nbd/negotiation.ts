// Handshake: greeting, client flags and option haggling (fixed newstyle), ending in the
// transmission phase with an open Export, or in a clean close.
//
// Contract: every option payload is consumed whatever its content (payloads up to
// MAX_OPTION_LENGTH are read, larger ones drained and refused with ERR_TOO_BIG, absurd ones cut
// the connection); an unknown option gets ERR_UNSUP, an unknown export ERR_UNKNOWN, a malformed
// payload ERR_INVALID, and the session continues. At most MAX_OPTIONS options per handshake.
// Throws ProtocolViolation where the stream cannot be trusted (the caller goes to 'dead').
//
// TLS (tls.ts): with TLS on, STARTTLS upgrades the socket and forgets everything negotiated
// before it (spec); with TLS required, every option but STARTTLS and ABORT is answered
// ERR_TLS_REQD until then, and EXPORT_NAME before TLS ends the session. Exports are reached
// through ClientExports, which applies the access policy to the client's TLS identity.
import type { Export, ExportCaps, OpenPurpose } from './export';
import type { Logger } from '../util/log';
import { describeError } from '../errors';
import { TIMED_OUT, within } from '../util/within';
import { ClientExports, type OpenResult } from './client-exports';
import type { TlsMode } from './tls';
import {
  IHAVEOPT,
  NBDMAGIC,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_OPTION_HEADER_SIZE,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_PLATFORM,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_MAX_STRING,
} from './constants';
import { HANDSHAKE_LISTED_EXPORTS_MAX, HANDSHAKE_MS_PER_LISTED_EXPORT, HANDSHAKE_OPEN_WAIT_MAX_MS, HANDSHAKE_OPEN_WAIT_SLACK_MS, MAX_OPTIONS, OPTIONS_PER_LISTED_EXPORT, MAX_OPTION_DRAIN, MAX_OPTION_LENGTH, MAX_PAYLOAD, MIN_BLOCK_SIZE, PREFERRED_BLOCK_SIZE } from './limits';
import type { ByteQueue } from './byte-queue';
import { parseInfoRequest, parseMetaContextRequest } from './option-parsing';
import { assignContextIds, matchContexts, offeredContexts, type SelectedContext } from './meta-contexts';
import {
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContext,
  encodeOptionReply,
  encodeProtocolString,
  encodeServerEntry,
} from './reply-framing';
import { transmissionFlags } from './transmission-flags';

/** The client broke the protocol in a way that leaves the stream untrustworthy. */
export class ProtocolViolation extends Error {
  override readonly name = 'ProtocolViolation';
}

export interface NegotiationContext {
  readonly queue: ByteQueue;
  readonly exports: ClientExports;
  readonly logger: Logger;
  readonly tls: TlsMode;
  write(buf: Buffer): void;
  /** Sends `ack` in plaintext, upgrades the socket to TLS and resolves with the client's
   *  identity once the handshake is done (rejects when it fails: the connection is lost). */
  startTls(ack: Buffer): Promise<string | null>;
  isShuttingDown(): boolean;
  /** ms until the handshake timer drops the connection (Infinity: no timer) */
  msLeft?(): number;
  /** more time for the handshake (a client that listed exports asks about each) */
  extendHandshake?(ms: number): void;
}

/** Store work in negotiation ends this long before the handshake timer would drop the client. */
const ANSWER_MARGIN_MS = 1000;
/** what is left of an extended handshake once the open it waited for was refused */
const AFTER_REFUSAL_MS = 3000;

export interface Negotiated {
  readonly exp: Export;
  /** the export's caps as this client gets them (read-only by the access policy) */
  readonly caps: ExportCaps;
  readonly structuredReplies: boolean;
  /** contexts SET_META_CONTEXT selected for this export (none: BLOCK_STATUS is refused) */
  readonly metaContexts: readonly SelectedContext[];
  readonly transmissionFlags: number;
}

const KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

export function encodeGreeting(): Buffer {
  const buf = Buffer.allocUnsafe(18);
  buf.writeBigUInt64BE(NBDMAGIC, 0);
  buf.writeBigUInt64BE(IHAVEOPT, 8);
  buf.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  return buf;
}

/** Reads the client flags; returns whether the client asked for NO_ZEROES. */
export async function readClientFlags(ctx: NegotiationContext): Promise<boolean> {
  const flags = (await ctx.queue.read(4)).readUInt32BE(0);
  if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) throw new ProtocolViolation(`unknown client flags 0x${flags.toString(16)}`);
  return (flags & NBD_FLAG_C_NO_ZEROES) !== 0;
}

/** The option loop. Resolves with the negotiated export, or null when the client ended the
 *  session cleanly (ABORT, or EXPORT_NAME of an unknown export). */
export async function negotiateOptions(ctx: NegotiationContext, noZeroes: boolean): Promise<Negotiated | null> {
  const h = new OptionHaggler(ctx, noZeroes);
  return h.run();
}

class OptionHaggler {
  private structuredReplies = false;
  /** What the last SET_META_CONTEXT selected, and for which (resolved) export name. */
  private selection: { exportName: string; contexts: SelectedContext[] } | null = null;
  private tlsUp = false;
  /** options this handshake may send: grows with the exports a LIST returned (limits.ts) */
  private optionAllowance = MAX_OPTIONS;
  private listExtended = false;
  /** the handshake was extended once for an open waiting out a stopped server's lease */
  private openExtended = false;

  constructor(
    private readonly ctx: NegotiationContext,
    private readonly noZeroes: boolean,
  ) {}

  async run(): Promise<Negotiated | null> {
    const { queue } = this.ctx;
    for (let count = 1; ; count++) {
      const header = await queue.read(NBD_OPTION_HEADER_SIZE);
      if (header.readBigUInt64BE(0) !== IHAVEOPT) throw new ProtocolViolation('bad option magic');
      const option = header.readUInt32BE(8);
      const length = header.readUInt32BE(12);
      if (count > this.optionAllowance) throw new ProtocolViolation(`more than ${this.optionAllowance} options`);
      if (length > MAX_OPTION_LENGTH) {
        if (length > MAX_OPTION_DRAIN) throw new ProtocolViolation(`option ${option} length ${length} is absurd`);
        // EXPORT_NAME has no error reply: one the client would read as the export's size (spec)
        if (option === NBD_OPT_EXPORT_NAME) throw new ProtocolViolation(`EXPORT_NAME of ${length} bytes names no export (at most ${NBD_MAX_STRING})`);
        await queue.skip(length);
        this.reply(option, NBD_REP_ERR_TOO_BIG, `option payload of ${length} bytes is too big`);
        continue;
      }
      const data = length > 0 ? await queue.read(length) : Buffer.alloc(0);
      if (this.ctx.isShuttingDown()) {
        this.reply(option, NBD_REP_ERR_SHUTDOWN, 'server is shutting down');
        continue;
      }
      if (this.ctx.tls === 'require' && !this.tlsUp && option !== NBD_OPT_STARTTLS && option !== NBD_OPT_ABORT) {
        // FORCEDTLS: nothing is revealed or negotiated in plaintext; EXPORT_NAME cannot be
        // answered with an error, so it ends the session (spec).
        if (option === NBD_OPT_EXPORT_NAME) throw new ProtocolViolation('EXPORT_NAME before STARTTLS on a TLS-only server');
        this.reply(option, NBD_REP_ERR_TLS_REQD, 'this server requires TLS: send STARTTLS first');
        continue;
      }
      const outcome = await this.handle(option, data);
      if (outcome !== 'continue') return outcome;
    }
  }

  private async handle(option: number, data: Buffer): Promise<Negotiated | null | 'continue'> {
    switch (option) {
      case NBD_OPT_EXPORT_NAME:
        return this.exportName(data);
      case NBD_OPT_ABORT:
        this.reply(option, NBD_REP_ACK); // acked, payload ignored as the spec asks
        return null;
      case NBD_OPT_LIST:
        return this.list(option, data);
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.infoOrGo(option, data);
      case NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.invalid(option, 'STRUCTURED_REPLY takes no data');
        this.structuredReplies = true;
        this.reply(option, NBD_REP_ACK);
        return 'continue';
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        return this.metaContext(option, data);
      case NBD_OPT_STARTTLS:
        if (this.ctx.tls === 'off') break;
        return this.startTls(option, data);
    }
    // EXTENDED_HEADERS, STARTTLS with TLS off, and anything unknown: not offered.
    this.reply(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
    return 'continue';
  }

  private async startTls(option: number, data: Buffer): Promise<'continue'> {
    if (this.tlsUp) return this.invalid(option, 'TLS is already negotiated');
    if (data.length !== 0) return this.invalid(option, 'STARTTLS takes no data');
    // Bytes sent before our ACK cannot be part of a TLS handshake: a client (or someone in the
    // middle) injecting plaintext to be read as if it came over TLS.
    if (this.ctx.queue.length !== 0) throw new ProtocolViolation('data sent after STARTTLS before its reply');
    const identity = await this.ctx.startTls(encodeOptionReply(option, NBD_REP_ACK));
    this.tlsUp = true;
    this.ctx.exports.identity = identity;
    // The spec: nothing negotiated before STARTTLS survives it.
    this.structuredReplies = false;
    this.selection = null;
    return 'continue';
  }

  private async exportName(data: Buffer): Promise<Negotiated | null> {
    // No way to report an error here: an unknown export ends the session (spec).
    const opened = await this.openInTime(data.toString('utf8'), 'serve');
    if (!opened.exp) return null;
    const { exp, caps } = opened;
    // Structured replies and meta contexts negotiated before EXPORT_NAME still apply.
    const flags = transmissionFlags(caps, this.structuredReplies);
    this.ctx.write(encodeExportNameReply(exp.size, flags, this.noZeroes));
    return {
      exp,
      caps,
      structuredReplies: this.structuredReplies,
      metaContexts: this.selectedFor(exp),
      transmissionFlags: flags,
    };
  }

  private async list(option: number, data: Buffer): Promise<'continue'> {
    if (data.length !== 0) return this.invalid(option, 'LIST takes no data');
    const exports = await this.inTime(this.ctx.exports.list()).catch((err): typeof TIMED_OUT => {
      this.ctx.logger.warn({ err: describeError(err) }, 'exports cannot be listed');
      return TIMED_OUT;
    });
    if (exports === TIMED_OUT) {
      // an error reply the client shows, where a dropped connection said nothing
      this.reply(option, NBD_REP_ERR_PLATFORM, 'the exports cannot be listed now: the store does not answer (see the server log); try again');
      return 'continue';
    }
    for (const e of exports) this.ctx.write(encodeOptionReply(option, NBD_REP_SERVER, encodeServerEntry(e.name, e.description)));
    this.optionAllowance = Math.max(this.optionAllowance, MAX_OPTIONS + OPTIONS_PER_LISTED_EXPORT * exports.length);
    // and time to ask about each (`nbdinfo --list`: INFO and LIST_META_CONTEXT per export, ~0.25 s
    // each with libnbd; 40 snapshots ran out of the 10 s handshake), once per handshake
    if (!this.listExtended) this.ctx.extendHandshake?.(HANDSHAKE_MS_PER_LISTED_EXPORT * Math.min(exports.length, HANDSHAKE_LISTED_EXPORTS_MAX));
    this.listExtended = true;
    this.reply(option, NBD_REP_ACK);
    return 'continue';
  }

  private async infoOrGo(option: number, data: Buffer): Promise<Negotiated | 'continue'> {
    const parsed = parseInfoRequest(data);
    if (!parsed.ok) return this.invalid(option, parsed.reason);
    const { name, infos } = parsed.value;
    const opened = await this.openInTime(name, option === NBD_OPT_INFO ? 'inspect' : 'serve');
    if (!opened.exp) {
      this.reply(option, NBD_REP_ERR_UNKNOWN, opened.failure);
      return 'continue';
    }
    const { exp, caps } = opened;
    const flags = transmissionFlags(caps, this.structuredReplies);
    const info = (payload: Buffer) => this.ctx.write(encodeOptionReply(option, NBD_REP_INFO, payload));
    info(encodeInfoExport(NBD_INFO_EXPORT, exp.size, flags));
    if (infos.includes(NBD_INFO_NAME)) info(encodeInfoString(NBD_INFO_NAME, exp.name));
    if (infos.includes(NBD_INFO_DESCRIPTION) && exp.description) info(encodeInfoString(NBD_INFO_DESCRIPTION, exp.description));
    // Sent unasked too: harmless for clients that ignore it, and it tells them our maximum.
    info(encodeInfoBlockSize(NBD_INFO_BLOCK_SIZE, MIN_BLOCK_SIZE, PREFERRED_BLOCK_SIZE, MAX_PAYLOAD));
    this.reply(option, NBD_REP_ACK);
    if (option === NBD_OPT_INFO) {
      await this.ctx.exports.release(exp);
      return 'continue';
    }
    return {
      exp,
      caps,
      structuredReplies: this.structuredReplies,
      metaContexts: this.selectedFor(exp),
      transmissionFlags: flags,
    };
  }

  private async metaContext(option: number, data: Buffer): Promise<'continue'> {
    const setting = option === NBD_OPT_SET_META_CONTEXT;
    if (setting) this.selection = null; // SET replaces the selection, even when it fails
    if (!this.structuredReplies) return this.invalid(option, 'negotiate STRUCTURED_REPLY first');
    const parsed = parseMetaContextRequest(data);
    if (!parsed.ok) return this.invalid(option, parsed.reason);
    const { name, queries } = parsed.value;
    const opened = await this.openInTime(name, 'inspect');
    if (!opened.exp) {
      this.reply(option, NBD_REP_ERR_UNKNOWN, opened.failure);
      return 'continue';
    }
    const exp = opened.exp;
    let offered: string[];
    try {
      const listed = await this.inTime(offeredContexts(exp));
      if (listed === TIMED_OUT) throw new Error('the store did not answer in time');
      offered = listed;
    } catch (err) {
      this.ctx.logger.warn({ exportName: exp.name, err: describeError(err) }, 'metadata contexts cannot be listed');
      this.reply(option, NBD_REP_ERR_UNKNOWN, `the metadata contexts of "${exp.name}" cannot be listed (see the server log)`);
      return 'continue';
    } finally {
      await this.ctx.exports.release(exp);
    }
    const names = matchContexts(offered, queries, !setting);
    if (setting) {
      const contexts = assignContextIds(names);
      for (const c of contexts) this.ctx.write(encodeOptionReply(option, NBD_REP_META_CONTEXT, encodeMetaContext(c.id, c.name)));
      this.selection = { exportName: exp.name, contexts };
    } else {
      for (const n of names) this.ctx.write(encodeOptionReply(option, NBD_REP_META_CONTEXT, encodeMetaContext(0, n)));
    }
    this.reply(option, NBD_REP_ACK);
    return 'continue';
  }

  /**
   * Store work during negotiation (listing exports, an export's metadata contexts) gets what is
   * left of the handshake time, less a margin: a store that does not answer then gets the client
   * an error reply it can show, where the handshake timer dropped the connection with nothing
   * said. A late answer is dropped.
   */
  private inTime<T>(work: Promise<T>): Promise<T | typeof TIMED_OUT> {
    const budget = (this.ctx.msLeft?.() ?? Infinity) - ANSWER_MARGIN_MS;
    return budget === Infinity ? work : within(work, budget);
  }

  /** Opening an export in the handshake's time too (a store that does not answer retries for
   *  longer; a previous writer's heartbeat may be watched). Too late: the client is told to
   *  retry, and the export, once open, goes straight back. */
  private async openInTime(name: string, purpose: OpenPurpose): Promise<OpenResult> {
    const opening = this.ctx.exports.open(name, purpose);
    let opened = await this.inTime(opening);
    // A takeover waiting out the lease of a server that stopped (a restart after a crash, the
    // client connecting at once): that wait ends by itself, so the client is kept waiting with it
    // rather than refused (qemu does not retry a first connection).
    const waitLeft = opened === TIMED_OUT && !this.openExtended ? this.ctx.exports.openWaitLeftMs(name) : undefined;
    if (waitLeft !== undefined && this.ctx.extendHandshake) {
      this.openExtended = true;
      this.ctx.logger.info({ exportName: name, waitMs: Math.round(waitLeft) }, 'export waits for the lease of a server that stopped to run out: the client waits with it');
      this.ctx.extendHandshake(Math.min(waitLeft + HANDSHAKE_OPEN_WAIT_SLACK_MS, HANDSHAKE_OPEN_WAIT_MAX_MS));
      opened = await this.inTime(opening);
      // refused after all (another server won the takeover): the extension ends with the wait,
      // and the client has a moment to read why
      const left = this.ctx.msLeft?.();
      if ((opened === TIMED_OUT || opened.exp === null) && left !== undefined && left > AFTER_REFUSAL_MS) this.ctx.extendHandshake(AFTER_REFUSAL_MS - left);
    }
    if (opened !== TIMED_OUT) return opened;
    void opening.then((late) => (late.exp ? this.ctx.exports.release(late.exp) : undefined)).catch(() => undefined);
    this.ctx.logger.warn({ exportName: name }, 'export not open within the handshake time (a store not answering, or a takeover waiting for a lease to run out)');
    return { exp: null, failure: `export "${name}" is not ready in time: its store is slow to answer, or the lease of a server that stopped is running out (see the server log); a client may retry` };
  }

  private selectedFor(exp: Export): SelectedContext[] {
    return this.selection?.exportName === exp.name ? this.selection.contexts : [];
  }

  private invalid(option: number, reason: string): 'continue' {
    this.reply(option, NBD_REP_ERR_INVALID, reason);
    return 'continue';
  }

  private reply(option: number, type: number, message?: string): void {
    this.ctx.write(encodeOptionReply(option, type, message ? encodeProtocolString(message) : undefined));
  }
}

