// Parsing of option payloads (handshake phase). Pure: a payload Buffer in, a typed value or a
// reason it is malformed out (the caller answers NBD_REP_ERR_INVALID and the session goes on).
import { NBD_MAX_STRING } from './constants';

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

export interface InfoRequest {
  readonly name: string;
  /** NBD_INFO_* types the client asked for. */
  readonly infos: readonly number[];
}

export interface MetaContextRequest {
  readonly name: string;
  readonly queries: readonly string[];
}

function bad<T>(reason: string): Parsed<T> {
  return { ok: false, reason };
}

/** NBD_OPT_INFO / NBD_OPT_GO: u32 name length, name, u16 count, count × u16. Exact length. */
export function parseInfoRequest(data: Buffer): Parsed<InfoRequest> {
  if (data.length < 6) return bad('INFO/GO payload shorter than 6 bytes');
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 6) return bad('INFO/GO name length overruns the payload');
  if (nameLen > NBD_MAX_STRING) return bad('export name longer than 4096 bytes');
  const name = data.toString('utf8', 4, 4 + nameLen);
  const count = data.readUInt16BE(4 + nameLen);
  if (data.length !== 6 + nameLen + 2 * count) return bad('INFO/GO payload length does not match its request count');
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(6 + nameLen + 2 * i));
  return { ok: true, value: { name, infos } };
}

/** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: u32 name length, name, u32 count,
 *  count × (u32 length, query). Exact length. */
export function parseMetaContextRequest(data: Buffer): Parsed<MetaContextRequest> {
  if (data.length < 8) return bad('meta context payload shorter than 8 bytes');
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 8) return bad('meta context name length overruns the payload');
  if (nameLen > NBD_MAX_STRING) return bad('export name longer than 4096 bytes');
  const name = data.toString('utf8', 4, 4 + nameLen);
  let at = 4 + nameLen;
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (data.length - at < 4) return bad('meta context query header overruns the payload');
    const qLen = data.readUInt32BE(at);
    at += 4;
    if (qLen > data.length - at) return bad('meta context query overruns the payload');
    if (qLen > NBD_MAX_STRING) return bad('meta context query longer than 4096 bytes');
    queries.push(data.toString('utf8', at, at + qLen));
    at += qLen;
  }
  if (at !== data.length) return bad('trailing bytes after meta context queries');
  return { ok: true, value: { name, queries } };
}
