// The only place that turns an error into an NBD errno. The answer depends on the command and
// its flags, as nbdkit's nbd_errno does: ENOTSUP only for WRITE_ZEROES with FAST_ZERO (elsewhere
// "not supported" becomes EINVAL, which every client understands), EOVERFLOW only with DF.
import { isVaultError } from '../errors';
import {
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_READ,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  type NbdErrno,
} from './constants';

export function toNbdError(err: unknown, cmd: number, flags: number): NbdErrno {
  if (!isVaultError(err)) return NBD_EIO;
  switch (err.code) {
    case 'ERR_INVALID_ARGUMENT':
    case 'ERR_OUT_OF_RANGE':
      return NBD_EINVAL;
    case 'ERR_NO_SPACE':
      return NBD_ENOSPC;
    case 'ERR_READ_ONLY':
      return NBD_EPERM;
    case 'ERR_NOT_SUPPORTED':
      if (cmd === NBD_CMD_WRITE_ZEROES && (flags & NBD_CMD_FLAG_FAST_ZERO) !== 0) return NBD_ENOTSUP;
      if (cmd === NBD_CMD_READ && (flags & NBD_CMD_FLAG_DF) !== 0) return NBD_EOVERFLOW;
      return NBD_EINVAL;
    case 'ERR_SHUTDOWN':
      return NBD_ESHUTDOWN;
    default:
      // Store, crypto, corruption, lease and bug errors all mean "this I/O was lost".
      return NBD_EIO;
  }
}
