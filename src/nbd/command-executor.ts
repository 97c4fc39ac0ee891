// Runs one validated transmission request against the Export and returns its complete reply as
// a list of Buffers (header and data kept apart: no copy of read data). The caller writes the
// list in one go, so replies never interleave on the wire.
//
// Assumes validateRequest() returned 0. Structured reads ask blockStatus first: ranges known to
// read as zeros go out as OFFSET_HOLE without being read, the rest as OFFSET_DATA; with DF the
// whole range is a single OFFSET_DATA chunk. A failed read sends one ERROR chunk and no data.
import type { Export } from './export';
import type { Logger } from '../util/log';
import { BugError, describeError, isVaultError } from '../errors';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EIO,
  NBD_REPLY_FLAG_DONE,
} from './constants';
import { toNbdError } from './errno';
import { blockStatusReply, type SelectedContext } from './meta-contexts';
import type { NbdRequest } from './request-reader';
import {
  encodeErrorChunk,
  encodeNoneChunk,
  encodeOffsetDataHeader,
  encodeOffsetHole,
  encodeSimpleReply,
} from './reply-framing';

export interface ExecutionSession {
  readonly exp: Export;
  readonly structuredReplies: boolean;
  /** contexts selected by SET_META_CONTEXT for this export (BLOCK_STATUS answers each) */
  readonly metaContexts: readonly SelectedContext[];
  readonly logger: Logger;
}

const EMPTY = Buffer.alloc(0);

/** Reply for a request refused (validation) or failed (export error) with `errno`. READ and
 *  BLOCK_STATUS get a structured ERROR chunk when structured replies are on (as nbdkit). */
export function errorReply(req: NbdRequest, structured: boolean, errno: number, message: string): Buffer[] {
  if (structured && (req.type === NBD_CMD_READ || req.type === NBD_CMD_BLOCK_STATUS)) {
    return [encodeErrorChunk(NBD_REPLY_FLAG_DONE, req.handle, errno, message)];
  }
  return [encodeSimpleReply(req.handle, errno)];
}

export async function executeRequest(req: NbdRequest, s: ExecutionSession): Promise<Buffer[]> {
  return (await executeRequestWithStatus(req, s)).reply;
}

/** The reply and the errno it carries (0 = success), for metrics. */
export async function executeRequestWithStatus(req: NbdRequest, s: ExecutionSession): Promise<{ reply: Buffer[]; errno: number }> {
  try {
    return { reply: await run(req, s), errno: 0 };
  } catch (err) {
    if (mustDropConnection(err)) throw err;
    const errno = toNbdError(err, req.type, req.flags);
    const level = isVaultError(err, 'ERR_BUG') || !isVaultError(err) ? 'error' : errno === NBD_EIO ? 'warn' : 'debug';
    s.logger[level]({ cmd: req.type, offset: req.offset, length: req.length, errno, err: describeError(err) }, 'request failed');
    return { reply: errorReply(req, s.structuredReplies, errno, describeError(err)), errno };
  }
}

/** An export that can no longer serve here (it lost its writer's lease, or it is closed because
 *  the server is stopping) makes the connection drop WITHOUT a reply: clients that reconnect
 *  (qemu's reconnect-delay) replay unanswered requests, an error reply would reach the guest. */
export function mustDropConnection(err: unknown): boolean {
  return isVaultError(err, 'ERR_LEASE') || isVaultError(err, 'ERR_SHUTDOWN');
}

async function run(req: NbdRequest, s: ExecutionSession): Promise<Buffer[]> {
  const { exp } = s;
  const { offset, length, flags } = req;
  const fua = (flags & NBD_CMD_FLAG_FUA) !== 0;
  switch (req.type) {
    case NBD_CMD_READ:
      return s.structuredReplies ? structuredRead(req, s) : simpleRead(req, s);
    case NBD_CMD_WRITE:
      if (length > 0) await exp.write(offset, req.payload ?? EMPTY, { fua });
      else if (fua) await exp.flush();
      break;
    case NBD_CMD_FLUSH:
      await exp.flush();
      break;
    case NBD_CMD_TRIM:
      if (length > 0) await exp.trim(offset, length, { fua });
      break;
    case NBD_CMD_CACHE:
      if (length > 0) await exp.cache(offset, length);
      break;
    case NBD_CMD_WRITE_ZEROES:
      if (length > 0) {
        await exp.writeZeroes(offset, length, {
          fua,
          noHole: (flags & NBD_CMD_FLAG_NO_HOLE) !== 0,
          fastZero: (flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
        });
      }
      break;
    case NBD_CMD_BLOCK_STATUS:
      return blockStatusReply(exp, s.metaContexts, req);
    default:
      throw new BugError(`command ${req.type} reached the executor unvalidated`);
  }
  return [encodeSimpleReply(req.handle, 0)];
}

async function simpleRead(req: NbdRequest, s: ExecutionSession): Promise<Buffer[]> {
  const header = encodeSimpleReply(req.handle, 0);
  if (req.length === 0) return [header];
  const data = await s.exp.read(req.offset, req.length, { requester: s });
  checkLength(data, req.length);
  return [header, data];
}

async function structuredRead(req: NbdRequest, s: ExecutionSession): Promise<Buffer[]> {
  const { handle, offset, length } = req;
  if (length === 0) return [encodeNoneChunk(handle)];
  if ((req.flags & NBD_CMD_FLAG_DF) !== 0) {
    const data = await s.exp.read(offset, length, { requester: s });
    checkLength(data, length);
    return [encodeOffsetDataHeader(NBD_REPLY_FLAG_DONE, handle, offset, length), data];
  }
  const segments = await zeroMap(s.exp, offset, length);
  if (segments.length === 1 && !segments[0].zero) {
    const data = await s.exp.read(offset, length, { requester: s });
    checkLength(data, length);
    return [encodeOffsetDataHeader(NBD_REPLY_FLAG_DONE, handle, offset, length), data];
  }
  // Read every data segment concurrently; chunks go out in offset order, DONE on the last.
  const datas = await Promise.all(segments.map((seg) => (seg.zero ? null : s.exp.read(seg.offset, seg.length, { requester: s }))));
  const out: Buffer[] = [];
  segments.forEach((seg, i) => {
    const last = i === segments.length - 1 ? NBD_REPLY_FLAG_DONE : 0;
    const data = datas[i];
    if (data === null) {
      out.push(encodeOffsetHole(last, handle, seg.offset, seg.length));
    } else {
      checkLength(data, seg.length);
      out.push(encodeOffsetDataHeader(last, handle, seg.offset, seg.length), data);
    }
  });
  return out;
}

interface Segment {
  readonly offset: number;
  readonly length: number;
  readonly zero: boolean;
}

/** Splits [offset, offset+length) into maximal runs that read as zeros or as data. */
async function zeroMap(exp: Export, offset: number, length: number): Promise<Segment[]> {
  const segments: Segment[] = [];
  const end = offset + length;
  let at = offset;
  while (at < end) {
    const extents = await exp.blockStatus(at, end - at);
    if (extents.length === 0) throw new BugError(`blockStatus(${at}, ${end - at}) returned no extents`);
    for (const e of extents) {
      if (at >= end) break;
      if (!(e.length > 0)) throw new BugError(`blockStatus returned an extent of length ${e.length}`);
      const len = Math.min(e.length, end - at);
      const prev = segments[segments.length - 1];
      if (prev && prev.zero === e.zero) segments[segments.length - 1] = { ...prev, length: prev.length + len };
      else segments.push({ offset: at, length: len, zero: e.zero });
      at += len;
    }
  }
  return segments;
}

function checkLength(data: Buffer, expected: number): void {
  if (data.length !== expected) throw new BugError(`export read returned ${data.length} bytes, expected ${expected}`);
}
