// Every constant of the key formats, in one place (prose: docs/FORMAT.md, "Key file" and
// "Wrapped volume key"). Changing one changes stored bytes: bump the version and the docs.
import sodium from 'sodium-native';

export const MASTER_KEY_FILE_NAME = 'master-key.json';
/** The new master key while `keys rotate` runs (docs/FORMAT.md, "Rotating the master key"). */
export const PENDING_MASTER_KEY_FILE_NAME = 'master-key.next.json';
export const KEY_FILE_FORMAT = 'nbd-vault master key';
export const KEY_FILE_VERSION = 1;
export const DEFAULT_KEYS_DIR = './keys';
export const KEYS_DIR_ENV = 'NBD_VAULT_KEYS';
export const PASSPHRASE_ENV = 'NBD_VAULT_PASSPHRASE';
export const NEW_PASSPHRASE_ENV = 'NBD_VAULT_NEW_PASSPHRASE';

/** Argon2id cost presets. Stored in the key file, so a later default never locks out old files. */
export const KDF_PRESETS = {
  /** ~0.5 s and 256 MiB here: the default for a master key, unwrapped once per process. */
  moderate: { opslimit: sodium.crypto_pwhash_OPSLIMIT_MODERATE, memlimit: sodium.crypto_pwhash_MEMLIMIT_MODERATE },
  /** ~0.1 s and 64 MiB: tests only. */
  interactive: { opslimit: sodium.crypto_pwhash_OPSLIMIT_INTERACTIVE, memlimit: sodium.crypto_pwhash_MEMLIMIT_INTERACTIVE },
} as const;
export type KdfStrength = keyof typeof KDF_PRESETS;
export const KDF_ALGORITHM_NAME = 'argon2id13';
/** A key file may not ask for more than this (a hostile file must not exhaust memory). */
export const MAX_KDF_MEMLIMIT = 2 * 1024 * 1024 * 1024;
export const MAX_KDF_OPSLIMIT = 64;

/** crypto_kdf contexts (exactly 8 bytes) and subkey ids. Never renumber. */
export const MASTER_KDF_CONTEXT = Buffer.from('nbdvmast', 'latin1');
export const MASTER_SUBKEY_VOLUME_WRAP = 1;
export const MASTER_SUBKEY_KEY_ID = 2;
export const VOLUME_KDF_CONTEXT = Buffer.from('nbdvvolk', 'latin1');
export const VOLUME_SUBKEY_IDS = { data: 1, manifest: 2, meta: 3 } as const;
export type SubkeyPurpose = keyof typeof VOLUME_SUBKEY_IDS;

/** Master key id: public, derived, identifies which master key wrapped something. */
export const KEY_ID_BYTES = 8;

// Wrapped volume key: magic ‖ version ‖ 3 reserved ‖ master key id ‖ nonce ‖ ciphertext+tag.
export const WRAPPED_KEY_MAGIC = Buffer.from('NBVK', 'latin1');
export const WRAPPED_KEY_VERSION = 1;
export const WRAPPED_KEY_OFFSET_VERSION = 4;
export const WRAPPED_KEY_OFFSET_KEY_ID = 8;
export const WRAPPED_KEY_OFFSET_NONCE = 16;
export const WRAPPED_KEY_HEADER_BYTES = 40;
export const AEAD_NONCE_BYTES = 24;
export const AEAD_TAG_BYTES = 16;
export const WRAPPED_KEY_BYTES = WRAPPED_KEY_HEADER_BYTES + 32 + AEAD_TAG_BYTES; // 88

// Paper recovery key (recovery-key.ts; docs/FORMAT.md, "Recovery key").
export const RECOVERY_KEY_HEADER = 'nbd-vault recovery key';
export const RECOVERY_KEY_VERSION = 1;
export const RECOVERY_KEY_LINE_CONTEXT = Buffer.from('nbd-vault recovery line', 'latin1');
