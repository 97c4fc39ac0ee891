// Transmission flags advertised for an export, computed from its caps (data, computed once at
// open) and from whether structured replies were negotiated (SEND_DF requires them).
import type { ExportCaps } from './export';
import {
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
} from './constants';

export function transmissionFlags(caps: ExportCaps, structuredReplies: boolean): number {
  let flags = NBD_FLAG_HAS_FLAGS;
  if (caps.readOnly) flags |= NBD_FLAG_READ_ONLY;
  if (caps.canFlush) flags |= NBD_FLAG_SEND_FLUSH;
  if (caps.canFua) flags |= NBD_FLAG_SEND_FUA;
  // Write-type features are meaningless on a read-only export (nbdkit hides them too).
  if (!caps.readOnly && caps.canTrim) flags |= NBD_FLAG_SEND_TRIM;
  if (!caps.readOnly && caps.canZero) {
    // FAST_ZERO is advertised whenever zeroing is (as nbdkit): an export that cannot zero fast
    // answers FAST_ZERO requests with ENOTSUP at once (request-validation.ts), as the spec allows.
    flags |= NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
  }
  if (structuredReplies) flags |= NBD_FLAG_SEND_DF;
  if (caps.canMultiConn) flags |= NBD_FLAG_CAN_MULTI_CONN;
  if (caps.canCache) flags |= NBD_FLAG_SEND_CACHE;
  return flags;
}
