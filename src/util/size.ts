// Human sizes: "4096", "256M", "10G", "1T", "512KiB". Binary units (K = 1024).
import { VaultError } from '../errors';

const UNITS: Record<string, number> = { '': 1, B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

export function parseSize(text: string): number {
  // 10, 10B, 10K, 10KB, 10KiB (binary units all); not 10iB
  const m = /^\s*(\d+)\s*(?:([KMGTP])(?:I?B)?|B)?\s*$/i.exec(text);
  if (!m) throw new VaultError('ERR_INVALID_ARGUMENT', `not a size: "${text}" (use e.g. 4096, 256M, 10G, 1T)`);
  const value = Number(m[1]) * UNITS[(m[2] ?? '').toUpperCase()];
  if (!Number.isSafeInteger(value)) throw new VaultError('ERR_INVALID_ARGUMENT', `size too large: "${text}"`);
  return value;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}
