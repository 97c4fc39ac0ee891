// What gc tidies in a directory store besides objects: files of puts a kill cut off, and the
// empty directory trees deleted volumes leave. Neither is ever listed, so nothing else would.
import { promises as fsp, type Dirent } from 'node:fs';
import * as path from 'node:path';

/**
 * Remove the temporary files of puts that never finished (`~tmp-*`: the process was killed
 * while it wrote) under `root` once they are older than `olderThanMs`, far longer than any put
 * takes. Throws only when a directory cannot be listed.
 */
export async function sweepTemporaryFiles(root: string, olderThanMs: number, dryRun: boolean, now: number): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const visit = async (dir: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) await visit(full);
      else if (e.isFile() && e.name.startsWith('~tmp-')) {
        const st = await fsp.stat(full).catch(() => null);
        if (!st || now - st.mtimeMs < olderThanMs) continue;
        if (!dryRun && !(await fsp.unlink(full).then(() => true, () => false))) continue;
        files++;
        bytes += st.size;
      }
    }
  };
  await visit(root);
  return { files, bytes };
}

/**
 * Remove the directories below `base` (each child, e.g. a deleted volume's under `volumes/`)
 * whose whole tree holds no file and was not changed for `olderThanMs`: deleting every object
 * of a volume leaves its directories, and listChildren would name the volume for good. Only
 * rmdir, deepest first: a file that appears meanwhile stops the removal of its directories.
 * Returns how many trees were (or, dry, would be) removed.
 */
export async function removeEmptyTrees(base: string, olderThanMs: number, dryRun: boolean, now: number, syncDir: (dir: string) => Promise<void>): Promise<number> {
  /** the tree's directories, deepest first, or null when it holds a file or changed lately */
  const emptyTree = async (dir: string): Promise<string[] | null> => {
    const st = await fsp.stat(dir).catch(() => null);
    if (!st || now - st.mtimeMs < olderThanMs) return null;
    const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => null);
    if (!entries) return null;
    const dirs: string[] = [];
    for (const e of entries) {
      if (!e.isDirectory()) return null;
      const sub = await emptyTree(path.join(dir, e.name));
      if (!sub) return null;
      dirs.push(...sub);
    }
    return [...dirs, dir];
  };
  let removed = 0;
  const children = await fsp.readdir(base, { withFileTypes: true }).catch(() => []);
  for (const child of children) {
    if (!child.isDirectory()) continue;
    const dirs = await emptyTree(path.join(base, child.name));
    if (!dirs) continue;
    if (!dryRun) {
      let all = true;
      for (const d of dirs) if (!(await fsp.rmdir(d).then(() => true, () => false))) all = false;
      if (!all) continue;
      await syncDir(base).catch(() => undefined);
    }
    removed++;
  }
  return removed;
}
