// A 32-byte secret that cannot leak through logs: toString, toJSON and util.inspect redact it.
// The bytes are reachable only through `.bytes`, on purpose, at the few places that need them.
import { inspect } from 'node:util';
import { BugError } from '../errors';

export const SECRET_KEY_BYTES = 32;

export class SecretKey {
  readonly #bytes: Buffer;
  /** What this key is, for debugging (never the bytes): e.g. 'master', 'volume', 'data'. */
  readonly label: string;

  constructor(bytes: Uint8Array, label: string) {
    if (bytes.length !== SECRET_KEY_BYTES) throw new BugError(`a ${label} key must be ${SECRET_KEY_BYTES} bytes`);
    this.#bytes = Buffer.from(bytes); // own copy
    this.label = label;
  }

  get bytes(): Buffer {
    return this.#bytes;
  }

  /** Overwrite the key bytes; the object is useless afterwards. */
  wipe(): void {
    this.#bytes.fill(0);
  }

  toString(): string {
    return `SecretKey(${this.label}, redacted)`;
  }
  toJSON(): string {
    return this.toString();
  }
  [inspect.custom](): string {
    return this.toString();
  }
}
