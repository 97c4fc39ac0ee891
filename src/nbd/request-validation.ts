// Validate at the edge (STYLE.md house rule 7, nbdkit's validate_request): every request is
// checked here once — command, flags, read-only, capabilities, length and range — so the
// Export below may assert these facts. Returns 0 when the request may run, else the NBD errno.
import type { ExportCaps } from './export';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FUA,
} from './constants';
import type { NbdRequest } from './request-reader';

export interface SessionFacts {
  readonly size: number;
  readonly caps: ExportCaps;
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  /** SET_META_CONTEXT selected at least one context for this export: BLOCK_STATUS is allowed */
  readonly hasMetaContexts: boolean;
  readonly maxPayload: number;
}

/** Command flags a command accepts in this session. FUA is valid on every command once
 *  SEND_FUA is advertised (spec: "the server MUST accept all commands with this bit set"). */
function allowedFlags(type: number, s: SessionFacts): number {
  let allowed = (s.transmissionFlags & NBD_FLAG_SEND_FUA) !== 0 ? NBD_CMD_FLAG_FUA : 0;
  if (type === NBD_CMD_READ && s.structuredReplies) allowed |= NBD_CMD_FLAG_DF;
  if (type === NBD_CMD_WRITE_ZEROES) {
    allowed |= NBD_CMD_FLAG_NO_HOLE;
    if ((s.transmissionFlags & NBD_FLAG_SEND_FAST_ZERO) !== 0) allowed |= NBD_CMD_FLAG_FAST_ZERO;
  }
  if (type === NBD_CMD_BLOCK_STATUS) allowed |= NBD_CMD_FLAG_REQ_ONE;
  return allowed;
}

export function validateRequest(req: NbdRequest, s: SessionFacts): number {
  const { type, flags, offset, length } = req;
  switch (type) {
    case NBD_CMD_READ:
    case NBD_CMD_WRITE:
    case NBD_CMD_DISC:
    case NBD_CMD_FLUSH:
    case NBD_CMD_TRIM:
    case NBD_CMD_CACHE:
    case NBD_CMD_WRITE_ZEROES:
    case NBD_CMD_BLOCK_STATUS:
      break;
    default:
      return NBD_EINVAL; // unknown command
  }
  if ((flags & ~allowedFlags(type, s)) !== 0) return NBD_EINVAL;

  const writes = type === NBD_CMD_WRITE || type === NBD_CMD_TRIM || type === NBD_CMD_WRITE_ZEROES;
  if (writes && s.caps.readOnly) return NBD_EPERM;

  // Capabilities not advertised are invalid requests.
  if (type === NBD_CMD_FLUSH && !s.caps.canFlush) return NBD_EINVAL;
  if (type === NBD_CMD_TRIM && !s.caps.canTrim) return NBD_EINVAL;
  if (type === NBD_CMD_WRITE_ZEROES && !s.caps.canZero) return NBD_EINVAL;
  if (type === NBD_CMD_CACHE && !s.caps.canCache) return NBD_EINVAL;
  if (type === NBD_CMD_BLOCK_STATUS && !s.hasMetaContexts) return NBD_EINVAL;

  // Payload sizes: a read we will not hold is too large to answer (EOVERFLOW, where the client
  // may send DF: structured replies; the spec wants EINVAL otherwise); a write whose payload was
  // drained is simply invalid.
  if (type === NBD_CMD_READ && length > s.maxPayload) return s.structuredReplies ? NBD_EOVERFLOW : NBD_EINVAL;
  if (type === NBD_CMD_WRITE && req.payloadDropped) return NBD_EINVAL;
  if (type === NBD_CMD_BLOCK_STATUS && length === 0) return NBD_EINVAL;

  if (type !== NBD_CMD_FLUSH && type !== NBD_CMD_DISC) {
    const outOfRange = offset > s.size || length > s.size - offset;
    if (outOfRange) return type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
  }

  // FAST_ZERO on an export that cannot zero fast: fail quickly, touch nothing (spec).
  if (type === NBD_CMD_WRITE_ZEROES && (flags & NBD_CMD_FLAG_FAST_ZERO) !== 0 && !s.caps.canFastZero) return NBD_ENOTSUP;
  return 0;
}
