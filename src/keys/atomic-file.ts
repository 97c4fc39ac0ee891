// Writes a small private file atomically: a 0600 temp file beside the target, fsync, then link
// (create: fails if the target exists, so nothing is ever overwritten) or rename (replace), then
// fsync the directory. A crash leaves the old file or the new one, never a torn one.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { VaultError } from '../errors';

export type AtomicWriteMode = 'create' | 'replace';

export async function writePrivateFileAtomic(target: string, data: Buffer, mode: AtomicWriteMode): Promise<void> {
  const dir = path.dirname(target);
  const temp = path.join(dir, `.${path.basename(target)}.tmp-${randomBytes(6).toString('hex')}`);
  const handle = await fs.open(temp, 'wx', 0o600);
  try {
    await handle.chmod(0o600); // whatever the umask
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => {});
    await fs.unlink(temp).catch(() => {}); // a full disk must not collect temp files
    throw err;
  }
  await handle.close();
  try {
    if (mode === 'replace') {
      await fs.rename(temp, target);
    } else {
      await fs.link(temp, target).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') throw new VaultError('ERR_EXISTS', `${target} already exists; refusing to overwrite it`);
        throw err;
      });
    }
  } finally {
    await fs.unlink(temp).catch(() => {}); // gone already after a rename
  }
  await fsyncDir(dir);
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
