// The fs store's space reserve: RESERVE_BYTES held in the file `~reserve` at the store's root, so
// that a full filesystem still takes the small puts that free space and keep volumes reachable.
// Without it a full store could not be relieved with the tool: `snapshot delete` and `volume
// delete` put a session and records before they delete anything, and a reader's session put
// failed too, so not even a restore could start.
//
// - A put that is not volume data (PutOptions.data) and fails because the filesystem is full
//   (ENOSPC, EDQUOT) deletes the reserve and is tried once more (FsStore.put).
// - Volume data never spends it: a VM filling the disk would otherwise take, a journal at a time,
//   the room that the delete which relieves it needs.
// - Once spent, deletes bring it back when there is room again (at most once a second while they
//   go on, and at close).
// - Best effort: a reserve that cannot be made (the disk is full already) leaves puts as they
//   were. Another process's spending is seen as a missing file, which the next put remakes.
// The file's name starts with '~', so no listing shows it; `~tmp-*` leftovers of a kill while it
// was made are swept by gc with the others.
import { randomBytes } from 'node:crypto';
import { promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { writeAll } from '../util/write-all';

export const RESERVE_BYTES = 1 << 20;
export const RESERVE_NAME = '~reserve';
/** a spent reserve is tried again at most this often while deletes go on */
const REMAKE_EVERY_MS = 1000;

/** The filesystem (or the user's quota on it) is full. */
export function isSpaceExhausted(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

export class SpaceReserve {
  private readonly file: string;
  /** the first put's check that the reserve exists (made when missing) */
  private checked: Promise<void> | null = null;
  /** spent (or found missing where the disk had no room for it): deletes try to remake it */
  private spent = false;
  private spending: Promise<void> | null = null;
  private remaking: Promise<void> | null = null;
  private lastRemakeMs = 0;

  constructor(
    private readonly root: string,
    private readonly bytes: number,
    private readonly fsync: boolean,
  ) {
    this.file = path.join(root, RESERVE_NAME);
  }

  /** Before a put: once per process, make the reserve if it is missing. Never fails. */
  ensure(): Promise<void> {
    if (this.bytes === 0) return Promise.resolve();
    this.checked ??= (async () => {
      const there = await fsp.stat(this.file).then((st) => st.size >= this.bytes, () => false);
      if (!there && (await this.make()) === 'no-root') this.checked = null; // (again at the next put)
    })();
    return this.checked;
  }

  /** A put found the filesystem full: give the reserve's room back. Whether to try once more:
   *  the reserve was there, or this process spent it and it is not back (puts that failed side
   *  by side share its room). */
  async spend(): Promise<boolean> {
    if (this.bytes === 0) return false;
    // one unlink for puts that fail at once: the one that lost the race must not answer before
    // the winner has marked the reserve spent
    this.spending ??= fsp
      .unlink(this.file)
      .then(() => void (this.spent = true), () => undefined)
      .finally(() => (this.spending = null));
    await this.spending;
    return this.spent;
  }

  /** After a delete: remake a spent reserve if there is room (not awaited). */
  remakeSoon(now = Date.now()): void {
    if (!this.spent || this.remaking || now - this.lastRemakeMs < REMAKE_EVERY_MS) return;
    this.lastRemakeMs = now;
    this.remaking = this.make().then(() => undefined).finally(() => (this.remaking = null));
  }

  async close(): Promise<void> {
    await this.remaking;
    if (this.spent) await this.make();
  }

  /** Writes the reserve beside it and renames it into place. 'full': no room (it is then spent,
   *  and deletes try again); 'failed': a read-only or foreign directory, not tried again. */
  private async make(): Promise<'made' | 'full' | 'no-root' | 'failed'> {
    const tmp = path.join(this.root, `~tmp-reserve-${process.pid}-${randomBytes(6).toString('hex')}`);
    let fh: fsp.FileHandle | null = null;
    try {
      fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
      // real zeros, not a sparse file or fallocate: a filesystem that compresses or dedupes
      // would not hold the room either way, but every common one does for written blocks
      await writeAll(fh, Buffer.alloc(this.bytes), 0);
      if (this.fsync) await fh.sync();
      await fh.close();
      fh = null;
      await fsp.rename(tmp, this.file);
      this.spent = false;
      return 'made';
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await fsp.unlink(tmp).catch(() => undefined);
      if (!isSpaceExhausted(err)) return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no-root' : 'failed';
      this.spent = true;
      return 'full';
    }
  }
}
