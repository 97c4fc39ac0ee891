// Loads TLS credentials in the layouts qemu-nbd and nbdkit read, so one set of files serves all
// three servers:
//   X.509: a directory with ca-cert.pem (needed to verify clients), server-cert.pem, server-key.pem
//   PSK:   a psktool file, one `identity:hexkey` line per client (libnbd's tls-psk-file= format)
// Errors name the file and line, never a key.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { VaultError } from '../errors';
import type { TlsServerConfig } from './tls';

export interface TlsCredentialOptions {
  readonly mode: 'on' | 'require';
  readonly certificatesDir?: string;
  readonly pskFile?: string;
  readonly verifyPeer?: boolean;
}

const bad = (msg: string) => new VaultError('ERR_INVALID_ARGUMENT', msg);

/** TLS 1.3 suites in our order of preference (honorCipherOrder): AES-128-GCM first, the cheapest
 *  on CPUs with AES instructions (gnutls clients list AES-256-GCM first). */
const TLS13_SUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

export function loadTlsConfig(o: TlsCredentialOptions): TlsServerConfig {
  if (!o.certificatesDir === !o.pskFile) throw bad('TLS needs exactly one of --tls-certificates DIR and --tls-psk FILE');
  if (o.pskFile) {
    if (o.verifyPeer) throw bad('--tls-verify-peer applies to X.509 certificates, not to --tls-psk (a PSK authenticates the client already)');
    const pskKeys = parsePskFile(readText(o.pskFile), o.pskFile);
    // TLS 1.3 with PSK (gnutls clients pick it), or the PSK suites of TLS 1.2.
    const secureContext = tls.createSecureContext({ ciphers: `${TLS13_SUITES}:PSK`, honorCipherOrder: true, minVersion: 'TLSv1.2' });
    return { mode: o.mode, secureContext, pskKeys };
  }
  const dir = o.certificatesDir!;
  const cert = readText(join(dir, 'server-cert.pem'));
  const key = readText(join(dir, 'server-key.pem'));
  let ca: string | undefined;
  try {
    ca = readFileSync(join(dir, 'ca-cert.pem'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw bad(`cannot read ${join(dir, 'ca-cert.pem')}: ${(err as Error).message}`);
    if (o.verifyPeer) throw bad(`--tls-verify-peer needs ${join(dir, 'ca-cert.pem')} (the CA that signs client certificates)`);
  }
  // OpenSSL skips what is not a certificate in a CA file: a garbage file would verify no client
  if (ca !== undefined) {
    try {
      new X509Certificate(ca);
    } catch {
      throw bad(`${join(dir, 'ca-cert.pem')} holds no PEM certificate`);
    }
  }
  let secureContext: tls.SecureContext;
  try {
    secureContext = tls.createSecureContext({ cert, key, ca, ciphers: `${TLS13_SUITES}:${tls.DEFAULT_CIPHERS}`, honorCipherOrder: true, minVersion: 'TLSv1.2' });
  } catch (err) {
    // OpenSSL's reason only ("key values mismatch", "bad end line"): never the PEM text
    throw bad(`bad certificate or key in ${dir}: ${(err as Error).message.split('\n')[0].slice(0, 200)}`);
  }
  let certificateValidity: TlsServerConfig['certificateValidity'];
  try {
    const c = new X509Certificate(cert);
    certificateValidity = { from: new Date(c.validFrom), to: new Date(c.validTo) };
  } catch {
    // (OpenSSL took it above: a form X509Certificate does not parse; its dates go unchecked)
  }
  return { mode: o.mode, secureContext, verifyPeer: o.verifyPeer === true, certificateValidity };
}

/** `identity:hexkey` lines (blank lines and # comments allowed); identities must be unique. */
export function parsePskFile(text: string, path: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const at = `${path} line ${i + 1}`;
    // the first colon, as gnutls reads the file: an identity has none, and a stray colon after
    // the key must not make the key part of the identity a message prints
    const colon = line.indexOf(':');
    if (colon <= 0) throw bad(`${at}: expected identity:hexkey`);
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) {
      // a line written key first (hexkey:identity) would put the key in this message: not named then
      const named = /^[0-9a-fA-F]{32,}$/.test(identity) ? 'the key after the first colon' : `the key of "${identity}"`;
      throw bad(`${at}: ${named} is not an even number of hex digits (the format is identity:hexkey)`);
    }
    if (hex.length < 32) throw bad(`${at}: the key of "${identity}" is shorter than 16 bytes`);
    if (keys.has(identity)) throw bad(`${at}: identity "${identity}" appears twice`);
    keys.set(identity, Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw bad(`${path} holds no identity:hexkey line`);
  return keys;
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw bad(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
}
