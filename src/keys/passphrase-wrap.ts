// Wraps the master key with a passphrase: Argon2id (libsodium crypto_pwhash, run off the event
// loop) turns passphrase + random salt into a 32-byte key that encrypts the master key with
// XChaCha20-Poly1305. The parameters travel in the key file; the associated data binds them and
// the key id, so editing any of them makes the unwrap fail rather than yield another key.
import sodium from 'sodium-native';
import { VaultError } from '../errors';
import {
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  KDF_ALGORITHM_NAME,
  KDF_PRESETS,
  KEY_FILE_FORMAT,
  KEY_FILE_VERSION,
  type KdfStrength,
} from './key-format';
import { SECRET_KEY_BYTES } from './secret-key';

export interface KdfParams {
  algorithm: typeof KDF_ALGORITHM_NAME;
  salt: Buffer;
  opslimit: number;
  memlimit: number;
}

export interface PassphraseWrapped {
  kdf: KdfParams;
  nonce: Buffer;
  ciphertext: Buffer;
}

export async function wrapWithPassphrase(masterBytes: Buffer, keyIdHex: string, passphrase: string, strength: KdfStrength): Promise<PassphraseWrapped> {
  const salt = Buffer.alloc(sodium.crypto_pwhash_SALTBYTES);
  sodium.randombytes_buf(salt);
  const kdf: KdfParams = { algorithm: KDF_ALGORITHM_NAME, salt, ...KDF_PRESETS[strength] };
  const nonce = Buffer.alloc(AEAD_NONCE_BYTES);
  sodium.randombytes_buf(nonce);
  const ciphertext = Buffer.alloc(SECRET_KEY_BYTES + AEAD_TAG_BYTES);
  const wrapKey = await passphraseKey(passphrase, kdf);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(ciphertext, masterBytes, associatedData(keyIdHex, kdf), null, nonce, wrapKey);
  } finally {
    wrapKey.fill(0);
  }
  return { kdf, nonce, ciphertext };
}

/** Returns the master key bytes (caller wipes them); a wrong passphrase is ERR_WRONG_KEY. */
export async function unwrapWithPassphrase(wrapped: PassphraseWrapped, keyIdHex: string, passphrase: string, where: string): Promise<Buffer> {
  const wrapKey = await passphraseKey(passphrase, wrapped.kdf);
  const master = Buffer.alloc(SECRET_KEY_BYTES);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(master, null, wrapped.ciphertext, associatedData(keyIdHex, wrapped.kdf), wrapped.nonce, wrapKey);
    return master;
  } catch {
    master.fill(0);
    throw new VaultError('ERR_WRONG_KEY', `wrong passphrase for the master key ${where}`);
  } finally {
    wrapKey.fill(0);
  }
}

async function passphraseKey(passphrase: string, kdf: KdfParams): Promise<Buffer> {
  if (passphrase.length === 0) throw new VaultError('ERR_INVALID_ARGUMENT', 'the passphrase is empty');
  const password = Buffer.from(passphrase, 'utf8');
  const out = Buffer.alloc(SECRET_KEY_BYTES);
  try {
    await new Promise<void>((resolve, reject) =>
      sodium.crypto_pwhash_async(out, password, kdf.salt, kdf.opslimit, kdf.memlimit, sodium.crypto_pwhash_ALG_ARGON2ID13, (err) =>
        err ? reject(new VaultError('ERR_KEY_FILE', 'Argon2id key derivation failed (out of memory?)')) : resolve(),
      ),
    );
    return out;
  } finally {
    password.fill(0);
  }
}

function associatedData(keyIdHex: string, kdf: KdfParams): Buffer {
  const bound = [KEY_FILE_FORMAT, KEY_FILE_VERSION, keyIdHex, kdf.algorithm, kdf.salt.toString('hex'), kdf.opslimit, kdf.memlimit];
  return Buffer.from(JSON.stringify(bound), 'utf8');
}
