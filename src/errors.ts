// Errors are typed values with a stable `code`; callers and tests branch on `code`, never on text.
// Only nbd/ maps these to NBD errno values (nbd/errno.ts). Messages never carry key material.

export type VaultErrorCode =
  | 'ERR_INVALID_ARGUMENT' // bad option, flag, range or config: the caller's fault
  | 'ERR_OUT_OF_RANGE' // a read/trim/etc. beyond the end of a volume (EINVAL on the wire)
  | 'ERR_NO_SPACE' // a write beyond the end of a volume (ENOSPC on the wire)
  | 'ERR_READ_ONLY' // a write to a read-only export or snapshot (EPERM on the wire)
  | 'ERR_NOT_SUPPORTED' // e.g. FAST_ZERO that cannot be fast (ENOTSUP on the wire)
  | 'ERR_SHUTDOWN' // the server is shutting down (ESHUTDOWN on the wire)
  | 'ERR_IO' // anything that lost an I/O (EIO on the wire)
  | 'ERR_AUTH_FAILED' // an object failed authentication: tampered, moved, replayed or wrong key
  | 'ERR_CORRUPT' // an object is malformed (bad magic, truncated, unknown version)
  | 'ERR_WRONG_KEY' // a key or passphrase does not open what it should
  | 'ERR_KEY_FILE' // a key file is missing, unreadable, malformed or has unsafe permissions
  | 'ERR_STORE_NOT_FOUND'
  | 'ERR_STORE_PRECONDITION' // a conditional put lost (someone else wrote first)
  | 'ERR_STORE_DENIED' // 401/403: credentials or policy; never retried
  | 'ERR_STORE_TRANSIENT' // 5xx, throttling, timeouts, resets: retryable
  | 'ERR_STORE_IO' // any other store failure: not retried
  | 'ERR_ROLLBACK' // the store offered an older manifest root than we have seen
  | 'ERR_EXISTS'
  | 'ERR_NOT_FOUND' // a named thing (volume, snapshot, export) does not exist
  | 'ERR_LEASE' // another writer holds the volume
  | 'ERR_INSTALL' // the installation is incomplete (a native module that was never built)
  | 'ERR_BUG'; // a broken internal invariant: logged loudly, EIO on the wire

export class VaultError extends Error {
  readonly code: VaultErrorCode;
  constructor(code: VaultErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'VaultError';
  }
}

/** A broken invariant inside the program (never the user's or the network's fault). */
export class BugError extends VaultError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BUG', message, options);
    this.name = 'BugError';
  }
}

export function isVaultError(err: unknown, code?: VaultErrorCode): err is VaultError {
  return err instanceof VaultError && (code === undefined || err.code === code);
}

/** A short, secret-free description of any thrown value, for logs and CLI messages. */
export function describeError(err: unknown): string {
  if (err instanceof VaultError) return `${err.message} [${err.code}]`;
  if (err instanceof Error) return err.message;
  return String(err);
}
