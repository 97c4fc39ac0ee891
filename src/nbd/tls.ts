// TLS for NBD_OPT_STARTTLS: the server's TLS settings and the in-place upgrade of a client's
// socket. Credentials are loaded elsewhere (tls-credentials.ts); this file only runs handshakes.
//
// Guarantees: an upgrade resolves once the handshake is complete with the client's identity (the
// PSK identity, or the verified certificate's subject CN; null when the client did not
// authenticate), or rejects with a message safe to log (OpenSSL's reason, never key material).
// An unknown PSK identity gets a random key, so it fails like a wrong key and a stranger cannot
// probe which identities exist.
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import tls from 'node:tls';

/** off: STARTTLS is not offered. on: offered, plaintext clients are served too. require: every
 *  option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD until TLS is up (FORCEDTLS). */
export type TlsMode = 'off' | 'on' | 'require';

export interface TlsServerConfig {
  readonly mode: Exclude<TlsMode, 'off'>;
  readonly secureContext: tls.SecureContext;
  /** PSK mode: identity -> key. */
  readonly pskKeys?: ReadonlyMap<string, Buffer>;
  /** X.509 mode: ask for a client certificate and refuse one the CA did not sign. */
  readonly verifyPeer?: boolean;
  /** X.509 mode: the server certificate's validity period (clients refuse it outside). */
  readonly certificateValidity?: { readonly from: Date; readonly to: Date };
}

export interface TlsUpgrade {
  readonly socket: tls.TLSSocket;
  /** resolves with the authenticated identity once the handshake is complete */
  readonly secure: Promise<string | null>;
}

/** Wraps `raw` in a server-side TLS socket. Call it in the same tick as the NBD_REP_ACK is
 *  written, before any more input is read from `raw`. */
export function upgradeSocket(raw: Socket, config: TlsServerConfig): TlsUpgrade {
  let pskIdentity: string | null = null;
  // pskCallback and allowHalfOpen are honoured by TLSSocket but missing from @types/node's
  // TLSSocketOptions; allowHalfOpen keeps NBD's rule that a client's half-close still gets every
  // owed reply.
  const options: tls.TLSSocketOptions & Pick<tls.TlsOptions, 'pskCallback'> & { allowHalfOpen?: boolean } = {
    allowHalfOpen: true,
    isServer: true,
    secureContext: config.secureContext,
    requestCert: config.verifyPeer === true,
    rejectUnauthorized: config.verifyPeer === true,
  };
  if (config.pskKeys) {
    const keys = config.pskKeys;
    options.pskCallback = (_socket: tls.TLSSocket, identity: string) => {
      const key = keys.get(identity);
      if (key) {
        pskIdentity = identity;
        return key;
      }
      return randomBytes(32);
    };
  }
  const socket = new tls.TLSSocket(raw, options);
  const secure = new Promise<string | null>((resolve, reject) => {
    const onError = (err: Error) => reject(new Error(`TLS handshake failed: ${safeTlsReason(err)}`));
    socket.once('error', onError);
    socket.once('close', () => reject(new Error('TLS handshake failed: connection closed')));
    socket.once('secure', () => {
      socket.off('error', onError);
      if (config.pskKeys) return resolve(pskIdentity);
      if (!config.verifyPeer) return resolve(null);
      const refused = clientCertificateError(socket);
      if (refused) return reject(new Error(`TLS handshake failed: client certificate refused: ${refused}`));
      const cn = socket.getPeerCertificate().subject?.CN;
      resolve(typeof cn === 'string' && cn !== '' ? cn : null);
    });
  });
  secure.catch(() => {}); // the caller awaits it; a rejection before that must not be "unhandled"
  return { socket, secure };
}

/**
 * Why the client's certificate chain does not verify against the CA file, or null if it does.
 * Node accepts every chain during the handshake (its OpenSSL verify callback returns 1) and checks
 * the result afterwards, but only for sockets a tls.Server made; a socket upgraded in place, as
 * STARTTLS needs, gets no check at all, and `authorized` stays false. So we ask the TLS handle
 * for OpenSSL's verdict ourselves, the call Node's own server makes, and refuse when it cannot
 * be asked.
 */
function clientCertificateError(socket: tls.TLSSocket): string | null {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null } })._handle;
  if (typeof handle?.verifyError !== 'function') return 'this Node.js offers no way to verify it';
  const err = handle.verifyError();
  if (err) return err.code ?? err.message;
  return Object.keys(socket.getPeerCertificate()).length === 0 ? 'no certificate' : null;
}

/** OpenSSL's reason (e.g. "decryption failed", "certificate verify failed") without the stack. */
export function safeTlsReason(err: Error & { reason?: unknown; code?: unknown }): string {
  if (typeof err.reason === 'string') return err.reason;
  const m = /routines:[^:]*:([^:]+)/.exec(err.message);
  return m ? m[1] : typeof err.code === 'string' ? err.code : err.message.split('\n')[0].slice(0, 200);
}
