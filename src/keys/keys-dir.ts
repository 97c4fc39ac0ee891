// Where the key directory is: --keys DIR, else $NBD_VAULT_KEYS, else ./keys.
import path from 'node:path';
import { DEFAULT_KEYS_DIR, KEYS_DIR_ENV, MASTER_KEY_FILE_NAME, PENDING_MASTER_KEY_FILE_NAME } from './key-format';

export function resolveKeysDir(option?: string, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(option ?? (env[KEYS_DIR_ENV] || DEFAULT_KEYS_DIR));
}

export function masterKeyPath(dir: string): string {
  return path.join(dir, MASTER_KEY_FILE_NAME);
}

/** The next master key while a rotation is under way. */
export function pendingMasterKeyPath(dir: string): string {
  return path.join(dir, PENDING_MASTER_KEY_FILE_NAME);
}
