// The file of one disk-cache entry: a byte range of one immutable store object, as the store
// returned it (sealed bytes; nothing is decrypted here). A local-machine layout, not part of the
// store format (docs/FORMAT.md says so).
//
//   off  size  field
//     0     8  magic "NBVDCE01"
//     8     4  header length H (u32 LE): data starts at H
//    12     8  offset of the data in the object (u64 LE)
//    20     4  data length L (u32 LE)
//    24     1  flags: bit 0 = the data reaches the end of the object
//    25     1  reserved (0)
//    25     1  etag length E (<= 63; 0: unknown, as for ranges)
//    26     2  key length K (u16 LE)
//    28    64  the store's etag of the object, ASCII, zero-padded (fixed size: the header's length
//              is known before the etag, so the data can be written while a store put runs)
//    92     K  object key, UTF-8
//  92+K    4n  CRC-32 of each PIECE_BYTES piece of the data (n = ceil(L / PIECE_BYTES))
//  H-4      4  CRC-32 of bytes [0, H-4)
//     H     L  the data
//
// Every read checks the CRC of the pieces it returns, the scan at startup checks the header CRC
// and that the file is exactly H + L bytes: a torn or corrupt file is dropped, never served.
// The file name is a hash of (key, offset, length), so the same range always lands on one name.
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';

export const ENTRY_MAGIC = Buffer.from('NBVDCE01', 'ascii');
export const PIECE_BYTES = 64 * 1024;
const ETAG_FIELD = 64;
const FIXED = 28 + ETAG_FIELD;
/** The largest entry (32 MiB: the largest NBD request, 8 chunks). */
export const MAX_ENTRY_BYTES = 32 * 1024 * 1024;
/** Headers are read in one go at startup: a key of 1,024 bytes, an etag and a 32 MiB entry fit. */
export const MAX_HEADER_BYTES = FIXED + 1024 + 4 * (MAX_ENTRY_BYTES / (64 * 1024)) + 4;

export interface EntryHeader {
  readonly key: string;
  readonly offset: number;
  readonly length: number;
  readonly toEnd: boolean;
  readonly etag: string;
  readonly headerBytes: number;
  readonly crcs: Uint32Array;
}

export function entryName(key: string, offset: number, length: number): string {
  return createHash('sha256').update(`${key}\0${offset}\0${length}`).digest('hex').slice(0, 40);
}

export function pieceCount(length: number): number {
  return Math.ceil(length / PIECE_BYTES);
}

/** CRC-32 of each piece of the data. */
export function pieceCrcs(data: Buffer): Uint32Array {
  const n = pieceCount(data.length);
  const crcs = new Uint32Array(n);
  for (let i = 0; i < n; i++) crcs[i] = crc32(data.subarray(i * PIECE_BYTES, Math.min((i + 1) * PIECE_BYTES, data.length)));
  return crcs;
}

export function headerBytesFor(key: string, length: number): number {
  return FIXED + Buffer.byteLength(key, 'utf8') + 4 * pieceCount(length) + 4;
}

/** An etag that fits the field (printable ASCII, at most 63 bytes), else '' (unknown). */
export function storableEtag(etag: string): string {
  return etag.length <= ETAG_FIELD - 1 && /^[\x20-\x7e]*$/.test(etag) ? etag : '';
}

export function encodeHeader(key: string, offset: number, length: number, crcs: Uint32Array, toEnd: boolean, etag: string): Buffer {
  const k = Buffer.from(key, 'utf8');
  const e = Buffer.from(storableEtag(etag), 'ascii');
  const h = headerBytesFor(key, length);
  const header = Buffer.alloc(h);
  ENTRY_MAGIC.copy(header, 0);
  header.writeUInt32LE(h, 8);
  header.writeBigUInt64LE(BigInt(offset), 12);
  header.writeUInt32LE(length, 20);
  header.writeUInt8(toEnd ? 1 : 0, 24);
  header.writeUInt8(e.length, 25);
  header.writeUInt16LE(k.length, 26);
  e.copy(header, 28);
  k.copy(header, FIXED);
  for (let i = 0; i < crcs.length; i++) header.writeUInt32LE(crcs[i], FIXED + k.length + 4 * i);
  header.writeUInt32LE(crc32(header.subarray(0, h - 4)), h - 4);
  return header;
}

/** Parses and checks a header (a prefix of the file is enough); null if it is not a valid one. */
export function parseHeader(buf: Buffer): EntryHeader | null {
  if (buf.length < FIXED + 4 || !buf.subarray(0, 8).equals(ENTRY_MAGIC)) return null;
  const h = buf.readUInt32LE(8);
  if (h < FIXED + 4 || h > buf.length) return null;
  if (crc32(buf.subarray(0, h - 4)) !== buf.readUInt32LE(h - 4)) return null;
  const offset = Number(buf.readBigUInt64LE(12));
  const length = buf.readUInt32LE(20);
  const flags = buf.readUInt8(24);
  const eLen = buf.readUInt8(25);
  const kLen = buf.readUInt16LE(26);
  const n = pieceCount(length);
  if (flags > 1 || eLen >= ETAG_FIELD || h !== FIXED + kLen + 4 * n + 4 || !Number.isSafeInteger(offset)) return null;
  const key = buf.toString('utf8', FIXED, FIXED + kLen);
  const etag = buf.toString('ascii', 28, 28 + eLen);
  const crcs = new Uint32Array(n);
  for (let i = 0; i < n; i++) crcs[i] = buf.readUInt32LE(FIXED + kLen + 4 * i);
  return { key, offset, length, toEnd: (flags & 1) === 1, etag, headerBytes: h, crcs };
}

/** Checks pieces [first, first + data.length / PIECE_BYTES…) of an entry read from its file. */
export function piecesIntact(data: Buffer, firstPiece: number, crcs: Uint32Array): boolean {
  for (let at = 0, i = firstPiece; at < data.length; at += PIECE_BYTES, i++) {
    if (i >= crcs.length || crc32(data.subarray(at, Math.min(at + PIECE_BYTES, data.length))) !== crcs[i]) return false;
  }
  return true;
}
