// Local, per-machine state: the highest root sequence seen per volume, so that a store that
// serves an older root (rollback/replay) is noticed. One small JSON file per volume under
// <stateDir>/<vaultId>/, written atomically. Losing it only loses rollback detection.
import { mkdir, readFile, rename, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { VaultError } from '../errors';

export class LocalState {
  constructor(private readonly dir: string, private readonly vaultId: string) {}

  private file(volumeId: string): string {
    return join(this.dir, this.vaultId, `${volumeId}.json`);
  }

  async highestSeq(volumeId: string): Promise<number> {
    try {
      const raw = JSON.parse(await readFile(this.file(volumeId), 'utf8'));
      return Number.isSafeInteger(raw.highestSeq) ? raw.highestSeq : 0;
    } catch (err: any) {
      if (err?.code === 'ENOENT') return 0;
      throw new VaultError('ERR_IO', `cannot read local state ${this.file(volumeId)}: ${err?.message ?? err}`);
    }
  }

  async recordSeq(volumeId: string, seq: number): Promise<void> {
    const path = this.file(volumeId);
    await mkdir(join(this.dir, this.vaultId), { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp-${process.pid}`;
    await writeFile(tmp, JSON.stringify({ highestSeq: seq, updatedAt: new Date().toISOString() }));
    const fh = await open(tmp, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  }
}
