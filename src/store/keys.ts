// Object key validation shared by every base store.
//
// A key is a non-empty '/'-separated string with no leading '/', no empty, '.' or '..' segment, no
// NUL or control characters, at most 1,024 UTF-8 bytes (the S3 limit). Rejecting these everywhere
// keeps the fs store from escaping its directory and makes every store accept the same keys.
// A list prefix may be '' or any prefix of a valid key (so it may end with '/').
import { VaultError } from '../errors';

const MAX_KEY_BYTES = 1024;

export function checkKey(key: string): void {
  const why = keyProblem(key);
  if (why) throw new VaultError('ERR_INVALID_ARGUMENT', `invalid object key ${JSON.stringify(key)}: ${why}`);
}

export function checkPrefix(prefix: string): void {
  if (prefix === '') return;
  // A prefix ending in '/' or mid-segment is fine; check what a key with it would look like.
  const why = keyProblem(prefix.endsWith('/') ? `${prefix}x` : prefix, true);
  if (why) throw new VaultError('ERR_INVALID_ARGUMENT', `invalid list prefix ${JSON.stringify(prefix)}: ${why}`);
}

function keyProblem(key: string, isPrefix = false): string | null {
  if (typeof key !== 'string' || key.length === 0) return 'empty';
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) return `longer than ${MAX_KEY_BYTES} bytes`;
  if (key.startsWith('/')) return 'leading /';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) return 'control character';
  const segs = key.split('/');
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i];
    const partial = isPrefix && i === segs.length - 1; // may be the start of a longer segment
    if (s === '') return 'empty path segment';
    if (!partial && (s === '.' || s === '..')) return `'${s}' path segment`;
  }
  return null;
}

/** getRange arguments (every base store checks them): integers >= 0. */
export function checkRange(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new VaultError('ERR_INVALID_ARGUMENT', `getRange: offset and length must be integers >= 0, got ${String(offset)} and ${String(length)}`);
  }
}
