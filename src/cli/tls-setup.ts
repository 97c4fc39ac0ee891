// What protects a server: TLS (mode and credentials) and the access policy, from the settings
// and the config file, checked at startup. Refuses to serve in plaintext off loopback unless
// told to (--insecure-no-tls), and refuses combinations that would not do what they say (an
// access section nobody can be identified for).
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { VaultError } from '../errors';
import { loadTlsConfig, type ExportAccessPolicy, type TlsServerConfig } from '../nbd';
import type { Logger } from '../util/log';
import { ConfigAccessPolicy } from './access-policy';
import { readConfigSection, type Settings } from './settings';

/** how long before its end a server certificate's expiry is worth a warning */
const CERTIFICATE_EXPIRY_WARNING_MS = 14 * 24 * 3600_000;

export interface ServerSecurity {
  readonly tls?: TlsServerConfig;
  readonly access?: ExportAccessPolicy;
}

type TlsSettings = Partial<Pick<Settings, 'tls' | 'tlsCertificates' | 'tlsPsk' | 'tlsVerifyPeer' | 'insecureNoTls'>>;

const bad = (msg: string) => new VaultError('ERR_INVALID_ARGUMENT', msg);

/** What a reload applied, for its log line (undefined without TLS). */
export function securitySummary(security: ServerSecurity): { pskIdentities?: number; accessControl: boolean } | undefined {
  return security.tls ? { pskIdentities: security.tls.pskKeys?.size, accessControl: security.access !== undefined } : undefined;
}

/** A PSK file is as secret as a key file; qemu-nbd and nbdkit do not check either, so a warning. */
function warnIfOthersCanRead(path: string, logger: Logger): void {
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077) logger.warn({ pskFile: path, mode: mode.toString(8).padStart(4, '0') }, 'the PSK file can be read by other users: chmod 600 it');
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host) || /^::ffff:127\./i.test(host);
}

export function resolveServerSecurity(s: TlsSettings, listen: { host: string; port: number } | undefined, opts: Record<string, unknown>, logger: Logger): ServerSecurity {
  const hasCreds = s.tlsCertificates !== undefined || s.tlsPsk !== undefined;
  const mode = s.tls ?? (hasCreds ? 'require' : 'off');
  if (mode !== 'off' && mode !== 'on' && mode !== 'require') throw bad(`--tls wants off, on or require, got "${mode}"`);
  if (mode === 'off' && hasCreds) throw bad('--tls off contradicts --tls-certificates/--tls-psk: drop one');
  if (mode === 'off' && s.tlsVerifyPeer) throw bad('--tls-verify-peer needs --tls-certificates');
  const accessSection = readConfigSection(opts, 'access');
  if (mode === 'off') {
    if (accessSection) throw bad(`the "access" section of ${accessSection.path} needs TLS (--tls-psk, or --tls-certificates with --tls-verify-peer): without it no client has an identity`);
    if (listen && !isLoopbackHost(listen.host)) {
      if (!s.insecureNoTls) {
        throw bad(
          `refusing to serve without TLS on ${listen.host}:${listen.port}, which is not a loopback address: anyone who reaches it could read and overwrite every volume. ` +
            'Give --tls-psk FILE or --tls-certificates DIR, or --insecure-no-tls if the network is trusted',
        );
      }
      logger.warn({ host: listen.host, port: listen.port }, 'serving WITHOUT TLS on a non-loopback address (--insecure-no-tls): every byte crosses the network in clear and anyone who reaches the port can read and write every volume');
    }
    return {};
  }
  const tls = loadTlsConfig({ mode, certificatesDir: s.tlsCertificates, pskFile: s.tlsPsk, verifyPeer: s.tlsVerifyPeer });
  let access: ExportAccessPolicy | undefined;
  if (accessSection) {
    if (!tls.pskKeys && !tls.verifyPeer) throw bad(`the "access" section of ${accessSection.path} needs client identities: use --tls-psk, or --tls-verify-peer with --tls-certificates`);
    const policy = ConfigAccessPolicy.parse(accessSection.value, accessSection.path);
    // (a typo in a name grants nothing to anyone; with X.509 the names are CNs we cannot list)
    const unknown = tls.pskKeys ? policy.identities.filter((id) => !tls.pskKeys!.has(id)) : [];
    if (unknown.length > 0) logger.warn({ identities: unknown, pskFile: s.tlsPsk }, `the "access" section of ${accessSection.path} names identities the PSK file does not hold: nobody can use their grants`);
    access = policy;
  }
  if (s.tlsPsk) warnIfOthersCanRead(s.tlsPsk, logger);
  const certWarning = tls.certificateValidity && certificateWarning(tls.certificateValidity, new Date());
  if (certWarning) logger.warn({ certificate: join(s.tlsCertificates!, 'server-cert.pem'), validFrom: tls.certificateValidity!.from.toISOString(), validTo: tls.certificateValidity!.to.toISOString() }, certWarning);
  if (mode === 'on' && listen && !isLoopbackHost(listen.host)) logger.warn({ host: listen.host, port: listen.port }, '--tls on also serves plaintext clients on a non-loopback address; --tls require refuses them');
  logger.info({ tls: mode, kind: tls.pskKeys ? 'psk' : 'x509', identities: tls.pskKeys?.size, verifyPeer: tls.verifyPeer === true, accessControl: access !== undefined }, 'TLS enabled');
  return { tls, access };
}

/** What is wrong with a server certificate valid `validity` at `now`: expired, not valid yet, or
 *  ending within 14 days; null when nothing is. Clients refuse one outside its period, and the
 *  server starts anyway (a renewed one is loaded by a SIGHUP): the log must say it. */
export function certificateWarning(validity: { readonly from: Date; readonly to: Date }, now: Date): string | null {
  const t = now.getTime();
  if (t > validity.to.getTime()) return 'the server certificate has expired: clients that check it (qemu, libnbd) refuse to connect';
  if (t < validity.from.getTime()) return 'the server certificate is not valid yet (is the clock right?): clients that check it refuse to connect';
  if (validity.to.getTime() - t < CERTIFICATE_EXPIRY_WARNING_MS) return 'the server certificate expires within 14 days: renew it (a SIGHUP reloads it)';
  return null;
}
