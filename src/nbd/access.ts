// Who may see and open which export. nbd/ only asks; the policy itself (a config-file section)
// is built above and passed in. Without a policy every client may open every export.
import type { ExportCaps } from './export';

export type ExportAccess = 'rw' | 'ro' | 'none';

export interface ExportAccessPolicy {
  /** What `identity` may do with the export `exportName` (already resolved from ""). `identity`
   *  is the PSK identity or the verified client certificate's CN; null for a client that did not
   *  authenticate (plaintext, or X.509 without --tls-verify-peer). */
  accessTo(identity: string | null, exportName: string): ExportAccess;
}

/** An export opened read-only for this client: the flags say READ_ONLY, writes get EPERM; no
 *  FLUSH either (it would make the export store what other clients wrote), as on a snapshot. */
export function capsFor(caps: ExportCaps, access: ExportAccess): ExportCaps {
  return access === 'ro' && !caps.readOnly ? { ...caps, readOnly: true, canFlush: false, canFua: false, canTrim: false, canZero: false, canFastZero: false } : caps;
}
