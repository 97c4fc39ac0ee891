// Byte layout of every server → client message: option replies (handshake) and simple and
// structured replies (transmission). Pure functions returning Buffers; they never touch a socket,
// so the unit tests check the exact bytes. Data payloads are never copied here: an OFFSET_DATA
// reply is a header Buffer followed by the caller's data Buffer (written with writev).
import {
  NBD_MAX_STRING,
  NBD_OPT_REPLY_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STRUCTURED_REPLY_HEADER_SIZE,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './constants';

/** Longest error message we put in an error chunk (the spec allows 4096). */
const MAX_ERROR_MESSAGE = 1024;

/**
 * TEXT as a string the spec allows on the wire: UTF-8 without NUL, at most `max` bytes (the spec's
 * 4096 for option replies). A message may quote what a client sent (a name with a NUL, 4096 bytes
 * of it): a NUL becomes "\0", and a longer text is cut at a character boundary.
 */
export function encodeProtocolString(text: string, max = NBD_MAX_STRING): Buffer {
  const bytes = Buffer.from(text.replace(/\0/g, '\\0'), 'utf8');
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--; // not inside a character
  return bytes.subarray(0, end);
}

function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / 0x1_0000_0000), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

// ---- transmission phase ----

export function encodeSimpleReply(handle: Buffer, error: number): Buffer {
  const buf = Buffer.allocUnsafe(NBD_SIMPLE_REPLY_SIZE);
  buf.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  buf.writeUInt32BE(error, 4);
  handle.copy(buf, 8, 0, 8);
  return buf;
}

/** A structured reply chunk header with room for `extra` more bytes of fixed fields after it. */
function structuredHeader(flags: number, type: number, handle: Buffer, length: number, extra: number): Buffer {
  const buf = Buffer.allocUnsafe(NBD_STRUCTURED_REPLY_HEADER_SIZE + extra);
  buf.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  buf.writeUInt16BE(flags, 4);
  buf.writeUInt16BE(type, 6);
  handle.copy(buf, 8, 0, 8);
  buf.writeUInt32BE(length, 16);
  return buf;
}

export function encodeNoneChunk(handle: Buffer): Buffer {
  return structuredHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handle, 0, 0);
}

/** Header + offset of an OFFSET_DATA chunk; the `dataLength` data bytes follow separately. */
export function encodeOffsetDataHeader(flags: number, handle: Buffer, offset: number, dataLength: number): Buffer {
  const buf = structuredHeader(flags, NBD_REPLY_TYPE_OFFSET_DATA, handle, 8 + dataLength, 8);
  writeU64(buf, offset, 20);
  return buf;
}

export function encodeOffsetHole(flags: number, handle: Buffer, offset: number, holeLength: number): Buffer {
  const buf = structuredHeader(flags, NBD_REPLY_TYPE_OFFSET_HOLE, handle, 12, 12);
  writeU64(buf, offset, 20);
  buf.writeUInt32BE(holeLength, 28);
  return buf;
}

export interface WireExtent {
  readonly length: number;
  /** NBD_STATE_HOLE | NBD_STATE_ZERO bits. */
  readonly flags: number;
}

export function encodeBlockStatus(flags: number, handle: Buffer, contextId: number, extents: readonly WireExtent[]): Buffer {
  const payload = 4 + 8 * extents.length;
  const buf = structuredHeader(flags, NBD_REPLY_TYPE_BLOCK_STATUS, handle, payload, payload);
  buf.writeUInt32BE(contextId, 20);
  let at = 24;
  for (const e of extents) {
    buf.writeUInt32BE(e.length, at);
    buf.writeUInt32BE(e.flags, at + 4);
    at += 8;
  }
  return buf;
}

function errorChunk(type: number, flags: number, handle: Buffer, errno: number, message: string, offset?: number): Buffer {
  const msg = encodeProtocolString(message, MAX_ERROR_MESSAGE);
  const tail = offset === undefined ? 0 : 8;
  const payload = 6 + msg.length + tail;
  const buf = structuredHeader(flags, type, handle, payload, payload);
  buf.writeUInt32BE(errno, 20);
  buf.writeUInt16BE(msg.length, 24);
  msg.copy(buf, 26);
  if (offset !== undefined) writeU64(buf, offset, 26 + msg.length);
  return buf;
}

export function encodeErrorChunk(flags: number, handle: Buffer, errno: number, message: string): Buffer {
  return errorChunk(NBD_REPLY_TYPE_ERROR, flags, handle, errno, message);
}

export function encodeErrorOffsetChunk(flags: number, handle: Buffer, errno: number, message: string, offset: number): Buffer {
  return errorChunk(NBD_REPLY_TYPE_ERROR_OFFSET, flags, handle, errno, message, offset);
}

// ---- handshake phase ----

export function encodeOptionReply(option: number, replyType: number, data?: Buffer): Buffer {
  const len = data ? data.length : 0;
  const buf = Buffer.allocUnsafe(20 + len);
  buf.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(replyType >>> 0, 12);
  buf.writeUInt32BE(len, 16);
  if (data) data.copy(buf, 20);
  return buf;
}

/** NBD_REP_INFO payload for NBD_INFO_EXPORT: type, size, transmission flags. */
export function encodeInfoExport(infoType: number, size: number, transmissionFlags: number): Buffer {
  const buf = Buffer.allocUnsafe(12);
  buf.writeUInt16BE(infoType, 0);
  writeU64(buf, size, 2);
  buf.writeUInt16BE(transmissionFlags, 10);
  return buf;
}

export function encodeInfoString(infoType: number, text: string): Buffer {
  const s = encodeProtocolString(text);
  const buf = Buffer.allocUnsafe(2 + s.length);
  buf.writeUInt16BE(infoType, 0);
  s.copy(buf, 2);
  return buf;
}

export function encodeInfoBlockSize(infoType: number, min: number, preferred: number, max: number): Buffer {
  const buf = Buffer.allocUnsafe(14);
  buf.writeUInt16BE(infoType, 0);
  buf.writeUInt32BE(min, 2);
  buf.writeUInt32BE(preferred, 6);
  buf.writeUInt32BE(max, 10);
  return buf;
}

/** NBD_REP_SERVER payload: name length, name, then a human-readable description. */
export function encodeServerEntry(name: string, description: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const buf = Buffer.allocUnsafe(4 + n.length + d.length);
  buf.writeUInt32BE(n.length, 0);
  n.copy(buf, 4);
  d.copy(buf, 4 + n.length);
  return buf;
}

/** NBD_REP_META_CONTEXT payload: context id, name. */
export function encodeMetaContext(contextId: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const buf = Buffer.allocUnsafe(4 + n.length);
  buf.writeUInt32BE(contextId, 0);
  n.copy(buf, 4);
  return buf;
}

/** Reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zero bytes unless NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const buf = Buffer.alloc(10 + (noZeroes ? 0 : 124));
  writeU64(buf, size, 0);
  buf.writeUInt16BE(transmissionFlags, 8);
  return buf;
}
