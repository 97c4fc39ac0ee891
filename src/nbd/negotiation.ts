// Handshake: greeting, client flags and option haggling (fixed newstyle), ending in the
// transmission phase with an open Export, or in a clean close.
//
// Contract: every option payload is consumed whatever its content (payloads up to
// MAX_OPTION_LENGTH are read, larger ones drained and refused with ERR_TOO_BIG, absurd ones cut
// the connection); an unknown option gets ERR_UNSUP, an unknown export ERR_UNKNOWN, a malformed
// payload ERR_INVALID, and the session continues. At most MAX_OPTIONS options per handshake.
// Throws ProtocolViolation where the stream cannot be trusted (the caller goes to 'dead').
import type { Export, ExportProvider } from '../volume/export';
import type { Logger } from '../util/log';
import { describeError, isVaultError } from '../errors';
import {
  BASE_ALLOCATION,
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
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
} from './constants';
import { MAX_OPTIONS, MAX_OPTION_DRAIN, MAX_OPTION_LENGTH, MAX_PAYLOAD, MIN_BLOCK_SIZE, PREFERRED_BLOCK_SIZE } from './limits';
import type { ByteQueue } from './byte-queue';
import { matchesBaseAllocation, parseInfoRequest, parseMetaContextRequest } from './option-parsing';
import {
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContext,
  encodeOptionReply,
  encodeServerEntry,
} from './reply-framing';
import { transmissionFlags } from './transmission-flags';

/** The client broke the protocol in a way that leaves the stream untrustworthy. */
export class ProtocolViolation extends Error {
  override readonly name = 'ProtocolViolation';
}

/** The id we give base:allocation in SET_META_CONTEXT replies (any non-zero value works). */
export const BASE_ALLOCATION_CONTEXT_ID = 1;

export interface NegotiationContext {
  readonly queue: ByteQueue;
  readonly provider: ExportProvider;
  readonly logger: Logger;
  write(buf: Buffer): void;
  isShuttingDown(): boolean;
}

export interface Negotiated {
  readonly exp: Export;
  readonly structuredReplies: boolean;
  /** base:allocation was selected for this export: BLOCK_STATUS is allowed. */
  readonly allocationContext: boolean;
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
  /** Resolved export name base:allocation was selected for by the last SET_META_CONTEXT. */
  private allocationFor: string | null = null;
  /** why the last open failed, for the client's error reply (null: no such export) */
  private openFailure: string | null = null;

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
      if (count > MAX_OPTIONS) throw new ProtocolViolation(`more than ${MAX_OPTIONS} options`);
      if (length > MAX_OPTION_LENGTH) {
        if (length > MAX_OPTION_DRAIN) throw new ProtocolViolation(`option ${option} length ${length} is absurd`);
        await queue.skip(length);
        this.reply(option, NBD_REP_ERR_TOO_BIG, `option payload of ${length} bytes is too big`);
        continue;
      }
      const data = length > 0 ? await queue.read(length) : Buffer.alloc(0);
      if (this.ctx.isShuttingDown()) {
        this.reply(option, NBD_REP_ERR_SHUTDOWN, 'server is shutting down');
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
      default:
        // STARTTLS, EXTENDED_HEADERS and anything unknown: not offered.
        this.reply(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
        return 'continue';
    }
  }

  private async exportName(data: Buffer): Promise<Negotiated | null> {
    // No way to report an error here: an unknown export ends the session (spec).
    const exp = await this.open(data.toString('utf8'));
    if (!exp) return null;
    // Structured replies and meta contexts negotiated before EXPORT_NAME still apply.
    const flags = transmissionFlags(exp.caps, this.structuredReplies);
    this.ctx.write(encodeExportNameReply(exp.size, flags, this.noZeroes));
    return {
      exp,
      structuredReplies: this.structuredReplies,
      allocationContext: this.allocationFor === exp.name,
      transmissionFlags: flags,
    };
  }

  private async list(option: number, data: Buffer): Promise<'continue'> {
    if (data.length !== 0) return this.invalid(option, 'LIST takes no data');
    const exports = await this.ctx.provider.list();
    for (const e of exports) this.ctx.write(encodeOptionReply(option, NBD_REP_SERVER, encodeServerEntry(e.name, e.description)));
    this.reply(option, NBD_REP_ACK);
    return 'continue';
  }

  private async infoOrGo(option: number, data: Buffer): Promise<Negotiated | 'continue'> {
    const parsed = parseInfoRequest(data);
    if (!parsed.ok) return this.invalid(option, parsed.reason);
    const { name, infos } = parsed.value;
    const exp = await this.open(name);
    if (!exp) {
      this.reply(option, NBD_REP_ERR_UNKNOWN, this.openFailure ?? `no export named "${name}"`);
      return 'continue';
    }
    const flags = transmissionFlags(exp.caps, this.structuredReplies);
    const info = (payload: Buffer) => this.ctx.write(encodeOptionReply(option, NBD_REP_INFO, payload));
    info(encodeInfoExport(NBD_INFO_EXPORT, exp.size, flags));
    if (infos.includes(NBD_INFO_NAME)) info(encodeInfoString(NBD_INFO_NAME, exp.name));
    if (infos.includes(NBD_INFO_DESCRIPTION) && exp.description) info(encodeInfoString(NBD_INFO_DESCRIPTION, exp.description));
    // Sent unasked too: harmless for clients that ignore it, and it tells them our maximum.
    info(encodeInfoBlockSize(NBD_INFO_BLOCK_SIZE, MIN_BLOCK_SIZE, PREFERRED_BLOCK_SIZE, MAX_PAYLOAD));
    this.reply(option, NBD_REP_ACK);
    if (option === NBD_OPT_INFO) {
      await this.ctx.provider.release(exp);
      return 'continue';
    }
    return {
      exp,
      structuredReplies: this.structuredReplies,
      allocationContext: this.allocationFor === exp.name,
      transmissionFlags: flags,
    };
  }

  private async metaContext(option: number, data: Buffer): Promise<'continue'> {
    const setting = option === NBD_OPT_SET_META_CONTEXT;
    if (setting) this.allocationFor = null; // SET replaces the selection, even when it fails
    if (!this.structuredReplies) return this.invalid(option, 'negotiate STRUCTURED_REPLY first');
    const parsed = parseMetaContextRequest(data);
    if (!parsed.ok) return this.invalid(option, parsed.reason);
    const { name, queries } = parsed.value;
    const exp = await this.open(name);
    if (!exp) {
      this.reply(option, NBD_REP_ERR_UNKNOWN, this.openFailure ?? `no export named "${name}"`);
      return 'continue';
    }
    const resolved = exp.name;
    await this.ctx.provider.release(exp);
    // LIST with no queries lists everything; SET with no queries selects nothing.
    const selected = queries.length === 0 ? !setting : queries.some((q) => matchesBaseAllocation(q, !setting));
    if (selected) {
      this.ctx.write(encodeOptionReply(option, NBD_REP_META_CONTEXT, encodeMetaContext(setting ? BASE_ALLOCATION_CONTEXT_ID : 0, BASE_ALLOCATION)));
      if (setting) this.allocationFor = resolved;
    }
    this.reply(option, NBD_REP_ACK);
    return 'continue';
  }

  /** provider.open with "" meaning the default export; errors become null + a warning. */
  private async open(name: string): Promise<Export | null> {
    const resolved = name === '' ? this.ctx.provider.defaultName : name;
    this.openFailure = null;
    try {
      return await this.ctx.provider.open(resolved);
    } catch (err) {
      this.ctx.logger.warn({ exportName: resolved, err: describeError(err) }, 'export failed to open');
      // The client learns why in general terms; the details (hosts, objects) stay in the log.
      this.openFailure = isVaultError(err, 'ERR_LEASE')
        ? `export "${resolved}" is being written by another server or command (a client may retry: it is served here once that writer stops or dies)`
        : `export "${resolved}" cannot be opened (see the server log)`;
      return null;
    }
  }

  private invalid(option: number, reason: string): 'continue' {
    this.reply(option, NBD_REP_ERR_INVALID, reason);
    return 'continue';
  }

  private reply(option: number, type: number, message?: string): void {
    this.ctx.write(encodeOptionReply(option, type, message ? Buffer.from(message, 'utf8') : undefined));
  }
}

