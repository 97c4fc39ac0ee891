// How the fs store names the file of a key (see fs-store.ts for the layout): each key segment
// escaped, so that no name of ours contains '~', and the last one under a fan-out directory.
import { createHash } from 'node:crypto';

/** The fan-out directory of a key's last segment: the first two hex digits of its sha256, '~'. */
export function fanoutDir(lastSegment: string): string {
  return `${createHash('sha256').update(lastSegment).digest('hex').slice(0, 2)}~`;
}

/** A key segment as a file name: bytes outside [A-Za-z0-9._-] become %XX. */
export function escapeSegment(seg: string): string {
  let out = '';
  for (const b of Buffer.from(seg, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9._-]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The key segment a file name stands for; null for a name that is not one of ours. */
export function unescapeSegment(name: string): string | null {
  if (!/^(?:[A-Za-z0-9._-]|%[0-9A-F]{2})+$/.test(name)) return null; // not ours: ignore
  return Buffer.from(name.replace(/%([0-9A-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8');
}
