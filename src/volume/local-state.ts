// Local, per-machine state: the highest root sequence seen per volume, so that a store that
// serves an older root (rollback/replay) is noticed. One small JSON file per volume under
// <stateDir>/<vaultId>/, written atomically (temp file, fsync, rename, directory fsync). Losing
// it loses only the local half of rollback detection; the store's snapshot records still catch a
// root older than a snapshot (vault.ts, loadVolume).
import { readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { KeyedMutex } from '../util/keyed-mutex';
import { writePrivateFileAtomic } from '../keys/atomic-file';
import { VaultError } from '../errors';
import { makeDirs } from '../util/make-dirs';

export class LocalState {
  private instance: string | null = null;
  private readonly locks = new KeyedMutex<string>();

  constructor(private readonly dir: string, private readonly vaultId: string) {}

  /** This state directory's random instance id (created on first use): who holds a lease. */
  async instanceId(): Promise<string> {
    if (this.instance) return this.instance;
    const path = join(this.dir, 'instance-id');
    try {
      const text = (await readFile(path, 'utf8')).trim();
      if (/^[0-9a-f]{32}$/.test(text)) return (this.instance = text);
    } catch (err: any) {
      if (err?.code !== 'ENOENT') throw new VaultError('ERR_IO', `cannot read ${path}: ${err?.message ?? err}`);
    }
    await makeDirs(this.dir, 0o700);
    const id = randomBytes(16).toString('hex');
    try {
      await writeFile(path, id + '\n', { flag: 'wx', mode: 0o600 });
      return (this.instance = id);
    } catch (err: any) {
      if (err?.code === 'EEXIST') return this.instanceId(); // another process created it first
      throw new VaultError('ERR_IO', `cannot write ${path}: ${err?.message ?? err}`);
    }
  }

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

  /** Remember `seq` if it is higher than what is recorded (never moves backwards). Serialised per
   *  volume within the process; a unique temp file per write keeps concurrent writers apart. */
  async recordSeq(volumeId: string, seq: number): Promise<void> {
    await this.locks.run(volumeId, async () => {
      if ((await this.highestSeq(volumeId)) >= seq) return;
      await this.writeSeq(volumeId, seq);
    });
  }

  /** Accepting a rollback: from now on, the older root is the reference. */
  async resetSeq(volumeId: string, seq: number): Promise<void> {
    await this.locks.run(volumeId, () => this.writeSeq(volumeId, seq));
  }

  private async writeSeq(volumeId: string, seq: number): Promise<void> {
    const path = this.file(volumeId);
    await makeDirs(join(this.dir, this.vaultId), 0o700);
    await writePrivateFileAtomic(path, Buffer.from(JSON.stringify({ highestSeq: seq, updatedAt: new Date().toISOString() })), 'replace');
  }
}
