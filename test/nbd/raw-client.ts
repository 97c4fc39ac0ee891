// A minimal raw-socket NBD client for tests that must send what real clients never would.
// Not a test file itself (no .test suffix): imported by the hostile-client and unit tests.
import net from 'node:net';

export const MIB = 1024 * 1024;
const IHAVEOPT = Buffer.from('IHAVEOPT');

export class Wire {
  readonly sock: net.Socket;
  /** received and not yet read, in order (concatenated only as far as a read needs) */
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiters: Array<() => void> = [];
  ended = false;
  readonly closed: Promise<void>;

  /** A new connection to 127.0.0.1:port, or an existing socket (e.g. a TLS one after STARTTLS). */
  constructor(port: number | net.Socket) {
    this.sock = typeof port === 'number' ? net.connect(port, '127.0.0.1') : port;
    this.sock.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      this.wake();
    });
    this.sock.on('error', () => {});
    this.closed = new Promise((r) => this.sock.on('close', () => {
      this.ended = true;
      this.wake();
      r();
    }));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Exactly n bytes, or rejects if the server closes first or after timeoutMs. */
  async read(n: number, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered}/${n} bytes`);
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${n} bytes`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    if (n === 0) return Buffer.alloc(0);
    this.buffered -= n;
    const first = this.chunks[0];
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    for (let at = 0; at < n; ) {
      const c = this.chunks[0];
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }

  write(b: Buffer): Promise<void> {
    return new Promise((r) => this.sock.write(b, () => r()));
  }

  /** Resolves true if the server closes the connection within timeoutMs. */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    return Promise.race([this.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs))]);
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/** Reads the greeting and sends client flags (default FIXED_NEWSTYLE | NO_ZEROES). */
export async function greet(w: Wire, clientFlags = 3): Promise<void> {
  const g = await w.read(18);
  if (g.toString('latin1', 0, 8) !== 'NBDMAGIC') throw new Error('bad greeting');
  const f = Buffer.alloc(4);
  f.writeUInt32BE(clientFlags);
  await w.write(f);
}

export function option(opt: number, data: Buffer = Buffer.alloc(0), lengthField = data.length): Buffer {
  const h = Buffer.alloc(16);
  IHAVEOPT.copy(h);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(lengthField, 12);
  return Buffer.concat([h, data]);
}

export async function readOptionReply(w: Wire): Promise<{ opt: number; type: number; data: Buffer }> {
  const h = await w.read(20);
  const len = h.readUInt32BE(16);
  return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await w.read(len) };
}

export function infoPayload(name: string): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(4 + n.length + 2);
  b.writeUInt32BE(n.length);
  n.copy(b, 4);
  return b;
}

/** STRUCTURED_REPLY (optional) then GO; returns the size from NBD_INFO_EXPORT. */
export async function go(w: Wire, name: string, structured = false): Promise<number> {
  if (structured) {
    await w.write(option(8));
    const r = await readOptionReply(w);
    if (r.type !== 1) throw new Error('structured reply refused');
  }
  await w.write(option(7, infoPayload(name)));
  let size = -1;
  for (;;) {
    const r = await readOptionReply(w);
    if (r.type === 3 && r.data.readUInt16BE(0) === 0) size = Number(r.data.readBigUInt64BE(2));
    else if (r.type === 1) return size;
    else if (r.type !== 3) throw new Error(`GO failed: reply type 0x${r.type.toString(16)}`);
  }
}

export function request(type: number, flags: number, handle: number, offset: number, length: number, payload?: Buffer): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(0x25609513, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(handle), 8);
  h.writeBigUInt64BE(BigInt(offset), 16);
  h.writeUInt32BE(length, 24);
  return payload ? Buffer.concat([h, payload]) : h;
}

export async function readSimpleReply(w: Wire, dataLength = 0, timeoutMs?: number): Promise<{ error: number; handle: number; data: Buffer }> {
  const h = await w.read(16, timeoutMs);
  if (h.readUInt32BE(0) !== 0x67446698) throw new Error(`bad reply magic ${h.readUInt32BE(0).toString(16)}`);
  const error = h.readUInt32BE(4);
  return { error, handle: Number(h.readBigUInt64BE(8)), data: error === 0 && dataLength > 0 ? await w.read(dataLength, timeoutMs) : Buffer.alloc(0) };
}
