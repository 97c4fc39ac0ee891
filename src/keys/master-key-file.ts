// The master key file, <keys dir>/master-key.json (format: docs/FORMAT.md, "Key file"): 32 random
// bytes, stored plain (hex) or wrapped with a passphrase (passphrase-wrap.ts). Guarantees: created
// 0600 in a 0700 directory, atomically, never overwritten by create; refused on load if group- or
// world-accessible; every error names the path and never carries key or passphrase bytes (JSON
// parse errors are not passed on: they quote the input).
import { promises as fs } from 'node:fs';
import sodium from 'sodium-native';
import { VaultError } from '../errors';
import { writePrivateFileAtomic } from './atomic-file';
import { masterKeyId } from './key-derivation';
import { KDF_ALGORITHM_NAME, KEY_FILE_FORMAT, KEY_FILE_VERSION, MAX_KDF_MEMLIMIT, MAX_KDF_OPSLIMIT, type KdfStrength } from './key-format';
import { masterKeyPath, pendingMasterKeyPath } from './keys-dir';
import { unwrapWithPassphrase, wrapWithPassphrase, type PassphraseWrapped } from './passphrase-wrap';
import { SecretKey, SECRET_KEY_BYTES } from './secret-key';
import { makeDirs } from '../util/make-dirs';

export interface MasterKeyInfo {
  path: string;
  /** Public id (16 hex digits) of the master key: safe to print and log. */
  keyId: string;
  passphraseProtected: boolean;
}

export interface CreateMasterKeyOptions {
  /** Wrap the key with this passphrase (Argon2id); absent = stored plain, protected by file mode. */
  passphrase?: string;
  /** Argon2id cost; default 'moderate'. 'interactive' is for tests. */
  kdf?: KdfStrength;
  /** Default 'current'; 'pending' makes the next key of a rotation. */
  slot?: KeyFileSlot;
}

/** Which key file of a keys directory: the master key, or the next one during a rotation. */
export type KeyFileSlot = 'current' | 'pending';

const slotPath = (dir: string, slot: KeyFileSlot) => (slot === 'current' ? masterKeyPath(dir) : pendingMasterKeyPath(dir));

type KeyFileRecord = { keyId: string } & ({ protection: 'none'; key: Buffer } | ({ protection: 'passphrase' } & PassphraseWrapped));

export async function createMasterKey(dir: string, options: CreateMasterKeyOptions = {}): Promise<MasterKeyInfo> {
  const bytes = Buffer.alloc(SECRET_KEY_BYTES);
  sodium.randombytes_buf(bytes);
  const master = new SecretKey(bytes, 'master');
  bytes.fill(0);
  await makeDirs(dir, 0o700);
  try {
    return await writeKeyFile(dir, master, options, 'create', options.slot ?? 'current');
  } catch (err) {
    if (err instanceof VaultError && err.code === 'ERR_EXISTS') {
      throw new VaultError('ERR_EXISTS', `a master key already exists at ${slotPath(dir, options.slot ?? 'current')}; refusing to overwrite it (that would make every volume unreadable)`);
    }
    throw err;
  } finally {
    master.wipe();
  }
}

export async function loadMasterKey(dir: string, options: { passphrase?: string; slot?: KeyFileSlot } = {}): Promise<SecretKey> {
  const path = slotPath(dir, options.slot ?? 'current');
  const record = await readKeyFile(path);
  const bytes =
    record.protection === 'none'
      ? Buffer.from(record.key)
      : await unwrapWithPassphrase(record, record.keyId, requirePassphrase(options.passphrase, path), `at ${path}`);
  try {
    const master = new SecretKey(bytes, 'master');
    if (masterKeyId(master).toString('hex') !== record.keyId) {
      master.wipe();
      throw new VaultError('ERR_KEY_FILE', `${path}: the key does not match its key id (the file was edited)`);
    }
    return master;
  } finally {
    bytes.fill(0);
    if (record.protection === 'none') record.key.fill(0);
  }
}

/** Public facts about the key file (no passphrase needed). */
export async function describeMasterKey(dir: string, slot: KeyFileSlot = 'current'): Promise<MasterKeyInfo> {
  const path = slotPath(dir, slot);
  const record = await readKeyFile(path);
  if (record.protection === 'none') record.key.fill(0);
  return { path, keyId: record.keyId, passphraseProtected: record.protection === 'passphrase' };
}

/**
 * Rewraps the master key (the key itself, and so every volume, is unchanged). `oldPassphrase` is
 * needed only if the file has one; an absent `newPassphrase` stores the key plain.
 */
export async function changePassphrase(
  dir: string,
  oldPassphrase: string | undefined,
  newPassphrase: string | undefined,
  options: { kdf?: KdfStrength } = {},
): Promise<MasterKeyInfo> {
  const master = await loadMasterKey(dir, { passphrase: oldPassphrase });
  try {
    return await writeKeyFile(dir, master, { passphrase: newPassphrase, kdf: options.kdf }, 'replace');
  } finally {
    master.wipe();
  }
}

function requirePassphrase(passphrase: string | undefined, path: string): string {
  if (passphrase === undefined || passphrase === '') {
    throw new VaultError('ERR_WRONG_KEY', `the master key at ${path} is passphrase-protected: set NBD_VAULT_PASSPHRASE or run on a terminal`);
  }
  return passphrase;
}

/** Is a rotation under way (a next key file present)? */
export async function hasPendingMasterKey(dir: string): Promise<boolean> {
  return fs.stat(pendingMasterKeyPath(dir)).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw new VaultError('ERR_KEY_FILE', `cannot read ${pendingMasterKeyPath(dir)} (${err.code ?? 'unknown error'})`);
    },
  );
}

/**
 * Stores a given master key (a rotation's new key, a key rebuilt from a recovery key). `create`
 * never overwrites a key file.
 */
export async function saveMasterKey(dir: string, master: SecretKey, options: CreateMasterKeyOptions): Promise<MasterKeyInfo> {
  await makeDirs(dir, 0o700);
  return writeKeyFile(dir, master, options, 'create', options.slot ?? 'current');
}

/**
 * The last step of a rotation: the next key file replaces the master key file (one atomic
 * rename, then a directory fsync). The old key is gone from the directory afterwards.
 */
export async function promotePendingMasterKey(dir: string): Promise<void> {
  await fs.rename(pendingMasterKeyPath(dir), masterKeyPath(dir));
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function writeKeyFile(dir: string, master: SecretKey, options: CreateMasterKeyOptions, mode: 'create' | 'replace', slot: KeyFileSlot = 'current'): Promise<MasterKeyInfo> {
  const path = slotPath(dir, slot);
  const keyId = masterKeyId(master).toString('hex');
  const common = { format: KEY_FILE_FORMAT, version: KEY_FILE_VERSION, keyId };
  let json: object;
  if (options.passphrase === undefined) {
    json = { ...common, protection: 'none', key: master.bytes.toString('hex') };
  } else {
    const wrapped = await wrapWithPassphrase(master.bytes, keyId, options.passphrase, options.kdf ?? 'moderate');
    json = {
      ...common,
      protection: 'passphrase',
      kdf: { ...wrapped.kdf, salt: wrapped.kdf.salt.toString('hex') },
      nonce: wrapped.nonce.toString('hex'),
      ciphertext: wrapped.ciphertext.toString('hex'),
    };
  }
  const data = Buffer.from(JSON.stringify(json, null, 2) + '\n', 'utf8');
  try {
    await writePrivateFileAtomic(path, data, mode);
  } finally {
    data.fill(0);
  }
  return { path, keyId, passphraseProtected: options.passphrase !== undefined };
}

async function readKeyFile(path: string): Promise<KeyFileRecord> {
  let text: Buffer;
  try {
    const handle = await fs.open(path, 'r');
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw new VaultError('ERR_KEY_FILE', `${path} is not a regular file`);
      if ((stat.mode & 0o077) !== 0) {
        const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
        throw new VaultError('ERR_KEY_FILE', `${path} is accessible by group or others (mode ${mode}); run: chmod 600 ${path}`);
      }
      text = await handle.readFile();
    } finally {
      await handle.close();
    }
  } catch (err) {
    if (err instanceof VaultError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new VaultError('ERR_KEY_FILE', `no master key at ${path} (create one with: nbd-vault keys init)`);
    if (code === 'EACCES') throw new VaultError('ERR_KEY_FILE', `cannot read ${path}: permission denied`);
    throw new VaultError('ERR_KEY_FILE', `cannot read ${path} (${code ?? 'unknown error'})`);
  }
  try {
    return parseKeyFile(text, path);
  } finally {
    text.fill(0);
  }
}

function parseKeyFile(text: Buffer, path: string): KeyFileRecord {
  const bad = (what: string) => new VaultError('ERR_KEY_FILE', `${path} is not a valid nbd-vault key file: ${what}`);
  let json: any;
  try {
    json = JSON.parse(text.toString('utf8'));
  } catch {
    throw bad('not JSON'); // the parser's message would quote the file, key bytes included
  }
  if (typeof json !== 'object' || json === null || json.format !== KEY_FILE_FORMAT) throw bad('missing "format"');
  if (json.version !== KEY_FILE_VERSION) throw bad(`unsupported version ${String(json.version).slice(0, 10)}`);
  if (typeof json.keyId !== 'string' || !/^[0-9a-f]{16}$/.test(json.keyId)) throw bad('malformed "keyId"');
  const hexField = (value: unknown, name: string, bytes: number): Buffer => {
    if (typeof value !== 'string' || value.length !== bytes * 2 || !/^[0-9a-f]*$/.test(value)) throw bad(`malformed "${name}"`);
    return Buffer.from(value, 'hex');
  };
  if (json.protection === 'none') return { keyId: json.keyId, protection: 'none', key: hexField(json.key, 'key', SECRET_KEY_BYTES) };
  if (json.protection !== 'passphrase') throw bad('unknown "protection"');
  const kdf = json.kdf;
  if (typeof kdf !== 'object' || kdf === null || kdf.algorithm !== KDF_ALGORITHM_NAME) throw bad('unsupported "kdf.algorithm"');
  const inRange = (n: unknown, min: number, max: number) => Number.isInteger(n) && (n as number) >= min && (n as number) <= max;
  if (!inRange(kdf.opslimit, sodium.crypto_pwhash_OPSLIMIT_MIN, MAX_KDF_OPSLIMIT)) throw bad('"kdf.opslimit" out of range');
  if (!inRange(kdf.memlimit, sodium.crypto_pwhash_MEMLIMIT_MIN, MAX_KDF_MEMLIMIT)) throw bad('"kdf.memlimit" out of range');
  return {
    keyId: json.keyId,
    protection: 'passphrase',
    kdf: { algorithm: KDF_ALGORITHM_NAME, salt: hexField(kdf.salt, 'kdf.salt', sodium.crypto_pwhash_SALTBYTES), opslimit: kdf.opslimit, memlimit: kdf.memlimit },
    nonce: hexField(json.nonce, 'nonce', 24),
    ciphertext: hexField(json.ciphertext, 'ciphertext', SECRET_KEY_BYTES + 16),
  };
}
