// What a client was let in with, checked again when the server's PSK file or access policy is
// reloaded (SIGHUP): a removed PSK identity, a changed key or a withdrawn grant ends sessions
// already open, not only new ones. (Certificates are checked at the handshake only: X.509 files
// are read again for new clients.)
import type { ExportAccessPolicy } from './access';
import type { TlsServerConfig } from './tls';

export interface SessionGrant {
  /** PSK identity or certificate CN; null without TLS authentication */
  readonly identity: string | null;
  /** the PSK the client proved it holds (null: X.509, or no TLS) */
  readonly pskKey: Buffer | null;
  /** the export's real name (the default export resolved) */
  readonly exportName: string;
  readonly writable: boolean;
}

/** Why `grant` no longer holds under `tls` and `access`, or null when it still does. */
export function revokedBecause(grant: SessionGrant, tls: TlsServerConfig | undefined, access: ExportAccessPolicy | undefined): string | null {
  if (grant.pskKey && grant.identity !== null) {
    const key = tls?.pskKeys?.get(grant.identity);
    if (!key) return `PSK identity "${grant.identity}" was removed`;
    if (!key.equals(grant.pskKey)) return `the key of PSK identity "${grant.identity}" changed`;
  }
  if (access) {
    const now = access.accessTo(grant.identity, grant.exportName);
    if (now === 'none') return `access to "${grant.exportName}" was withdrawn`;
    if (now === 'ro' && grant.writable) return `write access to "${grant.exportName}" was withdrawn`;
  }
  return null;
}
