// mkdir -p that refuses paths under /proc and /sys: Node's recursive mkdir loops forever there
// (mkdir("/proc/x") says ENOENT, mkdir("/proc") EEXIST, and it tries again), so a `--state
// /proc/x` hung the command at 100 % CPU instead of failing.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

/** statfs types of the kernel's pseudo filesystems, where no directory can be made */
const PSEUDO_FILESYSTEMS = new Map([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
]);

/** `fs.mkdir(dir, { recursive: true, mode })`, or an ENOENT error for a path no directory can be
 *  made under. Resolves to the first directory made, as fs.mkdir does. */
export async function makeDirs(dir: string, mode?: number): Promise<string | undefined> {
  let existing = path.resolve(dir);
  let st = await fsp.stat(existing).catch(() => null);
  if (st?.isDirectory()) return undefined; // (the usual case: one call, as mkdir -p would)
  // the nearest ancestor that exists
  for (let up = path.dirname(existing); !st && up !== existing; up = path.dirname(existing)) {
    existing = up;
    st = await fsp.stat(existing).catch(() => null);
  }
  const fs = await fsp.statfs(existing).catch(() => null);
  const pseudo = fs ? PSEUDO_FILESYSTEMS.get(Number(fs.type)) : undefined;
  if (pseudo && existing !== path.resolve(dir)) {
    throw Object.assign(new Error(`ENOENT: cannot make ${dir}: ${existing} is on the kernel's ${pseudo} filesystem`), { code: 'ENOENT', path: dir, pseudoFilesystem: pseudo });
  }
  return fsp.mkdir(dir, { recursive: true, ...(mode === undefined ? {} : { mode }) });
}
