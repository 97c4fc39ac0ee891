// Raw NBD over TLS for tests that must send what real clients never would: STARTTLS on a raw
// Wire, then a PSK handshake with Node's TLS client. Not a test file (no .test suffix).
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { Wire, greet, option, readOptionReply } from './raw-client';

export const NBD_OPT_STARTTLS = 5;

/** Greets, sends STARTTLS and reads its ACK. */
export async function startTls(w: Wire): Promise<void> {
  await greet(w);
  await w.write(option(NBD_OPT_STARTTLS));
  const r = await readOptionReply(w);
  assert.equal(r.type, 1, 'STARTTLS acknowledged');
}

/** Completes a PSK handshake over `w`'s socket; returns a Wire on the TLS socket. */
export async function tlsWire(w: Wire, identity: string, psk: Buffer): Promise<Wire> {
  const sock = tls.connect({ socket: w.sock, pskCallback: () => ({ identity, psk }), ciphers: 'PSK', checkServerIdentity: () => undefined });
  await new Promise<void>((resolve, reject) => {
    sock.once('secureConnect', resolve);
    sock.once('error', reject);
  });
  return new Wire(sock);
}

/** The key of `identity` in a psktool file. */
export function pskKeyOf(pskFileText: string, identity: string): Buffer {
  const line = pskFileText.split('\n').find((l) => l.startsWith(identity + ':'));
  assert.ok(line, `no ${identity} in the PSK file`);
  return Buffer.from(line.slice(identity.length + 1).trim(), 'hex');
}
