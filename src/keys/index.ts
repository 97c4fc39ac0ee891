// The keys layer's public surface: the master key file, per-volume keys, subkeys, passphrases.
export { SecretKey, SECRET_KEY_BYTES } from './secret-key';
export {
  createMasterKey,
  loadMasterKey,
  changePassphrase,
  describeMasterKey,
  saveMasterKey,
  hasPendingMasterKey,
  promotePendingMasterKey,
  type MasterKeyInfo,
  type CreateMasterKeyOptions,
  type KeyFileSlot,
} from './master-key-file';
export { formatRecoveryKey, parseRecoveryKey } from './recovery-key';
export { MasterKeyRing } from './master-key-ring';
export { generateVolumeKey, wrapVolumeKey, unwrapVolumeKey, wrappingKeyId, type VolumeKeyPlace } from './volume-key';
export { deriveSubkey, masterKeyId } from './key-derivation';
export { readPassphrase, type PassphraseRequest, type PassphraseIo } from './passphrase-source';
export { resolveKeysDir, masterKeyPath, pendingMasterKeyPath } from './keys-dir';
export {
  KEYS_DIR_ENV,
  PASSPHRASE_ENV,
  NEW_PASSPHRASE_ENV,
  MASTER_KEY_FILE_NAME,
  WRAPPED_KEY_BYTES,
  type KdfStrength,
  type SubkeyPurpose,
} from './key-format';
