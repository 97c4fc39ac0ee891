// Option checks shared by the codec factories: a bad option fails at construction, not under load.
import os from 'node:os';
import { VaultError } from '../errors';
import { DEFAULT_ZSTD_LEVEL } from './format';
import { zstdLevelBounds } from './zstd-contexts';

export function checkZstdLevel(level: number | undefined): number {
  if (level === undefined) return DEFAULT_ZSTD_LEVEL;
  const { min, max } = zstdLevelBounds();
  if (!Number.isInteger(level) || level < min || level > max) {
    throw new VaultError('ERR_INVALID_ARGUMENT', `zstd level must be an integer from ${min} to ${max}, got ${level}`);
  }
  return level;
}

export function checkWorkerCount(workers: number | undefined): number {
  if (workers === undefined) return os.availableParallelism();
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) {
    throw new VaultError('ERR_INVALID_ARGUMENT', `codec workers must be an integer from 1 to 256, got ${workers}`);
  }
  return workers;
}
