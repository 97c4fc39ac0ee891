// Unit tests for the pure pieces of nbd/: the resumable request reader, reply framing, request
// validation, the errno mapping, option parsing, the state table, and the memory export.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { RequestReader, type NbdRequest } from '../../src/nbd/request-reader';
import {
  encodeBlockStatus,
  encodeErrorChunk,
  encodeErrorOffsetChunk,
  encodeExportNameReply,
  encodeNoneChunk,
  encodeOffsetDataHeader,
  encodeOffsetHole,
  encodeOptionReply,
  encodeProtocolString,
  encodeSimpleReply,
} from '../../src/nbd/reply-framing';
import { validateRequest, type SessionFacts } from '../../src/nbd/request-validation';
import { toNbdError } from '../../src/nbd/errno';
import { parseInfoRequest, parseMetaContextRequest } from '../../src/nbd/option-parsing';
import { ConnStateMachine } from '../../src/nbd/conn-state';
import { transmissionFlags } from '../../src/nbd/transmission-flags';
import * as C from '../../src/nbd/constants';
import { VaultError, BugError } from '../../src/errors';
import { createLogger } from '../../src/util/log';
import { MemoryExport, MemoryExportProvider, parseMemoryExportSpec } from '../../src/nbd/memory-export';
import { request } from './raw-client';

const handle = Buffer.from('0102030405060708', 'hex');

function collect(max = 1024): { reader: RequestReader; got: NbdRequest[] } {
  const got: NbdRequest[] = [];
  return { reader: new RequestReader(max, (r) => got.push(r)), got };
}

test('request reader: byte-by-byte feeding yields the same requests as one chunk', () => {
  const payload = Buffer.from('hello world');
  const stream = Buffer.concat([request(0, 0, 1, 4096, 512), request(1, 1, 2, 2 ** 40, payload.length, payload), request(3, 0, 3, 0, 0)]);
  for (const chunking of [stream.length, 1, 5, 29]) {
    const { reader, got } = collect();
    for (let i = 0; i < stream.length; i += chunking) {
      reader.push(stream.subarray(i, i + chunking));
      assert.equal(reader.run(() => false), 'need-more');
    }
    assert.equal(got.length, 3, `chunking ${chunking}`);
    assert.deepEqual(got.map((r) => [r.type, r.flags, r.handle.readUInt32BE(4), r.offset, r.length]), [
      [0, 0, 1, 4096, 512],
      [1, 1, 2, 2 ** 40, 11],
      [3, 0, 3, 0, 0],
    ]);
    assert.equal(got[1].payload!.toString(), 'hello world');
    assert.equal(got[0].payload, null);
  }
});

test('request reader: oversized write payload is discarded, stream stays in sync', () => {
  const { reader, got } = collect(8);
  reader.push(Buffer.concat([request(1, 0, 1, 0, 20, Buffer.alloc(20, 1)), request(0, 0, 2, 0, 4)]));
  assert.equal(reader.run(() => false), 'need-more');
  assert.equal(got.length, 2);
  assert.equal(got[0].payloadDropped, true);
  assert.equal(got[0].payload, null);
  assert.equal(got[1].type, 0);
});

test('request reader: stop() pauses between requests without losing bytes; bad magic desyncs', () => {
  const { reader, got } = collect();
  reader.push(Buffer.concat([request(0, 0, 1, 0, 1), request(0, 0, 2, 0, 1), request(0, 0, 3, 0, 1)]));
  assert.equal(reader.run(() => got.length >= 1), 'stopped');
  assert.equal(got.length, 1);
  assert.equal(reader.pendingBytes, 56);
  assert.equal(reader.run(() => false), 'need-more');
  assert.equal(got.length, 3);
  reader.push(Buffer.alloc(28, 0x41));
  assert.equal(reader.run(() => false), 'desync');
  reader.push(request(0, 0, 4, 0, 1));
  assert.equal(reader.run(() => false), 'desync');
  assert.equal(got.length, 3);
});

test('reply framing: exact bytes', () => {
  assert.equal(encodeSimpleReply(handle, 22).toString('hex'), '67446698' + '00000016' + '0102030405060708');
  assert.equal(encodeNoneChunk(handle).toString('hex'), '668e33ef' + '0001' + '0000' + '0102030405060708' + '00000000');
  assert.equal(
    encodeOffsetDataHeader(0, handle, 2 ** 32 + 5, 100).toString('hex'),
    '668e33ef' + '0000' + '0001' + '0102030405060708' + '0000006c' + '0000000100000005',
  );
  assert.equal(
    encodeOffsetHole(1, handle, 4096, 8192).toString('hex'),
    '668e33ef' + '0001' + '0002' + '0102030405060708' + '0000000c' + '0000000000001000' + '00002000',
  );
  assert.equal(
    encodeBlockStatus(1, handle, 1, [{ length: 65536, flags: 3 }, { length: 512, flags: 0 }]).toString('hex'),
    '668e33ef' + '0001' + '0005' + '0102030405060708' + '00000014' + '00000001' + '0001000000000003' + '0000020000000000',
  );
  assert.equal(
    encodeErrorChunk(1, handle, 5, 'ab').toString('hex'),
    '668e33ef' + '0001' + '8001' + '0102030405060708' + '00000008' + '00000005' + '0002' + '6162',
  );
  assert.equal(
    encodeErrorOffsetChunk(1, handle, 5, '', 7).toString('hex'),
    '668e33ef' + '0001' + '8002' + '0102030405060708' + '0000000e' + '00000005' + '0000' + '0000000000000007',
  );
  assert.equal(encodeOptionReply(7, C.NBD_REP_ERR_UNKNOWN).toString('hex'), '0003e889045565a9' + '00000007' + '80000006' + '00000000');
  assert.equal(encodeExportNameReply(1024, 3, true).length, 10);
  assert.equal(encodeExportNameReply(1024, 3, false).length, 134);
});

const caps = { readOnly: false, canFlush: true, canFua: true, canTrim: true, canZero: true, canFastZero: true, canCache: true, canMultiConn: true };
const facts = (over: Partial<SessionFacts> = {}): SessionFacts => ({
  size: 1 << 20,
  caps,
  transmissionFlags: transmissionFlags(caps, true),
  structuredReplies: true,
  hasMetaContexts: true,
  maxPayload: 32 << 20,
  ...over,
});
const req = (type: number, flags: number, offset: number, length: number, extra: Partial<NbdRequest> = {}): NbdRequest => ({
  type, flags, offset, length, handle, payload: null, payloadDropped: false, ...extra,
});

test('request validation: ranges, flags, read-only, sizes', () => {
  const s = facts();
  assert.equal(validateRequest(req(C.NBD_CMD_READ, 0, (1 << 20) - 1, 1), s), 0);
  assert.equal(validateRequest(req(C.NBD_CMD_READ, 0, (1 << 20) - 1, 2), s), C.NBD_EINVAL);
  assert.equal(validateRequest(req(C.NBD_CMD_READ, 0, 2 ** 63, 1), s), C.NBD_EINVAL);
  assert.equal(validateRequest(req(C.NBD_CMD_WRITE, 0, 1 << 20, 1), s), C.NBD_ENOSPC);
  assert.equal(validateRequest(req(C.NBD_CMD_WRITE_ZEROES, 0, 1 << 20, 1), s), C.NBD_ENOSPC);
  assert.equal(validateRequest(req(C.NBD_CMD_TRIM, 0, 1 << 20, 1), s), C.NBD_EINVAL);
  assert.equal(validateRequest(req(C.NBD_CMD_CACHE, 0, 1 << 20, 1), s), C.NBD_EINVAL);
  assert.equal(validateRequest(req(C.NBD_CMD_BLOCK_STATUS, 0, 0, 0), s), C.NBD_EINVAL);
  assert.equal(validateRequest(req(C.NBD_CMD_READ, C.NBD_CMD_FLAG_DF, 0, 1), s), 0);
  assert.equal(validateRequest(req(C.NBD_CMD_READ, C.NBD_CMD_FLAG_DF, 0, 1), facts({ structuredReplies: false })), C.NBD_EINVAL);
  assert.equal(validateRequest(req(C.NBD_CMD_WRITE, C.NBD_CMD_FLAG_NO_HOLE, 0, 1), s), C.NBD_EINVAL);
  assert.equal(validateRequest(req(C.NBD_CMD_READ, 0, 0, 33 << 20), facts({ size: 2 ** 40 })), C.NBD_EOVERFLOW);
  // EOVERFLOW only where DF is supported (structured replies): EINVAL in simple replies (spec)
  assert.equal(validateRequest(req(C.NBD_CMD_READ, 0, 0, 33 << 20), facts({ size: 2 ** 40, structuredReplies: false })), C.NBD_EINVAL);
  assert.equal(validateRequest(req(C.NBD_CMD_WRITE, 0, 0, 1, { payloadDropped: true }), s), C.NBD_EINVAL);
  assert.equal(validateRequest(req(99, 0, 0, 0), s), C.NBD_EINVAL);
  assert.equal(validateRequest(req(C.NBD_CMD_BLOCK_STATUS, 0, 0, 1), facts({ hasMetaContexts: false })), C.NBD_EINVAL);
  const ro = { ...caps, readOnly: true };
  const roFacts = facts({ caps: ro, transmissionFlags: transmissionFlags(ro, true) });
  assert.equal(validateRequest(req(C.NBD_CMD_WRITE, 0, 0, 1), roFacts), C.NBD_EPERM);
  assert.equal(validateRequest(req(C.NBD_CMD_TRIM, 0, 0, 1), roFacts), C.NBD_EPERM);
  const slow = { ...caps, canFastZero: false };
  const slowFacts = facts({ caps: slow, transmissionFlags: transmissionFlags(slow, true) });
  assert.equal(validateRequest(req(C.NBD_CMD_WRITE_ZEROES, C.NBD_CMD_FLAG_FAST_ZERO, 0, 1), slowFacts), C.NBD_ENOTSUP);
});

test('transmission flags follow caps', () => {
  const f = transmissionFlags(caps, true);
  for (const bit of [C.NBD_FLAG_HAS_FLAGS, C.NBD_FLAG_SEND_FLUSH, C.NBD_FLAG_SEND_FUA, C.NBD_FLAG_SEND_TRIM, C.NBD_FLAG_SEND_WRITE_ZEROES, C.NBD_FLAG_SEND_DF, C.NBD_FLAG_CAN_MULTI_CONN, C.NBD_FLAG_SEND_CACHE, C.NBD_FLAG_SEND_FAST_ZERO]) {
    assert.ok(f & bit, `bit ${bit}`);
  }
  assert.equal(f & C.NBD_FLAG_READ_ONLY, 0);
  assert.equal(transmissionFlags(caps, false) & C.NBD_FLAG_SEND_DF, 0);
  const ro = transmissionFlags({ ...caps, readOnly: true }, true);
  assert.ok(ro & C.NBD_FLAG_READ_ONLY);
  assert.equal(ro & C.NBD_FLAG_SEND_TRIM, 0);
});

test('errno mapping depends on command and flags', () => {
  const e = (code: ConstructorParameters<typeof VaultError>[0]) => new VaultError(code, 'x');
  assert.equal(toNbdError(e('ERR_OUT_OF_RANGE'), C.NBD_CMD_READ, 0), C.NBD_EINVAL);
  assert.equal(toNbdError(e('ERR_NO_SPACE'), C.NBD_CMD_WRITE, 0), C.NBD_ENOSPC);
  assert.equal(toNbdError(e('ERR_READ_ONLY'), C.NBD_CMD_WRITE, 0), C.NBD_EPERM);
  assert.equal(toNbdError(e('ERR_SHUTDOWN'), C.NBD_CMD_READ, 0), C.NBD_ESHUTDOWN);
  assert.equal(toNbdError(e('ERR_NOT_SUPPORTED'), C.NBD_CMD_WRITE_ZEROES, C.NBD_CMD_FLAG_FAST_ZERO), C.NBD_ENOTSUP);
  assert.equal(toNbdError(e('ERR_NOT_SUPPORTED'), C.NBD_CMD_WRITE_ZEROES, 0), C.NBD_EINVAL);
  assert.equal(toNbdError(e('ERR_NOT_SUPPORTED'), C.NBD_CMD_READ, C.NBD_CMD_FLAG_DF), C.NBD_EOVERFLOW);
  assert.equal(toNbdError(e('ERR_STORE_TRANSIENT'), C.NBD_CMD_READ, 0), C.NBD_EIO);
  assert.equal(toNbdError(new BugError('x'), C.NBD_CMD_READ, 0), C.NBD_EIO);
  assert.equal(toNbdError(new Error('plain'), C.NBD_CMD_READ, 0), C.NBD_EIO);
});

test('option parsing: exact lengths, overruns rejected', () => {
  const info = Buffer.from('00000004' + Buffer.from('disk').toString('hex') + '0002' + '0001' + '0003', 'hex');
  assert.deepEqual(parseInfoRequest(info), { ok: true, value: { name: 'disk', infos: [1, 3] } });
  assert.equal(parseInfoRequest(info.subarray(0, info.length - 1)).ok, false);
  assert.equal(parseInfoRequest(Buffer.from('ffffffff0000', 'hex')).ok, false);
  const meta = Buffer.from('00000000' + '00000001' + '0000000f' + Buffer.from('base:allocation').toString('hex'), 'hex');
  assert.deepEqual(parseMetaContextRequest(meta), { ok: true, value: { name: '', queries: ['base:allocation'] } });
  assert.equal(parseMetaContextRequest(Buffer.concat([meta, Buffer.from([0])])).ok, false);
  assert.equal(parseMetaContextRequest(Buffer.from('00000000000000020000000f', 'hex')).ok, false);
});

test('connection state table refuses illegal transitions', () => {
  const fsm = new ConnStateMachine(createLogger('silent'));
  assert.throws(() => fsm.enter('transmission'), /transition refused: greeting -> transmission/);
  fsm.enter('options');
  fsm.enter('transmission');
  fsm.enter('dead');
  assert.throws(() => fsm.enter('closed'), /dead -> closed/);
});

test('memory export: sparse pages, holes in block status, trim frees pages', async () => {
  const m = new MemoryExport('m', 1 << 20);
  assert.deepEqual(await m.blockStatus(0, 1 << 20), [{ length: 1 << 20, hole: true, zero: true }]);
  await m.write(65536 + 10, Buffer.alloc(100, 7));
  assert.equal(m.allocatedPages, 1);
  const r = await m.read(65536, 200);
  assert.equal(r[9], 0);
  assert.equal(r[10], 7);
  assert.equal(r[110], 0);
  assert.deepEqual(await m.blockStatus(0, 3 * 65536), [
    { length: 65536, hole: true, zero: true },
    { length: 65536, hole: false, zero: false },
    { length: 65536, hole: true, zero: true },
  ]);
  await m.trim(65536, 65536);
  assert.equal(m.allocatedPages, 0);
  await m.write(0, Buffer.alloc(65536 * 2, 9));
  await m.writeZeroes(100, 65536 * 2 - 200);
  const z = await m.read(0, 65536 * 2);
  assert.equal(z[99], 9);
  assert.equal(z[100], 0);
  assert.equal(z[65536 * 2 - 101], 0);
  assert.equal(z[65536 * 2 - 100], 9);
  await assert.rejects(m.read(1 << 20, 1), BugError);
  assert.deepEqual(parseMemoryExportSpec('snap=1G:ro'), { name: 'snap', size: 2 ** 30, readOnly: true });
  assert.throws(() => parseMemoryExportSpec('noequals'), /NAME=SIZE/);
  const p = new MemoryExportProvider([{ name: 'a', size: 1024 }, { name: 'b', size: 2048 }]);
  assert.equal(p.defaultName, 'a');
  assert.equal(await p.open('a'), await p.open('a'), 'one shared instance per name');
  assert.equal(await p.open('zz'), null);
});

test('memory export: a payload in pieces lands byte for byte, across pages and over old data', async () => {
  const m = new MemoryExport('m', 1 << 20);
  const old = randomBytes(1 << 20);
  await m.write(0, old);
  // a 300,000-byte write at an odd offset, in pieces that do not line up with pages
  const bytes = randomBytes(300_000);
  const cuts = [0, 28, 65_536, 65_600, 200_001, 300_000];
  const pieces = cuts.slice(1).map((end, k) => bytes.subarray(cuts[k], end));
  await m.write(70_001, pieces);
  const expected = Buffer.from(old);
  bytes.copy(expected, 70_001);
  assert.ok((await m.read(0, 1 << 20)).equals(expected));
  // and into pages never written (zeros around it)
  const fresh = new MemoryExport('f', 1 << 20);
  await fresh.write(131_072 + 5, pieces);
  const all = await fresh.read(0, 1 << 20);
  assert.ok(all.subarray(131_077, 131_077 + 300_000).equals(bytes));
  assert.ok(all.subarray(0, 131_077).every((b) => b === 0) && all.subarray(131_077 + 300_000).every((b) => b === 0));
});

test('request reader: input in one reused read buffer (socket-reads.ts) yields whole, right requests', () => {
  // What the server's recycled reads do: every read lands in one buffer, overwritten by the next.
  // A reader that kept a view of it (an unparsed rest, a payload) would hand out later bytes.
  // Its copies of unparsed input come from the reader's memory and go back once parsed: each
  // is poisoned when given back, so a reader that read one afterwards would hand out poison.
  const taken: Buffer[] = [];
  const given: Buffer[] = [];
  const got: NbdRequest[] = [];
  const memory = {
    take: (n: number) => {
      const b = Buffer.alloc(n, 0xee);
      taken.push(b);
      return b;
    },
    give: (b: Buffer) => {
      assert.ok(taken.includes(b), 'gives back only what it took');
      assert.ok(!given.includes(b), 'gives back once');
      given.push(b);
      b.fill(0x66);
    },
  };
  const reader = new RequestReader(32 * 1024 * 1024, (r) => got.push(r), memory);
  const rnd = (n: number) => randomBytes(n);
  const payloads = [rnd(300 * 1024), rnd(4096), rnd(10), rnd(70_000), rnd(1 << 20)];
  const stream = Buffer.concat(payloads.flatMap((p, k) => [request(1, 0, k, k * 4096, p.length, p), request(0, 0, 100 + k, 0, 512)]));
  const shared = Buffer.alloc(65536);
  const gotPayloads: Buffer[] = [];
  for (let at = 0, step = 1; at < stream.length; step = (step * 7 + 3) % 65536 || 1) {
    const n = stream.copy(shared, 0, at, Math.min(at + step, stream.length));
    at += n;
    reader.push(shared.subarray(0, n));
    // at most one request per read (backpressure): input is left unparsed, parsed reads later
    const before = got.length;
    reader.run(() => got.length > before);
    reader.detach(shared.buffer);
    shared.fill(0x55); // the next read overwrites it
    // a payload is compared the moment it is emitted (the caller owns it from then on)
    for (const r of got.slice(gotPayloads.length)) gotPayloads.push(Buffer.from(r.payload ?? Buffer.alloc(0)));
  }
  assert.equal(reader.run(() => false), 'need-more');
  for (const r of got.slice(gotPayloads.length)) gotPayloads.push(Buffer.from(r.payload ?? Buffer.alloc(0)));
  assert.equal(got.length, 2 * payloads.length);
  payloads.forEach((p, k) => {
    const w = got[2 * k];
    assert.equal(w.type, 1);
    assert.equal(w.offset, k * 4096);
    assert.ok(gotPayloads[2 * k].equals(p), `payload ${k} intact`);
    assert.ok(taken.includes(w.payload!) && !given.includes(w.payload!), "the payload is the reader's memory, and the caller's to give back");
    assert.equal(got[2 * k + 1].handle.readUInt32BE(4), 100 + k, 'handles copied, not views');
  });
  const copies = taken.filter((b) => !got.some((r) => r.payload === b));
  assert.ok(copies.length >= 5, `unparsed input was copied (${copies.length} copies)`);
  assert.deepEqual(new Set(given), new Set(copies), 'every copy of unparsed input went back once parsed');
  assert.equal(reader.pendingBytes, 0);
});

test('request reader: closed, it gives back the unparsed input it copied and a payload half read, and takes no more', () => {
  const given: Buffer[] = [];
  const got: NbdRequest[] = [];
  const reader = new RequestReader(1 << 20, (r) => got.push(r), { take: (n) => Buffer.alloc(n), give: (b) => given.push(b) });
  const shared = Buffer.alloc(4096);
  const n = request(1, 0, 1, 0, 100, randomBytes(100)).copy(shared);
  reader.push(shared.subarray(0, n));
  assert.equal(reader.run(() => true), 'stopped');
  reader.detach(shared.buffer);
  assert.equal(given.length, 0);
  reader.close();
  assert.equal(given.length, 1, 'the copy went back');
  assert.equal(given[0].length, n);
  reader.push(shared.subarray(0, n));
  assert.equal(reader.pendingBytes, 0, 'input after close is dropped');
  assert.equal(reader.run(() => false), 'stopped', 'a closed reader parses nothing');
  assert.equal(got.length, 0);

  // a WRITE whose payload is half here when the connection closes: its memory goes back as well
  const gave: Buffer[] = [];
  const half = new RequestReader(1 << 20, (r) => got.push(r), { take: (k) => Buffer.alloc(k), give: (b) => gave.push(b) });
  half.push(request(1, 0, 2, 0, 8192, randomBytes(8192)).subarray(0, 28 + 4096));
  assert.equal(half.run(() => false), 'need-more');
  assert.equal(half.payloadReceived, 4096);
  half.close();
  assert.equal(gave.length, 1);
  assert.equal(gave[0].length, 8192, 'the payload went back');
  assert.equal(got.length, 0);
});

test('strings on the wire: no NUL, at most 4096 bytes, never cut inside a character', () => {
  assert.equal(encodeProtocolString('no export named "a\0b"').toString(), 'no export named "a\\0b"');
  const long = encodeProtocolString('é'.repeat(3000)); // 6000 bytes of two-byte characters
  assert.equal(long.length, 4096);
  assert.equal(long.toString('utf8'), 'é'.repeat(2048));
  const odd = encodeProtocolString(`x${'é'.repeat(3000)}`); // a character would straddle byte 4096
  assert.equal(odd.length, 4095);
  assert.ok(!odd.toString('utf8').includes('\ufffd'), 'no broken character');
  assert.equal(encodeProtocolString('abc', 2).toString(), 'ab');
});
