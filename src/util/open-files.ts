// How many file descriptors the process's caches of open files may keep together: a quarter of
// its soft limit (RLIMIT_NOFILE, read from /proc/self/limits), between 64 and 4,096. The rest
// stays for client connections, the store and the engine's own files. Off Linux, or unreadable:
// 256.
import { readFileSync } from 'node:fs';

const FALLBACK_LIMIT = 1024;

export function openFilesShare(): number {
  return Math.max(64, Math.min(4096, Math.floor(softOpenFilesLimit() / 4)));
}

function softOpenFilesLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    if (soft === 'unlimited') return Number.MAX_SAFE_INTEGER;
    const n = Number(soft);
    return Number.isSafeInteger(n) && n > 0 ? n : FALLBACK_LIMIT;
  } catch {
    return FALLBACK_LIMIT;
  }
}
