// The paper recovery key: the master key as text a person can copy by hand and type back in
// (format: docs/FORMAT.md, "Recovery key"). 32 key bytes + the 8-byte key id (a whole-key check)
// = 40 bytes = 64 Crockford base32 characters, in 4 numbered lines of 4 groups of 4, each line
// ending with 2 check characters (10 bits of BLAKE2b over the line's number and bytes), so a
// mistyped character is found and its line named. Crockford's alphabet has no I, L, O or U, and
// reading accepts lower case and O/I/L typed for 0/1/1.
import sodium from 'sodium-native';
import { VaultError } from '../errors';
import { masterKeyId } from './key-derivation';
import { KEY_ID_BYTES, RECOVERY_KEY_HEADER, RECOVERY_KEY_LINE_CONTEXT, RECOVERY_KEY_VERSION } from './key-format';
import { SecretKey, SECRET_KEY_BYTES } from './secret-key';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const LINES = 4;
const LINE_BYTES = 10; // 80 bits = 16 characters
const GROUP = 4;
const CHECK_CHARS = 2;

export function formatRecoveryKey(master: SecretKey): string {
  const keyId = masterKeyId(master);
  const data = Buffer.concat([master.bytes, keyId]);
  try {
    const lines = [`${RECOVERY_KEY_HEADER} v${RECOVERY_KEY_VERSION} (master key id ${keyId.toString('hex')})`];
    for (let n = 1; n <= LINES; n++) {
      const bytes = data.subarray((n - 1) * LINE_BYTES, n * LINE_BYTES);
      const chars = encode(bytes);
      const groups = chars.match(new RegExp(`.{${GROUP}}`, 'g'))!.join(' ');
      lines.push(`${n}: ${groups}  ${lineCheck(n, bytes)}`);
    }
    return lines.join('\n') + '\n';
  } finally {
    data.fill(0);
  }
}

/** Reads the text back. Throws ERR_INVALID_ARGUMENT naming the line of a typo; never echoes key characters. */
export function parseRecoveryKey(text: string): SecretKey {
  const bad = (why: string) => new VaultError('ERR_INVALID_ARGUMENT', `recovery key: ${why}`);
  const found = new Map<number, Buffer>();
  let headerKeyId: string | null = null;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.toLowerCase().startsWith(RECOVERY_KEY_HEADER)) {
      const m = /\bv(\d+)\b.*?\b([0-9a-f]{16})\b/i.exec(line);
      if (m && Number(m[1]) !== RECOVERY_KEY_VERSION) throw bad(`format v${m[1]} is not supported (this version reads v${RECOVERY_KEY_VERSION})`);
      headerKeyId = m ? m[2].toLowerCase() : null;
      continue;
    }
    // "1: ABCD", "1. ABCD", "1) ABCD", "1 ABCD", and without the space, "1:ABCD"
    const m = /^(\d+)\s*(?:[:.)]\s*|\s+)(.*)$/.exec(line);
    if (!m) throw bad('every line must start with its number (1 to 4), e.g. "1: ABCD EFGH …"');
    const n = Number(m[1]);
    if (n < 1 || n > LINES) throw bad(`there is no line ${n} (lines are numbered 1 to ${LINES})`);
    if (found.has(n)) throw bad(`line ${n} is given twice`);
    const chars = normalise(m[2]);
    const want = (LINE_BYTES * 8) / 5 + CHECK_CHARS;
    if (chars.length !== want) throw bad(`line ${n} has ${chars.length} characters, expected ${want} (${want - CHECK_CHARS} key + ${CHECK_CHARS} check): a character is missing or extra`);
    const badChar = [...chars].findIndex((c) => !ALPHABET.includes(c));
    if (badChar >= 0) throw bad(`line ${n}, character ${badChar + 1} is not a recovery-key character (0-9, A-Z without I, L, O, U)`);
    const bytes = decode(chars.slice(0, -CHECK_CHARS));
    if (lineCheck(n, bytes) !== chars.slice(-CHECK_CHARS)) {
      bytes.fill(0);
      throw bad(`line ${n} does not match its check characters: a character in line ${n} is mistyped`);
    }
    found.set(n, bytes);
  }
  const missing = Array.from({ length: LINES }, (_, k) => k + 1).filter((n) => !found.has(n));
  if (missing.length > 0) throw bad(`line${missing.length > 1 ? 's' : ''} ${missing.join(', ')} missing`);
  const data = Buffer.concat(Array.from({ length: LINES }, (_, k) => found.get(k + 1)!));
  for (const b of found.values()) b.fill(0);
  try {
    const master = new SecretKey(data.subarray(0, SECRET_KEY_BYTES), 'master');
    const keyId = masterKeyId(master);
    if (!keyId.equals(data.subarray(SECRET_KEY_BYTES, SECRET_KEY_BYTES + KEY_ID_BYTES)) || (headerKeyId !== null && headerKeyId !== keyId.toString('hex'))) {
      master.wipe();
      throw bad('the lines pass their checks but the key does not match its key id: more than one character is mistyped, or lines come from different keys');
    }
    return master;
  } finally {
    data.fill(0);
  }
}

function normalise(s: string): string {
  return s.replace(/[\s-]/g, '').toUpperCase().replace(/O/g, '0').replace(/[IL]/g, '1');
}

function lineCheck(n: number, bytes: Buffer): string {
  const hash = Buffer.alloc(32);
  sodium.crypto_generichash(hash, Buffer.concat([RECOVERY_KEY_LINE_CONTEXT, Buffer.from([n]), bytes]));
  const bits = (hash[0] << 2) | (hash[1] >> 6); // 10 bits
  return ALPHABET[bits >> 5] + ALPHABET[bits & 31];
}

/** Crockford base32 of a whole number of 5-byte groups (no padding needed). */
function encode(bytes: Buffer): string {
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(acc >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}

function decode(chars: string): Buffer {
  const out = Buffer.alloc(Math.floor((chars.length * 5) / 8));
  let acc = 0;
  let bits = 0;
  let k = 0;
  for (const c of chars) {
    acc = ((acc << 5) | ALPHABET.indexOf(c)) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out[k++] = (acc >> (bits - 8)) & 0xff;
      bits -= 8;
    }
  }
  return out;
}
